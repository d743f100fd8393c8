"""The benchmark commands run at toy sizes (their figures are printed, not asserted)."""

from __future__ import annotations

import json

from cocoseg_monai.bench.inference import main

from .conftest import TINY_FEATURES


def test_volume_inference_benchmark_prints_and_writes_its_figures(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--size", "32", "--slices", "3", "--slice_batch", "2", "--features", *map(str, TINY_FEATURES),
            "--device", "cpu", "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    figures = json.loads(out.read_text())
    assert figures["slices"] == 3 and figures["size"] == 32
    assert figures["seconds_per_volume"] > 0 and figures["slices_per_second"] > 0 and figures["peak_rss_mb"] > 0
    assert "slices/s" in printed and "peak RSS" in printed
