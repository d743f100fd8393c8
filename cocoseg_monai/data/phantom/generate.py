"""The generation API: :func:`generate_patient` draws one patient from its seed into a
:class:`PhantomStudy`.

Each patient has its own random streams, one per stage (anatomy, intensities, lesions, CT noise,
PET noise), so a patient does not depend on how many are drawn, nor one stage on another.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .anatomy import Tissue, build_anatomy
from .config import REFERENCE_FOV_MM, REFERENCE_SIZE, PhantomConfig, patient_id
from .lesions import is_lesion_free, place_lesions
from .physics import ct_physics, ideal_images, pet_physics

__all__ = ["PhantomStudy", "generate_patient"]


@dataclass
class PhantomStudy:
    """One synthetic patient.

    Attributes
    ----------
    index
        0-based patient index; the files use :func:`patient_id` (``index + 1``, 3 digits).
    seed
        Data set seed the patient was drawn from.
    config
        The geometry and physics used.
    ct_hu
        float32 ``(x, y, z)`` CT in integer HU, on the CT grid.
    pet_suv
        float32 PET SUV resampled onto the CT grid (what the PNGs hold).
    pet_suv_coarse
        float32 PET SUV on the coarse PET grid (what the NIfTI holds).
    label
        uint8 lesion mask (0/1) on the CT grid.
    tissue
        uint8 :class:`Tissue` labels of the anatomy (lesions not included) on the CT grid.
    ct_affine, pet_affine
        RAS+ voxel-to-world affines (mm).
    lesions
        One dict per lesion: ``site``, ``location``, ``centre_mm``, ``diameter_mm``,
        ``suv_peak`` (intended), ``suv_max`` (measured on :attr:`pet_suv`), ``ct_hu``,
        ``ct_pattern``, ``voxels``, ``volume_ml``.
    """

    index: int
    seed: int
    config: PhantomConfig
    ct_hu: np.ndarray
    pet_suv: np.ndarray
    pet_suv_coarse: np.ndarray
    label: np.ndarray
    tissue: np.ndarray
    ct_affine: np.ndarray
    pet_affine: np.ndarray
    lesions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def patient_id(self) -> str:
        """File-name id, e.g. ``"001"``."""
        return patient_id(self.index)

    @property
    def lesion_free(self) -> bool:
        """True when the patient has no lesion."""
        return not self.lesions

    @property
    def body(self) -> np.ndarray:
        """Boolean body mask (everything but outside air) on the CT grid."""
        return self.tissue != Tissue.AIR

    def summary(self) -> dict[str, Any]:
        """JSON-ready record of the patient for ``phantom.json``."""
        return {
            "id": self.patient_id,
            "index": self.index,
            "lesion_free": self.lesion_free,
            "n_lesions": len(self.lesions),
            "lesion_slices": int(np.count_nonzero(self.label.any(axis=(0, 1)))),
            "lesions": self.lesions,
        }


def _patient_streams(seed: int, index: int, n: int) -> list[np.random.Generator]:
    """``n`` independent generators for patient ``index``.

    ``spawn_key=(index,)`` is what ``SeedSequence(seed).spawn(N)[index]`` gives, so patient k does
    not depend on how many patients are drawn; separate streams per stage keep, e.g., the anatomy
    of a patient unchanged when its lesions change.
    """
    patient = np.random.SeedSequence(entropy=seed, spawn_key=(index,))
    return [np.random.default_rng(s) for s in patient.spawn(n)]


def generate_patient(index: int, seed: int, config: PhantomConfig | None = None) -> PhantomStudy:
    """Draw one synthetic patient.

    Parameters
    ----------
    index
        0-based patient index (file id ``index + 1``).  Patient ``index`` of a ``seed`` is the
        same whatever the number of patients generated.
    seed
        Data set seed (non-negative integer).
    config
        Geometry and physics; :class:`PhantomConfig` defaults when ``None``.

    Returns
    -------
    PhantomStudy
        Byte-identical arrays for identical ``(index, seed, config)``.
    """
    config = PhantomConfig() if config is None else config
    if not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng_anat, rng_int, rng_les, rng_ct, rng_pet = _patient_streams(int(seed), int(index), 5)
    reference = dataclasses.replace(config, size=REFERENCE_SIZE, fov_mm=REFERENCE_FOV_MM)
    anatomy_stream = copy.deepcopy(rng_anat)  # the same body, drawn again on the reference grid if needed
    canvas = build_anatomy(config.ct_shape, config.ct_spacing, config.include_head, rng_anat)
    ref_canvas = canvas if reference == config else build_anatomy(
        reference.ct_shape, reference.ct_spacing, config.include_head, anatomy_stream
    )
    ct, pet = ideal_images(canvas.tissue, rng_int)
    if is_lesion_free(int(index), int(seed), config.lesion_free_fraction):
        label, lesions, masks = np.zeros(config.ct_shape, bool), [], []
    else:
        label, lesions, masks = place_lesions(canvas, ct, pet, config.ct_spacing, config, rng_les, ref_canvas, reference)
    pixel_area, reference_area = (float(np.prod(g.ct_spacing[:2])) for g in (config, reference))
    ct_hu = ct_physics(ct, rng_ct, config.ct_noise_hu, math.sqrt(reference_area / pixel_area))
    pet_suv, pet_coarse = pet_physics(pet, config, rng_pet)
    for rec, (box, mask) in zip(lesions, masks):
        rec["suv_max"] = round(float(pet_suv[box][mask].max()), 2)
    return PhantomStudy(
        index=int(index), seed=int(seed), config=config, ct_hu=ct_hu, pet_suv=pet_suv,
        pet_suv_coarse=pet_coarse, label=label.astype(np.uint8), tissue=canvas.tissue,
        ct_affine=config.ct_affine, pet_affine=config.pet_affine, lesions=lesions,
    )
