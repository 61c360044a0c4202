"""Results out as FHIR resources (built and validated with ``fhir.resources``, its R4B package:
FHIR R4 with the 4.3 fixes; DiagnosticReport and Observation are the same shape in R4).

For one photograph (``image_fhir_bundle``) or a patient's visits (``patient_fhir_bundle``): a
``collection`` Bundle with the Patient (its pseudonym only), one DiagnosticReport per visit, one
Observation per eye with the confirmed grade coded on the grading scale, diabetic macular oedema
as a component, who graded it (performer) and when (issued: the confirmation; the grades' times
in the note), and the model's prediction as a separate Observation naming the model version.

What a reader may not see is left out, by the API's own blind-reading rules: no grade for a
photograph the reader still grades independently (nor the other graders' names), no prediction
while the model is hidden from them (blind reading, or a certification reference).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import User
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient as FhirPatient

from grading.models import Grade, GradeLevel, Image, Patient, Prediction
from grading.selectors.assistance import images_blind_for, images_read_independently_by
from grading.selectors.certification import reference_hidden_ids
from grading.selectors.model_versions import model_version_active

GRADE_SYSTEM = "urn:funduscope:codesystem:grading-scale"  # the deployment's scale (ICDR 0-4)
CODE_SYSTEM = "urn:funduscope:codesystem:observation"
PATIENT_SYSTEM = "urn:funduscope:patient-pseudonym"
SNOMED = "http://snomed.info/sct"
# SNOMED CT body sites: the right and the left eye.
EYE_SITES = {
    Image.Eye.RIGHT: ("18944008", "Right eye structure"),
    Image.Eye.LEFT: ("8966001", "Left eye structure"),
}
_OBS_CATEGORY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "exam",
            "display": "Exam",
        }
    ]
}


def _grade_concept(level: GradeLevel) -> dict[str, Any]:
    return {
        "coding": [{"system": GRADE_SYSTEM, "code": str(level.value), "display": level.name}],
        "text": level.name,
    }


def _code(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": CODE_SYSTEM, "code": code, "display": display}], "text": display}


def _confirming_grades(image: Image) -> list[Grade]:
    """The grades the image's confirmation rests on (an adjudication, an import, or the graders'
    current grades)."""
    grades = Grade.objects.filter(image=image, superseded_by__isnull=True).select_related("grader")
    method = image.confirmation_method
    if method == Image.ConfirmationMethod.ADJUDICATION:
        return list(grades.filter(kind=Grade.Kind.ADJUDICATION).order_by("-created_at")[:1])
    if method == Image.ConfirmationMethod.IMPORT:
        return list(grades.filter(kind=Grade.Kind.IMPORT))
    return list(grades.filter(kind=Grade.Kind.GRADER, counts_towards_confirmation=True))


def _when(moment: dt.datetime | dt.date | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _grade_observation(image: Image, patient_ref: str) -> Observation:
    grades = _confirming_grades(image)
    who = [grade.grader.get_username() if grade.grader else grade.source for grade in grades]
    fields: dict[str, Any] = {
        "id": f"grade-{image.pk}",
        "status": "final",
        "category": [_OBS_CATEGORY],
        "code": _code("dr-grade", "Diabetic retinopathy grade (confirmed)"),
        "subject": {"reference": patient_ref},
        "effectiveDateTime": _when(image.acquired_on or image.uploaded_at),
        "issued": _when(image.confirmed_at),
        "performer": [{"display": name} for name in who] or None,
        "method": {"text": f"Confirmed by {image.get_confirmation_method_display().lower()}"},
        "note": [
            {
                "text": "; ".join(
                    f"{name} graded at {g.created_at.isoformat()}"
                    for name, g in zip(who, grades, strict=True)
                )
            }
        ]
        if grades
        else None,
        "derivedFrom": None,
    }
    if image.confirmed_ungradable:
        fields["dataAbsentReason"] = {"text": "Ungradable photograph"}
    elif image.confirmed_grade is not None:
        fields["valueCodeableConcept"] = _grade_concept(image.confirmed_grade)
        fields["component"] = [
            {
                "code": _code("dme", "Diabetic macular oedema"),
                "valueBoolean": image.confirmed_macular_oedema,
            }
        ]
    site = EYE_SITES.get(Image.Eye(image.eye))
    if site:
        fields["bodySite"] = {"coding": [{"system": SNOMED, "code": site[0], "display": site[1]}]}
    return Observation.model_validate(
        {key: value for key, value in fields.items() if value is not None}
    )


def _prediction_observation(prediction: Prediction, patient_ref: str) -> Observation:
    version = prediction.model_version
    levels = list(GradeLevel.objects.order_by("value"))
    components = [
        {
            "code": _code(f"probability-{level.value}", f"Probability of {level.name}"),
            "valueQuantity": {"value": round(float(probability), 6), "unit": "1"},
        }
        for level, probability in zip(levels, prediction.probabilities, strict=False)
    ]
    return Observation.model_validate(
        dict(
            id=f"prediction-{prediction.image_id}-v{version.pk}",
            status="preliminary",
            category=[_OBS_CATEGORY],
            code=_code("dr-grade-model", "Diabetic retinopathy grade (model prediction)"),
            subject={"reference": patient_ref},
            issued=_when(prediction.created_at),
            valueCodeableConcept=_grade_concept(prediction.predicted_grade),
            method={"text": f"Funduscope model version {version.name}"},
            device={"display": f"Funduscope model version {version.name}"},
            note=[{"text": f"Model version {version.name}; not a clinician's grade."}],
            component=components,
        )
    )


class _Visibility:
    """What one reader may see of which images (the API's blind-reading rules)."""

    def __init__(self, user: User, image_ids: Iterable[int]) -> None:
        ids = list(image_ids)
        self.grades_hidden = set(
            images_read_independently_by(user=user).filter(pk__in=ids).values_list("pk", flat=True)
        )
        self.model_hidden = set(
            images_blind_for(user=user).filter(pk__in=ids).values_list("pk", flat=True)
        ) | (reference_hidden_ids(user=user) & set(ids))
        self.grades_hidden |= reference_hidden_ids(user=user) & set(ids)


def _patient_resource(patient: Patient) -> FhirPatient:
    return FhirPatient.model_validate(
        {
            "id": f"patient-{patient.pk}",
            "identifier": [{"system": PATIENT_SYSTEM, "value": patient.pseudonym}],
        }
    )


def _visit_entries(
    images: list[Image], patient_ref: str, seen: _Visibility, predictions: dict[int, Prediction]
) -> list[Any]:
    """One visit's DiagnosticReport, then its Observations (one per eye, and the model's)."""
    results: list[Any] = []
    shown = [image for image in images if image.pk not in seen.grades_hidden]
    confirmed = [image for image in shown if image.grading_state == Image.GradingState.CONFIRMED]
    for image in _worst_per_eye(confirmed):
        results.append(_grade_observation(image, patient_ref))
    for image in images:
        prediction = predictions.get(image.pk)
        if prediction is not None and image.pk not in seen.model_hidden:
            results.append(_prediction_observation(prediction, patient_ref))
    first = images[0]
    visit = first.acquired_on or first.uploaded_at.date()
    all_confirmed = len(confirmed) == len(images)
    report = DiagnosticReport.model_validate(
        dict(
            id=f"report-{first.patient_id}-{visit.isoformat()}",
            status="final" if all_confirmed else ("partial" if confirmed else "registered"),
            category=[{"text": "Diabetic retinopathy screening"}],
            code=_code("dr-screening", "Diabetic retinopathy screening (fundus photographs)"),
            subject={"reference": patient_ref},
            effectiveDateTime=visit.isoformat(),
            issued=_when(max((i.confirmed_at for i in confirmed if i.confirmed_at), default=None)),
            result=[{"reference": f"Observation/{resource.id}"} for resource in results] or None,
            identifier=_study_identifiers(images) or None,
        )
    )
    return [report, *results]


def _study_identifiers(images: list[Image]) -> list[dict[str, str]]:
    uids = sorted({image.study_instance_uid for image in images if image.study_instance_uid})
    return [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"} for uid in uids]


def _worst_per_eye(images: list[Image]) -> list[Image]:
    """Per eye, the photograph with the highest confirmed grade (an eye's grade is its worst
    field's); an ungradable one only when no photograph of the eye has a grade."""
    best: dict[str, Image] = {}
    for image in images:
        current = best.get(image.eye)
        if current is None or _severity(image) > _severity(current):
            best[image.eye] = image
    return [best[eye] for eye in sorted(best)]


def _severity(image: Image) -> int:
    return -1 if image.confirmed_grade_id is None else int(image.confirmed_grade_id)


def _predictions_of(image_ids: list[int]) -> dict[int, Prediction]:
    version = model_version_active()
    if version is None:
        return {}
    predictions = Prediction.objects.filter(image_id__in=image_ids, model_version=version)
    newest: dict[int, Prediction] = {}
    for prediction in predictions.select_related("model_version", "predicted_grade").order_by(
        "created_at", "id"
    ):
        newest[prediction.image_id] = prediction
    return newest


def _bundle(patient: Patient, images: list[Image], user: User) -> dict[str, Any]:
    seen = _Visibility(user, [image.pk for image in images])
    predictions = _predictions_of([image.pk for image in images])
    patient_resource = _patient_resource(patient)
    patient_ref = f"Patient/{patient_resource.id}"
    visits: dict[dt.date, list[Image]] = {}
    for image in images:
        visits.setdefault(image.acquired_on or image.uploaded_at.date(), []).append(image)
    resources: list[Any] = [patient_resource]
    for visit in sorted(visits):
        resources.extend(_visit_entries(visits[visit], patient_ref, seen, predictions))
    bundle = Bundle.model_validate(
        {
            "type": "collection",
            "entry": [
                {"fullUrl": f"urn:funduscope:{type(r).__name__}/{r.id}", "resource": r}
                for r in resources
            ],
        }
    )
    return bundle.model_dump(mode="json", exclude_none=True)


def image_fhir_bundle(*, image: Image, user: User) -> dict[str, Any]:
    """One photograph's report, as FHIR JSON (a dict)."""
    image = Image.objects.select_related("patient", "confirmed_grade").get(pk=image.pk)
    return _bundle(image.patient, [image], user)


def patient_fhir_bundle(*, patient: Patient, user: User) -> dict[str, Any]:
    """Every visit of one patient, as FHIR JSON (a dict)."""
    images = list(
        Image.objects.filter(patient=patient).select_related("confirmed_grade").order_by("id")
    )
    return _bundle(patient, images, user)
