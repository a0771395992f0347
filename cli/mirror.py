"""The mirror's commands: `sync`, `calls`, `export`, `status`, `migrate`."""
from __future__ import annotations

import json
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from cli.base import CliError, add_db_argument, add_user_arguments, chosen_user
from daemon.locks import AlreadyRunning, CentralLock
from daemon.sync import mirror_sync
from i18n import STATUS_LABELS, TAB_LABELS
from mirror import bulk, schema
from mirror import settings as settings_module
from mirror.calls import DIRECTIONS, STATUSES
from mirror.contacts import contact_label, with_contacts
from mirror.database import open_module_db
from mirror.dialect import run
from mirror.pbxtime import PbxClock
from mirror.queries import (PERIODS, call_rows, calls_in_progress, calls_query,
                            counts_by_direction_and_status, pbx_state_value, sync_state)
from mirror.records import call_record, json_line, live_record
from mirror.retention import KEEP_MONTHS, utc_day
from mirror.store import RETAINED_FROM, state_key
from pbx.cdr import CdrSource, SourceBusy
from pbx.config import groups_db_beside
from pbx.mirror_context import MirrorContext
from pbx.phonebook import phonebook_db_beside


def add_commands(sub) -> dict:
    sync = sub.add_parser("sync", help="bring the mirror up to date with the PBX history")
    sync.add_argument("--cdr-db", required=True, type=Path, help="the PBX's cdr.db")
    sync.add_argument("--pbx-db", type=Path, help="the PBX config DB (mikopbx.db)")
    sync.add_argument("--groups-db", type=Path,
                      help="ModuleUsersGroups' module.db (default: found next to --pbx-db)")
    add_db_argument(sync)
    sync.add_argument("--once", action="store_true", help="catch up once and exit")
    sync.add_argument("--timezone", help="PBX timezone (default: from the config DB)")
    _setting_flag(sync, "--callback-window", "calls.callback_window", int, "SECONDS")
    _setting_flag(sync, "--extension-length", "calls.extension_length", int, "DIGITS",
                  "without --pbx-db: ")
    _setting_flag(sync, "--number-match-digits", "calls.number_match_digits", int, "DIGITS")
    _setting_flag(sync, "--interval", "sync.poll_interval", float, "SECONDS", "without --once: ")
    sync.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                      help="how long to wait for a PBX history DB locked by a writer")
    _setting_flag(sync, "--batch-rows", "sync.batch_rows", int, "ROWS")
    sync.add_argument("--pbx-id", dest="pbx.id", metavar="ID",
                      help=settings_module.setting("pbx.id").doc)

    calls = sub.add_parser("calls", help="list calls of the mirror, newest first")
    add_db_argument(calls)
    calls.add_argument("--format", choices=("jsonl", "table", "summary"), default="table",
                       help="one JSON object per call, a table, or counts by direction x status")
    add_filter_arguments(calls)
    calls.add_argument("--limit", type=int, help="at most this many calls (default: all)")
    calls.add_argument("--in-progress", action="store_true",
                       help="the calls under way now instead (jsonl or table)")
    add_timezone_arguments(calls)

    export = sub.add_parser("export", help="write the calls of a filter to a file (Excel, CSV, "
                            "JSON Lines), as the page's export does")
    add_db_argument(export)
    export.add_argument("--format", required=True, help="xlsx, csv, pdf or jsonl")
    export.add_argument("--out", required=True, type=Path, help="the file to write")
    add_user_arguments(export, "export only what this user may see (an operator: calls of "
                       "their extensions); from --users")
    export.add_argument("--language", choices=("en", "ru"), default="en")
    add_filter_arguments(export)
    add_timezone_arguments(export)

    status = sub.add_parser("status", help="mirror size, cursor and lag behind the PBX")
    add_db_argument(status)
    status.add_argument("--cdr-db", type=Path, help="the PBX's cdr.db, to measure the lag")
    status.add_argument("--format", choices=("text", "json"), default="text")
    status.add_argument("--pbx-id", metavar="ID", default="",
                        help="in a central history: this PBX's calls, cursor and lag")

    migrate = sub.add_parser("migrate", help="create module.db or bring it to this version's "
                             "schema (all steps in one transaction)")
    add_db_argument(migrate)
    return {"sync": cmd_sync, "calls": cmd_calls, "export": cmd_export, "status": cmd_status,
            "migrate": cmd_migrate}


def _setting_flag(parser, flag: str, key: str, kind: type, metavar: str, when: str = "") -> None:
    """A flag that sets one setting; its default and meaning come from the settings table."""
    setting = settings_module.setting(key)
    parser.add_argument(flag, type=kind, metavar=metavar, dest=key,
                        help=f"{when}{setting.doc} (default {setting.default:g})")


# --- sync ----------------------------------------------------------------------------------------

def cmd_sync(args) -> int:
    """The daemon's writer (`daemon.sync.mirror_sync`) from the command line's settings."""
    keys = ("calls.callback_window", "calls.extension_length", "calls.number_match_digits",
            "sync.poll_interval", "sync.batch_rows", "pbx.id")
    settings = settings_module.load(None, {
        "pbx.cdr_db": args.cdr_db, "pbx.config_db": args.pbx_db or _NO_FILE,
        "pbx.groups_db": _groups_db(args) or _NO_FILE, "pbx.timezone": args.timezone,
        "module.db": args.db, **{key: getattr(args, key) for key in keys}})
    source = CdrSource(args.cdr_db, busy_timeout_ms=_busy_timeout_ms(args.wait))
    _patiently(source.check, args.wait)  # a missing or foreign file fails before module.db exists
    if args.pbx_db is not None and not args.pbx_db.is_file():
        raise CliError(f"{args.pbx_db}: no such file")
    try:
        # a central history: one writer per PBX (a file: SQLite's write lock suffices)
        lock = CentralLock(args.db, settings["pbx.id"]) if settings_module.is_database_url(
            args.db) else nullcontext()
        with lock:
            _sync(args, settings)
    except AlreadyRunning as exc:
        raise CliError(str(exc)) from None
    return 0


def _sync(args, settings: settings_module.Settings) -> None:
    db = open_module_db(args.db)
    try:
        sync = mirror_sync(settings, db, MirrorContext(settings, db).clock(),
                           busy_timeout_ms=_busy_timeout_ms(args.wait))
        while True:
            with _progress() as progress:
                _patiently(lambda: sync.catch_up(progress), args.wait)
            if args.once:
                return
            time.sleep(settings["sync.poll_interval"])
    finally:
        db.close()


_NO_FILE = Path("/nonexistent")     # a PBX file the command line was not given


def _busy_timeout_ms(wait_s: float) -> int:
    return int(min(wait_s, 5) * 1000)


def _groups_db(args) -> Path | None:
    if args.groups_db:
        return args.groups_db
    return groups_db_beside(args.pbx_db) if args.pbx_db else None


def _patiently(work, patience_s: float):
    """Run `work`, retrying while the PBX history DB is locked by a writer, up to a limit."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return work()
        except SourceBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class _progress:
    """tqdm bar (rows, rows/s, ETA) on a terminal; nothing otherwise."""

    def __enter__(self):
        self.bar = None
        return self if sys.stderr.isatty() else None

    def __call__(self, read: int, pending: int):
        if self.bar is None:
            from tqdm import tqdm
            size = shutil.get_terminal_size()  # a terminal that reports no size gets 80x24
            self.bar = tqdm(total=read + pending, unit=" legs", unit_scale=True, desc="sync",
                            file=sys.stderr, ncols=size.columns, nrows=size.lines)
        self.bar.total = max(self.bar.total, self.bar.n + read + pending)
        self.bar.update(read)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


# --- calls ---------------------------------------------------------------------------------------

def add_filter_arguments(parser) -> None:
    """The history page's filters, shared by `calls` and `export`."""
    parser.add_argument("--period", choices=PERIODS,
                        help="a period relative to today instead of --from/--to")
    parser.add_argument("--from", dest="start", metavar="DATE",
                        help="YYYY-MM-DD or ISO date-time, PBX timezone (default: today)")
    parser.add_argument("--to", dest="end", metavar="DATE",
                        help="YYYY-MM-DD (whole day) or ISO date-time (default: end of today)")
    parser.add_argument("--direction", help="incoming, outgoing, internal (comma-separated)")
    parser.add_argument("--status", help="answered, transferred, missed, not_reached, "
                        "client_called_back, we_called_back, application (comma-separated)")
    parser.add_argument("--number", help="digits of a number, two numbers, a part of a name, a "
                        "linkedid, or linkedid:/src:/dst:/did:")
    parser.add_argument("--employee", help="extension(s), comma-separated (several PBXs: "
                                           "office:201 is that PBX's 201, 201 every PBX's)")
    parser.add_argument("--group", help="employee group name(s), comma-separated")
    parser.add_argument("--min-talk", type=int, metavar="SECONDS")
    parser.add_argument("--max-talk", type=int, metavar="SECONDS")
    parser.add_argument("--recording", choices=("yes", "no"), help="with or without a recording")
    parser.add_argument("--queue", help="queue number(s), comma-separated")
    parser.add_argument("--tag", help="tag name(s), comma-separated (any of them; --tag-mode all)")
    parser.add_argument("--tag-mode", choices=("any", "all"))
    parser.add_argument("--comment", metavar="TEXT", help="a part of a comment's text")
    parser.add_argument("--hangup", help="who hung up: caller, callee, pbx, unknown "
                        "(comma-separated)")
    parser.add_argument("--pbx", metavar="ID", help="one PBX's calls (its pbx.id) of a history "
                        "several PBXs write")
    parser.add_argument("--unreturned", action="store_true", help="missed calls nobody returned")


def add_timezone_arguments(parser) -> None:
    """Where a command learns the PBX's timezone: where the daemon and pages do."""
    parser.add_argument("--config", type=Path,
                        help="settings file (TOML): its pbx.config_db and pbx.timezone")
    parser.add_argument("--pbx-db", type=Path, help="the PBX config DB, whose PBXTimezone "
                        "times are shown in (default: pbx.config_db; else the mirror's)")


def filter_params(args) -> dict[str, object]:
    params = {"period": args.period, "from": args.start, "to": args.end,
              "direction": args.direction, "status": args.status, "number": args.number,
              "employee": args.employee, "group": args.group, "min_talk": args.min_talk,
              "max_talk": args.max_talk, "recording": args.recording, "queue": args.queue,
              "tag": args.tag, "tag_mode": args.tag_mode, "comment": args.comment,
              "hangup": args.hangup, "pbx": args.pbx, "unreturned": args.unreturned}
    return {k: v for k, v in params.items() if v not in (None, False)}


def mirror_context(args, db) -> MirrorContext:
    """The mirror's context for what this command prints (see `add_timezone_arguments`)."""
    beside = phonebook_db_beside(args.pbx_db) if args.pbx_db else None
    settings = settings_module.load(args.config, {"pbx.config_db": args.pbx_db,
                                                  "pbx.phonebook_db": beside})
    return MirrorContext(settings, db)


def cmd_calls(args) -> int:
    db = open_module_db(args.db, readonly=True)
    try:
        context = mirror_context(args, db)
        clock = context.clock()
        if args.in_progress:
            return _print_in_progress(db, args.format, clock)
        flt = context.call_filter({
            **filter_params(args), **({"limit": args.limit} if args.limit is not None else {})})
        if args.format == "summary":
            _print_summary(counts_by_direction_and_status(flt, db))
            return 0
        rows = with_contacts(call_rows(calls_query(flt, db)), db, flt.phonebook)
        if args.format == "jsonl":
            for row in rows:
                sys.stdout.write(json_line(call_record(row, clock.tz)))
            return 0
        shown = _print_table((call_record(row, clock.tz) for row in rows))
        if flt.limit is not None and shown == flt.limit:
            total = calls_query(replace(flt, limit=None), db, counting=True).count()
            if total > shown:
                print(f"… {shown:,} of {total:,} calls shown; use --limit to see more")
    finally:
        db.close()
    return 0


def cmd_export(args) -> int:
    """The page's export from the command line; the file appears whole or not at all."""
    from exports.writers import about, export_file  # openpyxl and fpdf: only to export
    user = chosen_user(args)
    visible_to = user.visible_to if user is not None else None
    if not args.out.parent.is_dir():
        raise CliError(f"{args.out.parent}: no such directory")
    db = open_module_db(args.db, readonly=True)
    try:
        params = filter_params(args)
        context = mirror_context(args, db)
        clock = context.clock()
        flt = context.call_filter(params, visible_to=visible_to)
        count = export_file(args.out, args.format, flt, db, clock, args.language,
                            about(args.user or "extcdr export", params, flt, clock,
                                  args.language, db))
    finally:
        db.close()
    print(f"{count:,} calls written to {args.out}", file=sys.stderr)
    return 0


def _print_table(records) -> int:
    """The calls as the page lists them (numbers with their names, the outside number's
    contact last); returns how many."""
    columns = ("start", "direction", "status", "src", "src_name", "dst", "dst_name",
               "answered_by", "wait_s", "talk_s", "contact")
    widths = (25, 9, 18, 16, 20, 16, 20, 11, 6, 6, 30)
    line = "  ".join(f"{c:<{w}}" for c, w in zip(columns, widths))
    print(line.rstrip())
    shown = 0
    for shown, record in enumerate(records, start=1):
        for side in ("src", "dst"):      # a name that only repeats the number is not shown
            if record[f"{side}_name"] == record[side]:
                record[f"{side}_name"] = ""
        record["contact"] = contact_label(record["contact"])
        cells = ("" if record[c] is None else str(record[c]) for c in columns)
        print("  ".join(f"{v[:w]:<{w}}" for v, w in zip(cells, widths)).rstrip())
    return shown


def _print_in_progress(db, fmt: str, clock: PbxClock) -> int:
    """The calls under way: who talks to whom, since when (PBX time)."""
    if fmt == "summary":
        raise CliError("--in-progress prints jsonl or a table, not a summary")
    records = [live_record(row, clock.tz) for row in calls_in_progress(db)]
    if fmt == "jsonl":
        for record in records:
            sys.stdout.write(json_line(record))
        return 0
    print(f"{'since':<8}  {'state':<9}  {'direction':<9}  who")
    for record in records:
        parties = "; ".join(
            f"{_named(p['from'], p['from_name'])} -> {_named(p['to'], p['to_name'])} "
            f"({p['state']})" for p in record["parties"])
        print(f"{record['since'][11:19]:<8}  {record['state']:<9}  {record['direction']:<9}  "
              f"{parties}")
    print(f"{len(records)} call{'s' if len(records) != 1 else ''} in progress")
    return 0


def _named(number: str, name: str) -> str:
    return f"{number} {name}" if name and name != number else number


def _print_summary(counts: dict[tuple[str, str], int]) -> None:
    """Calls by direction (rows) and status (columns), in the page's words."""
    labels = STATUS_LABELS["en"]
    total = TAB_LABELS["all"]
    statuses = [s for s in STATUSES if any(k[1] == s for k in counts)]
    print(f"{'':<10}" + "".join(f"{labels[s]:>20}" for s in statuses) + f"{total:>8}")
    for direction in DIRECTIONS:
        row = [counts.get((direction, s), 0) for s in statuses]
        print(f"{TAB_LABELS[direction]:<10}" + "".join(f"{n:>20}" for n in row)
              + f"{sum(row):>8}")
    print(f"{total:<10}" + "".join(
        f"{sum(n for (_, s), n in counts.items() if s == st):>20}" for st in statuses)
        + f"{sum(counts.values()):>8}")


# --- status, migrate -----------------------------------------------------------------------------

def cmd_status(args) -> int:
    db = open_module_db(args.db, readonly=True)
    try:
        state, pbx = sync_state(db), args.pbx_id
        mine = "WHERE pbx = ?" if pbx else ""             # a PBX's rows, or all of them
        ids = (pbx,) if pbx else ()
        info = {
            **({"pbx": pbx} if pbx else {}),
            "calls": run(db, f"SELECT count(*) FROM call {mine}", ids).fetchone()[0],
            "in_progress": run(db, f"SELECT count(*) FROM live_call {mine}", ids).fetchone()[0],
            "legs": run(db, f"SELECT count(*) FROM leg {mine}", ids).fetchone()[0],
            "size_bytes": _size_bytes(args.db, db),
            "cursor": int(state.get(state_key("cursor", pbx), 0)),
            "timezone": pbx_state_value(db, "timezone", pbx),
            "resyncs": int(state.get(state_key("resyncs", pbx), 0)),
            # the months of history kept (0: all) and the first day kept (see `retention`)
            "keep_months": int(state.get(KEEP_MONTHS, 0)),
            "kept_from": utc_day(int(state[RETAINED_FROM])) if RETAINED_FROM in state
            else None,
        }
        named = sorted(key.partition(":")[2] for key in state if key.startswith("cursor:"))
        if named and not pbx:                  # a central history: which PBXs write it
            info["pbxs"] = named
        if bulk.LOADING in state:              # a first sync's bulk load, not built yet
            info["loading"] = True
        newest = run(db, f"SELECT max(start_ms) FROM call {mine}", ids).fetchone()[0]
        info["newest_call"] = (datetime.fromtimestamp(
            newest / 1000, MirrorContext(settings_module.load(), db).clock().tz
        ).isoformat(timespec="seconds") if newest else None)
    finally:
        db.close()
    written = state.get(state_key("cdr_db", pbx))
    cdr_db = args.cdr_db or (Path(written) if written else None)
    if cdr_db:
        info["cdr_db"] = str(cdr_db)
        with CdrSource(cdr_db).reading() as reader:
            info["pbx_max_id"] = reader.max_id()
        info["lag_rows"] = max(0, info["pbx_max_id"] - info["cursor"])
    if args.format == "json":
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def _size_bytes(target, db) -> int:
    """What module.db takes: its files (with the WAL), or a central history's database."""
    if settings_module.is_database_url(target):
        return run(db, "SELECT pg_database_size(current_database())").fetchone()[0]
    return sum(p.stat().st_size for p in target.parent.glob(target.name + "*"))


def cmd_migrate(args) -> int:
    open_module_db(args.db).close()
    print(f"{settings_module.shown_target(args.db)}: schema {schema.LATEST}")
    return 0
