"""The SUV factor of PET headers (cocoseg_monai.dicom.suv).

Every expected factor is worked out here by hand from the formula, with the numbers of the header
written out, and checked against a literal value; none comes from the module's own helpers.
The common case: 75 kg, 370 MBq of F-18 (half-life 6586.2 s), injected at 09:00:00, series at
10:00:00, so a decay time of 3600 s.
"""

from __future__ import annotations

import copy
import json
import re

import pytest
from pydicom import Dataset

from cocoseg_monai.errors import DicomError
from cocoseg_monai.dicom.suv import SUVOverrides, SUVResult, suv_factor

HALF_LIFE = 6586.2
PHILIPS = "Philips PET Private Group"
#: 75000 g / (370e6 Bq * 2 ** (-3600 s / 6586.2 s)), the factor of the common case
BW_3600 = 75000 / (370e6 * 2 ** (-3600 / 6586.2))


def pet(units: str = "BQML", slices: int = 3, **item: object) -> list[Dataset]:
    """Headers of a PET series: the common case, ``slices`` slices acquired from 10:00:00, every
    two minutes. ``item`` replaces attributes of the radiopharmaceutical item (None deletes)."""
    ds = Dataset()
    ds.Modality = "PT"
    ds.CorrectedImage = ["DECY", "ATTN", "SCAT", "NORM"]
    ds.Units = units
    ds.DecayCorrection = "START"
    ds.SeriesDate = "20240315"
    ds.SeriesTime = "100000"
    ds.PatientWeight = 75
    ds.PatientSize = 1.80
    ds.PatientSex = "M"
    ds.AcquisitionDate = "20240315"
    radiopharmaceutical = Dataset()
    radiopharmaceutical.RadionuclideTotalDose = 370e6
    radiopharmaceutical.RadionuclideHalfLife = HALF_LIFE
    radiopharmaceutical.RadiopharmaceuticalStartTime = "090000"
    for keyword, value in item.items():
        if value is None:
            delattr(radiopharmaceutical, keyword)
        else:
            setattr(radiopharmaceutical, keyword, value)
    ds.RadiopharmaceuticalInformationSequence = [radiopharmaceutical]
    series = []
    for index in range(slices):
        slice_ = copy.deepcopy(ds)
        slice_.AcquisitionTime = f"10{2 * index:02d}00"
        series.append(slice_)
    return series


def set_all(series: list[Dataset], **values: object) -> list[Dataset]:
    """Set (or, with None, delete) attributes of every slice."""
    for ds in series:
        for keyword, value in values.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
    return series


def test_common_case_literal() -> None:
    # 2 ** (-3600 / 6586.2) = 0.684637..., 370e6 * that = 253.3 MBq left at the scan start
    assert BW_3600 == pytest.approx(2.960750161260463e-04, rel=1e-9)


# -- BQML ------------------------------------------------------------------------------------------
def test_bqml_start() -> None:
    result = suv_factor(pet())
    assert result.factor == pytest.approx(75000 / (370e6 * 2 ** (-3600 / 6586.2)), rel=1e-9)
    assert result.factor == pytest.approx(2.960750161260463e-04, rel=1e-9)
    assert (result.kind, result.units, result.decay_time_s) == ("bw", "BQML", 3600.0)
    assert result.reference_time == "2024-03-15T10:00:00"
    assert result.injection_time == "2024-03-15T09:00:00"
    assert result.warnings == ()
    assert result.tags["PatientWeight"] == 75.0
    assert result.tags["RadionuclideTotalDose"] == 370e6
    assert result.tags["RadionuclideHalfLife"] == 6586.2
    assert result.tags["RadiopharmaceuticalStartTime"] == "090000"
    assert result.tags["SeriesTime"] == "100000"
    assert result.tags["AcquisitionTime"] == "100000"
    assert result.tags["CorrectedImage"] == ["DECY", "ATTN", "SCAT", "NORM"]
    assert result.tags["source"] == {}


def test_to_json_is_json() -> None:
    result = suv_factor(pet(), SUVOverrides(weight_kg=80))
    data = json.loads(json.dumps(result.to_json()))
    assert set(data) == {"factor", "kind", "units", "decay_time_s", "reference_time", "injection_time", "tags",
                         "warnings"}
    assert data["factor"] == pytest.approx(80000 / (370e6 * 2 ** (-3600 / 6586.2)), rel=1e-9)
    assert data["tags"]["source"]["PatientWeight"].startswith("override weight_kg=80")
    assert isinstance(data["warnings"], list) and len(data["warnings"]) == 1
    assert isinstance(result, SUVResult)


def test_admin_decay_correction() -> None:
    # decay-corrected to the administration: the decayed dose is the injected dose
    series = set_all(pet(), DecayCorrection="ADMIN")
    result = suv_factor(series)
    assert result.factor == pytest.approx(75000 / 370e6, rel=1e-9)
    assert result.factor == pytest.approx(2.027027027027027e-04, rel=1e-9)
    assert result.decay_time_s == 0.0
    assert result.reference_time is None and result.injection_time is None


def test_admin_needs_no_injection_time_and_says_an_override_of_it_is_unused() -> None:
    series = set_all(pet(RadiopharmaceuticalStartTime=None), DecayCorrection="ADMIN")
    result = suv_factor(series, SUVOverrides(injection_time="09:00:00"))
    assert result.factor == pytest.approx(75000 / 370e6, rel=1e-9)
    assert any("injection_time=09:00:00 is not used" in w and "ADMIN" in w for w in result.warnings)


def test_series_time_after_acquisition_uses_earliest_acquisition() -> None:
    # series time reset to 11:30 by post-processing; slices acquired at 10:05, 10:03 (earliest), 10:07
    series = set_all(pet(), SeriesTime="113000")
    for ds, time in zip(series, ("100500", "100300", "100700")):
        ds.AcquisitionTime = time
    result = suv_factor(series)
    # 09:00:00 -> 10:03:00 = 3780 s
    assert result.decay_time_s == 3780.0
    assert result.factor == pytest.approx(75000 / (370e6 * 2 ** (-3780 / 6586.2)), rel=1e-9)
    assert result.factor == pytest.approx(3.017372116550841e-04, rel=1e-9)
    assert result.reference_time == "2024-03-15T10:03:00"
    assert result.tags["AcquisitionTime"] == "100300"
    assert len(result.warnings) == 1
    assert "after the earliest acquisition" in result.warnings[0]
    assert "earliest acquisition date-time" in result.warnings[0]


def test_series_time_before_acquisition_is_used() -> None:
    # series at 09:58, acquisitions from 10:00: the series time stands (QIBA), no warning
    series = set_all(pet(), SeriesTime="095800")
    result = suv_factor(series)
    assert result.decay_time_s == 3480.0
    assert result.factor == pytest.approx(75000 / (370e6 * 2 ** (-3480 / 6586.2)), rel=1e-9)
    assert result.warnings == ()


def test_acquisition_date_time_is_read() -> None:
    series = set_all(pet(), SeriesTime="113000", AcquisitionTime=None, AcquisitionDate=None)
    for ds, stamp in zip(series, ("20240315100500", "20240315100400", "20240315100600")):
        ds.AcquisitionDateTime = stamp
    result = suv_factor(series)
    assert result.decay_time_s == 3840.0  # 09:00:00 -> 10:04:00
    assert result.factor == pytest.approx(75000 / (370e6 * 2 ** (-3840 / 6586.2)), rel=1e-9)
    assert result.tags["AcquisitionDateTime"] == "20240315100400"


def _ge_creator_block(ds: Dataset, stamp: str) -> None:
    ds.private_block(0x0009, "GEMS_PETD_01", create=True).add_new(0x0D, "DT", stamp)


def _ge_bare_dt(ds: Dataset, stamp: str) -> None:
    ds.add_new(0x0009100D, "DT", stamp)


def _ge_bytes(ds: Dataset, stamp: str) -> None:
    ds.add_new(0x0009100D, "UN", stamp.encode("ascii") + b" ")


@pytest.mark.parametrize("put", [_ge_creator_block, _ge_bare_dt, _ge_bytes])
def test_ge_private_scan_time(put) -> None:
    series = set_all(pet(), SeriesTime="113000")
    put(series[0], "20240315100130")
    result = suv_factor(series)
    # 09:00:00 -> 10:01:30 = 3690 s
    assert result.decay_time_s == 3690.0
    assert result.factor == pytest.approx(75000 / (370e6 * 2 ** (-3690 / 6586.2)), rel=1e-9)
    assert result.factor == pytest.approx(2.9889270617833297e-04, rel=1e-9)
    assert result.reference_time == "2024-03-15T10:01:30"
    assert len(result.warnings) == 1 and "(0009,100D)" in result.warnings[0]
    assert result.tags["GE PET scan date-time (0009,100D)"] == "20240315100130"


def test_ge_private_scan_time_is_ignored_when_the_series_time_is_sound() -> None:
    series = pet()
    _ge_bare_dt(series[0], "20240315093000")
    assert suv_factor(series).decay_time_s == 3600.0


def test_ge_block_of_another_creator_is_not_read() -> None:
    series = set_all(pet(), SeriesTime="113000")
    series[0].private_block(0x0009, "SOMEONE ELSE", create=True).add_new(0x0D, "DT", "20240315100130")
    result = suv_factor(series)
    assert result.decay_time_s == 3600.0  # the earliest acquisition, 10:00:00
    assert "earliest acquisition date-time" in result.warnings[0]


# -- injection time --------------------------------------------------------------------------------
def test_start_date_time_wins_over_start_time() -> None:
    result = suv_factor(pet(RadiopharmaceuticalStartDateTime="20240315091500"))
    # 09:15:00 -> 10:00:00 = 2700 s (the StartTime 09:00:00 is not used)
    assert result.decay_time_s == 2700.0
    assert result.factor == pytest.approx(75000 / (370e6 * 2 ** (-2700 / 6586.2)), rel=1e-9)
    assert result.factor == pytest.approx(2.693185118355678e-04, rel=1e-9)
    assert result.injection_time == "2024-03-15T09:15:00"
    assert result.tags["RadiopharmaceuticalStartDateTime"] == "20240315091500"
    assert "RadiopharmaceuticalStartTime" not in result.tags


def test_start_date_time_alone() -> None:
    result = suv_factor(pet(RadiopharmaceuticalStartTime=None, RadiopharmaceuticalStartDateTime="20240315090000"))
    assert result.decay_time_s == 3600.0
    assert result.factor == pytest.approx(BW_3600, rel=1e-9)


def test_start_date_time_with_date_only_takes_start_time() -> None:
    result = suv_factor(pet(RadiopharmaceuticalStartDateTime="20240315"))
    assert result.decay_time_s == 3600.0
    assert result.injection_time == "2024-03-15T09:00:00"


def test_start_date_time_across_midnight_needs_no_warning() -> None:
    series = set_all(pet(RadiopharmaceuticalStartDateTime="20240314233000"), SeriesDate="20240315",
                     SeriesTime="003000", AcquisitionTime="003000")
    result = suv_factor(series)
    assert result.decay_time_s == 3600.0
    assert result.warnings == ()


def test_start_time_only_after_midnight_crossing() -> None:
    # injected 23:30:00, scanned 00:30:00 the next day: the start time alone is after the scan on
    # the series date, so the injection was on the day before
    series = set_all(pet(RadiopharmaceuticalStartTime="233000"), SeriesDate="20240316", SeriesTime="003000",
                     AcquisitionDate="20240316", AcquisitionTime="003000")
    result = suv_factor(series)
    assert result.injection_time == "2024-03-15T23:30:00"
    assert result.reference_time == "2024-03-16T00:30:00"
    assert result.decay_time_s == 3600.0
    assert result.factor == pytest.approx(75000 / (370e6 * 2 ** (-3600 / 6586.2)), rel=1e-9)
    assert len(result.warnings) == 1 and "day before" in result.warnings[0]


# -- Philips CNTS ----------------------------------------------------------------------------------
def test_cnts_philips_suv_scale_factor() -> None:
    series = pet("CNTS")
    series[0].private_block(0x7053, PHILIPS, create=True).add_new(0x00, "DS", "0.000123")
    result = suv_factor(series)
    assert result.factor == pytest.approx(0.000123, rel=1e-12)
    assert (result.units, result.kind, result.decay_time_s) == ("CNTS", "bw", None)
    assert result.reference_time is None and result.injection_time is None
    assert result.tags["Philips SUV Scale Factor (7053,1000)"] == "0.000123"


def test_cnts_philips_suv_scale_factor_as_bytes_without_creator() -> None:
    series = pet("CNTS")
    series[0].add_new(0x70531000, "UN", b"0.000123 ")
    assert suv_factor(series).factor == pytest.approx(0.000123, rel=1e-12)


def test_cnts_philips_activity_concentration_scale_factor() -> None:
    series = pet("CNTS")
    block = series[0].private_block(0x7053, PHILIPS, create=True)
    block.add_new(0x00, "DS", "0")  # an SUV Scale Factor of 0 is not used
    block.add_new(0x09, "DS", "0.00045")
    result = suv_factor(series)
    # Bq/ml = counts * 0.00045, then the BQML factor
    assert result.factor == pytest.approx(0.00045 * 75000 / (370e6 * 2 ** (-3600 / 6586.2)), rel=1e-9)
    assert result.factor == pytest.approx(1.3323375725672084e-07, rel=1e-9)
    assert result.decay_time_s == 3600.0
    assert result.tags["Philips Activity Concentration Scale Factor (7053,1009)"] == "0.00045"


def test_cnts_philips_activity_scale_as_bytes() -> None:
    series = pet("CNTS")
    series[0].add_new(0x70531009, "UN", b"0.00045\x00")
    assert suv_factor(series).factor == pytest.approx(0.00045 * 75000 / (370e6 * 2 ** (-3600 / 6586.2)), rel=1e-9)


# -- GML -------------------------------------------------------------------------------------------
def test_gml_is_already_suv() -> None:
    result = suv_factor(set_all(pet("GML"), PatientWeight=None))
    assert result.factor == 1.0
    assert result.decay_time_s is None and result.reference_time is None
    assert result.warnings == ()


def test_gml_to_sul() -> None:
    # LBM (male, 75 kg, 1.80 m): BMI = 75 / 1.8**2 = 23.148..., 216 * BMI = 5000 exactly
    # LBM = 9270 * 75 / (6680 + 5000) = 695250 / 11680 = 59.5248... kg; SUL = SUV * LBM / W
    result = suv_factor(pet("GML"), kind="lbm")
    assert result.factor == pytest.approx((9270 * 75 / (6680 + 216 * 75 / 1.8**2)) / 75, rel=1e-9)
    assert result.factor == pytest.approx(695250 / 11680 / 75, rel=1e-9)
    assert result.factor == pytest.approx(0.7936643835616438, rel=1e-9)


# -- SUL -------------------------------------------------------------------------------------------
def test_sul_male() -> None:
    result = suv_factor(pet(), kind="lbm")
    lbm_g = 9270 * 75 / (6680 + 216 * 75 / 1.8**2) * 1000  # 59524.83 g
    assert lbm_g == pytest.approx(59524.82876712329, rel=1e-9)
    assert result.factor == pytest.approx(lbm_g / (370e6 * 2 ** (-3600 / 6586.2)), rel=1e-9)
    assert result.factor == pytest.approx(2.3498419516168232e-04, rel=1e-9)
    assert result.kind == "lbm"
    assert result.tags["PatientSize"] == 1.8 and result.tags["PatientSex"] == "M"


def test_sul_female() -> None:
    series = set_all(pet(), PatientWeight=60, PatientSize=1.65, PatientSex="F")
    result = suv_factor(series, kind="lbm")
    # BMI = 60 / 1.65**2 = 22.0386; LBM = 9270 * 60 / (8780 + 244 * 22.0386) = 39.2868 kg
    lbm_g = 9270 * 60 / (8780 + 244 * 60 / 1.65**2) * 1000
    assert lbm_g == pytest.approx(39286.84565900131, rel=1e-9)
    assert result.factor == pytest.approx(lbm_g / (370e6 * 2 ** (-3600 / 6586.2)), rel=1e-9)
    assert result.factor == pytest.approx(1.550913794937374e-04, rel=1e-9)


def test_sul_with_philips_suv_scale_factor() -> None:
    series = pet("CNTS")
    series[0].private_block(0x7053, PHILIPS, create=True).add_new(0x00, "DS", "0.000123")
    result = suv_factor(series, kind="lbm")
    assert result.factor == pytest.approx(0.000123 * (9270 * 75 / (6680 + 216 * 75 / 1.8**2)) / 75, rel=1e-9)
    assert result.factor == pytest.approx(9.76207191780822e-05, rel=1e-9)
    assert result.decay_time_s is None


def test_sul_height_and_sex_overrides() -> None:
    series = set_all(pet(), PatientWeight=60, PatientSize=None, PatientSex=None)
    result = suv_factor(series, SUVOverrides(height_m=1.65, sex="f"), kind="lbm")
    lbm_g = 9270 * 60 / (8780 + 244 * 60 / 1.65**2) * 1000
    assert result.factor == pytest.approx(lbm_g / (370e6 * 2 ** (-3600 / 6586.2)), rel=1e-9)
    assert result.tags["PatientSize"] == 1.65 and result.tags["PatientSex"] == "F"
    assert set(result.tags["source"]) == {"PatientSize", "PatientSex"}
    assert result.warnings == ()


def test_sul_sex_override_contradicting_header_warns() -> None:
    result = suv_factor(pet(), SUVOverrides(sex="F"), kind="lbm")
    lbm_g = 9270 * 75 / (8780 + 244 * 75 / 1.8**2) * 1000
    assert result.factor == pytest.approx(lbm_g / (370e6 * 2 ** (-3600 / 6586.2)), rel=1e-9)
    assert any("sex=F contradicts PatientSex (0010,0040)" in w for w in result.warnings)


def test_height_in_centimetres_is_warned_about() -> None:
    result = suv_factor(set_all(pet(), PatientSize=180), kind="lbm")
    assert any("PatientSize (0010,1020)" in w and "centimetres" in w for w in result.warnings)


# -- overrides -------------------------------------------------------------------------------------
def test_weight_override() -> None:
    result = suv_factor(pet(), SUVOverrides(weight_kg=80))
    assert result.factor == pytest.approx(80000 / (370e6 * 2 ** (-3600 / 6586.2)), rel=1e-9)
    assert result.factor == pytest.approx(3.158133505344494e-04, rel=1e-9)
    assert result.tags["PatientWeight"] == 80.0
    assert result.tags["source"]["PatientWeight"] == "override weight_kg=80 kg; header value: 75.0"
    assert len(result.warnings) == 1 and "contradicts PatientWeight (0010,1030)" in result.warnings[0]


def test_weight_override_within_one_percent_or_without_header_is_quiet() -> None:
    assert suv_factor(pet(), SUVOverrides(weight_kg=75.5)).warnings == ()
    result = suv_factor(set_all(pet(), PatientWeight=None), SUVOverrides(weight_kg=75))
    assert result.factor == pytest.approx(BW_3600, rel=1e-9)
    assert result.warnings == ()
    assert result.tags["source"]["PatientWeight"].endswith("header value: absent")


def test_dose_override() -> None:
    result = suv_factor(pet(), SUVOverrides(dose_mbq=400))
    assert result.factor == pytest.approx(75000 / (400e6 * 2 ** (-3600 / 6586.2)), rel=1e-9)
    assert result.factor == pytest.approx(2.738693899165928e-04, rel=1e-9)
    assert result.tags["RadionuclideTotalDose"] == 400e6
    assert "dose_mbq=400" in result.tags["source"]["RadionuclideTotalDose"]
    assert len(result.warnings) == 1 and "RadionuclideTotalDose (0018,1074)" in result.warnings[0]


def test_dose_override_without_header_dose() -> None:
    result = suv_factor(pet(RadionuclideTotalDose=None), SUVOverrides(dose_mbq=370))
    assert result.factor == pytest.approx(BW_3600, rel=1e-9)
    assert result.warnings == ()


@pytest.mark.parametrize("text", ["09:10:00", "091000"])
def test_injection_time_override(text: str) -> None:
    result = suv_factor(pet(), SUVOverrides(injection_time=text))
    # 09:10:00 -> 10:00:00 = 3000 s
    assert result.decay_time_s == 3000.0
    assert result.factor == pytest.approx(75000 / (370e6 * 2 ** (-3000 / 6586.2)), rel=1e-9)
    assert result.factor == pytest.approx(2.779572830270874e-04, rel=1e-9)
    assert result.tags["RadiopharmaceuticalStartTime"] == "091000"
    assert f"injection_time={text}" in result.tags["source"]["RadiopharmaceuticalStartTime"]
    # 600 s off a header decay time of 3600 s: more than 1 %
    assert len(result.warnings) == 1 and "differs from the header's injection" in result.warnings[0]


def test_injection_time_override_takes_the_date_of_start_date_time() -> None:
    series = set_all(pet(RadiopharmaceuticalStartDateTime="20240314233000", RadiopharmaceuticalStartTime=None),
                     SeriesDate="20240315", SeriesTime="003000", AcquisitionTime="003000")
    result = suv_factor(series, SUVOverrides(injection_time="23:40:00"))
    assert result.injection_time == "2024-03-14T23:40:00"
    assert result.decay_time_s == 3000.0
    assert result.tags["RadiopharmaceuticalStartDateTime"] == "20240314234000"


def test_injection_time_override_without_header_time_crosses_midnight() -> None:
    series = set_all(pet(RadiopharmaceuticalStartTime=None), SeriesDate="20240316", SeriesTime="003000",
                     AcquisitionDate="20240316", AcquisitionTime="003000")
    result = suv_factor(series, SUVOverrides(injection_time="23:30:00"))
    assert result.injection_time == "2024-03-15T23:30:00"
    assert result.decay_time_s == 3600.0
    assert len(result.warnings) == 1 and "day before" in result.warnings[0]


def test_unused_override_is_warned_about() -> None:
    result = suv_factor(pet(), SUVOverrides(height_m=1.8))
    assert result.factor == pytest.approx(BW_3600, rel=1e-9)
    assert result.warnings == ("override height_m=1.8 is not used for this series (Units BQML, kind bw, "
                               "DecayCorrection START)",)


def test_implausible_weight_and_dose_are_warned_about() -> None:
    result = suv_factor(set_all(pet(RadionuclideTotalDose=5000e6), PatientWeight=600))
    assert result.factor == pytest.approx(600000 / (5000e6 * 2 ** (-3600 / 6586.2)), rel=1e-9)
    assert len(result.warnings) == 2
    assert "600 kg is outside 1..500 kg" in result.warnings[0]
    assert "5000 MBq is outside 1..2000 MBq" in result.warnings[1]


# -- refusals --------------------------------------------------------------------------------------
def refused(series: list[Dataset], match: str, overrides: SUVOverrides | None = None, kind: str = "bw") -> str:
    with pytest.raises(DicomError, match=match) as caught:
        suv_factor(series, overrides, kind=kind, where="PET series 3")
    message = str(caught.value)
    assert message.startswith("PET series 3: ") and "\n" not in message
    return message


def test_missing_patient_weight() -> None:
    message = refused(set_all(pet(), PatientWeight=None), re.escape("PatientWeight (0010,1030)"))
    assert "--weight_kg" in message


def test_zero_patient_weight() -> None:
    refused(set_all(pet(), PatientWeight=0), re.escape("PatientWeight (0010,1030) = ") + ".*finite number > 0")


def test_bad_overrides() -> None:
    refused(pet(), "override weight_kg = nan", SUVOverrides(weight_kg=float("nan")))
    refused(pet(), "override dose_mbq = -1", SUVOverrides(dose_mbq=-1))
    refused(pet(), "override injection_time = '9h'", SUVOverrides(injection_time="9h"))


def test_missing_total_dose() -> None:
    message = refused(pet(RadionuclideTotalDose=None), re.escape("RadionuclideTotalDose (0018,1074)"))
    assert "RadiopharmaceuticalInformationSequence (0054,0016) item 1" in message and "--dose_mbq" in message


def test_missing_radiopharmaceutical_sequence() -> None:
    series = set_all(pet(), RadiopharmaceuticalInformationSequence=None)
    message = refused(series, re.escape("RadiopharmaceuticalInformationSequence (0054,0016) is missing"))
    assert "RadionuclideTotalDose (0018,1074)" in message


def test_missing_half_life() -> None:
    refused(pet(RadionuclideHalfLife=None), re.escape("RadionuclideHalfLife (0018,1075)"),
            SUVOverrides(dose_mbq=370))


def test_negative_half_life() -> None:
    refused(pet(RadionuclideHalfLife=-6586.2), re.escape("RadionuclideHalfLife (0018,1075) = "))


def test_missing_start_time() -> None:
    message = refused(pet(RadiopharmaceuticalStartTime=None), re.escape("RadiopharmaceuticalStartTime (0018,1072)"))
    assert "RadiopharmaceuticalStartDateTime (0018,1078)" in message and "--injection_time" in message


def test_missing_series_time() -> None:
    refused(set_all(pet(), SeriesTime=None), re.escape("SeriesTime (0008,0031)"))


def test_not_pet() -> None:
    refused(set_all(pet(), Modality="CT"), re.escape("Modality (0008,0060) is 'CT'"))


@pytest.mark.parametrize("corrections", [["DECY", "SCAT"], "ATTN"])
def test_not_attenuation_and_decay_corrected(corrections) -> None:
    refused(set_all(pet(), CorrectedImage=corrections),
            re.escape("CorrectedImage (0028,0051)") + ".*not attenuation- and decay-corrected PET")


def test_missing_corrected_image() -> None:
    refused(set_all(pet(), CorrectedImage=None), re.escape("CorrectedImage (0028,0051) is missing"))


def test_unknown_units() -> None:
    refused(pet("PROPCNTS"), re.escape("Units (0054,1001) is 'PROPCNTS'"))


def test_decay_correction_none() -> None:
    refused(set_all(pet(), DecayCorrection="NONE"), re.escape("DecayCorrection (0054,1102) is 'NONE'"))


def test_missing_decay_correction() -> None:
    refused(set_all(pet(), DecayCorrection=None), re.escape("DecayCorrection (0054,1102) is missing"))


def test_cnts_without_philips_tags() -> None:
    series = pet("CNTS")
    series[0].private_block(0x7053, PHILIPS, create=True).add_new(0x00, "DS", "0")
    message = refused(series, re.escape("(7053,1000)"))
    assert "(7053,1009)" in message and "Units (0054,1001) is CNTS" in message


def test_negative_decay_time() -> None:
    # injected (dated) at 10:30:00, after the scan start of 10:00:00
    message = refused(pet(RadiopharmaceuticalStartDateTime="20240315103000"), "decay time .* is -1800 s, negative")
    assert "2024-03-15T10:30:00" in message and "2024-03-15T10:00:00" in message


def test_decay_time_over_ten_half_lives() -> None:
    # injected the day before (dated): 25 h of decay, more than 10 * 6586.2 s = 18.3 h
    refused(pet(RadiopharmaceuticalStartDateTime="20240314090000"), "is 90000 s, more than 10 half-lives")


def test_sul_needs_height_and_sex() -> None:
    refused(set_all(pet(), PatientSize=None), re.escape("PatientSize (0010,1020)") + ".*--height_m", kind="lbm")
    refused(set_all(pet(), PatientSex=None), re.escape("PatientSex (0010,0040)") + ".*--sex", kind="lbm")
    refused(set_all(pet(), PatientSex="O"), re.escape("PatientSex (0010,0040) = 'O'"), kind="lbm")


def test_no_headers_and_bad_kind() -> None:
    with pytest.raises(DicomError, match="no DICOM headers"):
        suv_factor([])
    with pytest.raises(ValueError, match="kind"):
        suv_factor(pet(), kind="bsa")


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_malformed_series_date() -> None:
    refused(set_all(pet(), SeriesDate="2024-03-15"), re.escape("SeriesDate (0008,0021) = '2024-03-15'"))
