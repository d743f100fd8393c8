"""End-to-end volume inference against MONAI's whole-body CT bundle, on the same study and machine.

``python -m cocoseg_monai.bench endtoend --size 512 --slices 64`` writes one phantom PET/CT study
(CT ``size x size x slices`` at 500 mm field of view, PET on its own coarser grid) and times,
each from the files to the written label:

- ``cocoseg``: ``bundle/configs/inference.yaml`` with the shipped weights and their plan (read,
  reorient, resample in-plane to the plan's spacing, PET onto that grid, the 2D network over the
  axial slices, probabilities back onto the CT grid, argmax, write);
- ``segresnet``: MONAI's SegResNet as the model zoo's ``wholeBody_ct_segmentation`` bundle
  configures it (3D, 32 initial filters, blocks (1, 2, 2, 4) down and (1, 1, 1) up, 105
  classes), with that bundle's inference steps (RAS, 1.5 mm isotropic, or 3 mm with
  ``--lowres``; intensity normalisation; sliding windows of 96^3 with overlap 0.25 and Gaussian
  weighting, one window at a time; softmax, argmax, back to the CT grid, write), random weights.

The MONAI bundle's own card gives 38 s on CPU and 6 s on GPU for a 512 x 512 x 397 CT. Each
pipeline runs once to warm up, then ``--repeats`` times, and the best time is reported (with
``--repeats 0``, the first run's), with the ratio ``segresnet / cocoseg`` (above 1: CoCoSeg is
faster).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import write_result

__all__ = ["run_endtoend", "main"]


def _study(folder: Path, size: int, slices: int) -> tuple[Path, Path]:
    from ..data.phantom import PhantomConfig, generate_patient, write_study_nifti

    study = generate_patient(1, seed=20241201, config=PhantomConfig(size=size, slices=slices))
    ct, pet = folder / "ct.nii.gz", folder / "pet.nii.gz"
    write_study_nifti(study, ct, pet)
    return ct, pet


def _cocoseg(ct: Path, pet: Path, out: Path, device: str, bf16: bool) -> None:
    from ..bundle import bundle_dir, config_path, run_bundle

    weights = bundle_dir() / "models" / "model.pt"
    run_bundle([config_path("inference"), weights.parent / "plan.yaml"], run_id="run", configure_logging=False,
               overrides={"ckpt_path": str(weights), "ct": str(ct), "pet": str(pet), "output_dir": str(out),
                          "device": f"$torch.device('{device}')", "cpu_bf16": bf16, "resume": False})  # fmt: skip


def _segresnet(ct: Path, out: Path, device: str, lowres: bool, network: torch.nn.Module) -> None:
    from monai.data import decollate_batch
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import (
        Activationsd, AsDiscreted, Compose, EnsureChannelFirstd, EnsureTyped, Invertd, LoadImaged,
        NormalizeIntensityd, Orientationd, SaveImaged, ScaleIntensityd, Spacingd,
    )  # fmt: skip

    pixdim = [3.0] * 3 if lowres else [1.5] * 3
    pre = Compose([
        LoadImaged("image"), EnsureTyped("image"), EnsureChannelFirstd("image"), Orientationd("image", axcodes="RAS"),
        Spacingd("image", pixdim=pixdim, mode="bilinear"), NormalizeIntensityd("image", nonzero=True),
        ScaleIntensityd("image", minv=-1.0, maxv=1.0),
    ])  # fmt: skip
    post = Compose([
        Activationsd("pred", softmax=True), AsDiscreted("pred", argmax=True),
        Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True, to_tensor=True),
        SaveImaged("pred", output_dir=str(out), output_postfix="trans", separate_folder=False, print_log=False),
    ])  # fmt: skip
    inferer = SlidingWindowInferer(roi_size=(96, 96, 96), sw_batch_size=1, overlap=0.25, padding_mode="replicate",
                                   mode="gaussian")  # fmt: skip
    item = pre({"image": str(ct)})
    dev = torch.device(device)
    with torch.inference_mode(), torch.autocast(dev.type, enabled=dev.type == "cuda"):  # the bundle's amp: true
        pred = inferer(item["image"][None].to(dev), network)
    item["pred"] = decollate_batch(pred.float().cpu())[0]
    post(item)


def run_endtoend(size: int = 512, slices: int = 64, device: str = "cpu", bf16: bool = False, lowres: bool = False,
                 repeats: int = 1) -> dict[str, Any]:
    """Time both pipelines on one phantom study; returns the figures."""
    from monai.networks.nets import SegResNet

    from .inference import _cpu_name

    torch.manual_seed(0)
    segresnet = SegResNet(spatial_dims=3, in_channels=1, out_channels=105, init_filters=32, blocks_down=(1, 2, 2, 4),
                          blocks_up=(1, 1, 1), dropout_prob=0.2).to(device).eval()  # fmt: skip
    result: dict[str, Any] = {"machine": _cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                              "device": device, "size": size, "slices": slices, "bf16": bf16,
                              "segresnet_spacing_mm": 3.0 if lowres else 1.5}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cocoseg_endtoend_") as tmp:
        ct, pet = _study(Path(tmp), size, slices)
        runs = {
            "cocoseg": lambda out: _cocoseg(ct, pet, out, device, bf16),
            "segresnet": lambda out: _segresnet(ct, out, device, lowres, segresnet),
        }
        for name, run in runs.items():
            times = []
            for k in range(repeats + 1):  # the first run warms up
                out = Path(tmp) / f"{name}_{k}"
                t0 = time.perf_counter()
                run(out)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            result[f"{name}_s"] = round(min(times[1:] or times), 2)
            result[f"{name}_first_s"] = round(times[0], 2)
    result["ratio_segresnet_over_cocoseg"] = round(result["segresnet_s"] / result["cocoseg_s"], 2)
    return result


def format_endtoend(r: dict[str, Any]) -> str:
    return (f"{r['machine']} ({r['threads']} threads), torch {r['torch']}, {r['device']}"
            f"{', bf16' if r['bf16'] else ''}: phantom study {r['size']}x{r['size']}x{r['slices']}\n"
            f"cocoseg (inference.yaml, shipped weights): {r['cocoseg_s']} s (first run {r['cocoseg_first_s']} s)\n"
            f"segresnet (wholeBody_ct_segmentation configuration, {r['segresnet_spacing_mm']} mm): {r['segresnet_s']} s "
            f"(first run {r['segresnet_first_s']} s)\n"
            f"segresnet / cocoseg: {r['ratio_segresnet_over_cocoseg']}x")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cocoseg_monai.bench endtoend", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--slices", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="CoCoSeg's bf16 autocast on CPU (cpu_bf16)")
    p.add_argument("--lowres", action="store_true", help="the bundle's 3 mm configuration instead of 1.5 mm")
    p.add_argument("--repeats", type=int, default=1, help="timed runs after the warm-up one (0: time the first run)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    result = run_endtoend(args.size, args.slices, args.device, args.bf16, args.lowres, args.repeats)
    print(format_endtoend(result))
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
