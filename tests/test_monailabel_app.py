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
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import contextlib
import hashlib
import http.client

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from cocoseg_monai.bundle import bundle_dir
from cocoseg_monai.label import PET_FOLDER, prepare_datastore
from cocoseg_monai.networks import CoCoSegNet
from cocoseg_monai.plan import make_plan, write_plan

from .conftest import TINY_FEATURES
from .test_label_guard import nifti_bomb

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "apps" / "cocoseg"
SERVER_START_S = 180
TRAIN_S = 600
#: the request body limit the test server runs with (--conf max_upload_mb)
UPLOAD_MB = 8


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
    def __init__(self, url: str, process: subprocess.Popen, log: Path, model_dir: Path, port: int) -> None:
        self.url, self.process, self.log, self.model_dir, self.port = url, process, log, model_dir, port

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout=TRAIN_S):
        """(status, body bytes) of one request; HTTP errors are returned, not raised."""
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def json(self, method: str, path: str, payload=None):
        body = json.dumps(payload).encode() if payload is not None else None
        status, data = self.request(method, path, body, {"Content-Type": "application/json"} if body else None)
        return status, json.loads(data or b"null")

    def upload(self, path: str, file: Path | None, params: dict | None = None, method="POST", field="file",
               headers: dict | None = None) -> tuple[int, bytes]:  # fmt: skip
        """A multipart request as MONAI Label's clients send it: ``params`` (JSON) and one file."""
        boundary = uuid.uuid4().hex
        parts = [] if params is None else [
            f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{json.dumps(params)}\r\n'.encode()
        ]  # fmt: skip
        if file is not None:
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{file.name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n".encode() + file.read_bytes() + b"\r\n"
            )
        parts.append(f"--{boundary}--\r\n".encode())
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", **(headers or {})}
        return self.request(method, path, b"".join(parts), headers)

    def detail(self, status_body: tuple[int, bytes]) -> tuple[int, str]:
        status, body = status_body
        return status, json.loads(body)["detail"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A server machine's folders: the studies, an app folder and an outside folder beside them
    (what a path in a request would reach), the served model folder and the server's TMPDIR."""
    root = tmp_path_factory.mktemp("site")
    for folder in ("app", "outside", "tmp"):
        (root / folder).mkdir()
    (root / "app" / "main.py").write_text("# the app a request must not overwrite\n")
    (root / "outside" / "keep.txt").write_text("a file no request may reach\n")
    return root


@pytest.fixture(scope="module")
def studies(site) -> Path:
    root = site / "studies"
    prepare_datastore(root, patients=3, labelled=2, seed=7, size=64, slices=8)
    # bad studies: a CT without PET partner, and one whose PET lies 5 m away
    shutil.copy(root / "patient_003.nii.gz", root / "nopet.nii.gz")
    shutil.copy(root / "patient_003.nii.gz", root / "faraway.nii.gz")
    pet = nib.load(root / PET_FOLDER / "patient_003.nii.gz")
    affine = pet.affine.copy()
    affine[:3, 3] += 5000.0
    nib.save(nib.Nifti1Image(np.asarray(pet.dataobj), affine), root / PET_FOLDER / "faraway.nii.gz")
    return root


#: the test run's plan: the studies' 7.8 mm pixels are resampled to 5 mm, slices padded to 96
PLAN = {"features": list(TINY_FEATURES), "target_spacing": [5.0, 5.0], "slice_size": [96, 96]}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A training run's weights, ``RUN/models/model.pt``, with the run's ``RUN/plan.yaml``."""
    torch.manual_seed(11)
    run = tmp_path_factory.mktemp("run")
    path = run / "models" / "model.pt"
    path.parent.mkdir()
    torch.save(CoCoSegNet(features=TINY_FEATURES).state_dict(), path)
    write_plan(run, make_plan(**PLAN))
    return path


@contextlib.contextmanager
def running_server(site: Path, studies: Path | str, weights: Path, log: Path, ready: int = 200, env: dict | None = None,
                   conf: dict | None = None):
    """``monailabel start_server`` as the README starts it (loopback only), serving this test's
    run (weights and plan) from its folders, a small upload limit and its temporary files in ``site/tmp``;
    up once ``GET /info/`` answers ``ready``."""
    model_dir = site / "model"
    port = _free_port()
    cmd = [
        PYTHON, "-m", "monailabel.main", "start_server", "--app", str(APP), "--studies", str(studies),
        "--host", "127.0.0.1", "--port", str(port),
        "--conf", "run", str(weights.parent.parent),
        "--conf", "model_dir", str(model_dir), "--conf", "max_upload_mb", str(UPLOAD_MB),
    ]  # fmt: skip
    for key, value in (conf or {}).items():
        cmd += ["--conf", key, value]
    t0 = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "TMPDIR": str(site / "tmp"), **(env or {})},
        )  # fmt: skip
    srv = Server(f"http://127.0.0.1:{port}", process, log, model_dir, port)
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if srv.request("GET", "/info/")[0] == ready:
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


@pytest.fixture(scope="module")
def server(site, studies, weights, tmp_path_factory):
    with running_server(site, studies, weights, tmp_path_factory.mktemp("log") / "server.log") as srv:
        yield srv


def _bundle_inference(ct: Path, pet: Path, weights: Path, out: Path) -> Path:
    """What `python -m monai.bundle run --config_file "['inference.yaml','RUN/plan.yaml']"` writes
    for one study: the weights' plan given as a config layer."""
    configs = bundle_dir() / "configs"
    cmd = [
        PYTHON, "-m", "monai.bundle", "run", "--meta_file", str(configs / "metadata.json"),
        "--config_file", json.dumps([str(configs / "inference.yaml"), str(weights.parent.parent / "plan.yaml")]),
        "--ckpt_path", str(weights), "--ct", str(ct), "--pet", str(pet), "--output_dir", str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, cwd=out.parent)
    (written,) = out.glob("*_seg.nii.gz")
    return written


def _cocoseg_infer(ct: Path, pet: Path, run: Path, out: Path) -> Path:
    """What `cocoseg infer --run RUN` writes for one study."""
    cmd = [PYTHON, "-m", "cocoseg_monai", "infer", "--run", str(run), "--ct", str(ct), "--pet", str(pet), "--output_dir", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, cwd=out.parent)
    (written,) = out.glob("*_seg.nii.gz")
    return written


def test_info_lists_the_cocoseg_model_and_trainer(server):
    status, info = server.json("GET", "/info/")
    assert status == 200
    assert info["models"]["cocoseg"]["labels"] == {"lesion": 1} and "cocoseg" in info["trainers"]
    assert info["datastore"]["label_tags"] == {"final": 2}


def test_infer_returns_the_label_of_the_bundle_with_the_plan_and_of_cocoseg_infer(server, studies, weights, tmp_path):
    """The served run's plan (5 mm pixels, slices padded to 96) is applied by all three front doors."""
    t0 = time.perf_counter()
    status, body = server.request("POST", "/infer/cocoseg?image=patient_003&output=image")
    print(f"\n/infer on a 64x64x8 study: {time.perf_counter() - t0:.2f} s")
    assert status == 200, body[:500]
    (tmp_path / "served.nii.gz").write_bytes(body)
    served = nib.load(tmp_path / "served.nii.gz")
    ct = nib.load(studies / "patient_003.nii.gz")
    assert served.shape == ct.shape
    assert np.allclose(served.affine, ct.affine)

    study = (studies / "patient_003.nii.gz", studies / PET_FOLDER / "patient_003.nii.gz")
    bundle = np.asarray(nib.load(_bundle_inference(*study, weights, tmp_path / "bundle")).dataobj)
    cli = np.asarray(nib.load(_cocoseg_infer(*study, weights.parent.parent, tmp_path / "cli")).dataobj)
    got = np.asarray(served.dataobj)
    assert len(np.unique(bundle)) == 2, "a constant label would make the comparison weak"
    np.testing.assert_array_equal(got, bundle)
    np.testing.assert_array_equal(cli, bundle)
    assert (server.model_dir / "plan.yaml").read_bytes() == (weights.parent.parent / "plan.yaml").read_bytes()

    # the JSON answer carries the study's lesion measurements, of that label on the PET's own grid
    status, body = server.request("POST", "/infer/cocoseg?image=patient_003&output=json")
    assert status == 200, body[:500]
    report = json.loads(body)["report"]
    from cocoseg_monai.metrics.quantify import quantify

    expected = quantify(nib.Nifti1Image(bundle, ct.affine), nib.load(study[1]))
    assert report["lesion_count"] == expected.lesion_count > 0
    assert report["tmtv_ml"] == pytest.approx(expected.tmtv_ml)
    assert report["suvmax"] == pytest.approx(expected.suvmax)
    assert [r["suvpeak"] for r in report["lesions"]] == pytest.approx([r.suvpeak for r in expected.lesions])
    assert report["definitions"]["connectivity"] == 26
    assert not [k for k in report if k.endswith("_file")] and str(server.model_dir.parent) not in body.decode()


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
    assert status == 400 and "uploaded CT" in detail and "not a readable" in detail

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


def _tree(root: Path) -> dict[str, str]:
    """Digest of every file the server must leave alone: all of ``root`` but the studies folder,
    whose final labels are included, and the server's temporary folder (checked on its own)."""
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or rel.startswith("tmp/"):
            continue
        if rel.startswith("studies/") and not rel.startswith("studies/labels/final/"):
            continue
        files[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def _tmp_files(site: Path) -> set[str]:
    return {p.relative_to(site).as_posix() for p in (site / "tmp").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def payloads(site, studies, tmp_path_factory) -> dict[str, Path]:
    """Files an attacker would send: code, a gzip bomb, an oversized body, a label of another grid."""
    folder = tmp_path_factory.mktemp("payloads")
    files = {"code": folder / "main.py", "bomb": folder / "bomb.nii.gz", "ct": studies / "patient_001.nii.gz",
             "other_grid": folder / "label.nii.gz"}  # fmt: skip
    files["code"].write_text("import os; os.system('touch /tmp/pwned')\n")
    nifti_bomb(files["bomb"])  # 2 MB that inflate to 2 GiB
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 8), np.uint8), np.eye(4)), files["other_grid"])
    return files


EVIL = "http://evil.example"
#: name -> (method, path, (field, payload, params) or JSON body, extra headers, status, what the detail says)
PROBES = {
    "image id ../app/main overwrites the app": ("PUT", "/datastore/image?image=../app/main", ("file", "code", {}), {}, 400, "not a plain name"),
    "image id an absolute path": ("PUT", "/datastore/image?image={site}/outside/x", ("file", "code", {}), {}, 400, "not a plain name"),
    "image id ../outside/x": ("PUT", "/datastore/image?image=..%2Foutside%2Fx", ("file", "code", {}), {}, 400, "not a plain name"),
    "image named by its upload, code": ("PUT", "/datastore/image", ("file", "code", {}), {}, 400, "a .nii.gz or .nii file is taken"),
    "image replacing a study": ("PUT", "/datastore/image?image=patient_001", ("file", "ct", {}), {}, 409, "does not replace studies"),
    "image that inflates to 2 GiB": ("PUT", "/datastore/image?image=bomb", ("file", "bomb", {}), {}, 413, "1024 x 1024 x 1024"),
    "label tag ../../../outside/tagx": ("PUT", "/datastore/label?image=patient_001&tag=../../../outside/tagx", ("label", "ct", {}), {}, 400, "'tag'"),
    "label of another grid": ("PUT", "/datastore/label?image=patient_003&tag=final", ("label", "other_grid", {}), {}, 422, "differs from its CT"),
    "label named as code": ("PUT", "/datastore/label?image=patient_003&tag=final", ("label", "code", {}), {}, 400, "file is taken"),
    "label of no study": ("PUT", "/datastore/label?image=patient_999&tag=final", ("label", "ct", {}), {}, 404, "no study 'patient_999'"),
    "delete a study": ("DELETE", "/datastore/image?id=patient_003", None, {}, 403, "deleting studies and labels"),
    "delete a final label": ("DELETE", "/datastore/label?id=patient_001&tag=final", None, {}, 403, "deleting studies and labels"),
    "CORS preflight from another site": ("OPTIONS", "/datastore/image", None, {"Origin": EVIL, "Access-Control-Request-Method": "PUT"}, 403, "cross-origin"),
    "another site's page runs inference": ("POST", "/infer/cocoseg?image=patient_001", None, {"Origin": EVIL}, 403, "cross-origin"),
    "DNS rebinding": ("GET", "/info/", None, {"Host": "evil.example"}, 403, "host 'evil.example'"),
    "infer on a server path": ("POST", "/infer/cocoseg?image={site}/studies/patient_001.nii.gz", None, {}, 400, "not a plain name"),
    "infer with the PET from a server path": ("POST", "/infer/cocoseg?image=patient_001", ("file", None, {"pet": "{site}/studies/pet/patient_001"}), {}, 400, "params pet"),
    "infer with the image in params": ("POST", "/infer/cocoseg?image=patient_001", ("file", None, {"image": "{site}/outside/ct.nii.gz"}), {}, 400, "['image'] refused"),
    "infer saving a final label": ("POST", "/infer/cocoseg?image=patient_003", ("file", None, {"save_label": True, "label_tag": "final"}), {}, 400, "saves no label"),
    "infer on an upload that inflates to 2 GiB": ("POST", "/infer/cocoseg", ("file", "bomb", {"pet": "patient_001"}), {}, 413, "1024 x 1024 x 1024"),
    "infer on an upload of code": ("POST", "/infer/cocoseg", ("file", "code", {"pet": "patient_001"}), {}, 400, "a .nii.gz or .nii file is taken"),
    "train 10^9 epochs": ("POST", "/train/cocoseg", {"max_epochs": 10**9}, {}, 422, "'max_epochs' is 1000000000; it must lie in [1, 200]"),
    "train run_sync": ("POST", "/train/cocoseg?run_sync=true", {"max_epochs": 1}, {}, 422, "run_sync is not served"),
    "train enqueued": ("POST", "/train/cocoseg?enqueue=true", {"max_epochs": 1}, {}, 422, "one training run at a time"),
    "train patch 100000": ("POST", "/train/cocoseg", {"patch_size": 100000}, {}, 422, "'patch_size' is 100000"),
    "train bundle_path and gpus": ("POST", "/train/cocoseg", {"bundle_path": "{site}/app", "gpus": "0"}, {}, 422, "'bundle_path' is set by the server"),
    "the server log": ("GET", "/logs/", None, {}, 403, "log is not served"),
    "listing with server paths": ("GET", "/datastore/?output=train", None, {}, 403, "lists server paths"),
    "replace the served weights": ("PUT", "/model/cocoseg", ("file", "code", None), {}, 403, "installed by the server"),
    "reload the app": ("POST", "/reload", None, {}, 403, "reloading"),
    "a session upload": ("PUT", "/session/", ("files", "ct", None), {}, 403, "sessions are not served"),
}  # fmt: skip


@pytest.mark.parametrize("probe", list(PROBES))
def test_attack_is_refused_saying_why_and_changes_nothing(server, site, payloads, probe):
    method, path, body, headers, status, says = PROBES[probe]
    path = path.format(site=site)
    fill = lambda d: {k: v.format(site=site) if isinstance(v, str) else v for k, v in d.items()}  # noqa: E731
    before, tmp_before = _tree(site), _tmp_files(site)
    if isinstance(body, tuple):
        field, payload, params = body
        params = fill(params) if isinstance(params, dict) else params
        sent = f"{path} {json.dumps(params)}"
        got = server.upload(path, payloads.get(payload), params, method=method, field=field, headers=headers)
    else:
        data = None if body is None else json.dumps(fill(body)).encode()
        sent = f"{path} {data}"
        got = server.request(method, path, data, {**({"Content-Type": "application/json"} if data else {}), **headers})
    answer = got[1].decode(errors="replace")
    assert got[0] == status, answer[:500]
    assert says in json.loads(answer)["detail"], answer[:500]
    server_paths = re.compile(re.escape(str(site)) + r"[^'\"\s]*")
    assert set(server_paths.findall(answer)) <= set(server_paths.findall(sent)), "a server path in the answer"
    assert _tree(site) == before, "a file outside the studies folder or under labels/final changed"
    assert _tmp_files(site) <= tmp_before, "an upload was left behind"
    t0 = time.perf_counter()
    assert server.request("GET", "/info/", timeout=10)[0] == 200 and time.perf_counter() - t0 < 5
    if "train" in probe:
        assert server.request("GET", "/train/")[0] == 404, "a training run was started"


def test_a_body_over_the_upload_limit_is_refused_before_it_is_read(server, site):
    before = _tree(site), _tmp_files(site)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.putrequest("PUT", "/datastore/image?image=big")
    connection.putheader("Content-Type", "multipart/form-data; boundary=x")
    connection.putheader("Content-Length", str((UPLOAD_MB << 20) + 1))
    connection.endheaders()  # no byte of the body is sent: the answer comes first
    response = connection.getresponse()
    assert response.status == 413 and "over this server's limit" in json.loads(response.read())["detail"]
    connection.close()
    assert (_tree(site), _tmp_files(site)) == before


def test_a_path_that_exists_and_one_that_does_not_get_the_same_answer(server, site):
    exists = server.detail(server.request("POST", f"/infer/cocoseg?image={site}/outside/keep.txt"))
    missing = server.detail(server.request("POST", f"/infer/cocoseg?image={site}/outside/gone.txt"))
    assert exists[0] == missing[0] == 400
    assert exists[1].replace("keep", "gone") == missing[1]


def test_answers_name_studies_not_server_paths(server, site, studies):
    for path in ("/info/", "/datastore/?output=all", "/datastore/image/info?image=patient_001"):
        status, body = server.request("GET", path)
        assert status == 200 and str(site) not in body.decode(), path
    assert "path" not in server.json("GET", "/datastore/image/info?image=patient_001")[1]
    status, sample = server.json("POST", "/activelearning/random", {"client_id": "user-xyz"})  # Slicer's Next Sample
    assert status == 200 and sample["id"] in ("patient_003", "nopet", "faraway") and "path" not in sample  # no final label
    status, body = server.request("GET", f"/datastore/image?image={sample['id']}")  # which Slicer then downloads by id
    assert status == 200 and body == (studies / f"{sample['id']}.nii.gz").read_bytes()
    # 3D Slicer's infer request: the model's config, its result settings and client id
    params = {"pet": "", "result_extension": ".nrrd", "result_dtype": "uint8", "client_id": "user-xyz"}
    status, body = server.upload("/infer/cocoseg?image=patient_003&output=json", None, params)
    assert status == 200 and json.loads(body)["pet"] == "patient_003"


def test_train_fine_tunes_from_the_served_weights_and_serves_the_result(server):
    """As 3D Slicer's Train button asks it, then polling GET /train/ as Slicer does."""
    before = (server.model_dir / "cocoseg.pt").read_bytes()
    t0 = time.perf_counter()
    settings = {"max_epochs": 1, "patch_size": 64, "batch_size": 4, "client_id": "user-xyz"}  # as 3D Slicer sends them
    status, task = server.json("POST", "/train/cocoseg", settings)
    assert status == 200 and task["status"] in ("SUBMITTED", "RUNNING"), task
    while True:
        status, task = server.json("GET", "/train/")
        if task["status"] not in ("SUBMITTED", "RUNNING"):
            break
        assert time.perf_counter() - t0 < TRAIN_S, "training did not finish"
        time.sleep(1.0)
    print(f"\none-epoch /train: {time.perf_counter() - t0:.1f} s")
    assert task["status"] == "DONE", "\n".join(task.get("details", []))
    assert task["details"] and str(server.model_dir) not in json.dumps(task)  # the run's output, without server paths
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
    assert not list(run.glob("checkpoint_epoch_*.pth"))  # no periodic checkpoints in the app's runs
    assert (server.model_dir / "plan.yaml").read_bytes() == (run / "plan.yaml").read_bytes()  # the run's plan is served with it
    provenance = json.loads((server.model_dir / "cocoseg.json").read_text())
    assert provenance["fine_tuned_by"] == run.name and "source_sha256" in provenance


def test_fine_tuned_weights_survive_a_training_process_and_a_restart(server, site, studies, weights, tmp_path):
    """MONAI Label's training process builds the app with the server's --conf: that must not
    install the --conf weights again; a server started again with the same --conf weights keeps
    the fine-tuned weights; other --conf weights replace them."""
    model_dir = tmp_path / "model"
    shutil.copytree(server.model_dir, model_dir, ignore=shutil.ignore_patterns("runs"))
    other = tmp_path / "other.pt"
    torch.save(CoCoSegNet(features=TINY_FEATURES).state_dict(), other)
    script = """
import hashlib, sys
from cocoseg_monai.label.app import CoCoSegApp
app_dir, studies, model_dir, weights, other = sys.argv[1:]
served = lambda: hashlib.sha256(open(model_dir + "/cocoseg.pt", "rb").read()).hexdigest()
fine_tuned = served()
conf = {"weights": weights, "model_dir": model_dir}
app = CoCoSegApp(app_dir, studies, conf)            # what a training process does
assert served() == fine_tuned, "a training process installed the --conf weights"
app.serving.install_conf_weights()                  # a server start with the same --conf weights
assert served() == fine_tuned, "a restart replaced the fine-tuned weights"
CoCoSegApp(app_dir, studies, {**conf, "weights": other}).serving.install_conf_weights()
assert served() == hashlib.sha256(open(other, "rb").read()).hexdigest(), "other --conf weights were not installed"
print("ok")
"""
    args = [str(APP), str(studies), str(model_dir), str(weights), str(other)]
    done = subprocess.run([PYTHON, "-c", script, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout[-2000:] + done.stderr[-3000:]


def _label_of(studies: Path, study: str, tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A corrected label on the study's CT grid, as 3D Slicer exports it."""
    ct = nib.load(studies / f"{study}.nii.gz")
    voxels = np.zeros(ct.shape, np.uint8)
    voxels[20:30, 25:35, 2:5] = 1
    path = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(voxels, ct.affine), path)
    return path, voxels


def test_a_corrected_label_is_saved_as_3d_slicer_sends_it(server, site, studies, tmp_path):
    label, voxels = _label_of(studies, "patient_003", tmp_path)
    tmp_before = _tmp_files(site)
    params = {"label_info": [{"name": "lesion", "idx": 1}], "client_id": "user-xyz"}
    status, body = server.upload("/datastore/label?image=patient_003", label, params, method="PUT", field="label")
    assert status == 200, body[:500]
    assert json.loads(body) == {"image": "patient_003", "label": "patient_003"}
    saved = studies / "labels" / "final" / "patient_003.nii.gz"
    np.testing.assert_array_equal(np.asarray(nib.load(saved).dataobj), voxels)
    assert server.json("GET", "/info/")[1]["datastore"]["label_tags"]["final"] == 3
    for _ in range(50):  # MONAI Label removes the upload once the answer is sent
        if _tmp_files(site) <= tmp_before:
            break
        time.sleep(0.1)
    assert _tmp_files(site) <= tmp_before, "the upload was left behind"


def test_a_label_saved_as_nrrd_is_stored_as_nifti(server, studies, tmp_path):
    label, voxels = _label_of(studies, "patient_002", tmp_path)
    nrrd = tmp_path / "label.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(label)), str(nrrd))
    status, body = server.upload("/datastore/label?image=patient_002&tag=review", nrrd, {}, method="PUT", field="label")
    assert status == 200, body[:500]
    saved = studies / "labels" / "review" / "patient_002.nii.gz"
    np.testing.assert_array_equal(np.asarray(nib.load(saved).dataobj), voxels)
    assert np.allclose(nib.load(saved).affine, nib.load(studies / "patient_002.nii.gz").affine, atol=1e-4)


def test_with_authentication_on_every_route_asks_for_a_login(site, studies, weights, tmp_path):
    """MONAI Label's authentication (MONAI_LABEL_AUTH_ENABLE) guards the app's own /infer and
    /train routes as it guards MONAI Label's."""
    with running_server(site, studies, weights, tmp_path / "server.log", ready=401,
                        env={"MONAI_LABEL_AUTH_ENABLE": "true"}) as srv:  # fmt: skip
        for method, path in [("POST", "/infer/cocoseg?image=patient_001"), ("POST", "/train/cocoseg"), ("POST", "/train/"),
                             ("GET", "/train/"), ("GET", "/datastore/?output=all"), ("PUT", "/datastore/label?image=patient_001")]:  # fmt: skip
            status, body = srv.request(method, path, b"{}" if method != "GET" else None, {"Content-Type": "application/json"})
            assert status == 401 and json.loads(body)["detail"] == "Not authenticated", (method, path, body[:300])
