"""Which timezone the PBX is in: one answer for the pages, the exports, the mailed reports, the
sync and the CLI, followed while they run (a change in the PBX's settings needs no restart).

First found wins:
1. the `pbx.timezone` setting;
2. `PBXTimezone` in the PBX configuration DB (`pbx.config_db`), read again only when that file
   (or its WAL) changes: a `stat` per question, never a read per request;
3. the timezone the mirror was last synced with (the config DB is out of reach: a copied
   mirror, a web worker away from the PBX's files), the one its times were read with;
4. the system's timezone (on a PBX it is set from `PBXTimezone`), then UTC — with a warning
   in the log, since times shown that way may well be off.
3 and 4 are looked at again every few seconds, so the answer improves once the daemon's first
sync or the PBX's settings provide one.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable
from zoneinfo import ZoneInfoNotFoundError

from mirror.pbxtime import PbxClock
from pbx.config import SourceBusy, SourceError, read_pbx_timezone

log = logging.getLogger("extcdr.timezone")

# While the answer is a fallback (3, 4): how often to look for a better one.
RECHECK_S = 5.0
_SYSTEM_TIMEZONE_FILE = Path("/etc/timezone")


class PbxZone:
    """The PBX's clock now (`clock()`); thread-safe, cheap to ask often."""

    def __init__(self, config_db: str | Path | None = None, timezone: str = "",
                 mirror_timezone: Callable[[], str | None] | None = None, *,
                 monotonic: Callable[[], float] = time.monotonic):
        """`timezone` (the setting) fixes the answer; an unknown name raises ValueError.
        `mirror_timezone` reads the timezone the mirror was last synced with."""
        self.config_db = Path(config_db) if config_db else None
        self.mirror_timezone = mirror_timezone or (lambda: None)
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._clock: PbxClock | None = _clock_of(timezone) if timezone else None
        if timezone and self._clock is None:
            raise ValueError(f"unknown timezone {timezone!r}")
        self._fixed = self._clock is not None
        self._signature: tuple | None = None       # of the config DB the answer was read from
        self._recheck_at: float | None = None      # a fallback answer: when to look again
        self._said: str | None = None              # the last timezone logged

    @classmethod
    def of(cls, settings, mirror_timezone: Callable[[], str | None] | None = None) -> "PbxZone":
        """The zone of the settings `pbx.timezone` and `pbx.config_db`."""
        return cls(settings["pbx.config_db"], settings["pbx.timezone"], mirror_timezone)

    def clock(self) -> PbxClock:
        """The PBX's clock: the same object until the PBX's timezone changes."""
        if self._fixed:
            return self._clock
        signature = _file_signature(self.config_db)
        with self._lock:
            now = self._monotonic()
            if (self._clock is None or signature != self._signature
                    or (self._recheck_at is not None and now >= self._recheck_at)):
                self._resolve(signature, now)
            return self._clock

    def _resolve(self, signature: tuple | None, now: float) -> None:
        try:
            name, why_not = self._from_config_db()
        except SourceBusy as exc:
            if self._clock is not None:
                return                          # locked by the PBX for now: ask again next time
            name, why_not = None, str(exc)
        self._signature = signature
        self._recheck_at = None if name else now + RECHECK_S
        if name:
            self._use(name, logging.INFO, f"PBX timezone {name} (PBXTimezone in {self.config_db})")
            return
        mirrored = _known(self.mirror_timezone())
        if mirrored:
            self._use(mirrored, logging.INFO,
                      f"PBX timezone {mirrored}, as the mirror was last synced ({why_not})")
            return
        system = _known(system_timezone())
        self._use(system or "UTC", logging.WARNING,
                  f"no PBX timezone found ({why_not}; the mirror has none yet): times are "
                  f"taken as {'the system timezone ' + system if system else 'UTC'}, which may "
                  f"be wrong; name the PBX config DB (pbx.config_db, --pbx-db) or its timezone "
                  f"(pbx.timezone, --timezone)")

    def _from_config_db(self) -> tuple[str | None, str]:
        """(the config DB's timezone, or None and why not); SourceBusy while it is locked."""
        if self.config_db is None:
            return None, "no PBX config DB given"
        try:
            name = read_pbx_timezone(self.config_db, busy_timeout_ms=250)
        except SourceBusy:
            raise
        except SourceError as exc:
            return None, str(exc)
        if not name:
            return None, f"{self.config_db}: no PBXTimezone"
        if _known(name) is None:
            return None, f"{self.config_db}: PBXTimezone {name!r} is not an IANA timezone"
        return name, ""

    def _use(self, name: str, level: int, message: str) -> None:
        if self._clock is None or self._clock.tz_name != name:
            self._clock = _clock_of(name)
        if name != self._said:
            log.log(level, message)
            self._said = name


def system_timezone() -> str | None:
    """The machine's timezone name (`TZ`, then /etc/timezone), if it says one."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        return name
    try:
        return _SYSTEM_TIMEZONE_FILE.read_text().strip() or None
    except OSError:
        return None


def _known(name: str | None) -> str | None:
    return name if name and _clock_of(name) is not None else None


def _clock_of(name: str) -> PbxClock | None:
    try:
        return PbxClock(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _file_signature(path: Path | None) -> tuple | None:
    """What changes when SQLite writes the file: the main file and its WAL, by stat. An empty
    WAL holds nothing (a reader of a WAL-mode file may create one) and counts as none."""
    if path is None:
        return None
    signature = []
    for name in (path, Path(f"{path}-wal")):
        try:
            st = os.stat(name)
        except OSError:
            st = None
        signature.append((st.st_ino, st.st_size, st.st_mtime_ns) if st and st.st_size else None)
    return tuple(signature)
