"""The SUV factor of a PET DICOM series: body-weight SUV and lean-body-mass SUV (SUL).

``SUV = (stored pixel * RescaleSlope + RescaleIntercept) * factor``, with the factor worked out
from the headers alone, following the vendor-neutral pseudo-code of the QIBA/UPICT "SUV
calculation" (https://qibawiki.rsna.org/index.php/Standardized_Uptake_Value_(SUV)):

* The series must be PET (Modality ``PT``) and corrected for attenuation and decay
  (CorrectedImage holds ``ATTN`` and ``DECY``): uncorrected PET has no SUV.
* ``Units`` ``GML``: the pixels already are body-weight SUV; the factor is 1.
* ``Units`` ``BQML``: factor = body mass (g) / decayed dose (Bq). The injected dose, the
  half-life and the injection time are read from the first item of the
  RadiopharmaceuticalInformationSequence. ``DecayCorrection`` ``ADMIN``: the images are
  decay-corrected to the injection, the decayed dose is the injected dose. ``START``: the dose is
  decayed over the time from the injection to the scan start,
  ``dose * 2 ** (-decay_time / half_life)``. Anything else (``NONE``) is refused.
* Scan start: SeriesDate and SeriesTime, unless they are after the earliest acquisition
  date-time of all slices (a series whose series time was reset by post-processing); then the GE
  private scan date-time (0009,100D) of creator ``GEMS_PETD_01`` if the header has one, else the
  earliest acquisition date-time, with a warning.
* Injection: RadiopharmaceuticalStartDateTime, else SeriesDate with RadiopharmaceuticalStartTime;
  a time without its own date that falls after the scan was the day before (the uptake crossed
  midnight). A decay time that is negative or longer than ten half-lives is refused.
* ``Units`` ``CNTS`` (Philips): the private SUV Scale Factor (7053,1000) of creator
  ``Philips PET Private Group`` is the factor; without it, the private Activity Concentration
  Scale Factor (7053,1009) turns counts into Bq/ml and the ``BQML`` rules follow.
* Weight, dose and half-life must be finite and positive; a weight outside 1..500 kg, a dose
  outside 1..2000 MBq or (for SUL) a height outside 0.3..2.5 m is warned about. Weight, dose,
  injection time, height and sex may be overridden (:class:`SUVOverrides`); the override is
  recorded in the tags, and warned about where it contradicts the header by more than 1 % (of
  the decay time, for the injection time); an override the series does not need is warned about.

SUL replaces the body weight by the lean body mass of Janmahasatian S et al., "Quantification of
lean bodyweight", Clin Pharmacokinet 2005;44:1051-65, with W in kg, H in m and BMI = W / H**2:
``LBM = 9270 W / (6680 + 216 BMI)`` (male), ``9270 W / (8780 + 244 BMI)`` (female). A series
already in SUV (GML, or the Philips SUV Scale Factor) is rescaled by LBM / W.

A malformed header value (a date that is not a DA, a weight that is not a number) is an error
even when an override replaces it: the header has to be mended or the value removed.

The module is longer than most here on purpose: the rules above are one decision tree, kept in
one place so that it can be read against the QIBA pseudo-code branch by branch.
"""

from __future__ import annotations

import copy
import datetime as _dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.tag import Tag

from cocoseg_monai.errors import DicomError

from .common import attribute, has_value, parse_da, parse_dt, parse_tm

__all__ = ["SUV_KINDS", "SUVOverrides", "SUVResult", "suv_factor"]

#: (group, private creator, element offset, name) of the private attributes read here
GE_SCAN_DATE_TIME = (0x0009, "GEMS_PETD_01", 0x0D, "GE PET scan date-time")
PHILIPS_SUV_SCALE = (0x7053, "Philips PET Private Group", 0x00, "Philips SUV Scale Factor")
PHILIPS_ACTIVITY_SCALE = (0x7053, "Philips PET Private Group", 0x09, "Philips Activity Concentration Scale Factor")

#: a decay time longer than this many half-lives is refused as a wrong date or time
MAX_HALF_LIVES = 10.0
#: an override that differs from the header value by more than this fraction is warned about
OVERRIDE_TOLERANCE = 0.01
PLAUSIBLE_WEIGHT_KG = (1.0, 500.0)
PLAUSIBLE_DOSE_MBQ = (1.0, 2000.0)
PLAUSIBLE_HEIGHT_M = (0.3, 2.5)
#: ``bw``: body-weight SUV; ``lbm``: lean-body-mass SUV (SUL, Janmahasatian)
SUV_KINDS = ("bw", "lbm")

_HINTS = {
    "weight_kg": "give --weight_kg KG",
    "dose_mbq": "give --dose_mbq MBQ",
    "injection_time": "give --injection_time HH:MM:SS",
    "height_m": "give --height_m M",
    "sex": "give --sex M|F",
}
_SEQUENCE = "RadiopharmaceuticalInformationSequence"


@dataclass(frozen=True)
class SUVOverrides:
    """Values given by the user in place of the header's.

    Attributes
    ----------
    weight_kg : float, optional
        Replaces PatientWeight (0010,1030).
    dose_mbq : float, optional
        Replaces RadionuclideTotalDose (0018,1074), which is in Bq.
    injection_time : str, optional
        ``HH:MM:SS`` or ``HHMMSS``; replaces the time of RadiopharmaceuticalStartDateTime or
        RadiopharmaceuticalStartTime. Its date is that of RadiopharmaceuticalStartDateTime if the
        header has one, else the series date (and the day before if the time is after the scan).
    height_m : float, optional
        Replaces PatientSize (0010,1020); SUL only.
    sex : str, optional
        ``"M"`` or ``"F"``; replaces PatientSex (0010,0040); SUL only.
    """

    weight_kg: float | None = None
    dose_mbq: float | None = None
    injection_time: str | None = None
    height_m: float | None = None
    sex: str | None = None


@dataclass(frozen=True)
class SUVResult:
    """The SUV factor of a series and how it was found.

    Attributes
    ----------
    factor : float
        ``SUV = (stored pixel * RescaleSlope + RescaleIntercept) * factor``.
    kind : str
        ``"bw"`` (body weight) or ``"lbm"`` (lean body mass, SUL).
    units : str
        The series' Units: ``BQML``, ``CNTS`` or ``GML``.
    decay_time_s : float or None
        Seconds from the injection to the decay-correction reference time; 0.0 for
        DecayCorrection ADMIN, ``None`` where no decay is applied (GML, Philips SUV Scale Factor).
    reference_time : str or None
        ISO date-time of the scan start used; ``None`` where none was used.
    injection_time : str or None
        ISO date-time of the injection used; ``None`` where none was used.
    tags : dict
        Every value used, by attribute keyword (private attributes by name and tag), in the
        header's units; ``tags["source"]`` notes, by keyword, the values an override supplied.
    warnings : tuple of str
        What the user should check.
    """

    factor: float
    kind: str
    units: str
    decay_time_s: float | None
    reference_time: str | None
    injection_time: str | None
    tags: dict
    warnings: tuple[str, ...]

    def to_json(self) -> dict:
        """All fields as a JSON-ready dict."""
        return {
            "factor": self.factor,
            "kind": self.kind,
            "units": self.units,
            "decay_time_s": self.decay_time_s,
            "reference_time": self.reference_time,
            "injection_time": self.injection_time,
            "tags": copy.deepcopy(self.tags),
            "warnings": list(self.warnings),
        }


def suv_factor(datasets: Sequence[Any], overrides: SUVOverrides | None = None, kind: str = "bw",
               where: str = "") -> SUVResult:
    """The SUV factor of a PET series, by the rules of the module docstring.

    Parameters
    ----------
    datasets : sequence of pydicom.Dataset
        The headers of the series, one per slice. Series attributes are read from the first; the
        earliest acquisition date-time is looked for in all.
    overrides : SUVOverrides, optional
        Values that replace the header's.
    kind : {"bw", "lbm"}
        Body-weight SUV or lean-body-mass SUV (SUL).
    where : str
        The series (description or folder) named at the start of error messages.

    Returns
    -------
    SUVResult

    Raises
    ------
    DicomError
        The series cannot give a SUV; the message names the attribute (keyword and tag) and value.
    ValueError
        ``kind`` is not ``"bw"`` or ``"lbm"``.
    """
    if kind not in SUV_KINDS:
        raise ValueError(f"kind must be one of {SUV_KINDS}, not {kind!r}")
    datasets = list(datasets)
    if not datasets:
        raise DicomError(f"{where + ': ' if where else ''}no DICOM headers given for the PET series")
    return _Series(datasets, overrides or SUVOverrides(), kind, where).result()


def _name(keyword: str) -> str:
    """``Keyword (GGGG,EEEE)``."""
    tag = tag_for_keyword(keyword)
    return f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _has_time(dt_text: str) -> bool:
    """A DT value that has a time after its date (not only a date, or a date and a zone)."""
    return len(dt_text) > 8 and dt_text[8].isdigit()


def _lean_body_mass_kg(weight_kg: float, height_m: float, sex: str) -> float:
    """Janmahasatian et al. 2005 lean body mass in kg."""
    bmi = weight_kg / height_m**2
    if sex == "M":
        return 9270.0 * weight_kg / (6680.0 + 216.0 * bmi)
    return 9270.0 * weight_kg / (8780.0 + 244.0 * bmi)


class _Series:
    """One run of :func:`suv_factor`: reads the headers, records every value used and the
    warnings, and tracks which overrides were used."""

    def __init__(self, datasets: list[Any], overrides: SUVOverrides, kind: str, where: str) -> None:
        self.datasets = datasets
        self.ds = datasets[0]
        self.overrides = overrides
        self.kind = kind
        self.where = where
        self.tags: dict[str, Any] = {}
        self.source: dict[str, str] = {}
        self.warnings: list[str] = []
        self.used: set[str] = set()
        self.weight: float | None = None
        self.series_date: _dt.date | None = None  # set by scan_time()

    # -- messages --------------------------------------------------------------------------------
    def error(self, message: str) -> DicomError:
        return DicomError(f"{self.where}: {message}" if self.where else message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    # -- reading ---------------------------------------------------------------------------------
    def text(self, keyword: str, ds: Any = None, hint: str = "") -> str:
        """A required string value (of the first header by default), recorded in the tags."""
        value = attribute(self.ds if ds is None else ds, keyword, self.where, hint)
        self.tags[keyword] = str(value).strip()
        return self.tags[keyword]

    def optional_text(self, keyword: str, ds: Any) -> str | None:
        """A string value if present, recorded in the tags."""
        return self.text(keyword, ds) if has_value(ds, keyword) else None

    def number(self, keyword: str, ds: Any, where: str = "", hint: str = "") -> float:
        """A required value as a finite number > 0."""
        return self.positive(_name(keyword), attribute(ds, keyword, where or self.where, hint))

    def positive(self, name: str, value: Any) -> float:
        """``value`` as a finite number > 0; :class:`DicomError` naming ``name`` otherwise."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise self.error(f"{name} = {value!r} is not a number") from None
        if not math.isfinite(number) or number <= 0:
            raise self.error(f"{name} = {value!r} is not a finite number > 0")
        return number

    def header_number(self, keyword: str, ds: Any) -> float | None:
        """The header value of ``keyword`` as a float, ``None`` when absent."""
        if not has_value(ds, keyword):
            return None
        value = getattr(ds, keyword)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise self.error(f"{_name(keyword)} = {value!r} is not a number") from None

    def when(self, what: str, value: Any, parse: Any) -> Any:
        """``parse(value)``, or :class:`DicomError` naming ``what`` and the value."""
        try:
            return parse(value)
        except ValueError as error:
            raise self.error(f"{what} = {str(value)!r} cannot be read: {error}") from None

    def private(self, spec: tuple[int, str, int, str]) -> tuple[str, str] | None:
        """(key for the tags, text) of a private attribute of the first header, ``None`` when
        absent or empty. The element is looked for in its creator's block; without the creator
        element (stripped by some anonymisers) at its usual tag ``(gggg,10xx)``, unless another
        creator holds that block."""
        group, creator, offset, name = spec
        try:
            tag = self.ds.private_block(group, creator).get_tag(offset)
        except KeyError:
            if Tag(group, 0x0010) in self.ds:
                return None
            tag = Tag(group, 0x1000 | offset)
        element = self.ds.get(tag)
        if element is None or element.value is None:
            return None
        value = element.value
        if isinstance(value, bytes):
            try:
                value = value.decode("ascii")
            except UnicodeDecodeError:
                raise self.error(f"{name} {_tag_text(tag)} = {value!r} is not ASCII text") from None
        text = str(value).strip(" \x00")
        if not text:
            return None
        key = f"{name} {_tag_text(tag)}"
        self.tags[key] = text
        return key, text

    def private_factor(self, spec: tuple[int, str, int, str]) -> tuple[str, float] | None:
        """A private scale factor if present and > 0."""
        found = self.private(spec)
        if found is None:
            return None
        key, text = found
        try:
            value = float(text)
        except ValueError:
            raise self.error(f"{key} = {text!r} is not a number") from None
        return (key, value) if math.isfinite(value) and value > 0 else None

    def radiopharmaceutical(self) -> Any:
        """The first item of RadiopharmaceuticalInformationSequence, ``None`` when absent."""
        return self.ds.RadiopharmaceuticalInformationSequence[0] if has_value(self.ds, _SEQUENCE) else None

    def item_where(self) -> str:
        return f"{self.where + ': ' if self.where else ''}{_name(_SEQUENCE)} item 1"

    def from_item(self, keyword: str, hint: str) -> float:
        """A required number of the radiopharmaceutical item."""
        item = self.radiopharmaceutical()
        if item is None:
            raise self.error(f"{_name(_SEQUENCE)} is missing or empty, so {_name(keyword)} is unknown; {hint}")
        value = self.number(keyword, item, self.item_where(), hint)
        self.tags[keyword] = value
        return value

    # -- overrides -------------------------------------------------------------------------------
    def overridden(self, field: str, keyword: str, value: float, header: float | None, shown: str) -> None:
        """Record that ``value`` (in the header's units) of override ``field`` replaced
        ``header``, and warn where they differ by more than the tolerance."""
        self.used.add(field)
        self.tags[keyword] = value
        self.source[keyword] = f"override {field}={shown}; header value: {'absent' if header is None else header}"
        if header is not None and header > 0 and abs(value - header) > OVERRIDE_TOLERANCE * header:
            self.warn(f"override {field}={shown} contradicts {_name(keyword)} = {header} of the header "
                      f"by more than {OVERRIDE_TOLERANCE:.0%}; the override is used")

    # -- the values of the formula ---------------------------------------------------------------
    def weight_kg(self) -> float:
        if self.weight is not None:
            return self.weight
        keyword, hint = "PatientWeight", _HINTS["weight_kg"]
        if self.overrides.weight_kg is None:
            weight = self.number(keyword, self.ds, hint=hint)
            self.tags[keyword] = weight
        else:
            weight = self.positive("override weight_kg", self.overrides.weight_kg)
            self.overridden("weight_kg", keyword, weight, self.header_number(keyword, self.ds), f"{weight:g} kg")
        low, high = PLAUSIBLE_WEIGHT_KG
        if not low <= weight <= high:
            self.warn(f"{_name(keyword)}: a weight of {weight:g} kg is outside {low:g}..{high:g} kg; check it")
        self.weight = weight
        return weight

    def lean_body_mass_kg(self) -> float:
        weight = self.weight_kg()
        if self.overrides.height_m is None:
            height = self.number("PatientSize", self.ds, hint=_HINTS["height_m"])
            self.tags["PatientSize"] = height
        else:
            height = self.positive("override height_m", self.overrides.height_m)
            self.overridden("height_m", "PatientSize", height, self.header_number("PatientSize", self.ds),
                            f"{height:g} m")
        low, high = PLAUSIBLE_HEIGHT_M
        if not low <= height <= high:
            self.warn(f"{_name('PatientSize')}: a height of {height:g} m is outside {low:g}..{high:g} m "
                      "(DICOM gives it in metres, not centimetres); check it")
        if self.overrides.sex is None:
            sex = self.text("PatientSex", hint=_HINTS["sex"]).upper()
        else:
            sex = str(self.overrides.sex).strip().upper()
            header = str(self.ds.PatientSex).strip().upper() if has_value(self.ds, "PatientSex") else None
            self.used.add("sex")
            self.tags["PatientSex"] = sex
            self.source["PatientSex"] = f"override sex={sex}; header value: {header or 'absent'}"
            if header is not None and header != sex:
                self.warn(f"override sex={sex} contradicts {_name('PatientSex')} = {header} of the header; "
                          "the override is used")
        if sex not in ("M", "F"):
            raise self.error(f"{_name('PatientSex')} = {sex!r}: the lean body mass (Janmahasatian) needs M or F; "
                             f"{_HINTS['sex']}")
        return _lean_body_mass_kg(weight, height, sex)

    def mass_kg(self) -> float:
        """The body weight, or the lean body mass for SUL."""
        return self.weight_kg() if self.kind == "bw" else self.lean_body_mass_kg()

    def to_lean(self) -> float:
        """LBM / W: turns a body-weight SUV into SUL (1 for body-weight SUV)."""
        return 1.0 if self.kind == "bw" else self.lean_body_mass_kg() / self.weight_kg()

    def dose_bq(self) -> float:
        keyword, hint = "RadionuclideTotalDose", _HINTS["dose_mbq"]
        if self.overrides.dose_mbq is None:
            dose = self.from_item(keyword, hint)
        else:
            mbq = self.positive("override dose_mbq", self.overrides.dose_mbq)
            dose = mbq * 1e6
            item = self.radiopharmaceutical()
            header = None if item is None else self.header_number(keyword, item)
            self.overridden("dose_mbq", keyword, dose, header, f"{mbq:g} MBq")
        low, high = PLAUSIBLE_DOSE_MBQ
        if not low <= dose / 1e6 <= high:
            self.warn(f"{_name(keyword)}: a dose of {dose / 1e6:g} MBq is outside {low:g}..{high:g} MBq; check it")
        return dose

    def acquisition_time(self, index: int, ds: Any, series_date: str) -> _dt.datetime | None:
        """The acquisition date-time of one slice (AcquisitionDateTime, else AcquisitionDate, or the
        series date, with AcquisitionTime); ``None`` when it has none."""
        where = f"slice {index + 1}: "
        text = str(ds.AcquisitionDateTime).strip() if has_value(ds, "AcquisitionDateTime") else ""
        if _has_time(text):
            return self.when(where + _name("AcquisitionDateTime"), text, parse_dt)
        if not has_value(ds, "AcquisitionTime"):
            return None
        date = str(ds.AcquisitionDate).strip() if has_value(ds, "AcquisitionDate") else series_date
        return _dt.datetime.combine(self.when(where + _name("AcquisitionDate"), date, parse_da),
                                    self.when(where + _name("AcquisitionTime"), ds.AcquisitionTime, parse_tm))

    def scan_time(self) -> _dt.datetime:
        """The scan start (QIBA): the series date-time unless it is after the earliest acquisition."""
        date = self.text("SeriesDate")
        time = self.text("SeriesTime")
        self.series_date = self.when(_name("SeriesDate"), date, parse_da)
        series = _dt.datetime.combine(self.series_date, self.when(_name("SeriesTime"), time, parse_tm))
        found = [(t, i) for i, ds in enumerate(self.datasets) if (t := self.acquisition_time(i, ds, date)) is not None]
        if not found:
            return series
        earliest, index = min(found)
        first = self.datasets[index]
        for keyword in ("AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime"):
            self.optional_text(keyword, first)
        if series <= earliest:
            return series
        why = (f"SeriesDate/SeriesTime {series.isoformat()} is after the earliest acquisition "
               f"{earliest.isoformat()} (slice {index + 1}), as in a post-processed series")
        ge = self.private(GE_SCAN_DATE_TIME)
        if ge is not None:
            key, text = ge
            scan = self.when(key, text, parse_dt)
            self.warn(f"{why}; the scan start is the {key} {scan.isoformat()}")
            return scan
        self.warn(f"{why}; the scan start is taken as the earliest acquisition date-time (check it)")
        return earliest

    def injection_parts(self) -> tuple[_dt.date, bool, _dt.time | None]:
        """(date of the injection, whether the header gives that date, time of the injection in the
        header or ``None``). The date is that of RadiopharmaceuticalStartDateTime, else the series
        date; the time that of RadiopharmaceuticalStartDateTime, else RadiopharmaceuticalStartTime."""
        item = self.radiopharmaceutical()
        if item is None:
            return self.series_date, False, None
        date, dated = self.series_date, False
        start = self.optional_text("RadiopharmaceuticalStartDateTime", item)
        if start is not None:
            parsed = self.when(_name("RadiopharmaceuticalStartDateTime"), start, parse_dt)
            if _has_time(start):
                return parsed.date(), True, parsed.time()
            date, dated = parsed.date(), True
        time = self.optional_text("RadiopharmaceuticalStartTime", item)
        return date, dated, None if time is None else self.when(_name("RadiopharmaceuticalStartTime"), time, parse_tm)

    def injection_time(self, scan: _dt.datetime) -> _dt.datetime:
        """The injection: the header's, or the override's time on the header's date; a time
        without a date of its own that is after the scan start is taken on the day before."""
        date, dated, header_clock = self.injection_parts()

        def on_day(clock: _dt.time) -> _dt.datetime:
            moment = _dt.datetime.combine(date, clock)
            return moment - _dt.timedelta(days=1) if not dated and moment > scan else moment

        override = self.overrides.injection_time
        if override is None and header_clock is None:
            place = self.item_where() if self.radiopharmaceutical() is not None else _name(_SEQUENCE)
            raise self.error(f"{place}: neither {_name('RadiopharmaceuticalStartDateTime')} nor "
                             f"{_name('RadiopharmaceuticalStartTime')} gives the injection time; "
                             f"{_HINTS['injection_time']}")
        header = None if header_clock is None else on_day(header_clock)
        clock = header_clock if override is None else self.when("override injection_time", override, parse_tm)
        injection = on_day(clock)
        if injection.date() != date:
            self.warn(f"the injection time {clock.isoformat()} is after the scan start {scan.isoformat()}: "
                      f"the injection was taken to be on the day before, {injection.date().isoformat()} (the "
                      "uptake crossed midnight)")
        if override is not None:
            self.used.add("injection_time")
            keyword = "RadiopharmaceuticalStartDateTime" if dated else "RadiopharmaceuticalStartTime"
            text = injection.strftime("%Y%m%d%H%M%S" if dated else "%H%M%S")
            self.tags[keyword] = text + (f".{injection.microsecond:06d}" if injection.microsecond else "")
            self.source[keyword] = (f"override injection_time={override} on {injection.date().isoformat()}; "
                                    f"header value: {'absent' if header is None else header.isoformat()}")
            if header is not None:
                gap = abs((injection - header).total_seconds())
                if gap > OVERRIDE_TOLERANCE * abs((scan - header).total_seconds()):
                    self.warn(f"override injection_time={override} differs from the header's injection "
                              f"{header.isoformat()} by {gap:g} s, more than {OVERRIDE_TOLERANCE:.0%} of its "
                              "decay time; the override is used")
        return injection

    # -- the factor ------------------------------------------------------------------------------
    def check_corrected_pet(self) -> None:
        modality = self.text("Modality").upper()
        if modality != "PT":
            raise self.error(f"{_name('Modality')} is {modality!r}, not 'PT': only a PET series has an SUV")
        value = attribute(self.ds, "CorrectedImage", self.where)
        corrections = [str(v).strip().upper() for v in ([value] if isinstance(value, str) else value)]
        self.tags["CorrectedImage"] = corrections
        if not {"ATTN", "DECY"} <= set(corrections):
            raise self.error(f"{_name('CorrectedImage')} is {corrections}, without ATTN and DECY both: the series "
                             "is not attenuation- and decay-corrected PET, and non-AC PET cannot give SUV")

    def decay_corrected(self, scale: float) -> tuple[float, float, str | None, str | None]:
        """(factor, decay time, scan start, injection) for activity concentrations in Bq/ml
        once multiplied by ``scale``."""
        mode = self.text("DecayCorrection").upper()
        if mode not in ("START", "ADMIN"):
            raise self.error(f"{_name('DecayCorrection')} is {mode!r}: SUV needs images decay-corrected to "
                             "the scan start (START) or to the injection (ADMIN)")
        mass_g = self.mass_kg() * 1000.0
        dose = self.dose_bq()
        if mode == "ADMIN":
            return scale * mass_g / dose, 0.0, None, None
        half_life = self.from_item("RadionuclideHalfLife", "the half-life has no override: the header must give it")
        scan = self.scan_time()
        injection = self.injection_time(scan)
        decay = (scan - injection).total_seconds()
        if decay < 0 or decay > MAX_HALF_LIVES * half_life:
            wrong = "negative" if decay < 0 else f"more than {MAX_HALF_LIVES:g} half-lives of {half_life:g} s"
            raise self.error(f"the decay time from the injection {injection.isoformat()} "
                             f"({_name('RadiopharmaceuticalStartDateTime')} or "
                             f"{_name('RadiopharmaceuticalStartTime')}) to the scan start {scan.isoformat()} "
                             f"is {decay:g} s, {wrong}; check the times or {_HINTS['injection_time']}")
        decayed = dose * 2.0 ** (-decay / half_life)
        return scale * mass_g / decayed, decay, scan.isoformat(), injection.isoformat()

    def result(self) -> SUVResult:
        self.check_corrected_pet()
        units = self.text("Units").upper()
        decay: float | None = None
        scan = injection = None
        if units == "GML":
            factor = self.to_lean()
        elif units == "BQML":
            factor, decay, scan, injection = self.decay_corrected(1.0)
        elif units == "CNTS":
            suv_scale = self.private_factor(PHILIPS_SUV_SCALE)
            activity_scale = None if suv_scale is not None else self.private_factor(PHILIPS_ACTIVITY_SCALE)
            if suv_scale is not None:
                factor = suv_scale[1] * self.to_lean()
            elif activity_scale is not None:
                factor, decay, scan, injection = self.decay_corrected(activity_scale[1])
            else:
                raise self.error(f"{_name('Units')} is CNTS but neither the {PHILIPS_SUV_SCALE[3]} (7053,1000) nor "
                                 f"the {PHILIPS_ACTIVITY_SCALE[3]} (7053,1009) of private creator "
                                 f"{PHILIPS_SUV_SCALE[1]!r} is present and > 0: counts cannot be turned into SUV")
        else:
            raise self.error(f"{_name('Units')} is {units!r}: SUV is worked out for BQML, CNTS (Philips) and GML only")
        context = f"Units {units}, kind {self.kind}"
        if "DecayCorrection" in self.tags:
            context += f", DecayCorrection {self.tags['DecayCorrection']}"
        for field in fields(self.overrides):
            value = getattr(self.overrides, field.name)
            if value is not None and field.name not in self.used:
                self.warn(f"override {field.name}={value} is not used for this series ({context})")
        return SUVResult(factor=factor, kind=self.kind, units=units, decay_time_s=decay, reference_time=scan,
                         injection_time=injection, tags={**self.tags, "source": dict(self.source)},
                         warnings=tuple(self.warnings))
