"""Read-only reader of the PBX's call history (`cdr.db`): its legs. Who is who (`mikopbx.db`) is
`pbx.config`'s.

The module never writes to PBX files. Each read opens the file with `mode=ro` (so SQLite also
reads the newest rows still in `cdr.db-wal`) and closes it again, so a file replaced by a
restored backup is seen at the next read.
"""
from __future__ import annotations

import sqlite3
from contextlib import closing, contextmanager
from pathlib import Path

from mirror.calls import Leg, qualified
from mirror.pbxtime import PbxClock, linkedid_epoch_ms

# The columns a leg is made of, in the order `leg_from_row` expects them.
LEG_SOURCE_COLUMNS = (
    "id", "UNIQUEID", "linkedid", "start", "answer", "endtime", "src_chan", "src_num",
    "src_name", "dst_chan", "dst_num", "dst_name", "did", "disposition", "dialstatus",
    "recordingfile", "from_account", "to_account", "appname", "is_app", "transfer",
    "a_transfer", "duration", "billsec", "dtmf_digits")
_REQUIRED = {"id", "UNIQUEID", "linkedid", "start", "endtime", "src_num", "dst_num"}
_CHUNK = 900


class SourceError(Exception):
    """A PBX database is missing, unreadable or not what it should be."""


class SourceBusy(SourceError):
    """The PBX database is locked by a writer for longer than the busy timeout."""


@contextmanager
def pbx_errors(path: Path):
    """sqlite3 errors of a PBX file as SourceBusy/SourceError — only around PBX queries, so a
    failure of the module's own DB is never blamed on the PBX."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise SourceBusy(f"{path}: locked by another process ({exc})") from exc
        raise SourceError(f"{path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise SourceError(f"{path}: {exc}") from exc


@contextmanager
def read_only(path: Path, busy_timeout_ms: int):
    """A PBX file opened read-only (the newest rows in its WAL too), closed afterwards."""
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    with pbx_errors(path):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                               timeout=busy_timeout_ms / 1000)
    with closing(conn):
        yield conn


class CdrSource:
    """The PBX call history table `cdr_general`, read by `id` ranges and by linkedid."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = 5_000):
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms

    @contextmanager
    def reading(self):
        """One read-only session: a consistent snapshot of the file for a whole step."""
        with read_only(self.path, self.busy_timeout_ms) as conn:
            with pbx_errors(self.path):
                conn.execute("BEGIN")  # one snapshot for every query of this session
                reader = CdrReader(conn, self.path)
            yield reader

    def check(self) -> None:
        """Raise SourceError unless the file is a readable PBX history DB."""
        with self.reading() as reader:
            reader.max_id()


class CdrReader:
    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn = conn
        self.path = path
        present = {row[1] for row in conn.execute("PRAGMA table_info(cdr_general)")}
        if not present:
            raise SourceError(f"{path}: not a PBX history database (no cdr_general table)")
        missing = _REQUIRED - present
        if missing:
            raise SourceError(f"{path}: cdr_general lacks columns {', '.join(sorted(missing))}")
        self._select = _select_legs("cdr_general", present)
        # Legs of calls in progress (MikoPBX's temporary table; absent on other PBXs).
        in_progress = {row[1] for row in conn.execute("PRAGMA table_info(cdr)")}
        self._select_live = (_select_legs("cdr", in_progress)
                             if _REQUIRED <= in_progress else None)

    def _fetch(self, sql: str, params=()) -> list[tuple]:
        with pbx_errors(self.path):
            return self.conn.execute(sql, params).fetchall()

    def max_id(self) -> int:
        return self._fetch("SELECT max(id) FROM cdr_general")[0][0] or 0

    def uniqueid_at(self, row_id: int) -> str | None:
        rows = self._fetch("SELECT UNIQUEID FROM cdr_general WHERE id = ?", (row_id,))
        return rows[0][0] if rows else None

    def rows_after(self, cursor: int, limit: int) -> list[tuple]:
        return self._fetch(f"{self._select} WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit))

    def rows_between(self, first: int, last: int) -> list[tuple]:
        return self._fetch(f"{self._select} WHERE id BETWEEN ? AND ? ORDER BY id",
                           (first, last))

    def newest_start(self) -> str | None:
        """The start of the leg moved last (local time string)."""
        rows = self._fetch("SELECT start FROM cdr_general ORDER BY id DESC LIMIT 1")
        return rows[0][0] if rows else None

    def live_rows(self) -> list[tuple]:
        """The legs still in progress (MikoPBX's `cdr` table), in LEG_SOURCE_COLUMNS order."""
        if self._select_live is None:
            return []
        return self._fetch(self._select_live)

    def rows_of(self, linkedids) -> list[tuple]:
        ids = list(linkedids)
        rows = []
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i:i + _CHUNK]
            rows += self._fetch(
                f"{self._select} WHERE linkedid IN ({','.join('?' * len(chunk))})", chunk)
        return rows


def _select_legs(table: str, present: set[str]) -> str:
    """SELECT of LEG_SOURCE_COLUMNS; older PBX releases lack some: an empty value instead."""
    return "SELECT " + ", ".join(
        c if c in present else f"'' AS {c}" for c in LEG_SOURCE_COLUMNS) + f" FROM {table}"


def _text(value) -> str:
    return "" if value is None else str(value)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def leg_from_row(row: tuple, clock: PbxClock, prefix: str = "") -> Leg | None:
    """A `cdr_general` row (LEG_SOURCE_COLUMNS order) as a Leg; None if it has no time at all.
    `prefix` (`<pbx id>:`, see `mirror.calls.qualified`) goes before its uniqueid and linkedid.

    The backfill's hot path: one call per PBX row, so it avoids helper calls for the common
    case of text columns holding text.
    """
    (row_id, uniqueid, linkedid, start, answer, endtime, src_chan, src_num, src_name, dst_chan,
     dst_num, dst_name, did, disposition, dialstatus, recordingfile, from_account, to_account,
     appname, is_app, transfer, a_transfer, duration, billsec, dtmf_digits) = row
    uniqueid = _text(uniqueid) or f"cdr_general:{row_id}"
    linkedid = _text(linkedid) or uniqueid
    call_start = linkedid_epoch_ms(linkedid)
    if prefix:
        uniqueid, linkedid = prefix + uniqueid, prefix + linkedid
    start_ms = clock.to_utc_ms(start, call_start)
    anchor = call_start if start_ms is None else start_ms
    answer_ms = clock.to_utc_ms(answer, anchor) if answer else None
    end_ms = clock.to_utc_ms(endtime, answer_ms or anchor)  # a leg ends after its answer
    if start_ms is None:
        start_ms = answer_ms or end_ms or call_start
        if start_ms is None:
            return None
    return Leg(
        uniqueid, linkedid, row_id, start_ms, answer_ms, end_ms,
        src_chan or "", _text(src_num), src_name or "", dst_chan or "", _text(dst_num),
        dst_name or "", _text(did), disposition or "", dialstatus or "", recordingfile or "",
        _text(from_account), _text(to_account), appname or "",
        is_app == "1" or is_app == 1 or (bool(is_app) and str(is_app).strip() == "1"),
        transfer if type(transfer) is int else (_int(transfer) or 0),
        a_transfer if type(a_transfer) is int else (_int(a_transfer) or 0),
        duration if type(duration) is int else _int(duration),
        billsec if type(billsec) is int else _int(billsec), dtmf_digits or "")


def legs_from_rows(rows: list[tuple], clock: PbxClock, pbx: str = "") -> list[Leg]:
    """The legs of these rows (rows without any time are skipped), their ids qualified with
    the PBX's id (`mirror.calls.qualified`)."""
    prefix = qualified(pbx, "")
    legs = [leg_from_row(row, clock, prefix) for row in rows]
    return [leg for leg in legs if leg is not None]
