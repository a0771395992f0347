"""A small builder of real PBX SQLite files for scenario tests.

`Pbx(tmp_path)` creates, in a test's temporary directory, a `cdr.db` with MikoPBX's real
`cdr_general` layout (optionally an older release's) and a config DB `mikopbx.db` with the
employees, applications and trunk every scenario uses. A call is written as a small table of
its legs, with only the interesting columns; everything else gets the value MikoPBX would write:

    pbx.call('''
        start    | answer   | end      | src          | dst | dialstatus
        10:00:00 | 10:00:06 | 10:02:06 | +79161234567 | 201 |
    ''', did="74951234567")

Table cells:
* times `HH:MM:SS[.mmm]` are local PBX time on the call's `day`; a full `YYYY-MM-DD HH:MM:SS`
  string is written verbatim (phone-side transfer rows have no milliseconds);
* `src` / `dst` are numbers: they fill `src_num`/`dst_num` and a matching channel — `PJSIP/201-…`
  for employees, `Queue:2000` / `App:2020` / `App:2200` for the PBX's applications, the trunk
  channel `PJSIP/SIP-TRUNK-4B2E1A3C-…` for any other (external) number. One number keeps one
  channel within a call; `202#2` is employee 202's second channel (a consultation line);
* an empty cell means "the default"; `''` is an explicit empty string, `NULL` an SQL NULL.

The module under test is driven through its CLI (`cli.main`) in-process.
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from pbx import tables as pbxschema

PROVIDER_ID = "SIP-TRUNK-4B2E1A3C"
PROVIDER_NAME = "Beeline"
TRUNK = f"PJSIP/{PROVIDER_ID}"
DID = "74951234567"
MONITOR = "/storage/usbdisk1/mikopbx/astspool/monitor"

EMPLOYEES = {
    "201": "Иван Петров",
    "202": "Мария Смирнова",
    "203": "Олег Кузнецов",
    "204": "Анна Соколова",
    "205": "Павел Попов",
    "206": "Елена Лебедева",
    "207": "Сергей Козлов",
    "208": "Ольга Новикова",
    "209": "Дмитрий Морозов",
}
QUEUE = "2000"
IVR = "2020"
DIALPLAN_APP = "2200"
APPLICATIONS = {QUEUE: ("QUEUE", "Отдел продаж"), IVR: ("IVR MENU", "Главное меню"),
                DIALPLAN_APP: ("DIALPLAN APPLICATION", "Эхо-тест")}
# Employee 201's mobile phone: an EXTERNAL extension, i.e. an external number, not an internal one.
EMPLOYEE_MOBILE = "79169990011"

_TIME = re.compile(r"\d\d:\d\d:\d\d(\.\d{3})?")
_INT_COLUMNS = {"billsec", "duration", "transfer", "a_transfer", "id"}
_ALIASES = {"end": "endtime", "uniqueid": "UNIQUEID"}


@dataclass
class Call:
    """The legs of one call as they are (or will be) written into `cdr_general`."""
    linkedid: str
    rows: list[dict] = field(default_factory=list)


def write_config(path: Path, tz_name: str) -> None:
    """The PBX config DB: employees 201..209, a queue, an IVR, a dialplan app, a mobile, a trunk."""
    conn = pbxschema.create(str(path), pbxschema.PBX_CONFIG_DDL)
    with conn:
        for user_id, (number, name) in enumerate(EMPLOYEES.items(), start=1):
            conn.execute("INSERT INTO m_Users (id, email, username, language) VALUES (?,?,?,?)",
                         (user_id, f"user{number}@example.com", name, "ru-ru"))
            conn.execute(
                "INSERT INTO m_Extensions (number, type, callerid, userid, show_in_phonebook,"
                " public_access, is_general_user_number) VALUES (?, 'SIP', ?, ?, '1', '0', '1')",
                (number, name, user_id))
            conn.execute(
                "INSERT INTO m_Sip (uniqid, disabled, extension, type, host, port, username,"
                " secret, description) VALUES (?, '0', ?, 'peer', 'dynamic', 5060, ?, '', ?)",
                (f"SIP-PHONE-{number}", number, number, name))
        conn.execute(
            "INSERT INTO m_Extensions (number, type, callerid, userid, show_in_phonebook,"
            " public_access, is_general_user_number) VALUES (?, 'EXTERNAL', ?, 1, '1', '0', '0')",
            (EMPLOYEE_MOBILE, EMPLOYEES["201"]))
        for number, (kind, name) in APPLICATIONS.items():
            conn.execute(
                "INSERT INTO m_Extensions (number, type, callerid, userid, show_in_phonebook,"
                " public_access, is_general_user_number) VALUES (?, ?, ?, NULL, '1', '0', '0')",
                (number, kind, name))
        conn.execute(
            "INSERT INTO m_Sip (uniqid, disabled, extension, type, host, port, username, secret,"
            " description) VALUES (?, '0', '', 'friend', 'sip.beeline.example', 5060, ?, '', ?)",
            (PROVIDER_ID, DID, PROVIDER_NAME))
        conn.execute("INSERT INTO m_Providers (uniqid, type, sipuid, iaxuid, note)"
                     " VALUES (?, 'SIP', ?, '', '')", (PROVIDER_ID, PROVIDER_ID))
        conn.executemany("INSERT INTO m_PbxSettings (key, value) VALUES (?, ?)",
                         [("PBXTimezone", tz_name), ("PBXLanguage", "ru-ru"),
                          ("PBXName", "Scenario PBX")])
    conn.close()


def parse_table(text: str) -> list[dict]:
    """`|`-separated rows under a header line → dicts of the non-empty cells."""
    lines = [line for line in text.strip().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    header = [_ALIASES.get(h.strip().lower(), h.strip()) for h in lines[0].split("|")]
    rows = []
    for line in lines[1:]:
        cells = [c.strip() for c in line.split("|")]
        if len(cells) != len(header):
            raise ValueError(f"{len(cells)} cells under {len(header)} columns: {line!r}")
        row = {}
        for name, cell in zip(header, cells):
            if cell == "":
                continue
            row[name] = None if cell == "NULL" else "" if cell == "''" else cell
        rows.append(row)
    return rows


def _naive(local: str) -> datetime:
    return datetime.fromisoformat(local)


def _whole_seconds(later: str, earlier: str) -> int:
    """What the PBX computes: the difference of the local strings, milliseconds dropped."""
    return int((_naive(later).replace(microsecond=0)
                - _naive(earlier).replace(microsecond=0)).total_seconds())


class Pbx:
    """One PBX: its `cdr.db`, its config DB and the module DB the CLI builds from them
    (`module_db`: a path or a `postgresql://` URL; default `module.db` beside them)."""

    def __init__(self, root: Path, capsys, *, tz: str = "Europe/Moscow", older: bool = False,
                 config: bool = True, day: str = "2024-03-05", module_db: Path | str = ""):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.capsys = capsys
        self.tz_name = tz
        self.tz = ZoneInfo(tz)
        self.day = day
        self.cdr_db = root / "cdr.db"
        self.pbx_db = root / "mikopbx.db" if config else None
        self.module_db = module_db or root / "module.db"
        self.columns = pbxschema.cdr_column_names(older=older)
        pbxschema.create(str(self.cdr_db), pbxschema.cdr_ddl(older=older)).close()
        if config:
            write_config(self.pbx_db, tz)
        self._seq = itertools.count(1)
        self._chan_seq = itertools.count(0x2A)
        self._days: set[str] = set()

    # ---- building legs -------------------------------------------------------------------

    def local(self, value: str, day: str) -> str:
        """A table time cell → the local string the PBX writes."""
        if _TIME.fullmatch(value):
            return f"{day} {value}" + ("" if "." in value else ".000")
        _naive(value)  # a full date-time string, kept verbatim; fail early on typos
        return value

    def unix(self, local: str, *, fold: int = 0) -> int:
        return int(_naive(local).replace(tzinfo=self.tz, fold=fold).timestamp())

    def _channel(self, number: str, instance: str, chans: dict) -> str:
        if number == QUEUE:
            return f"Queue:{number}"
        if number in (IVR, DIALPLAN_APP):
            return f"App:{number}"
        key = (number, instance)
        if key not in chans:
            endpoint = number if number in EMPLOYEES else PROVIDER_ID
            chans[key] = f"PJSIP/{endpoint}-{next(self._chan_seq):08x}"
        return chans[key]

    @staticmethod
    def _account(channel: str | None, number: str | None) -> str:
        channel = channel or ""
        if channel.startswith(TRUNK) or (not channel and number and number not in EMPLOYEES
                                         and number not in APPLICATIONS):
            return PROVIDER_ID
        if number in EMPLOYEES:
            return number
        return ""

    def _leg(self, cells: dict, day: str, chans: dict) -> dict:
        v = dict(cells)
        row: dict = {}
        for side in ("src", "dst"):
            if side in v:
                number, _, instance = v.pop(side).partition("#")
                v.setdefault(f"{side}_num", number)
                v.setdefault(f"{side}_chan", self._channel(number, instance or "1", chans))
            row[f"{side}_num"] = v.pop(f"{side}_num", "")
            row[f"{side}_chan"] = v.pop(f"{side}_chan", "")
        row["start"] = self.local(v.pop("start"), day)
        row["answer"] = self.local(v.pop("answer"), day) if v.get("answer") else v.pop("answer", "")
        end = v.pop("endtime")
        row["endtime"] = self.local(end, day) if end else end  # empty: a leg still in progress
        ended = bool(row["endtime"])
        row["billsec"] = _whole_seconds(row["endtime"], row["answer"]) if ended and row["answer"] else 0
        row["duration"] = _whole_seconds(row["endtime"], row["start"]) if ended else 0
        row["dialstatus"] = "ANSWER" if row["answer"] else "NOANSWER"
        row.update({k: v.pop(k) for k in ("billsec", "duration", "dialstatus") if k in v})
        row["disposition"] = ("ANSWERED" if int(row["billsec"]) > 0
                              else row["dialstatus"] if row["dialstatus"] not in ("", "ANSWER")
                              else "NOANSWER")
        row["is_app"] = "1" if (row["dst_chan"] or "").startswith(("App:", "Queue:")) else ""
        row["from_account"] = self._account(row["src_chan"], row["src_num"])
        row["to_account"] = self._account(row["dst_chan"], row["dst_num"])
        row["src_name"] = EMPLOYEES.get(row["src_num"], "")
        row["dst_name"] = EMPLOYEES.get(row["dst_num"], APPLICATIONS.get(row["dst_num"], ("", ""))[1])
        n = next(self._seq)
        row["UNIQUEID"] = f"mikopbx-{self.unix(row['start'])}.{n}_{(n * 7919) % 0xFFFFFF:06x}"
        row.update(did="", recordingfile="", appname="", transfer=0, a_transfer=0,
                   work_completed="1", src_call_id="", dst_call_id="", verbose_call_id="",
                   rec_src_channel="", dtmf_digits="")
        row.update(v)
        for name in _INT_COLUMNS & row.keys():
            if row[name] is not None:
                row[name] = int(row[name])
        return row

    def build(self, table: str, *, day: str | None = None, linkedid: str | None = None,
              linkedid_shift: int = 0, **defaults) -> Call:
        """The legs of one call from its table; `defaults` apply to every leg (e.g. `did`).

        The linkedid is `mikopbx-<unix time of the first leg's start + linkedid_shift>.<n>`,
        as MikoPBX makes it, unless given.
        """
        day = day or self.day
        chans: dict = {}
        rows = [self._leg({**defaults, **cells}, day, chans) for cells in parse_table(table)]
        if linkedid is None:
            first = min(rows, key=lambda r: r["start"])["start"]
            linkedid = f"mikopbx-{self.unix(first) + linkedid_shift}.{next(self._seq)}"
        for row in rows:
            row.setdefault("linkedid", linkedid)
        return Call(linkedid, rows)

    def write(self, rows: list[dict], *, table: str = "cdr_general") -> None:
        """Insert legs in the given order (the PBX's move order) into `cdr_general`, or into
        `cdr`, the PBX's table of legs still in progress."""
        conn = pbxschema.create(str(self.cdr_db), pbxschema.cdr_ddl(
            table, older=self.columns != pbxschema.cdr_column_names()))
        with conn:
            for row in rows:
                cols = [c for c in self.columns if c in row and c != "id"]
                conn.execute(f"INSERT INTO {table} ({', '.join(cols)})"
                             f" VALUES ({', '.join('?' * len(cols))})", [row[c] for c in cols])
                self._days.update(t[:10] for t in (row["start"], row["endtime"]) if t)
        conn.close()

    def call(self, table: str, **kwargs) -> str:
        """Build one call's legs, write them all, return its linkedid."""
        call = self.build(table, **kwargs)
        self.write(call.rows)
        return call.linkedid

    # ---- driving the module through its CLI -------------------------------------------------

    def cli(self, *args: str) -> tuple[int, str, str]:
        """Run `extcdr ARGS` in-process: (exit code, stdout, stderr)."""
        from standin.cli import main

        self.capsys.readouterr()
        try:
            rc = main([str(a) for a in args])
        except SystemExit as stop:  # argparse and friends
            rc = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        out, err = self.capsys.readouterr()
        return rc, out, err

    def sync(self) -> None:
        args = ["sync", "--cdr-db", self.cdr_db]
        if self.pbx_db:
            args += ["--pbx-db", self.pbx_db]
        rc, out, err = self.cli(*args, "--db", self.module_db, "--once")
        assert rc == 0, f"sync exited {rc}: {err.strip()}"

    def calls(self, *filters: str, date_from: str | None = None,
              date_to: str | None = None) -> list[dict]:
        """`extcdr calls --format jsonl` over the given days (default: every day written)."""
        date_from = date_from or min(self._days)
        date_to = date_to or max(self._days)
        rc, out, err = self.cli("calls", "--db", self.module_db, "--format", "jsonl",
                                "--from", date_from, "--to", date_to, *filters)
        assert rc == 0, f"calls exited {rc}: {err.strip()}"
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def record(self, linkedid: str) -> dict:
        """The one call record with this linkedid."""
        found = [c for c in self.calls() if c["linkedid"] == linkedid]
        assert len(found) == 1, f"{len(found)} records for {linkedid}"
        return found[0]

    def sync_and_record(self, linkedid: str) -> dict:
        self.sync()
        return self.record(linkedid)


def at(utc: str) -> datetime:
    """A UTC instant written as `YYYY-MM-DD HH:MM:SS`."""
    return datetime.fromisoformat(utc).replace(tzinfo=timezone.utc)


def linkedid_at(utc: str, seq: int = 1) -> str:
    """The linkedid MikoPBX gives a call that starts at this UTC instant."""
    return f"mikopbx-{int(at(utc).timestamp())}.{seq}"
