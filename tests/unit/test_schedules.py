"""Next-fire computation, with fixed instants: every kind, several timezones, both DST
transitions, month ends, leap day. Expected values are written out by hand."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from celery_durable import ConfigurationError
from celery_durable.scheduling.kinds import Cron, cron, daily, every, schedule_from_dict, weekly

UTC = timezone.utc


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def fires(schedule: Cron | object, start: datetime, n: int, tz: str = "UTC") -> list[datetime]:
    out, at = [], start
    for _ in range(n):
        at = schedule.next_after(at, tz)  # type: ignore[attr-defined]
        out.append(at)
    return out


def test_every_counts_from_the_nominal_tick_without_drift() -> None:
    assert fires(every(hours=1), utc(2026, 11, 1, 4, 0, 0), 3) == [
        utc(2026, 11, 1, 5),
        utc(2026, 11, 1, 6),
        utc(2026, 11, 1, 7),
    ]
    assert every(timedelta(minutes=1, seconds=30)).seconds == 90
    assert every(0.5).next_after(utc(2026, 1, 1)) == utc(2026, 1, 1) + timedelta(seconds=0.5)


def test_daily_in_new_york_across_spring_forward() -> None:
    # 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist that day
    assert fires(daily(2, 30, timezone="America/New_York"), utc(2026, 3, 7, 7, 30), 2) == [
        utc(2026, 3, 8, 7, 30),  # shifted by the gap: 03:30 EDT, once
        utc(2026, 3, 9, 6, 30),
    ]  # 02:30 EDT


def test_daily_in_new_york_across_fall_back() -> None:
    # 2026-11-01: 02:00 EDT goes back to 01:00 EST; 01:30 happens twice
    assert fires(daily(1, 30, timezone="America/New_York"), utc(2026, 10, 31, 5, 30), 2) == [
        utc(2026, 11, 1, 5, 30),  # the first 01:30 (EDT), once
        utc(2026, 11, 2, 6, 30),
    ]  # 01:30 EST
    assert fires(daily(2, 30, timezone="America/New_York"), utc(2026, 10, 31, 6, 30), 2) == [
        utc(2026, 11, 1, 7, 30),
        utc(2026, 11, 2, 7, 30),
    ]


def test_hourly_cron_neither_skips_nor_doubles_an_hour() -> None:
    hourly = cron("0 * * * *", timezone="America/New_York")
    spring = fires(hourly, utc(2026, 3, 8, 5), 3)  # from 00:00 EST
    assert spring == [utc(2026, 3, 8, 6), utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)]
    fall = fires(hourly, utc(2026, 11, 1, 4), 4)  # from 00:00 EDT
    assert fall == [
        utc(2026, 11, 1, 5),
        utc(2026, 11, 1, 6),
        utc(2026, 11, 1, 7),
        utc(2026, 11, 1, 8),
    ]  # 01:00 EDT, 01:00 EST, 02:00, 03:00


def test_london_transitions() -> None:
    london = daily(1, 30, timezone="Europe/London")
    # 2026-03-29: 01:00 GMT -> 02:00 BST
    assert london.next_after(utc(2026, 3, 28, 1, 30)) == utc(2026, 3, 29, 1, 30)  # 02:30 BST
    # 2026-10-25: 02:00 BST -> 01:00 GMT, 01:30 twice: the first one (BST)
    assert fires(london, utc(2026, 10, 24, 0, 30), 2) == [
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]


def test_lord_howe_half_hour_shift() -> None:
    # 2026-10-04: 02:00 (+10:30) -> 02:30 (+11); 02:15 does not exist
    assert daily(2, 15, timezone="Australia/Lord_Howe").next_after(utc(2026, 10, 2, 15, 45)) == utc(
        2026, 10, 3, 15, 45
    )  # 02:45 +11, shifted 30 min
    # 2026-04-05: 02:00 (+11) -> 01:30 (+10:30); 01:45 twice: the first one
    assert fires(daily(1, 45, timezone="Australia/Lord_Howe"), utc(2026, 4, 3, 14, 45), 2) == [
        utc(2026, 4, 4, 14, 45),
        utc(2026, 4, 5, 15, 15),
    ]
    # every half hour keeps a real-time rhythm through the repeated half hour
    half = cron("*/30 * * * *", timezone="Australia/Lord_Howe")
    got = fires(half, utc(2026, 4, 4, 14, 0), 4)  # from 01:00 +11
    assert got == [
        utc(2026, 4, 4, 14, 30),
        utc(2026, 4, 4, 15, 0),
        utc(2026, 4, 4, 15, 30),
        utc(2026, 4, 4, 16, 0),
    ]


def test_month_ends_and_leap_day() -> None:
    assert fires(cron("0 0 31 * *"), utc(2026, 4, 1), 2) == [utc(2026, 5, 31), utc(2026, 7, 31)]
    assert cron("0 0 29 2 *").next_after(utc(2026, 3, 1)) == utc(2028, 2, 29)
    assert cron("0 12 L * *").next_after(utc(2026, 2, 1)) == utc(2026, 2, 28, 12)


def test_weekly_and_weekday_names() -> None:
    monday_9 = weekly("mon", 9, timezone="Europe/London")
    assert monday_9 == weekly(0, 9, timezone="Europe/London")
    assert monday_9.next_after(utc(2026, 11, 28, 12)) == utc(2026, 11, 30, 9)  # GMT
    assert cron("0 9 * * MON-FRI").next_after(utc(2026, 11, 28)) == utc(2026, 11, 30, 9)


def test_the_apps_timezone_is_the_default() -> None:
    nine = daily(9)
    assert nine.next_after(utc(2026, 7, 1), "America/New_York") == utc(2026, 7, 1, 13)
    assert nine.next_after(utc(2026, 7, 1)) == utc(2026, 7, 1, 9)


def test_definitions_round_trip() -> None:
    for schedule in (every(90), cron("*/5 * * * *"), daily(3, 15, timezone="Asia/Tokyo")):
        assert schedule_from_dict(schedule.to_dict()) == schedule


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: cron("61 * * * *"), "invalid cron expression '61 \\* \\* \\* \\*'"),
        (lambda: cron("every day"), "cron\\(\\) takes 5 fields"),
        (lambda: daily(24, 0), "hour must be 0-23, got 24"),
        (lambda: daily(9, 60), "minute must be 0-59"),
        (lambda: weekly(7, 9), "weekday 0-6"),
        (lambda: weekly("funday", 9), "weekday 0-6"),
        (lambda: daily(9, timezone="Mars/Olympus"), "unknown timezone 'Mars/Olympus'"),
        (lambda: every(0), "positive interval"),
        (lambda: every(-5), "positive interval"),
        (lambda: every("1h"), "seconds or a timedelta"),  # type: ignore[arg-type]
        (lambda: every(10).next_after(datetime(2026, 1, 1)), "timezone-aware"),
        # an interval is real time: a timezone is refused with the reason, not a TypeError
        (
            lambda: every(60, timezone="Europe/London"),
            "every\\(\\) is an interval of real time and takes no timezone",
        ),
        (lambda: every(hours=1, timezone="UTC"), "daily\\(\\), weekly\\(\\) or cron\\(\\)"),
    ],
)
def test_bad_schedules_are_refused(make: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make()  # type: ignore[operator]
