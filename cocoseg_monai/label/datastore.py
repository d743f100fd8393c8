"""The MONAI Label datastore layout of PET/CT studies, and a ready-made one from the phantom generator.

MONAI Label's local datastore lists the images in the root of the studies folder and their
labels in ``labels/<tag>/``; it has no notion of a second modality. CoCoSeg keeps each CT in the
root and its PET partner, under the same file name, in ``pet/``::

    studies/
        patient_001.nii.gz            CT: what MONAI Label lists, shows and labels
        pet/patient_001.nii.gz        its PET partner (any grid that overlaps the CT)
        labels/final/patient_001.nii.gz   lesion label on the CT grid (for training)

This module needs no MONAI Label: the datastore can be prepared, and partners found, without it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from cocoseg_monai.conventions import NIFTI_SUFFIXES
from cocoseg_monai.data.discovery import strip_nifti_suffix
from cocoseg_monai.errors import DataError

__all__ = ["PET_FOLDER", "LABEL_FOLDER", "pet_partner", "prepare_datastore"]

#: folder, beside the CTs, that holds each CT's PET partner under the same file name
PET_FOLDER = "pet"
#: where MONAI Label's local datastore keeps final (training) labels
LABEL_FOLDER = os.path.join("labels", "final")


def pet_partner(ct: str | os.PathLike, studies: str | os.PathLike | None = None, pet_folder: str = PET_FOLDER) -> Path:
    """The PET partner of the CT ``ct``: ``<studies>/<pet_folder>/<same file name>``.

    ``studies`` defaults to the CT's folder. A partner with the other NIfTI suffix (``.nii``
    for a ``.nii.gz`` CT, or the reverse) is accepted.

    Raises:
        DataError: naming the CT and the places looked at, when there is no partner.
    """
    ct = Path(ct)
    folder = (Path(studies) if studies is not None else ct.parent) / pet_folder
    stem = strip_nifti_suffix(ct.name)
    names = [ct.name] if stem == ct.name else [stem + s for s in NIFTI_SUFFIXES]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise DataError(
        f"study {ct.name} has no PET partner: expected {' or '.join(str(folder / n) for n in names)}"
    )


def prepare_datastore(
    out: str | os.PathLike,
    patients: int = 6,
    labelled: int = 4,
    seed: int | None = None,
    size: int | None = None,
    slices: int | None = None,
    log=None,
) -> Path:
    """Write a MONAI Label datastore of phantom PET/CT studies (NIfTI) into ``out``.

    Patients ``001 .. patients`` of the phantom data set ``seed`` (default: the embedded default
    data set's seed and geometry, so the studies are the default data set's patients as volumes).
    The first ``labelled`` get their lesion label in ``labels/final`` (MONAI Label trains on
    those); the others are left for annotation.

    Raises:
        ValueError: on a bad count.
    """
    from cocoseg_monai.data.phantom import DEFAULT_DATASET, generate_patient, patient_id, write_study_nifti

    if patients < 1 or not 0 <= labelled <= patients:
        raise ValueError(f"need patients >= 1 and 0 <= labelled <= patients, got {patients} and {labelled}")
    config = DEFAULT_DATASET["config"]
    config = dataclasses.replace(config, size=size or config.size, slices=slices or config.slices)
    seed = DEFAULT_DATASET["seed"] if seed is None else seed
    log = log or (lambda _msg: None)
    out = Path(out)
    t0 = time.perf_counter()
    for i in range(patients):
        study = generate_patient(i, seed, config)
        name = f"patient_{patient_id(i)}.nii.gz"
        label = out / LABEL_FOLDER / name if i < labelled else None
        write_study_nifti(study, out / name, out / PET_FOLDER / name, label)
        log(f"{name}: CT, PET{', label' if label else ''} [{time.perf_counter() - t0:.1f} s]")
    return out
