"""Graded images to train on: the labels CSV (:func:`read_labels_csv`) and the checks of
paths, grades and groups before a head is trained or cross-validated (:func:`check_inputs`)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mlcore.data.splits import groups_from_id_sets, merge_groups, read_near_duplicate_groups


class LabelsError(ValueError):
    """Labels (CSV or arguments) that cannot be trained on."""


@dataclass
class LabeledImages:
    """Graded images: paths, grades and (optional) patient/group per image."""

    paths: list[Path]
    grades: list[int]
    groups: list[str] | None = None


def read_labels_csv(
    csv_path: str | Path,
    *,
    images_dir: str | Path | None = None,
    groups_file: str | Path | None = None,
) -> LabeledImages:
    """Read a labels CSV with columns ``filename`` (relative to ``images_dir``, default the CSV's
    folder) and ``grade``, optionally ``patient_id`` (or ``patient``/``group``).

    ``groups_file``: near-duplicate groups (one line of ids per group, ``#`` comments), matched
    against each file's stem or its last ``_``-separated part (``aptos2019_<id_code>.jpg``).
    Images without patient id or listed group are their own group.
    """
    csv_path = Path(csv_path)
    base = Path(images_dir) if images_dir is not None else csv_path.parent
    with csv_path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        columns = reader.fieldnames or []
        for needed in ("filename", "grade"):
            if needed not in columns:
                raise LabelsError(f"{csv_path} has no {needed!r} column (columns: {columns})")
        group_column = next((c for c in ("patient_id", "patient", "group") if c in columns), None)
        paths, grades, patients = [], [], []
        for line, row in enumerate(reader, start=2):
            try:
                grades.append(int(row["grade"]))
            except (TypeError, ValueError):
                raise LabelsError(
                    f"{csv_path}:{line}: grade {row['grade']!r} is not an integer"
                ) from None
            paths.append(base / row["filename"])
            patients.append(row[group_column] if group_column and row[group_column] else None)
    if not paths:
        raise LabelsError(f"{csv_path} lists no images")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) in {csv_path} not found, e.g. {missing[:3]}"
        )
    groups: list[str] | None = None
    if group_column or groups_file:
        names = [f"patient:{p}" if p else None for p in patients]
        if groups_file:
            stems = [p.stem for p in paths]
            listed = read_near_duplicate_groups(groups_file)
            known = set().union(*listed) if listed else set()
            ids = [s if s in known else s.rsplit("_", 1)[-1] for s in stems]
            duplicates = groups_from_id_sets(ids, listed)
            # Merge: a patient and a near-duplicate group that share an image become one group.
            merged = merge_groups(names, [d if d.startswith("dup:") else None for d in duplicates])
            groups = [f"g{g}" for g in merged]
        else:
            groups = [n if n else f"image:{i}" for i, n in enumerate(names)]
    return LabeledImages(paths=paths, grades=grades, groups=groups)


def check_inputs(
    paths: Sequence[str | Path],
    grades: Sequence[int],
    groups: Sequence[object] | None,
    classes: Sequence[int],
) -> tuple[list[Path], npt.NDArray[np.int64]]:
    """(paths, grades) once they agree in number, are on the scale and the files exist."""
    checked = [Path(p) for p in paths]
    y = np.asarray(grades)
    if len(checked) != y.size:
        raise LabelsError(f"{len(paths)} images but {y.size} grades")
    if groups is not None and len(groups) != len(paths):
        raise LabelsError(f"{len(paths)} images but {len(groups)} group entries")
    if y.size == 0:
        raise LabelsError("no images to train on")
    unknown = sorted(set(y.tolist()) - set(classes))
    if unknown:
        raise LabelsError(f"grades {unknown} are not on the scale {list(classes)}")
    missing = [str(p) for p in checked if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) not found, e.g. {missing[:3]}")
    return checked, y.astype(np.int64)


def with_near_duplicates(labels: LabeledImages) -> LabeledImages:
    """The same images with copies of one photograph (perceptual hashes within
    :data:`~mlcore.data.near_duplicates.MAX_DISTANCE` bits) in one group, merged with their
    patients or listed groups, so that no split separates them. An unreadable file keeps its
    own group (training reports it)."""
    from mlcore.data.near_duplicates import perceptual_hash_of_bytes, split_groups

    def picture_hash(path: Path) -> str:
        try:
            return perceptual_hash_of_bytes(path.read_bytes())
        except (OSError, ValueError):
            return ""

    patients = labels.groups or [f"image:{path}" for path in labels.paths]
    merged = split_groups(list(patients), [picture_hash(path) for path in labels.paths])
    return LabeledImages(
        paths=list(labels.paths),
        grades=list(labels.grades),
        groups=[f"group:{group}" for group in merged.tolist()],
    )
