"""What every DICOM module here shares: attribute look-up that names what is missing,
and the DICOM date and time value representations (DA, TM, DT) as :mod:`datetime` values."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from cocoseg_monai.errors import DicomError

__all__ = ["attribute", "has_value", "parse_da", "parse_tm", "parse_dt"]


def has_value(ds: Any, keyword: str) -> bool:
    """``ds`` has ``keyword`` with a non-empty value."""
    value = ds.get(keyword, None)
    if value is None:
        return False
    try:
        return len(value) > 0  # strings, multi-values, sequences
    except TypeError:
        return True  # numbers


def attribute(ds: Any, keyword: str, where: str = "", hint: str = "") -> Any:
    """The value of ``keyword`` in ``ds``; :class:`DicomError` naming the attribute (its keyword
    and tag) and ``where`` (a file or series) when it is missing or empty. ``hint`` is added to
    the message (for example the override that supplies the value)."""
    if has_value(ds, keyword):
        return getattr(ds, keyword)
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    name = f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})" if tag is not None else keyword
    raise DicomError(f"{where + ': ' if where else ''}DICOM attribute {name} is missing or empty"
                     + (f"; {hint}" if hint else ""))


def parse_da(value: Any) -> _dt.date:
    """DICOM DA ``YYYYMMDD`` (also the legacy ``YYYY.MM.DD``)."""
    text = str(value).strip().replace(".", "")
    if len(text) != 8 or not text.isdigit():
        raise ValueError(f"not a DICOM date (DA, YYYYMMDD): {value!r}")
    return _dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def parse_tm(value: Any) -> _dt.time:
    """DICOM TM ``HH[MM[SS[.FFFFFF]]]`` (also the legacy ``HH:MM:SS``)."""
    text = str(value).strip().replace(":", "")
    main, _, frac = text.partition(".")
    if not main.isdigit() or len(main) not in (2, 4, 6) or (frac and not frac.isdigit()):
        raise ValueError(f"not a DICOM time (TM, HHMMSS.FFFFFF): {value!r}")
    hh, mm, ss = int(main[:2]), int(main[2:4] or 0), int(main[4:6] or 0)
    micro = int((frac + "000000")[:6]) if frac else 0
    if ss == 60:  # a leap second, which TM allows: the next second is close enough for decay times
        return (_dt.datetime(2000, 1, 1, hh, mm, 59, micro) + _dt.timedelta(seconds=1)).time()
    return _dt.time(hh, mm, ss, micro)


def parse_dt(value: Any) -> _dt.datetime:
    """DICOM DT ``YYYYMMDDHHMMSS.FFFFFF&ZZXX``; the time and the zone offset are optional. An
    offset is dropped: every time of a study is compared in the study's local time."""
    text = str(value).strip()
    for sign in "+-":
        if sign in text[8:]:
            text = text[: 8 + text[8:].index(sign)]
    if len(text) < 8:
        raise ValueError(f"not a DICOM date-time (DT, YYYYMMDDHHMMSS): {value!r}")
    date = parse_da(text[:8])
    time = parse_tm(text[8:]) if len(text) > 8 else _dt.time()
    return _dt.datetime.combine(date, time)
