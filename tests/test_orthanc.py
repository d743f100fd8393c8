"""End to end against a real Orthanc: MONAI Label serves the PET/CT studies of a DICOMweb server.

Orthanc (Debian's ``orthanc`` and ``orthanc-dicomweb`` packages, which ``.ci/run`` installs) is
started on a free loopback port with a temporary storage folder and basic authentication on;
phantom studies are uploaded over its REST API; ``monailabel start_server --studies
http://127.0.0.1:PORT/dicom-web`` serves them with the credentials in MONAI Label's settings
(environment). The server's Python is the one of ``tests/test_monailabel_app.py``.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from cocoseg_monai.data.phantom import PhantomConfig, generate_patient, write_study_dicom, write_study_nifti

from .test_monailabel_app import PYTHON, _free_port, running_server, weights  # noqa: F401 - weights is a fixture

ORTHANC = shutil.which("Orthanc") or (shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin"))
DICOMWEB_PLUGIN = next((p for p in (Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"),
                                    Path("/usr/lib/orthanc/libOrthancDicomWeb.so")) if p.is_file()), None)  # fmt: skip
pytestmark = [
    pytest.mark.skipif(PYTHON is None, reason="MONAI Label not installed (see tests/test_monailabel_app.py)"),
    pytest.mark.skipif(ORTHANC is None or DICOMWEB_PLUGIN is None,
                       reason="Orthanc and its DICOMweb plugin not installed: apt-get install orthanc orthanc-dicomweb"),
]
USER, PASSWORD = "cocoseg", "orthanc-test-secret"
CONFIG = PhantomConfig(size=64, slices=8)


class Orthanc:
    """A real Orthanc on a free loopback port, storage in ``folder``, basic authentication on."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port, self.process = folder, _free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, password: str = PASSWORD) -> None:
        config = {
            "Name": "cocoseg-test", "StorageDirectory": str(self.folder / "db"), "IndexDirectory": str(self.folder / "db"),
            "HttpPort": self.port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True, "RegisteredUsers": {USER: password},
            "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }  # fmt: skip
        (self.folder / "orthanc.json").write_text(json.dumps(config))
        log = open(self.folder / "orthanc.log", "a")
        self.process = subprocess.Popen([ORTHANC, str(self.folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.folder)  # fmt: skip
        for _ in range(200):
            try:
                if self.request("GET", "/system", password=password)[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.1)
        pytest.fail(f"Orthanc did not start:\n{(self.folder / 'orthanc.log').read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def request(self, method: str, path: str, body: bytes | None = None, password: str = PASSWORD):
        token = base64.b64encode(f"{USER}:{password}".encode()).decode()
        req = urllib.request.Request(self.url + path, data=body, method=method, headers={"Authorization": f"Basic {token}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def upload(self, folder: Path) -> None:
        for path in sorted(folder.rglob("*.dcm")):
            status, body = self.request("POST", "/instances", path.read_bytes())
            assert status == 200, body[:300]

    def series_of(self, modality: str) -> list[dict]:
        status, body = self.request("GET", f"/dicom-web/series?Modality={modality}")
        assert status == 200
        return json.loads(body or b"[]")


def _uid(record: dict) -> str:
    return record["0020000E"]["Value"][0]


def _restamp(folder: Path, **changes) -> None:
    """Give every file in ``folder`` new instance UIDs and ``changes`` (keyword: value, or None to delete)."""
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        for key, value in changes.items():
            if value is None:
                delattr(ds, key)
            else:
                setattr(ds, key, value)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(path)


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict:
    """Phantom PET/CT studies as DICOM: two good ones (``a``, ``b``, with their NIfTI label), one
    without PET, one with two attenuation-corrected PET series, one whose PET lacks the weight."""
    root = tmp_path_factory.mktemp("orthanc_studies")
    made: dict = {}
    for key, index in (("a", 1), ("b", 2), ("nopet", 3), ("twopet", 4), ("nosuv", 6)):  # a and b have lesions
        study = generate_patient(index, seed=23, config=CONFIG)
        record = write_study_dicom(study, root / key)
        write_study_nifti(study, root / key / "ct.nii.gz", root / key / "pet.nii.gz", root / key / "label.nii.gz")
        made[key] = {"folder": root / key, "ct": record["ct"]["series_instance_uid"],
                     "pet": record["pet"]["series_instance_uid"], "lesions": int(study.label.sum())}  # fmt: skip
    shutil.rmtree(root / "nopet" / "PET")
    shutil.copytree(root / "twopet" / "PET", root / "twopet" / "PET2")
    made["twopet"]["pet2"] = generate_uid()
    _restamp(root / "twopet" / "PET2", SeriesInstanceUID=made["twopet"]["pet2"], SeriesDescription="PET AC (second)")
    _restamp(root / "nosuv" / "PET", PatientWeight=None)
    return made


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, studies):
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    server.start()
    for study in studies.values():
        for modality in ("CT", "PET", "PET2"):
            if (study["folder"] / modality).is_dir():
                server.upload(study["folder"] / modality)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def app(orthanc, weights, tmp_path_factory):  # noqa: F811 - weights is the fixture imported above
    site = tmp_path_factory.mktemp("site_dicomweb")
    (site / "tmp").mkdir()
    env = {"MONAI_LABEL_DATASTORE_USERNAME": USER, "MONAI_LABEL_DATASTORE_PASSWORD": PASSWORD}
    with running_server(site, f"{orthanc.url}/dicom-web", weights, site / "server.log", env=env,
                        conf={"dicomweb_cache": str(site / "cache")}) as srv:
        yield srv


def _cocoseg_infer_dicom(study: dict, run: Path, out: Path) -> np.ndarray:
    """The label ``cocoseg infer --run RUN`` writes for the study's DICOM folders."""
    cmd = [PYTHON, "-m", "cocoseg_monai", "infer", "--run", str(run), "--ct", str(study["folder"] / "CT"),
           "--pet", str(study["folder"] / "PET"), "--output_dir", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, cwd=out.parent)
    (written,) = out.glob("*_seg.nii.gz")
    return np.asarray(nib.load(written).dataobj)


def test_orthanc_info_lists_the_ct_series_as_studies(app, studies):
    status, info = app.json("GET", "/info/")
    assert status == 200, info
    assert info["datastore"]["total"] == len(studies)  # the CT series; PET and SEG are not studies
    status, listing = app.json("GET", "/datastore/?output=all")
    assert status == 200 and set(listing["objects"]) == {s["ct"] for s in studies.values()}
    assert "/" not in json.dumps(listing["objects"])  # ids, no server paths


def test_orthanc_infer_on_each_ct_series_stores_the_label_as_a_seg_of_that_series(app, orthanc, studies, weights,  # noqa: F811
                                                                                  tmp_path):
    from cocoseg_monai.dicom.seg import read_seg
    from cocoseg_monai.dicom.series import read_series

    for key in ("a", "b"):
        study = studies[key]
        status, body = app.request("POST", f"/infer/cocoseg?image={study['ct']}&output=json")
        assert status == 200, body[:500]
        answer = json.loads(body)
        assert answer["ct_series"] == study["ct"] and answer["pet_series"] == study["pet"]
        assert answer["report"]["lesion_count"] >= 0 and "definitions" in answer["report"]
        # the SEG is on the server, in the CT's study, referencing the CT series, with the label
        status, body = orthanc.request("GET", f"/dicom-web/series?SeriesInstanceUID={answer['seg_series']}")
        assert status == 200 and json.loads(body), "the SEG is not on the server"
        status, raw = orthanc.request("GET", f"/series/{_orthanc_id(orthanc, answer['seg_series'])}/instances")
        (instance,) = json.loads(raw)
        status, file = orthanc.request("GET", f"/instances/{instance['ID']}/file")
        (tmp_path / f"{key}.dcm").write_bytes(file)
        seg = pydicom.dcmread(tmp_path / f"{key}.dcm")
        assert seg.Modality == "SEG" and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == study["ct"]
        ct = read_series(study["folder"] / "CT", "CT")
        assert seg.StudyInstanceUID == ct.headers[0].StudyInstanceUID and seg.ContentLabel == "COCOSEG"
        served = read_seg(tmp_path / f"{key}.dcm", ct.headers)
        expected = _cocoseg_infer_dicom(study, weights.parent.parent, tmp_path / f"cli_{key}")
        assert 0 < expected.sum() < expected.size, "a constant label would make the comparison weak"
        np.testing.assert_array_equal(served, expected)
    # the label itself, as 3D Slicer receives it, is the same label
    status, body = app.request("POST", f"/infer/cocoseg?image={studies['a']['ct']}&output=image")
    assert status == 200
    (tmp_path / "a.nii.gz").write_bytes(body)
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "a.nii.gz").dataobj),
                                  _cocoseg_infer_dicom(studies["a"], weights.parent.parent, tmp_path / "cli_again"))


def _orthanc_id(orthanc: Orthanc, series_uid: str) -> str:
    status, body = orthanc.request("POST", "/tools/lookup", series_uid.encode())
    assert status == 200
    (found,) = [r for r in json.loads(body) if r["Type"] == "Series"]
    return found["ID"]


def test_orthanc_bad_studies_get_http_errors_that_say_why_and_the_server_goes_on(app, orthanc, studies):
    cases = [
        (studies["nopet"]["ct"], 404, "has no PET partner"),
        (studies["twopet"]["ct"], 409, "2 candidate PET series"),
        (studies["nosuv"]["ct"], 422, "PatientWeight"),
        ("1.2.3.4.5.6.7.8.9", 404, "no CT series 1.2.3.4.5.6.7.8.9"),
        (studies["a"]["pet"], 404, f"no CT series {studies['a']['pet']}"),  # a PET is not a study
        ("1.2.3;rm", 400, "not a plain name"),
    ]
    for image, status_expected, words in cases:
        status, detail = app.detail(app.request("POST", f"/infer/cocoseg?image={urllib.parse.quote(image)}"))
        assert status == status_expected and words in detail, (image, status, detail)
        assert str(app.model_dir.parent) not in detail and "/tmp" not in detail  # no server path in an answer
    status, detail = app.detail(app.request("POST", f"/infer/cocoseg?image={studies['twopet']['ct']}"))
    assert studies["twopet"]["pet"] in detail and studies["twopet"]["pet2"] in detail and "pet_series" in detail
    # choosing one of the two is served
    status, body = app.upload(f"/infer/cocoseg?image={studies['twopet']['ct']}&output=json", None,
                              {"pet_series": studies["twopet"]["pet2"]})
    assert status == 200, body[:300]
    assert json.loads(body)["pet_series"] == studies["twopet"]["pet2"]
    assert app.request("GET", "/info/")[0] == 200


def test_orthanc_final_labels_are_stored_as_segs_and_train_one_epoch(app, orthanc, studies, tmp_path):
    for key in ("a", "b"):
        status, body = app.upload(f"/datastore/label?image={studies[key]['ct']}&tag=final", studies[key]["folder"] /
                                  "label.nii.gz", {}, method="PUT", field="label")
        assert status == 200, body[:500]
    # a label off its CT's grid is refused
    label = nib.load(studies["a"]["folder"] / "label.nii.gz")
    shifted = nib.Nifti1Image(np.asarray(label.dataobj), label.affine @ np.diag([1, 1, 2, 1.0]))
    nib.save(shifted, tmp_path / "shifted.nii.gz")
    status, detail = app.detail(app.upload(f"/datastore/label?image={studies['a']['ct']}&tag=final",
                                           tmp_path / "shifted.nii.gz", {}, method="PUT", field="label"))
    assert status == 422 and "not on its CT's grid" in detail
    finals = [s for s in orthanc.series_of("SEG")]
    assert len(finals) >= 2
    status, info = app.json("GET", "/info/")
    assert info["datastore"]["completed"] == 2
    status, task = app.json("POST", "/train/cocoseg", {"max_epochs": 1, "patch_size": 64, "batch_size": 4})
    assert status == 200 and task["status"] in ("SUBMITTED", "RUNNING"), task
    t0 = time.perf_counter()
    while True:
        status, task = app.json("GET", "/train/")
        if task["status"] not in ("SUBMITTED", "RUNNING"):
            break
        assert time.perf_counter() - t0 < 600, "training did not finish in 10 minutes"
        time.sleep(1.0)
    assert task["status"] == "DONE", "\n".join(task.get("details", []))[-3000:]
    runs = sorted((app.model_dir / "runs").glob("*/history.json"))
    history = json.loads(runs[-1].read_text())
    assert len(history["epoch"]) == 1
    datalist = json.loads((runs[-1].parent / "datastore.json").read_text())
    assert len(datalist["training"]) + len(datalist["validation"]) == 2


def test_orthanc_down_or_refusing_the_credentials_is_answered_and_the_server_recovers(app, orthanc, studies):
    image = studies["b"]["ct"]
    orthanc.stop()
    try:
        status, detail = app.detail(app.request("POST", f"/infer/cocoseg?image={image}"))
        assert status == 503 and "cannot be reached" in detail
        orthanc.start(password="rotated-elsewhere")  # the server's credentials are no longer valid
        status, detail = app.detail(app.request("POST", f"/infer/cocoseg?image={image}"))
        assert status == 502 and "refused this server's credentials" in detail
    finally:
        orthanc.stop()
        orthanc.start()
    status, body = app.request("POST", f"/infer/cocoseg?image={image}&output=json")
    assert status == 200, body[:300]
    assert PASSWORD not in app.log.read_text()  # credentials never reach the server's log
