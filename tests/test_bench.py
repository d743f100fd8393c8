"""The benchmark commands run at toy sizes (their figures are printed, not asserted)."""

from __future__ import annotations

import csv
import json
import platform

import pytest

from cocoseg_monai.bench.inference import main

from .conftest import TINY_FEATURES

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_volume_inference_benchmark_prints_and_writes_its_figures(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--size", "32", "--slices", "3", "--slice_batch", "2", "--features", *map(str, TINY_FEATURES),
            "--device", "cpu", "--keep_freed_memory", "off", "--json", str(out)]  # off: this process is pytest's
    assert main(argv) == 0
    printed = capsys.readouterr().out
    figures = json.loads(out.read_text())
    assert figures["keep_freed_memory"] is False and "freed memory kept" not in printed
    assert figures["slices"] == 3 and figures["size"] == 32 and figures["features"] == list(TINY_FEATURES)
    assert figures["seconds_per_volume"] > 0 and figures["slices_per_second"] > 0 and figures["peak_rss_mb"] > 0
    assert "slices/s" in printed and "peak RSS" in printed and f"features {list(TINY_FEATURES)}" in printed


def test_efficient_preset_has_at_least_3x_fewer_flops_than_cocoseg_v2():
    from cocoseg_monai.bench.models import gflop_per_slice

    v2, efficient = gflop_per_slice("cocoseg", 512), gflop_per_slice("cocoseg_efficient", 512)
    assert v2 == pytest.approx(480.9, abs=0.1)  # the published architecture's count
    assert v2 / efficient >= 3.0


def test_speed_benchmark_prints_rates_against_the_matmul_peak(tmp_path, capsys):
    from cocoseg_monai.bench.__main__ import main as bench

    out = tmp_path / "speed.json"
    argv = ["speed", "--toy", "--models", "cocoseg,basicunet", "--size", "32", "--train_patch", "32",
            "--train_batch", "2", "--volume_slices", "2", "--min_seconds", "0.05", "--matmul_n", "128",
            "--json", str(out)]
    assert bench(argv) == 0
    figures = json.loads(out.read_text())
    assert figures["matmul_peak_gflops"] > 0
    assert [m["model"] for m in figures["models"]] == ["cocoseg", "basicunet"]
    # the bundle's layout on the CPU: channels_last for CoCoSeg, NCHW for MONAI's networks
    assert [m["channels_last"] for m in figures["models"]] == [True, False]
    # and its allocator: freed blocks kept for reuse (each model runs in its own process)
    assert [m["keep_freed_memory"] for m in figures["models"]] == [GLIBC, GLIBC]
    for m in figures["models"]:
        assert m["gflop_per_slice"] > 0 and m["infer_slices_per_s"] > 0 and m["train_slices_per_s"] > 0
        # each share against the rate measured right after its timing, in the same process
        assert m["infer_peak_gflops"] > 0 and m["train_peak_gflops"] > 0
        assert m["infer_share_of_peak"] == pytest.approx(m["infer_gflops"] / m["infer_peak_gflops"], rel=1e-3)
        assert m["train_share_of_peak"] == pytest.approx(m["train_gflops"] / m["train_peak_gflops"], rel=1e-3)
        assert m["volume_s"] > 0 and m["peak_rss_mb"] > 0
    assert "share of matmul peak" in capsys.readouterr().out
    assert bench([*argv[:-2], "--models", "basicunet", "--channels_last", "on", "--keep_freed_memory", "off",
                  "--json", str(out)]) == 0  # fmt: skip
    figures = json.loads(out.read_text())["models"][0]
    assert figures["channels_last"] is True and figures["keep_freed_memory"] is False
    assert "freed memory returned to the system" in capsys.readouterr().out


def test_data_benchmark_compares_loaders_with_the_training_step(tmp_path, capsys):
    from cocoseg_monai.bench.__main__ import main as bench
    from cocoseg_monai.data.phantom import PhantomConfig, write_dataset

    write_dataset(tmp_path / "data", patients=4, seed=1, config=PhantomConfig(size=32, slices=3))
    out = tmp_path / "data.json"
    argv = ["data", "--dataset_dir", str(tmp_path / "data"), "--patch_size", "32", "--batch_size", "2",
            "--num_workers", "0", "--max_batches", "3", "--toy", "--json", str(out)]
    assert bench(argv) == 0
    figures = json.loads(out.read_text())
    assert figures["dataset_samples_per_s"] > 0 and figures["cache_dataset_samples_per_s"] > 0
    assert figures["samples_measured"] == 6 and figures["train_slices_per_s"] > 0
    assert "CacheDataset" in capsys.readouterr().out


def test_accuracy_benchmark_trains_peers_alike_and_scores_them_with_the_baselines(tmp_path, capsys):
    from cocoseg_monai.bench.__main__ import main as bench

    assert bench(["accuracy", "--budget", "toy", "--models", "cocoseg,segresnet", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "accuracy.json").read_text())
    assert list(result["models"]) == ["cocoseg", "segresnet"] and set(result["baselines"]) == {"suv2.5", "suv4.0", "suvmax41"}
    for name, r in result["models"].items():
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["epoch"] == 1 and config["loss_type"] == "combined" and config["random_seed"] == 42
        # the test Dice is the mean of the per-case Dice of the lesion cases in the evaluation's table
        rows = list(csv.DictReader((tmp_path / name / "eval" / "cocoseg_cases.csv").open()))
        lesion_dice = [float(row["dice"]) for row in rows if row["has_lesion"] == "True"]
        assert lesion_dice and r["test"]["lesion_cases"]["dice"]["mean"] == pytest.approx(sum(lesion_dice) / len(lesion_dice))
    # same split for every model
    splits = [json.loads((tmp_path / n / "datalist.json").read_text())["test"] for n in result["models"]]
    assert splits[0] == splits[1] and splits[0]
    assert "| segresnet |" in capsys.readouterr().out


def test_profile_names_the_operators_of_a_forward_pass(capsys):
    from cocoseg_monai.bench.__main__ import main as bench

    assert bench(["profile", "--toy", "--size", "32", "--rows", "5"]) == 0
    assert "aten::" in capsys.readouterr().out


def test_profile_of_a_training_step_sums_onednn_time_per_primitive(capsys):
    from cocoseg_monai.bench.__main__ import main as bench

    assert bench(["profile", "--toy", "--size", "32", "--rows", "40", "--train", "--batch", "2", "--onednn"]) == 0
    out = capsys.readouterr().out
    assert "training step, channels_last" in out and "aten::convolution_backward" in out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| convolution |")]
    directions = {r[2] for r in rows}
    assert {"forward_training", "backward_data", "backward_weights"} <= directions, directions
    assert all(int(r[3]) > 0 for r in rows) and sum(float(r[4]) for r in rows) > 0


def test_resolution_benchmark_scores_a_run_on_other_grids_before_and_after_its_plan(tmp_path, capsys):
    import torch

    from cocoseg_monai.bench.resolution import benchmark_resolution, format_table
    from cocoseg_monai.networks import CoCoSegNet
    from cocoseg_monai.plan import make_plan, write_plan

    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    torch.save(CoCoSegNet(features=TINY_FEATURES).state_dict(), run / "models" / "model.pt")
    write_plan(run, make_plan(features=list(TINY_FEATURES), target_spacing=[12.0, 12.0], slice_size=[48, 48]))
    grids = (("40 @ 500 mm", 40, 500.0), ("80 @ 350 mm", 80, 350.0))
    result = benchmark_resolution(run, tmp_path / "out", patients=2, seed=4, grids=grids, slices=3, log=print)
    for name, size, fov in grids:
        row = result["grids"][name]
        assert row["spacing_mm"] == pytest.approx(fov / size, abs=1e-3)
        for mode in ("native", "plan", "unpadded"):
            dice = list(row[mode]["dice"].values())  # per case
            assert row[mode]["mean_dice"] == pytest.approx(sum(dice) / len(dice), abs=5e-5)  # rounded to 4 places
            assert row[mode]["seconds_per_study"] > 0
            assert len(row[mode]["dice"]) == row["cases_with_lesions"]
    table = format_table(result)
    assert "| 80 @ 350 mm | 4.375 |" in table and "Dice native" in table and "Dice plan" in table
    assert "mean per-case Dice" in capsys.readouterr().out
