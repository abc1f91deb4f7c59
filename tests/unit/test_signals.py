"""Carbon signals read from files: every format, malformed rows, gaps, time zones, bad files."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from planners.errors import BadInput
from planners.grid import lookup
from orchestrator.carbon.signals import load_signal, static_signal

DATA = Path(__file__).parent.parent / "data" / "forecasts"
UTC = timezone.utc


def T(h: float, day: int = 20) -> datetime:
    return datetime(2026, 11, day, tzinfo=UTC) + timedelta(hours=h)


def table(sig):
    return [(i.start, i.end, round(i.kg_per_kwh * 1000, 6)) for i in sig.intervals]


def test_electricity_maps_history_offsets_nulls_and_a_gap():
    s = load_signal(DATA / "em_history.json")
    assert s.source == "electricitymaps" and s.zone == "DE"
    # 02:00+01:00 is 01:00Z; the null at 02:00 is skipped and 380 is held over it (<= 1 h);
    # 04:00 -> 08:00 is longer than the hold, so 05:00-08:00 is a gap.
    assert table(s) == [(T(0), T(1), 400), (T(1), T(3), 380), (T(3), T(4), 300),
                        (T(4), T(5), 280), (T(8), T(9), 200), (T(9), T(10), 210),
                        (T(10), T(11), 220), (T(11), T(12), 350)]
    assert s.skipped == {"missing or non-numeric value": 1, "unreadable time": 1}
    assert s.bridged == 1 and s.gaps == [(T(5), T(8))]
    assert s.intensity_at(T(6)) is None and s.intensity_at(T(2.5)) == pytest.approx(0.38)


def test_a_zero_hold_turns_a_missing_point_into_a_gap():
    s = load_signal(DATA / "em_history.json", max_hold_s=0)
    assert (T(2), T(3)) in s.gaps and s.bridged == 0


def test_electricity_maps_forecast_with_a_tokyo_offset():
    s = load_signal(DATA / "em_forecast.json")
    assert s.zone == "FR" and len(s.intervals) == 6
    assert s.intervals[1].start == T(1, day=21)  # 10:00+09:00
    assert s.intensity_at(T(3.5, day=21)) == pytest.approx(0.041)


def test_watttime_lbs_per_mwh_converted_and_gap_refused_not_filled():
    s = load_signal(DATA / "watttime_v3.json")
    assert s.source == "watttime" and s.zone == "CAISO_NORTH"
    assert s.intervals[0].kg_per_kwh == pytest.approx(900 * 0.45359237 / 1000)
    assert s.intervals[0].end - s.intervals[0].start == timedelta(minutes=5)
    # the "n/a" at 00:25 is skipped and 820 held over it
    assert s.skipped == {"missing or non-numeric value": 1} and s.bridged == 1
    assert s.gaps == [(T(1), T(2.5))]


def test_uk_national_grid_forecast_falls_back_to_actual():
    s = load_signal(DATA / "uk_national.json")
    assert s.source == "uk-national-grid"
    assert table(s)[:4] == [(T(0), T(0.5), 200), (T(0.5), T(1), 190), (T(1), T(2), 150),
                            (T(2), T(2.5), 140)]
    assert s.skipped == {"missing or non-numeric value": 1} and s.gaps == [(T(2.5), T(5))]


def test_plain_csv_offsets_naive_times_repeats_and_bad_rows():
    s = load_signal(DATA / "plain.csv")
    assert s.zone == "NL" and s.naive_times == 1
    assert table(s) == [(T(0), T(1), 300), (T(1), T(2), 320), (T(2), T(3), 310),
                        (T(3), T(4), 290), (T(4), T(5), 270), (T(14), T(15), 150),
                        (T(15), T(16), 160), (T(16), T(17), 170)]
    assert s.skipped == {"missing or non-numeric value": 1, "wrong number of columns": 1,
                         "value outside 0..5000 g/kWh": 1, "repeated time": 1}


def test_csv_with_several_zones_needs_one():
    with pytest.raises(BadInput, match="several zones"):
        load_signal(DATA / "two_zones.csv")
    s = load_signal(DATA / "two_zones.csv", zone="FR")
    assert [round(i.kg_per_kwh * 1000) for i in s.intervals] == [50, 55]


@pytest.mark.parametrize("name, needle", [
    ("empty.csv", "is empty"),
    ("bad_units.csv", "unknown units"),
    ("watttime_percentile.json", "units 'percentile'"),
    ("unknown_format.json", "no known format"),
    ("all_malformed.csv", "no usable row"),
    ("missing.json", "does not exist"),
])
def test_unusable_files_are_refused(name, needle):
    with pytest.raises(BadInput, match=needle):
        load_signal(DATA / name)


def test_static_signal_is_the_grid_average():
    s = static_signal("DEU")
    assert s.intensity_at(T(0)) == lookup("DEU").kg_per_kwh
    with pytest.raises(BadInput, match="unknown region"):
        static_signal("atlantis")


def test_declared_units_must_match_the_format(tmp_path):
    f = tmp_path / "em.json"
    f.write_text('{"zone": "DE", "unit": "lbs/MWh", "history": '
                 '[{"datetime": "2026-11-20T00:00Z", "carbonIntensity": 800}]}')
    with pytest.raises(BadInput, match="declares units 'lbs/MWh'"):
        load_signal(f)
    f.write_text('{"zone": "DE", "unit": "gCO2eq/kWh", "history": '
                 '[{"datetime": "2026-11-20T00:00Z", "carbonIntensity": 300}]}')
    assert load_signal(f).intervals[0].kg_per_kwh == pytest.approx(0.3)
