"""PBX local time strings -> UTC epoch milliseconds, correct across DST changes.

MikoPBX writes leg times as local wall-clock strings (`YYYY-MM-DD HH:MM:SS[.mmm]`). In the
repeated hour of a DST fall-back such a string names two instants; the caller passes a
`not_before` anchor (the call's start from its linkedid, or the leg's own start) and the
earliest instant not before it wins.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1)
# A leg may be stamped slightly before its linkedid's whole-second time.
_ANCHOR_SLACK_MS = 2_000


class PbxClock:
    """Converts the PBX's local time strings to UTC and back, for one IANA timezone."""

    def __init__(self, tz_name: str):
        self.tz_name = tz_name
        self.tz = ZoneInfo(tz_name)
        # UTC ms of the two readings (fold 0, fold 1) of each local "YYYY-MM-DD HH": minutes,
        # seconds and milliseconds then add up without datetime arithmetic (hot path).
        self._hours: dict[str, tuple[int, int]] = {}

    def _hour_starts(self, hour_key: str) -> tuple[int, int]:
        naive = datetime.fromisoformat(hour_key + ":00:00")
        wall_ms = (naive - _EPOCH) // timedelta(milliseconds=1)
        starts = tuple(
            wall_ms - int(naive.replace(tzinfo=self.tz, fold=fold).utcoffset().total_seconds())
            * 1000 for fold in (0, 1))
        if len(self._hours) > 100_000:
            self._hours.clear()
        self._hours[hour_key] = starts
        return starts

    def to_utc_ms(self, text: str | None, not_before: int | None = None) -> int | None:
        """Epoch ms of a local time string; None for empty or unparsable values."""
        if not text or len(text) < 19 or text[13] != ":" or text[16] != ":":
            return None
        try:
            starts = self._hours.get(text[:13]) or self._hour_starts(text[:13])
            offset = int(text[14:16]) * 60_000 + int(text[17:19]) * 1000
            if len(text) > 20:
                offset += int((text[20:23] + "00")[:3])
        except ValueError:
            return None
        first, second = starts[0] + offset, starts[1] + offset
        if first == second or not_before is None:
            return first  # unambiguous, or no hint: the first reading, as zoneinfo does
        early, late = min(first, second), max(first, second)
        return early if early >= not_before - _ANCHOR_SLACK_MS else late

    def to_local(self, epoch_s: float) -> datetime:
        """An aware datetime in the PBX timezone (for display and JSON)."""
        return datetime.fromtimestamp(epoch_s, self.tz)

    def local_day_bounds(self, day) -> tuple[int, int]:
        """[start, end) of a local calendar day as UTC epoch seconds."""
        start = datetime(day.year, day.month, day.day, tzinfo=self.tz)
        end = start.replace(tzinfo=None) + timedelta(days=1)
        return int(start.timestamp()), int(end.replace(tzinfo=self.tz).timestamp())

    def local_to_epoch(self, naive: datetime) -> int:
        """A naive local wall-clock datetime -> UTC epoch seconds (fold 0)."""
        return int(naive.replace(tzinfo=self.tz).timestamp())


def linkedid_epoch_ms(linkedid: str | None) -> int | None:
    """The call's start carried by a MikoPBX linkedid `mikopbx-<unix>.<seq>` (or `<unix>.<seq>`)."""
    if not linkedid:
        return None
    seconds = linkedid[linkedid.rfind("-") + 1:].partition(".")[0]  # `.<seq>` is a counter
    return int(seconds) * 1000 if len(seconds) >= 9 and seconds.isdigit() else None
