"""PET/CT studies on a DICOMweb server (Orthanc, a PACS): the CT series to segment, each CT's PET
partner, the series fetched into a local cache, and DICOM SEGs stored back.

MONAI Label's DICOMweb datastore lists one modality's series and knows no PET partner. Here a CT
series is the study id; its PET partner is the PET series of the same study
(StudyInstanceUID) in the same frame of reference (FrameOfReferenceUID), attenuation-corrected
(CorrectedImage holds ATTN) where several are; several such PET series are refused with a list to
choose from. Series are read through the project's DICOM conversion (CT in HU, PET in SUV by the
QIBA rules), exactly as ``cocoseg infer`` reads them from a folder.

Everything that arrives in a request is checked before the server is asked: ids are DICOM UIDs
(digits and dots, at most 64 characters), and a series' size is read from its metadata before its
pixels are fetched. Credentials come from MONAI Label's settings (``MONAI_LABEL_DATASTORE_USERNAME``
and ``MONAI_LABEL_DATASTORE_PASSWORD``), never from the URL, which is logged. Failures of the
DICOMweb server are answered as HTTP errors that say what happened: 503 when it cannot be
reached, 502 when it refuses the credentials or a request.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from .guard import Refused

__all__ = ["DicomWebStudies", "dicom_uid", "public_url"]

logger = logging.getLogger(__name__)

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
#: seconds to wait for the DICOMweb server to connect and to answer
CONNECT_TIMEOUT_S, READ_TIMEOUT_S = 10.0, 300.0
#: the most instances a series may have (a 2048-slice CT is the largest the server's voxel limit allows)
MAX_INSTANCES = 4096
T = TypeVar("T")


def dicom_uid(value: Any, what: str) -> str:
    """``value`` if it is a DICOM UID (digits and dots, 1 to 64 characters); :class:`Refused`
    (400) naming ``what`` otherwise."""
    text = value if isinstance(value, str) else ""
    if len(text) > 64 or not _UID.fullmatch(text):
        raise Refused(400, f"{what} {str(value)[:80]!r} is not a DICOM UID (digits and dots, at most 64 characters)")
    return text


def public_url(url: str) -> str:
    """``url`` as it may be logged: ValueError if it carries credentials (``user:password@``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        raise ValueError(
            "the DICOMweb URL carries credentials, which would be logged: give the URL without them and set "
            "MONAI_LABEL_DATASTORE_USERNAME and MONAI_LABEL_DATASTORE_PASSWORD"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a DICOMweb URL (http or https with a host): {url[:200]!r}")
    return url.rstrip("/")


def _value(ds: Any, keyword: str, default: Any = "") -> Any:
    element = ds.get(keyword) if ds is not None else None
    value = getattr(element, "value", element)
    return default if value in (None, "") else value


class DicomWebStudies:
    """The DICOMweb server's PET/CT studies, and a local cache of the series fetched.

    Args:
        url: the server's DICOMweb root (e.g. ``http://127.0.0.1:8042/dicom-web``), without credentials.
        cache: folder for fetched series (``series/<uid>/``) and converted studies.
        username, password: HTTP basic authentication (empty: none).
        max_voxels: the most voxels a series may hold (the server's ``max_volume_voxels``).
    """

    def __init__(self, url: str, cache: str | Path, *, username: str = "", password: str = "",
                 max_voxels: int = 512 * 512 * 2048) -> None:
        self.url = public_url(url)
        self.cache = Path(cache)
        self.max_voxels = int(max_voxels)
        session = _timeout_session()
        if username or password:
            session.auth = (username, password)
        try:  # MONAI Label's client accepts the multipart content types Orthanc answers with
            from monailabel.datastore.dicom import DICOMwebClientX as Client
        except ImportError:  # pragma: no cover - the app runs with MONAI Label installed
            from dicomweb_client import DICOMwebClient as Client
        self.client = Client(url=self.url, session=session)

    # --- talking to the server -------------------------------------------------------------------

    def _ask(self, what: str, call: Callable[[], T]) -> T:
        """``call()``, with the server's failures as :class:`Refused` that say what failed."""
        import requests

        try:
            return call()
        except requests.exceptions.HTTPError as err:
            status = getattr(err.response, "status_code", None)
            if status in (401, 403):
                raise Refused(502, f"the DICOMweb server refused this server's credentials ({what}, HTTP {status}): "
                                   "check MONAI_LABEL_DATASTORE_USERNAME and MONAI_LABEL_DATASTORE_PASSWORD") from None
            raise Refused(502, f"the DICOMweb server failed {what} (HTTP {status})") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
            logger.warning("DICOMweb server unreachable (%s): %s", what, type(err).__name__)
            raise Refused(503, f"the DICOMweb server cannot be reached ({what}); try again when it is up") from None

    def _series(self, what: str, study: str | None = None, **filters: Any) -> list[Any]:
        from pydicom.dataset import Dataset

        found = self._ask(what, lambda: self.client.search_for_series(study_instance_uid=study,
                                                                      search_filters=filters, get_remaining=True))
        return [Dataset.from_json(ds, bulk_data_uri_handler=_no_bulk_data) for ds in found]

    def _metadata(self, study: str, series: str, what: str) -> list[Any]:
        from pydicom.dataset import Dataset

        found = self._ask(what, lambda: self.client.retrieve_series_metadata(study, series))
        return [Dataset.from_json(ds, bulk_data_uri_handler=_no_bulk_data) for ds in found]

    # --- what the app asks -----------------------------------------------------------------------

    def ct_series(self) -> list[str]:
        """SeriesInstanceUIDs of the server's CT series (the studies to segment)."""
        return sorted(str(_value(ds, "SeriesInstanceUID")) for ds in self._series("listing the CT series", Modality="CT"))

    def series(self, uid: str, modality: str | None = None) -> Any:
        """The QIDO record of series ``uid`` (404 if the server has none, or not of ``modality``)."""
        uid = dicom_uid(uid, "series")
        found = self._series(f"looking up series {uid}", SeriesInstanceUID=uid)
        if not found or (modality and str(_value(found[0], "Modality")) != modality):
            kind = f"{modality} series" if modality else "series"
            raise Refused(404, f"no {kind} {uid} on the DICOMweb server")
        return found[0]

    def fetch(self, uid: str, modality: str) -> Path:
        """The series ``uid`` (of ``modality``) as a folder of DICOM files in the cache
        (``series/<modality>/<uid>``), fetched once. Its size is checked from its metadata before
        any pixel is fetched; the folder appears complete or not at all."""
        folder = self.cache / "series" / modality / dicom_uid(uid, "series")
        if folder.is_dir():
            return folder
        record = self.series(uid, modality)
        study = str(_value(record, "StudyInstanceUID"))
        metadata = self._metadata(study, uid, f"reading the metadata of series {uid}")
        voxels = sum(int(_value(ds, "Rows", 0)) * int(_value(ds, "Columns", 0)) * int(_value(ds, "NumberOfFrames", 1))
                     for ds in metadata)  # fmt: skip
        if len(metadata) > MAX_INSTANCES or voxels > self.max_voxels:
            raise Refused(413, f"series {uid}: {len(metadata)} images of {voxels} voxels in all, over this server's "
                               f"limits ({MAX_INSTANCES} images, {self.max_voxels} voxels)")
        datasets = self._ask(f"fetching series {uid}", lambda: self.client.retrieve_series(study, uid))
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{uid}.", dir=folder.parent))
        try:
            for i, ds in enumerate(datasets):
                if str(_value(ds, "SeriesInstanceUID")) != uid:
                    raise Refused(502, f"the DICOMweb server answered series {uid} with an image of another series")
                ds.save_as(str(partial / f"{i:05d}.dcm"))
            partial.rename(folder)
        except FileExistsError:  # another request fetched it meanwhile
            shutil.rmtree(partial, ignore_errors=True)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        logger.info("fetched %s series %s: %d images", modality, uid, len(datasets))
        return folder

    def pet_partner(self, ct_uid: str, chosen: str | None = None) -> str:
        """The PET series to read with CT series ``ct_uid``: of the same study and frame of
        reference, attenuation-corrected where there is a choice; ``chosen`` picks one of them.

        Raises:
            Refused: 404 without a partner (saying what the study holds), 409 with several
                (listing them and how to choose).
        """
        ct = self.series(ct_uid, "CT")
        study = str(_value(ct, "StudyInstanceUID"))
        ct_meta = self._metadata(study, ct_uid, f"reading the metadata of CT series {ct_uid}")
        frame = str(_value(ct_meta[0] if ct_meta else None, "FrameOfReferenceUID"))
        candidates = []
        pets = self._series(f"looking for the PET of study {study}", study, Modality="PT")
        for pet in pets:
            uid = str(_value(pet, "SeriesInstanceUID"))
            meta = self._metadata(study, uid, f"reading the metadata of PET series {uid}")
            first = meta[0] if meta else None
            if str(_value(first, "FrameOfReferenceUID")) != frame:
                continue
            corrected = [str(v) for v in _as_list(_value(first, "CorrectedImage", []))]
            candidates.append((uid, str(_value(pet, "SeriesDescription", _value(first, "SeriesDescription"))),
                               "ATTN" in corrected))
        if chosen:
            chosen = dicom_uid(chosen, "pet_series")
            if chosen not in [uid for uid, _, _ in candidates]:
                raise Refused(404, f"pet_series {chosen} is not a PET series of CT {ct_uid}'s study and frame of reference")
            return chosen
        if not candidates:
            raise Refused(404, f"CT series {ct_uid} has no PET partner: its study holds {len(pets)} PET series, none in the "
                               "CT's frame of reference")
        corrected = [c for c in candidates if c[2]] or candidates
        if len(corrected) > 1:
            listed = "; ".join(f"{uid} ({description or 'no description'})" for uid, description, _ in corrected)
            raise Refused(409, f"CT series {ct_uid} has {len(corrected)} candidate PET series: {listed}; choose one "
                               'with params {"pet_series": <SeriesInstanceUID>}')
        return corrected[0][0]

    def store(self, path: str | Path) -> str:
        """Store the DICOM file ``path`` (a SEG) on the server; returns its SeriesInstanceUID."""
        import pydicom

        ds = pydicom.dcmread(str(path))
        self._ask(f"storing SEG {ds.SeriesInstanceUID}", lambda: self.client.store_instances([ds]))
        logger.info("stored SEG series %s referencing CT series %s", ds.SeriesInstanceUID,
                    ds.ReferencedSeriesSequence[0].SeriesInstanceUID)
        return str(ds.SeriesInstanceUID)

    def segs(self, content_label: str | None = None) -> dict[str, tuple[str, str]]:
        """The newest SEG of each CT series, ``{CT uid: (study uid, SEG uid)}`` (with
        ``content_label``: only SEGs with that ContentLabel, e.g. ``FINAL``)."""
        newest: dict[str, tuple[str, str, str]] = {}
        cts = set(self.ct_series())
        for seg in self._series("listing the SEG series", Modality="SEG"):
            study, uid = str(_value(seg, "StudyInstanceUID")), str(_value(seg, "SeriesInstanceUID"))
            meta = self._metadata(study, uid, f"reading SEG {uid}")
            first = meta[0] if meta else None
            if content_label and str(_value(first, "ContentLabel")) != content_label:
                continue
            referenced = _value(first, "ReferencedSeriesSequence", [])
            ct = str(_value(referenced[0], "SeriesInstanceUID")) if referenced else ""
            if ct not in cts:
                continue
            when = f"{_value(first, 'SeriesDate')}{_value(first, 'SeriesTime')}{_value(first, 'InstanceCreationTime')}"
            if ct not in newest or when > newest[ct][0]:
                newest[ct] = (when, study, uid)
        return {ct: (study, uid) for ct, (_, study, uid) in newest.items()}

    def fetch_seg(self, study: str, uid: str) -> Path:
        """The SEG series ``uid``'s file in the cache (its first instance)."""
        folder = self.fetch(uid, "SEG")
        files = sorted(folder.glob("*.dcm"))
        if not files:
            raise Refused(502, f"SEG series {uid} holds no image")
        return files[0]


def _as_list(value: Any) -> Iterable[Any]:
    if isinstance(value, (list, tuple)):
        return value
    try:
        return list(value) if not isinstance(value, str) else [value]
    except TypeError:
        return [value]


def _timeout_session() -> Any:
    """A requests session whose requests time out (connect, read) unless told otherwise."""
    import requests

    class TimeoutSession(requests.Session):
        def request(self, method: str, url: str, **kwargs: Any) -> Any:  # type: ignore[override]
            kwargs.setdefault("timeout", (CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
            return super().request(method, url, **kwargs)

    return TimeoutSession()


def _no_bulk_data(*_: Any) -> bytes:
    """Metadata only: bulk data (pixels) named by URI in a JSON answer is not fetched."""
    return b""
