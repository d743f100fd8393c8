"""The data a training run uses: given folder, or the embedded default phantoms; its split file."""

from __future__ import annotations

import json
import types

import pytest

from cocoseg_monai.data import DataError, prepare_training_data
from cocoseg_monai.data import phantom
from cocoseg_monai.data.phantom import PhantomConfig


@pytest.fixture
def small_default(monkeypatch):
    small = types.MappingProxyType(
        {"patients": 5, "seed": 11, "format": "png", "config": PhantomConfig(size=32, slices=3)}
    )
    monkeypatch.setattr(phantom, "DEFAULT_DATASET", small)


def test_no_dataset_dir_generates_the_default_set_and_writes_the_split(tmp_path, small_default):
    data = prepare_training_data("", tmp_path / "logs", default_data_dir=tmp_path / "default", val_ratio=0.2,
                                 test_ratio=0.2)
    assert (tmp_path / "default" / "phantom.json").is_file()
    saved = json.loads((tmp_path / "logs" / "datalist.json").read_text())
    assert len(saved["training"]) == len(data["training"]) > 0 and data["image_format"] == "png"
    patients = [{i["patient"] for i in data[k]} for k in ("training", "validation", "test")]
    assert not (patients[0] & patients[1]) and not (patients[0] & patients[2]) and not (patients[1] & patients[2])


def test_empty_dataset_dir_gets_the_default_set(tmp_path, small_default):
    root = tmp_path / "mine"
    root.mkdir()
    prepare_training_data(str(root), tmp_path / "logs", val_ratio=0.2, test_ratio=0.0)
    assert (root / "CT").is_dir() and (root / "phantom.json").is_file()


def test_missing_dataset_dir_is_an_error_naming_it(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        prepare_training_data(str(tmp_path / "nowhere"), tmp_path / "logs")


def test_missing_dataset_dir_is_an_error_even_where_a_saved_split_would_be_reused(tmp_path, small_default):
    prepare_training_data("", tmp_path / "logs", default_data_dir=tmp_path / "d")
    with pytest.raises(DataError, match=r"^dataset_dir .*dataset does not exist \(an empty dataset_dir means"):
        prepare_training_data(str(tmp_path / "dataset"), tmp_path / "logs", reuse_split=True)


def test_resume_reuses_the_saved_split(tmp_path, small_default):
    first = prepare_training_data("", tmp_path / "logs", default_data_dir=tmp_path / "d", seed=1)
    again = prepare_training_data("", tmp_path / "logs", default_data_dir=tmp_path / "d", seed=2, reuse_split=True)
    assert [i["image"] for i in again["validation"]] == [i["image"] for i in first["validation"]]


def test_lesion_weighted_sampler_draws_lesion_items_more_often(tmp_path):
    import torch

    from cocoseg_monai.data import find_pairs, has_lesion, lesion_weighted_sampler
    from cocoseg_monai.data.phantom import write_dataset

    write_dataset(tmp_path, patients=3, seed=3, fmt="png", config=PhantomConfig(size=48, slices=6))
    items = find_pairs(tmp_path)
    lesion = [has_lesion(i["label"]) for i in items]
    assert 0 < sum(lesion) < len(items)
    assert lesion_weighted_sampler(items, 1.0) is None  # plain shuffling
    sampler = lesion_weighted_sampler(items, 4.0)
    assert len(sampler) == len(items)
    torch.manual_seed(0)
    draws = [i for _ in range(200) for i in sampler]
    share = sum(lesion[i] for i in draws) / len(draws)
    expected = 4 * sum(lesion) / (4 * sum(lesion) + len(items) - sum(lesion))
    assert abs(share - expected) < 0.03 and share > sum(lesion) / len(items)
    with pytest.raises(ValueError, match="lesion_weight must be > 0"):
        lesion_weighted_sampler(items, 0.0)
    broken = dict(items[0], label=str(tmp_path / "missing.png"))
    with pytest.raises(DataError, match="cannot read mask .*missing.png"):
        lesion_weighted_sampler([broken], 2.0)
