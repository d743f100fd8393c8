"""Speed benchmark: training steps, slice inference and whole volumes, against the machine's peak.

For each model: forward GFLOP per slice (``torch.utils.flop_counter``), inference slices per
second and achieved GFLOP/s under ``torch.inference_mode``, the same as a share of the measured
matrix-multiply peak of the machine, training step time and slices per second, seconds for a
``size x size x N`` volume through ``SliceInferer`` and peak memory. Each model is measured in a
fresh process, so its peak memory is its own.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from contextlib import nullcontext
from typing import Any

import torch

from ..allocator import keep_freed_memory as _keep_freed_memory
from ..networks import prefers_channels_last
from .inference import _cpu_name, _peak_rss_mb, benchmark_volume_inference
from .models import build_network, gflop_per_slice

__all__ = ["matmul_peak_gflops", "measure_model", "run_speed", "format_speed", "profile_model"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, bf16: bool):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)  # AMP, as training on CUDA uses
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()


def _timed(fn, device: torch.device, min_seconds: float, min_repeats: int = 2) -> float:
    """Seconds per call of ``fn`` after one warm-up call."""
    fn()
    _sync(device)
    n, start = 0, time.perf_counter()
    while n < min_repeats or time.perf_counter() - start < min_seconds:
        fn()
        n += 1
    _sync(device)
    return (time.perf_counter() - start) / n


def matmul_peak_gflops(device: str = "cpu", dtype: torch.dtype = torch.float32, n: int = 2048,
                       min_seconds: float = 2.0) -> float:
    """Measured ``n x n`` matrix-multiply rate, GFLOP/s: the practical peak of the machine."""
    dev = torch.device(device)
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    with torch.inference_mode():
        seconds = _timed(lambda: a @ b, dev, min_seconds)
    return 2 * n**3 / seconds / 1e9


def measure_model(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """All figures of one model (run in a fresh process by :func:`run_speed`)."""
    dev = torch.device(settings["device"])
    kept = dev.type == "cpu" and settings.get("keep_freed_memory", "on") == "on" and _keep_freed_memory()
    torch.manual_seed(0)
    toy, bf16, size = settings["toy"], settings["bf16"], settings["size"]
    features = settings.get("features")
    net = build_network(name, toy=toy, features=features).to(dev)
    gflop = gflop_per_slice(name, size, toy=toy, features=features)
    r: dict[str, Any] = {"model": name, "gflop_per_slice": round(gflop, 4),
                         "parameters_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 3),
                         "keep_freed_memory": kept}  # fmt: skip

    # inference on whole slices
    layout = settings.get("channels_last", "auto")
    channels_last = prefers_channels_last(net, dev) if layout == "auto" else layout == "on"
    r["channels_last"] = channels_last
    net = net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)  # inputs stay NCHW
    net.eval()
    x = torch.rand(settings["infer_batch"], 2, size, size, device=dev)
    infer_net = net
    if settings.get("compile"):
        infer_net = torch.compile(infer_net)
    grad_mode = torch.no_grad() if settings.get("no_grad") else torch.inference_mode()
    with grad_mode, _autocast(dev, bf16):
        seconds = _timed(lambda: infer_net(x), dev, settings["min_seconds"])
    r["infer_slices_per_s"] = round(settings["infer_batch"] / seconds, 3)
    r["infer_gflops"] = float(f"{gflop * r['infer_slices_per_s']:.4g}")
    r["infer_peak_gflops"] = _peak_beside(settings)

    # training steps on patches
    net.train()
    patch, batch = settings["train_patch"], settings["train_batch"]
    step = _training_step(net, batch, patch, dev, bf16)
    seconds = _timed(step, dev, settings["min_seconds"])
    r["train_step_s"] = round(seconds, 4)
    r["train_slices_per_s"] = round(batch / seconds, 2)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:  # forward and backward of one step (frozen parts: forward only)
        step()
    r["train_gflop_per_step"] = round(counter.get_total_flops() / 1e9, 3)
    r["train_gflops"] = float(f"{r['train_gflop_per_step'] / seconds:.4g}")
    r["train_peak_gflops"] = _peak_beside(settings)

    # a whole volume
    if settings["volume_slices"] > 0:
        v = benchmark_volume_inference(size=size, slices=settings["volume_slices"], slice_batch=settings["infer_batch"],
                                       device=settings["device"], bf16=bf16 and dev.type == "cpu", network=net.eval())  # fmt: skip
        r["volume_s"] = v["seconds_per_volume"]
    r["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    if dev.type == "cuda":
        r["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    return r


def _peak_dtype(settings: dict[str, Any]) -> torch.dtype:
    """The matmul type the shares are taken against: the one the timed computation runs in."""
    if not settings["bf16"]:
        return torch.float32
    return torch.float16 if torch.device(settings["device"]).type == "cuda" else torch.bfloat16


def _peak_beside(settings: dict[str, Any]) -> float:
    """The matmul rate measured right after a timing, in the same process: a machine shared with
    others changes speed by a quarter within minutes, so a share is taken against the rate of
    the moment (4 significant digits, as the shares)."""
    peak = matmul_peak_gflops(settings["device"], _peak_dtype(settings), n=settings.get("matmul_n", 2048),
                              min_seconds=settings["min_seconds"])  # fmt: skip
    return float(f"{peak:.4g}")


def _training_step(net: torch.nn.Module, batch: int, patch: int, dev: torch.device, bf16: bool):
    """One optimiser step of the main job's kind (combined loss, AdamW) as a closure."""
    from ..losses import build_loss

    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = build_loss("combined")
    x = torch.rand(batch, 2, patch, patch, device=dev)
    y = (torch.rand(batch, 1, patch, patch, device=dev) > 0.95).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(dev, bf16):
            loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()

    return step


def profile_model(name: str, size: int, device: str = "cpu", bf16: bool = False, toy: bool = False, rows: int = 12,
                  train: bool = False, batch: int = 8, features: list[int] | None = None,
                  channels_last: str = "auto", keep_freed_memory: bool = True, onednn: bool = False) -> str:  # fmt: skip
    """Where one forward pass (or, with ``train``, one training step of ``batch`` patches of
    ``size``) spends its time: the top operators by self time, and with ``onednn`` oneDNN's own
    time per primitive (convolutions by direction, and the reorders between memory formats).
    ``keep_freed_memory`` applies :func:`cocoseg_monai.allocator.keep_freed_memory` to this process
    on the CPU, as the bundles do."""
    from torch.profiler import ProfilerActivity, profile

    dev = torch.device(device)
    if keep_freed_memory and dev.type == "cpu":
        _keep_freed_memory()
    net = build_network(name, toy=toy, features=features).to(dev)
    layout = prefers_channels_last(net, dev) if channels_last == "auto" else channels_last == "on"
    net = net.to(memory_format=torch.channels_last if layout else torch.contiguous_format)
    if train:
        run = _training_step(net.train(), batch, size, dev, bf16)
    else:
        x = torch.rand(1, 2, size, size, device=dev)
        net.eval()

        def run() -> None:
            with torch.inference_mode(), _autocast(dev, bf16):
                net(x)

    run()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        run()
        _sync(dev)
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    what = f"{'training step' if train else 'forward pass'}, {'channels_last' if layout else 'NCHW'}"
    text = f"{name} {what}\n" + prof.key_averages().table(sort_by=key, row_limit=rows)
    if onednn and dev.type == "cpu":
        text += "\n" + _onednn_table(run)
    return text


def _onednn_table(run) -> str:
    """oneDNN's verbose log of ``run()``, summed per primitive kind, implementation and direction."""
    import ctypes
    import os
    import tempfile
    from collections import Counter

    libc = ctypes.CDLL(None)
    with tempfile.TemporaryFile(mode="w+") as log:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(log.fileno(), 1)  # oneDNN prints to the C stdout
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                run()
        finally:
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        lines = log.read().splitlines()
    ms: Counter = Counter()
    calls: Counter = Counter()
    for line in lines:
        fields = line.split(",")
        if not line.startswith("onednn_verbose") or "exec" not in fields:
            continue
        i = fields.index("exec")
        key = (fields[i + 2], fields[i + 3], fields[i + 4])  # kind, implementation, direction
        ms[key] += float(fields[-1])
        calls[key] += 1
    total = sum(ms.values()) or 1.0
    out = ["| oneDNN primitive | implementation | direction | calls | ms | share |", "|---|---|---|---|---|---|"]
    out += [f"| {k[0]} | {k[1]} | {k[2]} | {calls[k]} | {v:.1f} | {100 * v / total:.0f} % |" for k, v in ms.most_common()]
    return "\n".join(out)


def run_speed(models: list[str], settings: dict[str, Any]) -> dict[str, Any]:
    """Measure the matmul peak and each model (each in a fresh process)."""
    dev = torch.device(settings["device"])
    dtype = _peak_dtype(settings)
    peak = matmul_peak_gflops(settings["device"], dtype, n=settings["matmul_n"], min_seconds=settings["min_seconds"])
    ctx = multiprocessing.get_context("spawn")
    rows = []
    for name in models:
        with ctx.Pool(1) as pool:
            rows.append(pool.apply(measure_model, (name, settings)))
    for r in rows:  # 4 significant digits
        r["infer_share_of_peak"] = float(f"{r['infer_gflops'] / r['infer_peak_gflops']:.4g}")
        r["train_share_of_peak"] = float(f"{r['train_gflops'] / r['train_peak_gflops']:.4g}")
    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "settings": settings,
        "matmul_peak_gflops": float(f"{peak:.4g}"),  # 4 significant digits, as the shares: they agree
        "matmul_dtype": str(dtype).replace("torch.", ""),
        "models": rows,
    }


def format_speed(result: dict[str, Any]) -> str:
    s = result["settings"]
    vol = f"volume {s['size']}x{s['size']}x{s['volume_slices']} s" if s["volume_slices"] > 0 else "volume s"
    variant = "".join(f", {k}" for k in ("compile", "no_grad") if s.get(k))
    if s.get("keep_freed_memory") == "off":
        variant += ", freed memory returned to the system"
    lines = [
        f"{result['device']} ({result['threads']} threads), torch {result['torch']}, "
        f"{'bf16 autocast' if s['bf16'] else 'fp32'}{variant}; measured {result['matmul_dtype']} matmul peak "
        f"{result['matmul_peak_gflops']:.0f} GFLOP/s at the start; each share is of the peak measured right "
        "after its timing (in parentheses)",
        "",
        f"| model | layout | params (M) | GFLOP / {s['size']}^2 slice | infer slices/s (batch {s['infer_batch']}) | "
        "infer GFLOP/s | "
        f"share of matmul peak | train step s ({s['train_batch']}x{s['train_patch']}^2) | train slices/s | "
        f"train GFLOP/s | train share of peak | {vol} | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["models"]:
        layout = "channels_last" if r.get("channels_last") else "NCHW"
        lines.append(
            f"| {r['model']} | {layout} | {r['parameters_m']:.2f} | {r['gflop_per_slice']:.1f} | {r['infer_slices_per_s']:.2f} | "
            f"{r['infer_gflops']:.0f} | {100 * r['infer_share_of_peak']:.0f} % ({r['infer_peak_gflops']:.0f}) | "
            f"{r['train_step_s']:.3f} | {r['train_slices_per_s']:.1f} | {r['train_gflops']:.0f} | "
            f"{100 * r['train_share_of_peak']:.0f} % ({r['train_peak_gflops']:.0f}) | "
            f"{r.get('volume_s', float('nan')):.1f} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)
