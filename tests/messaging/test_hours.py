"""Business hours (the messaging document's ``businessHours``) evaluated at chosen moments: the clock is
the ``now`` passed to ``is_open``. Ranges across midnight, holidays, display-form and IANA zones, and
the days daylight saving time begins and ends."""

from __future__ import annotations

import datetime as dt

import pytest

from flowbox.errors import InvalidRequest
from flowbox.messaging.hours import is_open, validate_business_hours

UTC = dt.timezone.utc
AMSTERDAM_DISPLAY = "(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna"


def at(text: str) -> dt.datetime:
    """A moment in UTC: "2024-01-08 07:00"."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def hours(days: dict[str, list[tuple[str, str]]], timezone: str, holidays: tuple[str, ...] = ()) -> list[dict]:
    """One entry, through the same validation a project's PATCH uses."""
    return validate_business_hours([{
        "weekdays": [{"weekday": day, "content": [{"from": f, "to": t} for f, t in spans]} for day, spans in days.items()],
        "holidays": [{"holiday": f"holiday {i}", "date": date} for i, date in enumerate(holidays)],
        "label": "test",
        "timezone": timezone,
    }])


def open_at(entries: list[dict], *moments: str) -> list[bool]:
    return [is_open(entries, at(moment)) for moment in moments]


def test_the_documents_example_in_minsk():
    # Monday 0:20-4:19 and 10:00-22:22 in "(UTC+03:00) Minsk"; 2024-01-08 is a Monday
    entries = hours({"Monday": [("0:20", "4:19"), ("10:00", "22:22")]}, "(UTC+03:00) Minsk")
    assert open_at(entries,
                   "2024-01-07 21:19",  # Monday 0:19 in Minsk (Sunday in UTC)
                   "2024-01-07 21:20",  # 0:20
                   "2024-01-08 01:18",  # 4:18
                   "2024-01-08 01:19",  # 4:19: a range ends before its "to"
                   "2024-01-08 06:59",  # 9:59
                   "2024-01-08 07:00",  # 10:00
                   "2024-01-08 19:21",  # 22:21
                   "2024-01-08 19:22",  # 22:22
                   "2024-01-09 07:00",  # Tuesday 10:00: no hours on Tuesday
                   ) == [False, True, True, False, False, True, True, False, False]


def test_a_range_whose_end_is_not_after_its_start_runs_past_midnight():
    # 2024-01-12 is a Friday
    entries = hours({"Friday": [("22:00", "2:00")], "Sunday": [("20:00", "24:00")]}, "UTC")
    assert open_at(entries,
                   "2024-01-12 21:59", "2024-01-12 22:00", "2024-01-12 23:59",
                   "2024-01-13 00:00", "2024-01-13 01:59", "2024-01-13 02:00",  # Saturday morning: Friday's range
                   "2024-01-14 23:59", "2024-01-15 00:00",  # "24:00" ends at midnight
                   ) == [False, True, True, True, True, False, True, False]
    all_week = hours({day: [("0:00", "24:00")] for day in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
                                                            "Saturday", "Sunday")}, "UTC")
    assert all(open_at(all_week, "2024-01-08 00:00", "2024-01-10 12:34", "2024-01-14 23:59"))


def test_a_holiday_closes_the_ranges_that_start_on_it():
    days = {"Friday": [("22:00", "2:00")], "Saturday": [("9:00", "17:00")]}
    # Saturday 2024-01-13 is a holiday: Friday's night range still runs out, Saturday's day range is closed
    entries = hours(days, "UTC", holidays=("2024-01-13T00:00:00.000Z",))
    assert open_at(entries, "2024-01-12 23:00", "2024-01-13 01:00", "2024-01-13 10:00") == [True, True, False]
    # Friday 2024-01-12 is a holiday: its night range does not start, not even after midnight
    entries = hours(days, "UTC", holidays=("2024-01-12T00:00:00.000Z",))
    assert open_at(entries, "2024-01-12 23:00", "2024-01-13 01:00", "2024-01-13 10:00") == [False, False, True]
    # a holiday of another year is another day
    entries = hours(days, "UTC", holidays=("2023-01-13T00:00:00.000Z",))
    assert open_at(entries, "2024-01-13 10:00") == [True]


def test_a_holidays_date_is_a_date_in_the_entrys_zone():
    # Monday 2024-01-08 is a holiday in Minsk from 2024-01-07 21:00 UTC on
    entries = hours({"Monday": [("0:20", "4:19")], "Sunday": [("0:00", "24:00")]}, "(UTC+03:00) Minsk",
                    holidays=("2024-01-08T00:00:00.000Z",))
    assert open_at(entries, "2024-01-07 20:59", "2024-01-07 21:30") == [True, False]


def test_any_open_entry_opens():
    closed_today = hours({"Saturday": [("9:00", "17:00")]}, "UTC", holidays=("2024-01-13",))
    other = hours({"Saturday": [("12:00", "13:00")]}, "Europe/London")
    assert open_at(closed_today + other, "2024-01-13 10:00", "2024-01-13 12:30") == [False, True]
    assert is_open([], at("2024-01-13 03:00"))  # no business hours: always open


def test_iana_zones_follow_daylight_saving_time():
    weekdays = {day: [("9:00", "17:00")] for day in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")}
    for zone in ("Europe/Amsterdam", AMSTERDAM_DISPLAY):  # a display name's place is its IANA zone
        entries = hours(weekdays, zone)
        # Friday 2024-03-29 is in winter time (UTC+1), Monday 2024-04-01 in summer time (UTC+2)
        assert open_at(entries, "2024-03-29 07:59", "2024-03-29 08:00", "2024-03-29 15:59", "2024-03-29 16:00") == [
            False, True, True, False], zone
        assert open_at(entries, "2024-04-01 06:59", "2024-04-01 07:00", "2024-04-01 14:59", "2024-04-01 15:00") == [
            False, True, True, False], zone


def test_the_nights_the_clocks_change():
    # Sunday 2024-03-31 in Amsterdam: 2:00 becomes 3:00, so 2:00-3:00 never happens
    entries = hours({"Sunday": [("2:00", "3:00")]}, "Europe/Amsterdam")
    assert open_at(entries, "2024-03-31 00:59", "2024-03-31 01:00", "2024-03-31 01:30") == [False, False, False]
    entries = hours({"Sunday": [("1:00", "4:00")]}, "Europe/Amsterdam")
    assert open_at(entries, "2024-03-31 00:00", "2024-03-31 01:30", "2024-03-31 02:00") == [True, True, False]
    # Sunday 2024-10-27: 3:00 becomes 2:00 again, so 2:00-2:30 happens twice
    entries = hours({"Sunday": [("2:00", "2:30")]}, "Europe/Amsterdam")
    assert open_at(entries, "2024-10-27 00:15", "2024-10-27 00:45", "2024-10-27 01:15", "2024-10-27 01:45") == [
        True, False, True, False]


def test_display_names_without_an_iana_place_keep_their_fixed_offset():
    weekdays = {"Monday": [("9:00", "17:00")]}
    # no place in it is an IANA zone: UTC-05:00 all year (in July New York is at UTC-04:00)
    fixed = hours(weekdays, "(UTC-05:00) Eastern Time (US & Canada)")
    new_york = hours(weekdays, "America/New_York")
    # Monday 2024-07-01
    assert open_at(fixed, "2024-07-01 13:59", "2024-07-01 14:00", "2024-07-01 21:59", "2024-07-01 22:00") == [
        False, True, True, False]
    assert open_at(new_york, "2024-07-01 12:59", "2024-07-01 13:00", "2024-07-01 20:59", "2024-07-01 21:00") == [
        False, True, True, False]
    # a place whose zone has another offset is not that place's zone: the stated offset wins
    odd = hours(weekdays, "(UTC+05:00) Amsterdam")
    assert open_at(odd, "2024-07-01 03:59", "2024-07-01 04:00") == [False, True]
    # "(UTC)" is UTC; London keeps summer time
    assert open_at(hours(weekdays, "(UTC) Coordinated Universal Time"), "2024-07-01 08:59", "2024-07-01 09:00") == [False, True]
    assert open_at(hours(weekdays, "(UTC+00:00) Dublin, Edinburgh, Lisbon, London"), "2024-07-01 07:59", "2024-07-01 08:00") == [
        False, True]


def test_the_clock_defaults_to_now_and_must_know_its_zone():
    always = hours({day: [("0:00", "24:00")] for day in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
                                                          "Saturday", "Sunday")}, "Asia/Tokyo")
    never = hours({}, "Asia/Tokyo")
    assert is_open(always) is True and is_open(never) is False
    with pytest.raises(ValueError):
        is_open(always, dt.datetime(2024, 1, 8, 12, 0))  # naive: which zone's noon?


@pytest.mark.parametrize("entry, field", [
    ({"timezone": "(UTC+99:00) Nowhere"}, "timezone"),
    ({"timezone": "(UTC+03:75) Minsk"}, "timezone"),
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"timezone": 3}, "timezone"),
    ({"weekdays": [{"weekday": "Monday", "content": [{"from": "9:00", "to": "24:01"}]}]}, "content[0].to"),
    ({"weekdays": [{"weekday": "Monday", "content": [{"from": "9", "to": "10:00"}]}]}, "content[0].from"),
    ({"weekdays": [{"weekday": "Monday", "content": []}, {"weekday": "monday", "content": []}]}, "weekday"),
    ({"holidays": [{"holiday": "x", "date": "2024-02-30"}]}, "date"),
])
def test_invalid_business_hours_are_a_400_naming_the_field(entry, field):
    with pytest.raises(InvalidRequest) as caught:
        validate_business_hours([entry])
    assert field in caught.value.text, caught.value.text


def test_weekday_names_are_normalised():
    (entry,) = validate_business_hours([{"weekdays": [{"weekday": "monday", "content": [{"from": "9:00", "to": "17:00"}]}]}])
    assert entry == {"weekdays": [{"weekday": "Monday", "content": [{"from": "9:00", "to": "17:00"}]}],
                     "holidays": [], "label": "", "timezone": "(UTC) UTC"}
