"""Local PBX time strings -> UTC across DST changes."""
from datetime import datetime, timezone

from mirror.pbxtime import PbxClock, linkedid_epoch_ms


def utc_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * 1000)


def test_plain_time_with_and_without_milliseconds():
    clock = PbxClock("Europe/Moscow")
    assert clock.to_utc_ms("2024-03-05 10:00:00.250") == utc_ms("2024-03-05 07:00:00.250")
    assert clock.to_utc_ms("2024-03-05 10:00:00") == utc_ms("2024-03-05 07:00:00")


def test_empty_and_garbage_are_none():
    clock = PbxClock("Europe/Moscow")
    assert clock.to_utc_ms("") is None
    assert clock.to_utc_ms(None) is None
    assert clock.to_utc_ms("yesterday at noon") is None


def test_spring_forward_gap_and_summer_offset():
    clock = PbxClock("Europe/Berlin")
    assert clock.to_utc_ms("2024-03-31 01:59:59") == utc_ms("2024-03-31 00:59:59")
    assert clock.to_utc_ms("2024-03-31 03:00:00") == utc_ms("2024-03-31 01:00:00")


def test_repeated_fall_back_hour_is_resolved_by_the_anchor():
    clock = PbxClock("Europe/Berlin")
    # 02:30 happens at 00:30Z (summer time) and again at 01:30Z (winter time).
    assert clock.to_utc_ms("2024-10-27 02:30:00") == utc_ms("2024-10-27 00:30:00")
    second_pass = utc_ms("2024-10-27 01:10:00")
    assert clock.to_utc_ms("2024-10-27 02:30:00", not_before=second_pass) == \
        utc_ms("2024-10-27 01:30:00")
    first_pass = utc_ms("2024-10-27 00:20:00")
    assert clock.to_utc_ms("2024-10-27 02:30:00", not_before=first_pass) == \
        utc_ms("2024-10-27 00:30:00")


def test_linkedid_carries_the_call_start():
    assert linkedid_epoch_ms("mikopbx-1700000000.123") == 1_700_000_000_000
    assert linkedid_epoch_ms("1700000000.5") == 1_700_000_000_000
    assert linkedid_epoch_ms("not-a-linkedid") is None
    assert linkedid_epoch_ms("") is None


def test_local_day_bounds_of_a_25_hour_day():
    clock = PbxClock("Europe/Berlin")
    start, end = clock.local_day_bounds(datetime(2024, 10, 27).date())
    assert end - start == 25 * 3600
