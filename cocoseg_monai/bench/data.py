"""Data pipeline benchmark: training samples per second from the loader, with and without caching.

The training transforms of ``train.yaml`` (loading, intensity scaling, lesion / hard-negative /
background sampling, augmentation) over the training split, through MONAI's ``Dataset`` (every
sample loaded and transformed afresh) and ``CacheDataset`` (deterministic transforms cached, the
random ones run per sample), next to the training step rate of a model: the loader is not the
bottleneck while it delivers more samples per second than the step consumes.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

__all__ = ["run_data", "format_data"]


def _loader_rate(dataset, batch_size: int, num_workers: int, max_batches: int) -> tuple[float, int]:
    from monai.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers)
    n, batches, start = 0, 0, time.perf_counter()
    for batch in loader:
        n += batch["image"].shape[0]
        batches += 1
        if batches >= max_batches:
            break
    return n / (time.perf_counter() - start), n


def run_data(
    dataset_dir: str = "",
    patch_size: int = 128,
    num_samples: int = 1,
    batch_size: int = 8,
    num_workers: int = 2,
    max_batches: int = 40,
    model: str | None = "cocoseg",
    bf16: bool = False,
    toy: bool = False,
) -> dict[str, Any]:
    """Loader throughput (samples/s) with ``Dataset`` and ``CacheDataset``, and the step rate of ``model``."""
    from monai.data import CacheDataset, Dataset

    from ..data import prepare_training_data
    from ..transforms import get_train_transforms

    with tempfile.TemporaryDirectory() as logdir:
        data = prepare_training_data(dataset_dir or None, logdir, default_data_dir="./data/cocoseg_phantom")
    transform = get_train_transforms(data["image_format"], patch_size=(patch_size, patch_size), num_samples=num_samples,
                                     pos=1.0, hot=0.5, neg=0.5)  # fmt: skip
    items = data["training"]
    result: dict[str, Any] = {"items": len(items), "image_format": data["image_format"], "patch_size": patch_size,
                              "batch_size": batch_size, "num_workers": num_workers}  # fmt: skip
    rate, n = _loader_rate(Dataset(items, transform), batch_size, num_workers, max_batches)
    result["dataset_samples_per_s"] = round(rate, 1)
    start = time.perf_counter()
    cached = CacheDataset(items, transform, cache_rate=1.0, num_workers=num_workers, progress=False)
    result["cache_fill_s"] = round(time.perf_counter() - start, 2)
    rate, _ = _loader_rate(cached, batch_size, num_workers, max_batches)
    result["cache_dataset_samples_per_s"] = round(rate, 1)
    result["samples_measured"] = n
    if model:
        from .speed import measure_model

        settings = {"device": "cpu", "toy": toy, "bf16": bf16, "size": patch_size, "infer_batch": 1,
                    "train_patch": patch_size, "train_batch": batch_size, "volume_slices": 0, "min_seconds": 2.0}  # fmt: skip
        result["model"] = model
        result["train_slices_per_s"] = measure_model(model, settings)["train_slices_per_s"]
    return result


def format_data(r: dict[str, Any]) -> str:
    lines = [
        f"{r['items']} training items ({r['image_format']}), patch {r['patch_size']}^2, batch {r['batch_size']}, "
        f"{r['num_workers']} workers",
        "",
        "| pipeline | samples/s |",
        "|---|---|",
        f"| Dataset (load + transform every sample) | {r['dataset_samples_per_s']:.1f} |",
        f"| CacheDataset (cache filled in {r['cache_fill_s']:.1f} s) | {r['cache_dataset_samples_per_s']:.1f} |",
    ]
    if "train_slices_per_s" in r:
        lines.append(f"| training step of {r['model']} (consumes) | {r['train_slices_per_s']:.1f} |")
    return "\n".join(lines)

