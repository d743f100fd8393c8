"""The MONAI Label datastore layout: preparing one from the phantoms, finding PET partners."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from cocoseg_monai.cli import main
from cocoseg_monai.data import DataError
from cocoseg_monai.label import LABEL_FOLDER, PET_FOLDER, pet_partner, prepare_datastore


def test_label_datastore_command_writes_ct_pet_partners_and_final_labels(tmp_path, capsys):
    assert main(["label-datastore", str(tmp_path), "--patients", "3", "--labelled", "2", "--size", "48", "--slices", "4"]) == 0
    cts = sorted(p.name for p in tmp_path.glob("*.nii.gz"))
    assert cts == ["patient_001.nii.gz", "patient_002.nii.gz", "patient_003.nii.gz"]
    assert sorted(p.name for p in (tmp_path / PET_FOLDER).iterdir()) == cts
    assert sorted(p.name for p in (tmp_path / LABEL_FOLDER).iterdir()) == cts[:2]
    ct = nib.load(tmp_path / cts[0])
    label = nib.load(tmp_path / LABEL_FOLDER / cts[0])
    pet = nib.load(tmp_path / PET_FOLDER / cts[0])
    assert ct.shape == label.shape == (48, 48, 4)
    assert np.allclose(ct.affine, label.affine)
    assert pet.shape != ct.shape  # PET on its own, coarser grid, as scanners write it
    assert "monailabel start_server --app apps/cocoseg" in capsys.readouterr().out


def test_label_datastore_refuses_more_labels_than_studies(tmp_path):
    with pytest.raises(SystemExit, match="labelled"):
        main(["label-datastore", str(tmp_path), "--patients", "2", "--labelled", "3"])


def test_pet_partner_is_found_by_file_name_and_its_absence_named(tmp_path):
    prepare_datastore(tmp_path, patients=1, labelled=0, size=32, slices=2)
    assert pet_partner(tmp_path / "patient_001.nii.gz") == tmp_path / PET_FOLDER / "patient_001.nii.gz"
    # the other NIfTI suffix is accepted
    (tmp_path / PET_FOLDER / "patient_001.nii.gz").rename(tmp_path / PET_FOLDER / "patient_001.nii")
    assert pet_partner(tmp_path / "patient_001.nii.gz").name == "patient_001.nii"
    (tmp_path / "lonely.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match=r"lonely.nii.gz has no PET partner: expected .*pet/lonely.nii.gz"):
        pet_partner(tmp_path / "lonely.nii.gz")
