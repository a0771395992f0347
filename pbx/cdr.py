"""Read-only readers of the PBX's databases: call legs (`cdr.db`) and who is who (`mikopbx.db`).

The module never writes to PBX files. Each read opens the file with `mode=ro` (so SQLite also
reads the newest rows still in `cdr.db-wal`) and closes it again, so a file replaced by a
restored backup is seen at the next read.
"""
from __future__ import annotations

import sqlite3
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mirror.calls import Directory, Leg
from mirror.pbxtime import PbxClock, linkedid_epoch_ms

# The columns a leg is made of, in the order `leg_from_row` expects them.
LEG_SOURCE_COLUMNS = (
    "id", "UNIQUEID", "linkedid", "start", "answer", "endtime", "src_chan", "src_num",
    "src_name", "dst_chan", "dst_num", "dst_name", "did", "disposition", "dialstatus",
    "recordingfile", "from_account", "to_account", "appname", "is_app", "transfer",
    "a_transfer", "duration", "billsec")
_REQUIRED = {"id", "UNIQUEID", "linkedid", "start", "endtime", "src_num", "dst_num"}
_CHUNK = 900


class SourceError(Exception):
    """A PBX database is missing, unreadable or not what it should be."""


class SourceBusy(SourceError):
    """The PBX database is locked by a writer for longer than the busy timeout."""


@contextmanager
def _pbx_errors(path: Path):
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
def _read_only(path: Path, busy_timeout_ms: int):
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    with _pbx_errors(path):
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
        with _read_only(self.path, self.busy_timeout_ms) as conn:
            with _pbx_errors(self.path):
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
        with _pbx_errors(self.path):
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


def leg_from_row(row: tuple, clock: PbxClock) -> Leg | None:
    """A `cdr_general` row (LEG_SOURCE_COLUMNS order) as a Leg; None if it has no time at all.

    The backfill's hot path: one call per PBX row, so it avoids helper calls for the common
    case of text columns holding text.
    """
    (row_id, uniqueid, linkedid, start, answer, endtime, src_chan, src_num, src_name, dst_chan,
     dst_num, dst_name, did, disposition, dialstatus, recordingfile, from_account, to_account,
     appname, is_app, transfer, a_transfer, duration, billsec) = row
    uniqueid = _text(uniqueid) or f"cdr_general:{row_id}"
    linkedid = _text(linkedid) or uniqueid
    call_start = linkedid_epoch_ms(linkedid)
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
        billsec if type(billsec) is int else _int(billsec))


def legs_from_rows(rows: list[tuple], clock: PbxClock) -> list[Leg]:
    """The legs of these rows (rows without any time are skipped)."""
    legs = [leg_from_row(row, clock) for row in rows]
    return [leg for leg in legs if leg is not None]


# --- the PBX configuration DB ------------------------------------------------------------------

@dataclass
class PbxConfig:
    """What the module needs of the PBX configuration."""
    directory: Directory
    timezone: str | None = None
    groups: dict[str, list[str]] = field(default_factory=dict)  # group name -> extensions


def read_pbx_config(path: str | Path | None, groups_path: str | Path | None = None, *,
                    extension_length: int = 4, number_match_digits: int = 9) -> PbxConfig:
    """Employees, PBX numbers, providers and timezone; groups from ModuleUsersGroups' DB."""
    directory = Directory(extension_length=extension_length,
                          number_match_digits=number_match_digits)
    config = PbxConfig(directory)
    if path is None:
        return config
    path = Path(path)
    with _read_only(path, 5_000) as conn, _pbx_errors(path):
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "m_Extensions" not in tables:
            raise SourceError(f"{path}: not a PBX configuration database (no m_Extensions)")
        sip_of_user = _read_extensions(conn, tables, directory)
        directory.providers = _read_providers(conn, tables)
        config.timezone = _timezone(conn, tables)
    if groups_path is not None and Path(groups_path).is_file():
        config.groups = _read_groups(Path(groups_path), sip_of_user)
    return config


def read_pbx_timezone(path: str | Path, busy_timeout_ms: int = 1_000) -> str | None:
    """Only the PBX's timezone (`PBXTimezone`): a cheap read, done again when the file changes."""
    path = Path(path)
    with _read_only(path, busy_timeout_ms) as conn, _pbx_errors(path):
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return _timezone(conn, tables)


def read_pbx_web_address(path: str | Path) -> str | None:
    """The PBX's own web address (`https://host[:port]`): the external host name or address of
    its internet interface (`m_LanInterfaces`), else that interface's address, with the admin
    shell's HTTPS port (`WEBHTTPSPort`). None when the config DB does not say."""
    path = Path(path)
    with _read_only(path, 1_000) as conn, _pbx_errors(path):
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "m_LanInterfaces" not in tables:
            return None
        columns = {row[1] for row in conn.execute("PRAGMA table_info(m_LanInterfaces)")}
        wanted = [c for c in ("exthostname", "extipaddr", "ipaddr") if c in columns]
        enabled = "WHERE coalesce(disabled, '0') != '1'" if "disabled" in columns else ""
        order = "internet = '1' DESC, id" if "internet" in columns else "id"
        host = next((value.split(":")[0] for row in conn.execute(
            f"SELECT {', '.join(wanted) or 'NULL'} FROM m_LanInterfaces {enabled} ORDER BY {order}")
            for value in row if value), None)
        port = _pbx_setting(conn, tables, "WEBHTTPSPort")
    if not host:
        return None
    return f"https://{host}" + (f":{port}" if port and str(port) != "443" else "")


def read_pbx_setting(path: str | Path, key: str) -> str | None:
    """One value of the PBX's settings (`m_PbxSettings`); None when the config DB does not say."""
    path = Path(path)
    with _read_only(path, 1_000) as conn, _pbx_errors(path):
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return _pbx_setting(conn, tables, key)


def _timezone(conn, tables) -> str | None:
    return _pbx_setting(conn, tables, "PBXTimezone")


def _pbx_setting(conn, tables, key: str) -> str | None:
    """A value of `m_PbxSettings`; None when it is missing or empty."""
    if "m_PbxSettings" not in tables:
        return None
    row = conn.execute("SELECT value FROM m_PbxSettings WHERE key = ?", (key,)).fetchone()
    return row[0] if row and row[0] else None


def _read_extensions(conn, tables, directory: Directory) -> dict[int, str]:
    users = {}
    if "m_Users" in tables:
        users = dict(conn.execute("SELECT id, username FROM m_Users"))
    rows = conn.execute("SELECT number, type, callerid, userid FROM m_Extensions").fetchall()
    sip_of_user = {}
    for number, kind, callerid, userid in rows:
        if not number:
            continue
        if kind == "SIP":
            directory.employees[number] = callerid or users.get(userid) or ""
            if userid is not None:
                sip_of_user.setdefault(userid, number)
        elif kind != "EXTERNAL":
            directory.pbx_numbers.add(number)
    for number, kind, _, userid in rows:
        if kind == "EXTERNAL" and userid in sip_of_user:
            directory.mobiles[number] = sip_of_user[userid]
    return sip_of_user


def _read_providers(conn, tables) -> dict[str, str]:
    """Trunk id (as in channel names and accounts) -> provider name (its SIP/IAX description)."""
    if "m_Providers" not in tables:
        return {}
    providers = {}
    for uniqid, sipuid, iaxuid, note in conn.execute(
            "SELECT uniqid, sipuid, iaxuid, note FROM m_Providers"):
        for key in (sipuid, iaxuid, uniqid):
            if key:
                providers[key] = note or key
    for table in ("m_Sip", "m_Iax"):
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if {"uniqid", "description"} <= columns:
            for uniqid, description in conn.execute(
                    f"SELECT uniqid, description FROM {table} WHERE uniqid IN "
                    f"(SELECT sipuid FROM m_Providers UNION SELECT iaxuid FROM m_Providers)"):
                if uniqid and description:
                    providers[uniqid] = description
    return providers


def _read_groups(path: Path, sip_of_user: dict[int, str]) -> dict[str, list[str]]:
    with _read_only(path, 5_000) as conn, _pbx_errors(path):
        try:
            rows = conn.execute(
                "SELECT g.name, m.user_id FROM m_ModuleUsersGroups_GroupMembers m "
                "JOIN m_ModuleUsersGroups_UsersGroups g ON g.id = m.group_id").fetchall()
        except sqlite3.OperationalError:
            return {}
    groups: dict[str, list[str]] = {}
    for name, user_id in rows:
        extensions = groups.setdefault(name, [])
        if user_id in sip_of_user:
            extensions.append(sip_of_user[user_id])
    return groups
