"""keep_freed_memory: glibc keeps freed memory for the next training step instead of faulting it in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# page faults per training step of a small CoCoSeg, once the steps have settled
_FAULTS = """
import logging, resource, sys, torch
from cocoseg_monai.allocator import keep_freed_memory
from cocoseg_monai.networks.nets import CoCoSegNet
applied = keep_freed_memory() if sys.argv[1] == "on" else False
logging.disable(logging.WARNING)
torch.manual_seed(0)
net = CoCoSegNet(features=(8, 16, 32, 64)).to(memory_format=torch.channels_last)
x = torch.rand(4, 2, 96, 96)
optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad])
def step():
    optimizer.zero_grad()
    net(x).mean().backward()
    optimizer.step()
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
"""


def _faults_per_step(setting: str) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", _FAULTS, setting], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, float(faults)


@pytest.mark.skipif(not GLIBC, reason="keep_freed_memory sets glibc's malloc; this C library is not glibc")
def test_training_steps_reuse_freed_memory_instead_of_faulting_it_in_again():
    applied, kept = _faults_per_step("on")
    _, default = _faults_per_step("off")
    assert applied == "True"
    assert default > 1000  # every step faults its activations in again (~6,000 pages here)
    assert kept < default / 10


def test_the_bundles_keep_freed_memory_on_the_cpu_and_check_the_switch():
    from monai.bundle import ConfigParser

    from cocoseg_monai.bundle import config_path

    for config, check in (("train.yaml", "check_settings"), ("inference.yaml", "check_switches")):
        parser = ConfigParser()
        parser.read_config(str(config_path(config)))
        assert parser.get_parsed_content("keep_freed_memory") is True
        assert any("keep_freed_memory()" in step and "@keep_freed_memory" in step for step in parser["initialize"])
        parser["keep_freed_memory"] = "false"  # the command line's text, which Python takes for true
        with pytest.raises(RuntimeError) as raised:
            parser.get_parsed_content(check, lazy=False)
        assert "keep_freed_memory" in str(raised.value.__cause__), config
