"""Synthetic PET/CT torso phantoms with lesions: the project's embedded default data set.

No real patient data can be shipped, so this module draws plausible whole-torso CT (HU) and
PET (SUV) studies with labelled lesions, reproducible from a seed.  Run it as::

    python -m cocoseg_monai.data.phantom --out DIR --patients N --seed S --format png|nifti|both|dicom \
        [--size PIXELS] [--fov MM] [--slices N] [--lesion-free-fraction F] [--include-head] [--preview PNG]

Anatomy
-------
An elliptical torso whose cross-section varies smoothly along z, with subcutaneous fat, muscle,
lungs and mediastinum at the top of the volume, heart and aorta, liver, spleen and kidneys in the
middle, bowel, psoas, pelvic bones and bladder at the bottom, a spine with cortical shell all the
way up, ribs and sternum around the chest.  ``include_head`` adds a neck and a head (skull, brain)
at the very top.  The whole torso (pelvis to lung apex, about 600 mm) is always drawn into the
volume's z extent, so with few slices the anatomy is compressed along z; organs keep their true
in-plane size.  Lesions, the PET blur and all spacings are physical (mm).

Lesions sit in the lung, the liver, bone (vertebral bodies, pelvis) and lymph-node positions
(mediastinal, para-aortic, axillary).  They are unions of 1-3 ellipsoids whose surface is perturbed
by low-frequency noise, 5-50 mm across, with intended SUVmax 3-20 (some deliberately small and
faint) and a CT correlate (solid nodule, hypodense liver lesion, sclerotic or lytic bone, soft
tissue node).  A fraction of the patients (``lesion_free_fraction``) has no lesion at all.

PET physics: ideal SUV at CT resolution -> Poisson counts -> Gaussian blur (``pet_fwhm_mm``) ->
trilinear sampling onto the coarse PET grid (the NIfTI PET) -> trilinear sampling back onto the
CT grid (the PNG PET and :attr:`PhantomStudy.pet_suv`), as PNG data sets made from real PET are.
CT: tissue HU + texture + Gaussian noise (10 to 20 HU on the default 3.9 mm grid, more per voxel on
finer grids: one over the square root of the pixel area), rounded to integer HU and clipped to
[-1024, 3071].

Grids and orientation
---------------------
Arrays are indexed ``(x, y, z)`` in RAS+: x to the patient's left, y anterior, z superior; axial
slices along the last axis.  Affines are ``diag(spacing)`` with the FOV centred on the world
origin.  CT: in-plane ``fov_mm / size`` (500 / 256 = 1.95 mm), ``slice_thickness_mm`` (3 mm).
PET: per axis ``max(pet_spacing_mm, 1.5 * CT spacing)`` rounded up so a whole number of voxels
spans exactly the CT extent; both grids cover the same physical box.

Output layout (a contract with the rest of the project)
-------------------------------------------------------
* ``--format png``: ``DIR/{CT,PET,masks}/patient_{ID}_slice_{num}.png``, identical names in the
  three folders, ``ID`` the 1-based patient number zero-padded to 3 digits, ``num`` the 1-based
  slice number zero-padded to 4 digits; ``slice_0001`` is z index 0, the most inferior slice.
  PNGs are on the CT grid.  Each slice is stored in radiological display orientation: read back
  as ``np.asarray(Image.open(p))`` ``(rows, cols)``, row 0 is the most anterior row and column 0
  the patient's right (:func:`to_display`, :func:`from_display`).
* ``--format nifti``: ``DIR/{CT,PET,masks}/patient_{ID}.nii.gz``: CT int16 HU and mask uint8 on
  the CT grid, PET float32 SUV on the coarse PET grid.
* ``--format both``: ``DIR/png/...`` and ``DIR/nifti/...`` as above.
* ``--format dicom``: one folder per patient, ``DIR/dicom/patient_{ID}/``, as a PET/CT scanner
  would deliver the study (:func:`write_study_dicom`): ``CT/CT_{num}.dcm`` and ``PET/PT_{num}.dcm``,
  single-frame series of one study and frame of reference, the PET in Bq/ml; beside them
  ``dicom.json`` (UIDs, patient weight, dose, times and the SUV -> Bq/ml factor), ``label.nii.gz``
  (the mask, uint8, on the CT grid) and, to compare a DICOM reader against, the phantom's own
  ``ct.nii.gz`` and ``pet.nii.gz`` as ``--format nifti`` writes them.
* ``DIR/phantom.json``: generator parameters and, per patient, its lesions (site, diameter,
  intended and measured SUVmax, ...).

PNG intensity encoding
----------------------
* CT: 16-bit unsigned, ``value = clip(round(HU + CT_PNG_OFFSET), 0, 65535)``, ``CT_PNG_OFFSET = 1024``.
* PET: 16-bit unsigned, ``value = clip(round(SUV * PET_PNG_SCALE), 0, 65535)``,
  ``PET_PNG_SCALE = 1000.0`` (0.001 SUV per unit, at most 65.535 SUV).
* masks: 8-bit, 0 background, 255 lesion.

``round`` is :func:`numpy.rint`. These rules, the slice names and the display orientation are
the project's, written once in :mod:`cocoseg_monai.conventions`.  Every file is written
atomically; files of other names already in ``DIR`` are never deleted.

Code layout
-----------
One job per module; this package re-exports the public API.

* :mod:`.config`: :class:`PhantomConfig`, the generator version, lesion sites, reference grid,
  :data:`DEFAULT_DATASET` and :func:`patient_id`.
* :mod:`.numerics`: resampling, Gaussian blur, smooth random fields, dilation (numpy only).
* :mod:`.anatomy`: the :class:`Tissue` labels and the painting of the tissue map.
* :mod:`.physics`: tissue HU and SUV with texture, the PET chain and the CT noise.
* :mod:`.lesions`: lesion-free patients, lesion sites, shapes, uptake and CT look.
* :mod:`.generate`: :class:`PhantomStudy` and :func:`generate_patient`.
* :mod:`.dicom_study`: :func:`write_study_dicom`, a study as a scanner's CT and PET series.
* :mod:`.writing`: the PNG and NIfTI study writers, :func:`write_dataset` and
  :func:`make_default_dataset`.
* :mod:`.preview`: :func:`save_preview`, a contact sheet of one slice.
* :mod:`.cli` and ``__main__``: the command line.
"""

from __future__ import annotations

from .anatomy import Tissue
from .cli import main
from .config import (
    CT_HU_RANGE,
    DEFAULT_DATASET,
    LESION_SITES,
    PET_SUV_MAX,
    PHANTOM_VERSION,
    PhantomConfig,
    patient_id,
)
from .dicom_study import write_study_dicom
from .generate import PhantomStudy, generate_patient
from .lesions import is_lesion_free
from .preview import save_preview
from .writing import make_default_dataset, write_dataset, write_study_nifti

__all__ = [
    "CT_HU_RANGE",
    "PET_SUV_MAX",
    "PHANTOM_VERSION",
    "LESION_SITES",
    "Tissue",
    "PhantomConfig",
    "PhantomStudy",
    "DEFAULT_DATASET",
    "generate_patient",
    "is_lesion_free",
    "write_dataset",
    "write_study_nifti",
    "write_study_dicom",
    "make_default_dataset",
    "save_preview",
    "patient_id",
    "main",
]
