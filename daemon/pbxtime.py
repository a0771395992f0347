"""PBX local time strings -> UTC epoch milliseconds, correct across DST changes.

MikoPBX writes leg times as local wall-clock strings (`YYYY-MM-DD HH:MM:SS[.mmm]`). In the
repeated hour of a DST fall-back such a string names two instants; the caller passes a
`not_before` anchor (the call's start from its linkedid, or the leg's own start) and the
earliest instant not before it wins.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache
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
        # Offsets depend only on the local hour: cache them per "YYYY-MM-DD HH".
        self._offsets = lru_cache(maxsize=65536)(self._hour_offsets)

    def _hour_offsets(self, hour_key: str) -> tuple[int, int]:
        """UTC offsets (ms) of the two readings (fold 0 and 1) of a local hour."""
        naive = datetime.fromisoformat(hour_key + ":30:00")
        first = naive.replace(tzinfo=self.tz, fold=0).utcoffset()
        second = naive.replace(tzinfo=self.tz, fold=1).utcoffset()
        return int(first.total_seconds() * 1000), int(second.total_seconds() * 1000)

    def to_utc_ms(self, text: str | None, not_before: int | None = None) -> int | None:
        """Epoch ms of a local time string; None for empty or unparsable values."""
        if not text or len(text) < 19:
            return None
        try:
            naive = datetime.fromisoformat(text[:23] if len(text) > 19 else text[:19])
        except ValueError:
            return None
        wall_ms = (naive - _EPOCH) // timedelta(milliseconds=1)
        off0, off1 = self._offsets(text[:13])
        early, late = wall_ms - max(off0, off1), wall_ms - min(off0, off1)
        if early == late or not_before is None:
            # Unambiguous, or no hint: fold 0 (the first reading, as zoneinfo does).
            return wall_ms - off0
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
    seconds = linkedid.rsplit("-", 1)[-1].split(".", 1)[0]  # `.<seq>` is a counter, not a fraction
    return int(seconds) * 1000 if seconds.isdigit() and len(seconds) >= 9 else None
