"""End to end: `monailabel start_server` with apps/cocoseg on a phantom datastore, over HTTP.

MONAI Label needs a torchvision built for the installed torch, which the CPU build of torch does
not have; the server therefore may run from its own environment. The server's Python is
``$COCOSEG_LABEL_PYTHON`` (``.ci/run`` builds that environment), else this Python when MONAI
Label is installed here, else the tests skip. The bundle's inference that the server is compared
with runs with the same Python, so both use the same torch build.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cocoseg_monai.bundle import bundle_dir
from cocoseg_monai.label import PET_FOLDER, prepare_datastore
from cocoseg_monai.networks import CoCoSegNet

from .conftest import TINY_FEATURES

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "apps" / "cocoseg"
SERVER_START_S = 180
TRAIN_S = 600


def _label_python() -> str | None:
    if os.environ.get("COCOSEG_LABEL_PYTHON"):
        return os.environ["COCOSEG_LABEL_PYTHON"]
    return sys.executable if importlib.util.find_spec("monailabel") is not None else None


PYTHON = _label_python()
pytestmark = pytest.mark.skipif(
    PYTHON is None,
    reason="MONAI Label not installed: pip install -e '.[label]' here, or set COCOSEG_LABEL_PYTHON to a Python that has it",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url: str, process: subprocess.Popen, log: Path, model_dir: Path) -> None:
        self.url, self.process, self.log, self.model_dir = url, process, log, model_dir

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, body bytes) of one request; HTTP errors are returned, not raised."""
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=TRAIN_S) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def json(self, method: str, path: str, payload: dict | None = None):
        body = json.dumps(payload).encode() if payload is not None else None
        status, data = self.request(method, path, body, {"Content-Type": "application/json"} if body else None)
        return status, json.loads(data or b"null")

    def upload(self, path: str, file: Path, params: dict) -> tuple[int, bytes]:
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{json.dumps(params)}\r\n'.encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode() + file.read_bytes() + b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
        return self.request("POST", path, b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def detail(self, status_body: tuple[int, bytes]) -> tuple[int, str]:
        status, body = status_body
        return status, json.loads(body)["detail"]


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("studies")
    prepare_datastore(root, patients=3, labelled=2, seed=7, size=64, slices=8)
    # bad studies: a CT without PET partner, and one whose PET lies 5 m away
    shutil.copy(root / "patient_003.nii.gz", root / "nopet.nii.gz")
    shutil.copy(root / "patient_003.nii.gz", root / "faraway.nii.gz")
    pet = nib.load(root / PET_FOLDER / "patient_003.nii.gz")
    affine = pet.affine.copy()
    affine[:3, 3] += 5000.0
    nib.save(nib.Nifti1Image(np.asarray(pet.dataobj), affine), root / PET_FOLDER / "faraway.nii.gz")
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(11)
    path = tmp_path_factory.mktemp("weights") / "model.pt"
    torch.save(CoCoSegNet(features=TINY_FEATURES).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def server(studies, weights, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("model")
    log = model_dir.parent / "server.log"
    port = _free_port()
    cmd = [
        PYTHON, "-m", "monailabel.main", "start_server", "--app", str(APP), "--studies", str(studies),
        "--host", "127.0.0.1", "--port", str(port),
        "--conf", "weights", str(weights), "--conf", "features", ",".join(map(str, TINY_FEATURES)),
        "--conf", "model_dir", str(model_dir),
    ]  # fmt: skip
    t0 = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    srv = Server(f"http://127.0.0.1:{port}", process, log, model_dir)
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if srv.request("GET", "/info/")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.perf_counter() - t0 > SERVER_START_S:
                pytest.fail(f"server not up after {SERVER_START_S} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        print(f"\nMONAI Label server up in {time.perf_counter() - t0:.1f} s")
        yield srv
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def _bundle_inference(ct: Path, pet: Path, weights: Path, out: Path) -> Path:
    """What `python -m monai.bundle run --config_file inference.yaml` writes for one study."""
    configs = bundle_dir() / "configs"
    cmd = [
        PYTHON, "-m", "monai.bundle", "run", "--meta_file", str(configs / "metadata.json"),
        "--config_file", str(configs / "inference.yaml"), "--ckpt_path", str(weights),
        "--ct", str(ct), "--pet", str(pet), "--output_dir", str(out),
        "--features", json.dumps(list(TINY_FEATURES)),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, cwd=out.parent)
    (written,) = out.glob("*_seg.nii.gz")
    return written


def test_info_lists_the_cocoseg_model_and_trainer(server):
    status, info = server.json("GET", "/info/")
    assert status == 200
    assert info["models"]["cocoseg"]["labels"] == {"lesion": 1} and "cocoseg" in info["trainers"]
    assert info["datastore"]["label_tags"] == {"final": 2}


def test_infer_returns_the_bundle_inference_label_voxel_for_voxel(server, studies, tmp_path):
    t0 = time.perf_counter()
    status, body = server.request("POST", "/infer/cocoseg?image=patient_003&output=image")
    print(f"\n/infer on a 64x64x8 study: {time.perf_counter() - t0:.2f} s")
    assert status == 200, body[:500]
    (tmp_path / "served.nii.gz").write_bytes(body)
    served = nib.load(tmp_path / "served.nii.gz")
    ct = nib.load(studies / "patient_003.nii.gz")
    assert served.shape == ct.shape
    assert np.allclose(served.affine, ct.affine)

    expected_path = _bundle_inference(
        studies / "patient_003.nii.gz", studies / PET_FOLDER / "patient_003.nii.gz",
        server.model_dir / "cocoseg.pt", tmp_path / "bundle",
    )  # fmt: skip
    expected = np.asarray(nib.load(expected_path).dataobj)
    got = np.asarray(served.dataobj)
    assert len(np.unique(expected)) == 2, "a constant label would make the comparison weak"
    np.testing.assert_array_equal(got, expected)


def test_bad_requests_get_http_errors_that_say_what_is_wrong(server, studies, tmp_path):
    status, detail = server.detail(server.request("POST", "/infer/cocoseg?image=nopet"))
    assert status == 404 and "nopet.nii.gz has no PET partner" in detail and f"{PET_FOLDER}/nopet.nii.gz" in detail

    status, detail = server.detail(server.request("POST", "/infer/cocoseg?image=faraway"))
    assert status == 422 and "do not overlap" in detail and "faraway.nii.gz" in detail

    status, detail = server.detail(server.request("POST", "/infer/segresnet?image=patient_001"))
    assert status == 404 and "unknown model 'segresnet'" in detail and "cocoseg" in detail
    status, detail = server.detail(server.request("POST", "/train/segresnet"))
    assert status == 404 and "unknown model 'segresnet'" in detail

    status, detail = server.detail(server.request("POST", "/infer/cocoseg?image=patient_999"))
    assert status == 404 and "no study 'patient_999'" in detail

    corrupt = tmp_path / "upload.nii.gz"
    corrupt.write_bytes((studies / "patient_001.nii.gz").read_bytes()[:300])  # a truncated upload
    status, detail = server.detail(server.upload("/infer/cocoseg", corrupt, {"pet": "patient_001"}))
    assert status == 400 and "uploaded CT" in detail and "not a readable NIfTI volume" in detail

    status, detail = server.detail(server.upload("/infer/cocoseg", studies / "patient_001.nii.gz", {}))
    assert status == 400 and "needs its PET partner" in detail

    served = server.model_dir / "cocoseg.pt"
    served.rename(served.with_suffix(".away"))
    try:
        status, detail = server.detail(server.request("POST", "/infer/cocoseg?image=patient_001"))
    finally:
        served.with_suffix(".away").rename(served)
    assert status == 503 and "no weights" in detail and "--conf weights" in detail

    # still serving: an upload with its PET partner named works
    status, body = server.upload("/infer/cocoseg?output=image", studies / "patient_001.nii.gz", {"pet": "patient_001"})
    assert status == 200 and body[:2] == b"\x1f\x8b"  # a gzip (.nii.gz) label


def test_train_fine_tunes_from_the_served_weights_and_serves_the_result(server):
    before = (server.model_dir / "cocoseg.pt").read_bytes()
    t0 = time.perf_counter()
    status, task = server.json("POST", "/train/cocoseg", {"max_epochs": 1, "patch_size": 64, "batch_size": 4})
    assert status == 200 and task["status"] in ("SUBMITTED", "RUNNING"), task
    while True:
        status, task = server.json("GET", "/train/")
        if task["status"] not in ("SUBMITTED", "RUNNING"):
            break
        assert time.perf_counter() - t0 < TRAIN_S, "training did not finish"
        time.sleep(1.0)
    print(f"\none-epoch /train: {time.perf_counter() - t0:.1f} s")
    assert task["status"] == "DONE", "\n".join(task.get("details", []))
    (run,) = (server.model_dir / "runs").iterdir()
    history = json.loads((run / "history.json").read_text())
    assert history["epoch"] == [1]
    datalist = json.loads((run / "datastore.json").read_text())
    used = {Path(i["image"]).name for s in ("training", "validation") for i in datalist[s]}
    assert used == {"patient_001.nii.gz", "patient_002.nii.gz"}  # the studies with final labels
    assert all(Path(i["pet"]).parent.name == PET_FOLDER for i in datalist["training"])
    config = json.loads((run / "config.json").read_text())
    assert config["init_ckpt"] == str(server.model_dir / "cocoseg.pt")  # fine-tuned, not from scratch
    after = (server.model_dir / "cocoseg.pt").read_bytes()
    assert after != before and after == (run / "models" / "model.pt").read_bytes()
    status, info = server.json("GET", "/info/")
    assert info["train_stats"]["cocoseg"]["epochs"] == 1
