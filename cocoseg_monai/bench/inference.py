"""Volume inference benchmark: seconds per volume, slices per second, peak memory.

``python -m cocoseg_monai.bench.inference --size 512 --slices 32`` times the inference path of
``bundle/configs/inference.yaml`` on a synthetic ``size x size x slices`` CT/PET pair: MONAI's
``SliceInferer`` over the axial slices, ``--slice_batch`` at a time, softmax and argmax. The
network weights are random (speed does not depend on them). One warm-up volume is run first.
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from collections.abc import Sequence

import torch

__all__ = ["benchmark_volume_inference", "main"]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux, bytes on macOS
    scale = 1 / 1024 if platform.system() != "Darwin" else 1 / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def benchmark_volume_inference(
    size: int = 512,
    slices: int = 32,
    slice_batch: int = 8,
    features: Sequence[int] = (32, 64, 128, 256),
    device: str = "cpu",
    bf16: bool = False,
    repeats: int = 1,
    network: torch.nn.Module | None = None,
) -> dict:
    """Time whole-volume inference; returns the figures as a dict (also what ``main`` prints).

    ``network``: any 2D two-channel network, run as given (default: ``CoCoSegNet(features=features)``
    in the bundle's memory format, :func:`~cocoseg_monai.networks.prefers_channels_last`)."""
    from monai.inferers import SliceInferer

    from ..inferers import AutocastInferer
    from ..networks import CoCoSegNet, prefers_channels_last

    dev = torch.device(device)
    cocoseg = network is None
    if cocoseg:
        network = CoCoSegNet(features=tuple(features))
        if prefers_channels_last(network, dev):
            network = network.to(memory_format=torch.channels_last)
    net = network.to(dev).eval()
    inferer = AutocastInferer(
        SliceInferer(spatial_dim=2, roi_size=(-1, -1), sw_batch_size=slice_batch, progress=False),
        device_type=dev.type,
        dtype=torch.bfloat16,
        enabled=bf16,
    )
    volume = torch.rand(1, 2, size, size, slices, device=dev)

    def run() -> None:
        with torch.inference_mode():
            inferer(volume, net).softmax(1).argmax(1)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    seconds = (time.perf_counter() - start) / repeats
    result = {
        "size": size,
        "slices": slices,
        "slice_batch": slice_batch,
        "features": list(features) if cocoseg else None,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "bf16": bf16,
        "seconds_per_volume": round(seconds, 3),
        "slices_per_second": round(slices / seconds, 3),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }
    if dev.type == "cuda":
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cocoseg_monai.bench.inference", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--slices", type=int, default=32)
    p.add_argument("--slice_batch", type=int, default=8)
    p.add_argument("--features", type=int, nargs=4, default=(32, 64, 128, 256))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--keep_freed_memory", default="on", choices=("on", "off"),
                   help="on the CPU, glibc keeps freed blocks for reuse, as the bundles do (cocoseg_monai.allocator)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    for name in ("size", "slices", "slice_batch", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    kept = False
    if args.keep_freed_memory == "on" and torch.device(args.device).type == "cpu":
        from ..allocator import keep_freed_memory

        kept = keep_freed_memory()
    r = benchmark_volume_inference(
        args.size, args.slices, args.slice_batch, args.features, args.device, args.bf16, args.repeats
    )
    r["keep_freed_memory"] = kept
    print(f"volume {r['size']}x{r['size']}x{r['slices']}, slice batch {r['slice_batch']}, features {r['features']}, "
          f"{r['device']} ({r['threads']} threads){', bf16' if r['bf16'] else ''}"
          f"{', freed memory kept' if kept else ''}")
    print(f"  {r['seconds_per_volume']:.2f} s per volume, {r['slices_per_second']:.2f} slices/s, "
          f"peak RSS {r['peak_rss_mb']:.0f} MB" + (f", peak GPU {r['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in r else ""))
    from . import write_result

    write_result(args.json, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
