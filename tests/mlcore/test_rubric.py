"""The ICDR rule from findings, one case per branch (Wilkinson et al. 2003), and its edges."""

from __future__ import annotations

import pytest

from mlcore.data.rubric import (
    Findings,
    FindingsInvalid,
    findings_describe,
    icdr_grade_derive,
    macular_oedema_suggested,
)

ALL = frozenset({"ST", "SN", "IT", "IN"})


def grade_of(**findings) -> int:
    return icdr_grade_derive(Findings(**findings)).grade


def test_it_grades_no_findings_as_no_retinopathy():
    assert grade_of() == 0


def test_it_grades_microaneurysms_only_as_mild():
    assert grade_of(microaneurysms=True) == 1


def test_it_does_not_grade_laser_scars_alone():
    # ICDR has no level for a treated eye: the grader records what they judge (an override).
    assert grade_of(laser_scars=True) == 0


@pytest.mark.parametrize(
    "finding",
    [
        {"haemorrhages": {"ST"}},
        {"venous_beading": {"IN"}},
        {"hard_exudates": True},
        {"cotton_wool_spots": True},
    ],
)
def test_it_grades_more_than_microaneurysms_as_moderate(finding):
    assert grade_of(microaneurysms=True, **finding) == 2
    assert grade_of(**finding) == 2


def test_it_grades_haemorrhages_in_all_four_quadrants_without_20_each_as_moderate():
    # The 4 of the 4-2-1 rule is >20 haemorrhages in each quadrant, not any haemorrhage.
    assert grade_of(microaneurysms=True, haemorrhages=ALL) == 2


def test_it_grades_severe_haemorrhages_in_four_quadrants_as_severe():
    assert grade_of(haemorrhages_severe=ALL) == 3


def test_it_grades_severe_haemorrhages_in_three_quadrants_as_moderate():
    assert grade_of(haemorrhages_severe={"ST", "SN", "IT"}) == 2


def test_it_grades_venous_beading_in_two_quadrants_as_severe():
    assert grade_of(venous_beading={"ST", "IT"}) == 3


def test_it_grades_venous_beading_in_one_quadrant_as_moderate():
    assert grade_of(venous_beading={"ST"}) == 2


def test_it_grades_irma_in_one_quadrant_as_severe():
    assert grade_of(irma={"SN"}) == 3


def test_it_grades_disc_neovascularisation_as_proliferative():
    assert grade_of(nv_disc=True) == 4


def test_it_grades_neovascularisation_elsewhere_as_proliferative():
    assert grade_of(nv_elsewhere=True) == 4


def test_it_grades_vitreous_or_preretinal_haemorrhage_as_proliferative():
    assert grade_of(vitreous_preretinal_haemorrhage=True) == 4


def test_it_lets_proliferative_signs_outrank_the_4_2_1_rule():
    assert grade_of(irma=ALL, venous_beading=ALL, haemorrhages_severe=ALL, nv_disc=True) == 4


def test_it_explains_the_branch_it_took():
    derived = icdr_grade_derive(Findings(venous_beading={"ST", "IT"}))
    assert "4-2-1" in derived.reason and "venous beading in 2" in derived.reason


def test_it_suggests_macular_oedema_for_exudates_near_the_fovea_only():
    assert macular_oedema_suggested(Findings(exudates_near_fovea=True))
    assert not macular_oedema_suggested(Findings(hard_exudates=True))


def test_it_implies_exudates_and_haemorrhages_from_their_stronger_forms():
    findings = Findings(exudates_near_fovea=True, haemorrhages_severe={"IT"})
    assert findings.hard_exudates
    assert findings.haemorrhages == {"IT"}


def test_it_round_trips_through_a_dict():
    findings = Findings(microaneurysms=True, haemorrhages={"IN", "ST"}, laser_scars=True)
    data = findings.to_dict()
    assert data == {"microaneurysms": True, "haemorrhages": ["ST", "IN"], "laser_scars": True}
    assert Findings.from_dict(data) == findings
    assert Findings.from_dict({}).is_empty


@pytest.mark.parametrize(
    "data",
    [
        {"haemorrhages": ["XX"]},
        {"haemorrhages": "ST"},
        {"microaneurysms": "yes"},
        {"drusen": True},
    ],
)
def test_it_rejects_malformed_findings(data):
    with pytest.raises(FindingsInvalid):
        Findings.from_dict(data)


def test_it_describes_findings_in_one_line():
    text = findings_describe(
        Findings(microaneurysms=True, haemorrhages={"ST", "SN"}, haemorrhages_severe={"ST"})
    )
    assert text == "MA; haem ST, SN (20+: ST)"
    assert findings_describe(Findings()) == "no lesions"
