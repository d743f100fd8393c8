"""The MONAI Label server's request checks on their own (no MONAI Label, no server): names, volume
headers, training settings, answers without paths, and the ASGI guard in front of the server."""

from __future__ import annotations

import asyncio
import gzip

import nibabel as nib
import numpy as np
import pytest

from cocoseg_monai.label.guard import (
    Refused,
    RequestGuard,
    RouteRule,
    check_train_request,
    check_volume,
    plain_name,
    public_text,
    volume_suffix,
)


def nifti_bomb(path, shape=(1024, 1024, 1024), chunk_mb: int = 64) -> int:
    """A small ``.nii.gz`` whose header promises ``shape`` int16 voxels and whose gzip stream really
    inflates to them (gzip members of zeros, concatenated); returns the decoded size in bytes."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header.set_sform(np.eye(4), code=1)
    head = header.binaryblock + b"\0" * 4  # vox_offset 352
    data = int(np.prod(shape)) * 2
    block = gzip.compress(b"\0" * (chunk_mb << 20), compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(head))
        for _ in range(data // (chunk_mb << 20)):
            f.write(block)
        f.write(gzip.compress(b"\0" * (data % (chunk_mb << 20))))
    return len(head) + data


@pytest.mark.parametrize("name", ["patient_001", "ct.v2", "A-b_C.9"])
def test_plain_names_pass(name):
    assert plain_name(name, "study id") == name


@pytest.mark.parametrize(
    "name", ["../app/main", "/abs/path", "..", ".lock", "a/b", "a\\b", "x..y", "", "a b", "é", "x" * 129, None, 7]
)
def test_paths_and_odd_names_are_refused_naming_the_field(name):
    with pytest.raises(Refused) as err:
        plain_name(name, "label tag")
    assert err.value.status == 400 and "label tag" in err.value.detail and "not a plain name" in err.value.detail


def test_volume_suffix_takes_nifti_and_names_what_it_got():
    assert volume_suffix("ct.NII.GZ", "CT") == ".NII.GZ"
    with pytest.raises(Refused, match=r"uploaded CT: a \.nii\.gz or \.nii file is taken, not one with suffix '\.py'"):
        volume_suffix("main.py", "uploaded CT")


def test_volume_header_is_read_without_loading_voxels(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7), np.int16), np.eye(4)), tmp_path / "ct.nii.gz")
    assert check_volume(tmp_path / "ct.nii.gz", "CT", max_voxels=5 * 6 * 7) == (5, 6, 7)
    with pytest.raises(Refused) as err:
        check_volume(tmp_path / "ct.nii.gz", "CT", max_voxels=100)
    assert err.value.status == 413 and "5 x 6 x 7 = 210 voxels" in err.value.detail and "max_volume_voxels" in err.value.detail


def test_a_small_gzip_that_inflates_to_gigabytes_is_refused_from_its_header(tmp_path):
    bomb = tmp_path / "bomb.nii.gz"
    decoded = nifti_bomb(bomb)
    assert bomb.stat().st_size < 8 << 20 and decoded > 2 << 30
    with pytest.raises(Refused) as err:
        check_volume(bomb, "uploaded CT", max_voxels=512 * 512 * 2048)
    assert err.value.status == 413 and "1024 x 1024 x 1024" in err.value.detail


@pytest.mark.parametrize(
    "content, why",
    [(b"not an image at all", "not a readable image"), (None, "expected one 3D volume")],
)
def test_unreadable_or_non_3d_files_are_refused(tmp_path, content, why):
    path = tmp_path / "x.nii.gz"
    if content is None:
        nib.save(nib.Nifti1Image(np.zeros((4, 4), np.int16), np.eye(4)), path)
    else:
        path.write_bytes(content)
    with pytest.raises(Refused) as err:
        check_volume(path, "label", max_voxels=10**9)
    assert err.value.status == 400 and why in err.value.detail


def test_training_settings_are_checked_capped_and_filled():
    settings = check_train_request({"max_epochs": 3, "patch_size": 64, "client_id": "user-xyz"}, max_epochs=50)
    assert settings["max_epochs"] == 3 and settings["patch_size"] == 64 and settings["batch_size"] == 8
    assert "client_id" not in settings
    with pytest.raises(Refused) as err:
        check_train_request(
            {"max_epochs": 10**9, "patch_size": 100000, "batch_size": True, "bundle_path": "/x", "gpus": "0", "lr": 1},
            max_epochs=50,
        )
    detail = err.value.detail
    assert err.value.status == 422
    for part in ("'max_epochs' is 1000000000; it must lie in [1, 50]", "'patch_size' is 100000",
                 "'batch_size' must be an integer", "'bundle_path' is set by the server", "'gpus' is set by the server",
                 "'lr' is not a training setting"):  # fmt: skip
        assert part in detail, detail
    with pytest.raises(Refused, match="must be a JSON object"):
        check_train_request(["max_epochs", 1])


def test_answers_name_files_not_server_paths(tmp_path):
    studies = tmp_path / "studies"
    text = f"study x has no PET partner: expected {studies}/pet/x.nii.gz; see /var/lib/secret/run/log.txt"
    assert public_text(text, {"": studies}) == "study x has no PET partner: expected pet/x.nii.gz; see log.txt"
    assert str(tmp_path) not in public_text(f"CT {tmp_path}/a/b.nii.gz", {"model": tmp_path / "model"})


def _call(guard: RequestGuard, method="GET", path="/info/", query=b"", headers=None) -> tuple[int, bytes, bool]:
    """(status, body, whether the guarded app ran) of one request through ``guard``."""
    ran, sent = [], []

    async def app(scope, receive, send):
        ran.append(True)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    guard.app = app
    base = {"host": "127.0.0.1:8000"}
    scope = {
        "type": "http", "method": method, "path": path, "query_string": query, "scheme": "http",
        "headers": [(k.encode(), v.encode()) for k, v in {**base, **(headers or {})}.items()],
    }  # fmt: skip
    asyncio.run(guard(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), bool(ran)


@pytest.fixture
def guard() -> RequestGuard:
    return RequestGuard(
        None, allowed_origins=["http://viewer.example:3000/"], allowed_hosts=["label.example"], max_body_bytes=1000,
        body_limits={"/train": 100},
        rules=[RouteRule("/logs", "no logs"), RouteRule("/datastore", "no deleting", methods=("DELETE",)),
               RouteRule("/datastore", "no paths", methods=("GET",), query={"output": "train"}, exact=True)],
    )  # fmt: skip


def test_guard_lets_plain_requests_through(guard):
    assert _call(guard)[2]
    assert _call(guard, "PUT", "/datastore/label", b"image=patient_001&tag=final", {"content-length": "1000"})[2]
    assert _call(guard, headers={"origin": "http://127.0.0.1:8000"})[2]  # the server's own pages
    assert _call(guard, headers={"origin": "http://viewer.example:3000"})[2]  # an allowed origin
    assert _call(guard, headers={"host": "label.example:8000"})[2]  # an allowed host name
    assert _call(guard, "GET", "/datastore/", b"output=all")[2]


@pytest.mark.parametrize(
    "request_, status, says",
    [
        (dict(headers={"origin": "http://evil.example"}), 403, "cross-origin request from 'http://evil.example'"),
        (dict(method="OPTIONS", headers={"origin": "null"}), 403, "cross-origin"),
        (dict(headers={"host": "evil.example:8000"}), 403, "host 'evil.example'"),
        (dict(method="PUT", path="/datastore/image", headers={"content-length": "1001"}), 413, "over this server's limit of 1,000"),
        (dict(method="PUT", path="/datastore/image", headers={"transfer-encoding": "chunked"}), 411, "Content-Length"),
        (dict(method="POST", path="/train/cocoseg", headers={"content-length": "101"}), 413, "limit of 100 for /train/cocoseg"),
        (dict(method="PUT", path="/datastore/image", query=b"image=../app/main"), 400, "'image': '../app/main'"),
        (dict(method="PUT", path="/datastore/label", query=b"image=p1&tag=..%2F..%2Fx"), 400, "'tag': '../../x'"),
        (dict(method="POST", path="/infer/..", query=b""), 400, "path segment '..'"),
        (dict(path="/logs/"), 403, "no logs"),
        (dict(method="DELETE", path="/datastore/image", query=b"id=patient_006"), 403, "no deleting"),
        (dict(path="/datastore/", query=b"output=train"), 403, "no paths"),
    ],
)
def test_guard_refuses_before_the_server_sees_the_request(guard, request_, status, says):
    got, body, ran = _call(guard, **request_)
    assert (got, ran) == (status, False)
    assert says in body.decode()


@pytest.mark.parametrize("value", ["1.2.840.10008.5.1.4.1.1.2", "2.25.1234567890123456789"])
def test_a_dicom_uid_is_taken(value):
    from cocoseg_monai.label.dicomweb import dicom_uid

    assert dicom_uid(value, "image") == value


@pytest.mark.parametrize("value", ["", "1..2", ".1.2", "1.2.", "../1.2", "1.2/3", "1.2 3", "1.2;3", "1" * 65, None, 12])
def test_anything_but_a_dicom_uid_is_refused_naming_the_parameter(value):
    from cocoseg_monai.label.dicomweb import dicom_uid

    with pytest.raises(Refused) as refused:
        dicom_uid(value, "params pet_series")
    assert refused.value.status == 400 and "params pet_series" in refused.value.detail


def test_a_dicomweb_url_with_credentials_is_refused_without_repeating_them():
    from cocoseg_monai.label.dicomweb import public_url

    assert public_url("http://127.0.0.1:8042/dicom-web/") == "http://127.0.0.1:8042/dicom-web"
    with pytest.raises(ValueError) as err:
        public_url("http://orthanc:hunter2@127.0.0.1:8042/dicom-web")
    assert "hunter2" not in str(err.value) and "MONAI_LABEL_DATASTORE_PASSWORD" in str(err.value)
    with pytest.raises(ValueError, match="not a DICOMweb URL"):
        public_url("file:///etc/passwd")
