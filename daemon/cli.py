"""`extcdr`: one entry point, one subcommand per job. Errors are one line on stderr."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import time
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path

import peewee

from daemon.lifecycle import MODULE_ID, LifecycleError
from daemon.marketplace import MarketplaceError
from daemon.pbxtime import PbxClock
from daemon.pbxzone import PbxZone
from daemon.source import CdrSource, SourceBusy, SourceError, read_pbx_config
from daemon.sync import Sync, SyncOptions
from db.database import ModuleDbError, open_module_db, readable_error
from daemon.calls import DIRECTIONS, STATUSES
from db.queries import (PERIODS, QueryError, call_filter, call_rows, calls_in_progress,
                        calls_query, counts_by_direction_and_status, sync_state)
from db.records import call_record, live_record
from db.store import Store


class CliError(Exception):
    """A problem the user can fix; printed as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one readable line instead of usage + message
        raise CliError(f"{self.prog}: {message} (see --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="extcdr", description="Extended call history for MikoPBX.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sync = sub.add_parser("sync", help="bring the mirror up to date with the PBX history")
    sync.add_argument("--cdr-db", required=True, type=Path, help="the PBX's cdr.db")
    sync.add_argument("--pbx-db", type=Path, help="the PBX config DB (mikopbx.db)")
    sync.add_argument("--groups-db", type=Path,
                      help="ModuleUsersGroups' module.db (default: found next to --pbx-db)")
    sync.add_argument("--db", required=True, type=Path, help="the module's mirror (module.db)")
    sync.add_argument("--once", action="store_true", help="catch up once and exit")
    sync.add_argument("--timezone", help="PBX timezone (default: from the config DB)")
    sync.add_argument("--callback-window", type=int, default=86_400, metavar="SECONDS",
                      help="how long after a missed call a call counts as its callback")
    sync.add_argument("--extension-length", type=int, default=4,
                      help="without --pbx-db: numbers this short are internal")
    sync.add_argument("--number-match-digits", type=int, default=9,
                      help="trailing digits that identify an external number")
    sync.add_argument("--interval", type=float, default=2.0, help="poll interval without --once")
    sync.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                      help="how long to wait for a PBX history DB locked by a writer")
    sync.add_argument("--batch-rows", type=int, default=SyncOptions.batch_rows,
                      help="rows per transaction")

    calls = sub.add_parser("calls", help="list calls of the mirror, newest first")
    calls.add_argument("--db", required=True, type=Path)
    calls.add_argument("--format", choices=("jsonl", "table", "summary"), default="table",
                       help="one JSON object per call, a table, or counts by direction x status")
    _add_filter_arguments(calls)
    calls.add_argument("--limit", type=int, help="at most this many calls (default: all)")
    calls.add_argument("--in-progress", action="store_true",
                       help="the calls under way now instead (jsonl or table)")
    _add_timezone_arguments(calls)

    export = sub.add_parser("export", help="write the calls of a filter to a file (Excel, CSV, "
                            "JSON Lines), as the page's export does")
    export.add_argument("--db", required=True, type=Path)
    export.add_argument("--format", required=True, help="xlsx, csv, pdf or jsonl")
    export.add_argument("--out", required=True, type=Path, help="the file to write")
    export.add_argument("--user", help="export only what this user may see (an operator: "
                        "calls of their extensions); from --users")
    export.add_argument("--users", type=Path, help="JSON list of {name, password, role, "
                        "extensions[, language]} (default: the demo users)")
    export.add_argument("--language", choices=("en", "ru"), default="en")
    _add_filter_arguments(export)
    _add_timezone_arguments(export)

    daemon = sub.add_parser("daemon", help="resident: follow the PBX live and keep the mirror "
                            "up to date (SIGTERM stops, SIGHUP reloads the settings)")
    daemon.add_argument("--config", type=Path, help="settings file (TOML)")
    daemon.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one setting (repeatable)")
    daemon.add_argument("--cdr-db", type=Path, help="same as --set pbx.cdr_db=PATH")
    daemon.add_argument("--pbx-db", type=Path, help="same as --set pbx.config_db=PATH")
    daemon.add_argument("--db", type=Path, help="same as --set module.db=PATH")
    daemon.add_argument("--syslog", action="store_true", help="log to syslog, not stderr")

    web = sub.add_parser("web", help="serve the history pages and the JSON API (waitress), "
                         "behind the PBX admin shell's nginx")
    web.add_argument("--config", type=Path, help="settings file (TOML; holds web.proxy_token)")
    web.add_argument("--db", type=Path, help="same as --set module.db=PATH")
    web.add_argument("--listen", metavar="HOST:PORT", help="same as --set web.listen=HOST:PORT")
    web.add_argument("--standin", action="store_true",
                     help="run the admin-shell stand-in (login, session, auth) in this process")
    web.add_argument("--users", type=Path,
                     help="with --standin: JSON list of {name, password, role, extensions}")

    shell = sub.add_parser("admin-shell", help="development/demo: the admin-shell stand-in "
                           "(login, users, auth) and nginx; with --pbx the PBX's admin panel "
                           "that installs, licenses and runs modules, else in front of a "
                           "running `extcdr web`")
    shell.add_argument("--pbx", type=Path, help="a PBX folder: manage its modules (marketplace, "
                       "licences, enable switches) and run the enabled ones' workers")
    shell.add_argument("--config", type=Path,
                       help="without --pbx: the settings file `extcdr web` runs with")
    shell.add_argument("--app", metavar="HOST:PORT", help="without --pbx: where `extcdr web` "
                       "listens")
    shell.add_argument("--listen", metavar="HOST:PORT", required=True,
                       help="where nginx listens (loopback)")
    shell.add_argument("--run-dir", type=Path, required=True,
                       help="nginx's configuration, logs and temp files go here")
    shell.add_argument("--users", type=Path,
                       help="JSON list of {name, password, role, extensions[, language]}")

    emulator = sub.add_parser("ami-emulator", help="an AMI server for tests and the demo: "
                              "live calls into a demo cdr.db, transcripts, faults")
    from daemon import amiemu
    amiemu.add_arguments(emulator)

    package = sub.add_parser("package", help="build the marketplace archive (module.json at its "
                             "root; reproducible) and print its checksums")
    package.add_argument("--out", required=True, type=Path, help="the .zip to write")

    migrate = sub.add_parser("migrate", help="create module.db or bring it to this version's "
                             "schema (all steps in one transaction)")
    migrate.add_argument("--db", required=True, type=Path)

    pbx_help = "the PBX's storage folder (mikopbx.db, custom_modules/)"
    for name, text in (("install", "install the module on a PBX (disabled until enabled)"),
                       ("upgrade", "upgrade the installed module, keeping its data")):
        step = sub.add_parser(name, help=text)
        step.add_argument("--pbx", required=True, type=Path, help=pbx_help)
        step.add_argument("--archive", type=Path,
                          help="the module's archive (default: the newest from the PBX's "
                               "marketplace)")
    for name, text in (("enable", "turn the module's workers and pages on (needs a licence)"),
                       ("disable", "turn the module's workers and pages off; data stays"),
                       ("uninstall", "remove the module from the PBX")):
        step = sub.add_parser(name, help=text)
        step.add_argument("--pbx", required=True, type=Path, help=pbx_help)
        step.add_argument("--module", default=MODULE_ID, help=f"module id (default {MODULE_ID})")
    sub.choices["enable"].add_argument(
        "--wait", nargs="?", type=float, const=15.0, metavar="SECONDS",
        help="return once the module's pages are served (the PBX has started its workers); "
             "fail after SECONDS (default 15)")
    sub.choices["uninstall"].add_argument(
        "--keep-settings", action="store_true",
        help="keep the history, saved filters and reports for the next install")
    licence = sub.add_parser("licence", help="the module's licence on a PBX: show it, or "
                             "activate a key or coupon with the marketplace")
    licence.add_argument("action", choices=("show", "activate"))
    licence.add_argument("key", nargs="?", help="with activate: MIKO-XXXXX-XXXXX-XXXXX-XXXXX "
                         "or MIKOUPD-XXXXX-XXXXX-XXXXX-XXXXX; - reads it from stdin")
    licence.add_argument("--pbx", required=True, type=Path, help=pbx_help)
    licence.add_argument("--module", default=MODULE_ID, help=f"module id (default {MODULE_ID})")

    market = sub.add_parser("marketplace", help="tests/demo: a stand-in module marketplace "
                            "(archives and signed licences) on loopback")
    from daemon import marketplace
    marketplace.add_arguments(market)

    catcher = sub.add_parser("mail-catcher", help="demo/development: an SMTP server that keeps "
                             "every mail as an .eml file")
    from daemon import mailcatcher
    mailcatcher.add_arguments(catcher)

    status = sub.add_parser("status", help="mirror size, cursor and lag behind the PBX")
    status.add_argument("--db", required=True, type=Path)
    status.add_argument("--cdr-db", type=Path, help="the PBX's cdr.db, to measure the lag")
    status.add_argument("--format", choices=("text", "json"), default="text")

    demo = sub.add_parser("demo-data", help="generate a realistic demo PBX")
    demo.add_argument("--out", required=True, type=Path)
    demo.add_argument("--calls", type=int, default=5_000)
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--end-day", type=date.fromisoformat, help="last day (default: today)")
    demo.add_argument("--timezone", default="Europe/Moscow")
    demo.add_argument("--overwrite", action="store_true",
                      help="replace a demo PBX already in --out")
    return parser


# --- sync ----------------------------------------------------------------------------------------

def _groups_db(args) -> Path | None:
    if args.groups_db:
        return args.groups_db
    if args.pbx_db:
        guess = args.pbx_db.parent / "custom_modules/ModuleUsersGroups/db/module.db"
        return guess if guess.is_file() else None
    return None


def cmd_sync(args) -> int:
    config = read_pbx_config(args.pbx_db, _groups_db(args),
                             extension_length=args.extension_length,
                             number_match_digits=args.number_match_digits)
    if args.batch_rows < 1 or args.callback_window < 0:
        raise CliError("--batch-rows must be positive and --callback-window not negative")
    source = CdrSource(args.cdr_db, busy_timeout_ms=int(min(args.wait, 5) * 1000))
    _patiently(source.check, args.wait)  # a missing or foreign file fails before module.db exists
    db = open_module_db(args.db)
    try:
        sync = Sync(Store(db), source, config, _zone(db, args.pbx_db, args.timezone).clock(),
                    SyncOptions(callback_window_s=args.callback_window,
                                batch_rows=args.batch_rows))
        while True:
            with _progress() as progress:
                _patiently(lambda: sync.catch_up(progress), args.wait)
            if args.once:
                return 0
            time.sleep(args.interval)
    finally:
        db.close()


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


def _zone(db, config_db: Path | None, timezone: str | None) -> PbxZone:
    """The PBX's timezone as the pages and the daemon find it (daemon.pbxzone)."""
    try:
        return PbxZone(config_db, timezone or "", lambda: sync_state(db).get("timezone"))
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _clock(tz_name: str) -> PbxClock:
    try:
        return PbxClock(tz_name)
    except (KeyError, ValueError) as exc:
        raise CliError(f"unknown timezone {tz_name!r}") from exc


# --- daemon --------------------------------------------------------------------------------------

def cmd_daemon(args) -> int:
    from daemon import settings as settings_module
    from daemon.runner import AlreadyRunning, serve
    overrides = {"pbx.cdr_db": args.cdr_db, "pbx.config_db": args.pbx_db, "module.db": args.db}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--set {item!r}: use SECTION.KEY=VALUE")
        if settings_module.is_secret(key.strip()):
            raise CliError(f"--set {key.strip()}: secrets go in the settings file (--config), "
                           f"never on a command line")
        overrides[key.strip()] = value.strip()
    settings = settings_module.load(args.config, overrides)
    _setup_logging(settings["log.level"], args.syslog)
    try:
        return serve(settings)
    except AlreadyRunning as exc:
        raise CliError(str(exc)) from None


def _setup_logging(level: str, syslog: bool) -> None:
    """One line per event worth knowing, in the PBX's style (syslog tag `extcdr`)."""
    import logging
    import logging.handlers
    if syslog and Path("/dev/log").exists():
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter("extcdr[%(process)d]: %(levelname)s %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s extcdr[%(process)d] %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


# --- calls ---------------------------------------------------------------------------------------

def _add_filter_arguments(parser) -> None:
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
    parser.add_argument("--employee", help="extension(s), comma-separated")
    parser.add_argument("--group", help="employee group name(s), comma-separated")
    parser.add_argument("--min-talk", type=int, metavar="SECONDS")
    parser.add_argument("--unreturned", action="store_true", help="missed calls nobody returned")


def _add_timezone_arguments(parser) -> None:
    """Where `calls` and `export` learn the PBX's timezone: where the daemon and pages do."""
    parser.add_argument("--config", type=Path,
                        help="settings file (TOML): its pbx.config_db and pbx.timezone")
    parser.add_argument("--pbx-db", type=Path, help="the PBX config DB, whose PBXTimezone "
                        "times are shown in (default: pbx.config_db; else the mirror's)")


def _filter_params(args) -> dict[str, object]:
    params = {"period": args.period, "from": args.start, "to": args.end,
              "direction": args.direction, "status": args.status, "number": args.number,
              "employee": args.employee, "group": args.group, "min_talk": args.min_talk,
              "unreturned": args.unreturned}
    return {k: v for k, v in params.items() if v not in (None, False)}


def _pbx_clock(args, db) -> PbxClock:
    """The PBX's clock for what this command prints (see `_add_timezone_arguments`)."""
    from daemon import settings as settings_module
    settings = settings_module.load(args.config, {"pbx.config_db": args.pbx_db})
    return _zone(db, settings["pbx.config_db"], settings["pbx.timezone"]).clock()


def _mirror_filter(args, db, params: dict, visible_to: list[str] | None = None):
    """The filter of `params` on this mirror (the PBX's timezone, the mirror's number
    matching): (filter, clock)."""
    clock = _pbx_clock(args, db)
    state = sync_state(db)
    flt = call_filter(params, clock, time.time(),
                      number_match_digits=int(state.get("number_match_digits", 9)),
                      visible_to=visible_to)
    return flt, clock


def cmd_calls(args) -> int:
    db = open_module_db(args.db, readonly=True)
    if args.in_progress:
        try:
            return _print_in_progress(db, args.format, _pbx_clock(args, db))
        finally:
            db.close()
    try:
        flt, clock = _mirror_filter(args, db, {
            **_filter_params(args), **({"limit": args.limit} if args.limit is not None else {})})
        if args.format == "summary":
            _print_summary(counts_by_direction_and_status(flt, db))
            return 0
        rows = call_rows(calls_query(flt, db))
        if args.format == "jsonl":
            for row in rows:
                sys.stdout.write(json.dumps(call_record(row, clock.tz), ensure_ascii=False) + "\n")
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
    from web.exports import about, export_file
    visible_to = None
    if args.user is not None:
        from web.standin import load_users
        account = load_users(args.users).get(args.user)
        if account is None:
            raise CliError(f"unknown user {args.user!r}" + (f" in {args.users}" if args.users
                                                             else " (give --users FILE)"))
        visible_to = account.user.visible_to
    if not args.out.parent.is_dir():
        raise CliError(f"{args.out.parent}: no such directory")
    db = open_module_db(args.db, readonly=True)
    try:
        params = _filter_params(args)
        flt, clock = _mirror_filter(args, db, params, visible_to)
        count = export_file(args.out, args.format, flt, db, clock, args.language,
                            about(args.user or "extcdr export", params, flt, clock,
                                  args.language, db))
    finally:
        db.close()
    print(f"{count:,} calls written to {args.out}", file=sys.stderr)
    return 0


def _print_table(records) -> int:
    """The calls as the page lists them (numbers with their names); returns how many."""
    columns = ("start", "direction", "status", "src", "src_name", "dst", "dst_name",
               "answered_by", "wait_s", "talk_s")
    widths = (25, 9, 18, 16, 20, 16, 20, 11, 6, 6)
    line = "  ".join(f"{c:<{w}}" for c, w in zip(columns, widths))
    print(line.rstrip())
    shown = 0
    for shown, record in enumerate(records, start=1):
        for side in ("src", "dst"):      # a name that only repeats the number is not shown
            if record[f"{side}_name"] == record[side]:
                record[f"{side}_name"] = ""
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
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
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
    from web.i18n import STATUS_LABELS, TAB_LABELS
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


# --- status --------------------------------------------------------------------------------------

def cmd_status(args) -> int:
    db = open_module_db(args.db, readonly=True)
    try:
        state = sync_state(db)
        conn = db.connection()
        info = {
            "calls": conn.execute("SELECT count(*) FROM call").fetchone()[0],
            "in_progress": conn.execute("SELECT count(*) FROM live_call").fetchone()[0],
            "legs": conn.execute("SELECT count(*) FROM leg").fetchone()[0],
            "size_bytes": sum(p.stat().st_size for p in args.db.parent.glob(args.db.name + "*")),
            "cursor": int(state.get("cursor", 0)),
            "timezone": state.get("timezone"),
            "resyncs": int(state.get("resyncs", 0)),
        }
        newest = conn.execute("SELECT max(start_ms) FROM call").fetchone()[0]
        info["newest_call"] = (datetime.fromtimestamp(newest / 1000, PbxClock(
            info["timezone"] or "UTC").tz).isoformat(timespec="seconds") if newest else None)
    finally:
        db.close()
    cdr_db = args.cdr_db or (Path(state["cdr_db"]) if state.get("cdr_db") else None)
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


# --- demo-data -----------------------------------------------------------------------------------

def cmd_demo_data(args) -> int:
    from daemon import demo
    if args.calls < 1:
        raise CliError("--calls must be at least 1")
    _clock(args.timezone)
    args.out.mkdir(parents=True, exist_ok=True)
    stats = demo.generate(args.out, args.calls, args.seed, end_day=args.end_day,
                          timezone=args.timezone, overwrite=args.overwrite)
    span = f"{stats.first_start:%Y-%m-%d} .. {stats.last_end:%Y-%m-%d}" if stats.legs else "-"
    print(f"demo PBX in {args.out}: {stats.calls:,} calls ({len(stats.calls_by_kind)} kinds), "
          f"{stats.legs:,} legs, {stats.recordings_written:,} recording files, {span}")
    return 0


# No thread waits for an open page (live updates go through nginx), so a few threads serve
# every request; more only contend for the interpreter (measured: 16 threads answered 89 API
# pages/s where 4 answered 152, `./bin/bench abuse`), 8 leave room for slow downloads.
WEB_THREADS = 8


def cmd_web(args) -> int:
    from waitress import serve

    from daemon import settings as settings_module
    from web import create_app
    settings = settings_module.load(args.config, {"module.db": args.db,
                                                  "web.listen": args.listen})
    accounts = None
    if args.standin:
        from web.standin import load_users
        accounts = load_users(args.users)
        if args.users is None:
            print("stand-in shell users: " + ", ".join(
                f"{a.user.name}/{a.password} ({a.user.role})" for a in accounts.values()))
    elif not settings["web.proxy_token"]:
        raise CliError("web.proxy_token is empty: set it in the settings file (and in the "
                       "nginx location), or no request can be trusted")
    host, _, port = settings["web.listen"].rpartition(":")
    if not host or not port.isdigit():
        raise CliError(f"web.listen {settings['web.listen']!r}: use HOST:PORT")
    _setup_logging(settings["log.level"], syslog=False)
    print(f"listening on http://{host}:{port}{settings['web.prefix']}", flush=True)
    app = create_app(settings, standin_accounts=accounts)
    if not args.standin:            # nginx's nchan tells open pages that calls changed
        app.extensions["extcdr_changes"].start()
    serve(app, host=host, port=int(port), threads=WEB_THREADS,
          trusted_proxy="127.0.0.1", trusted_proxy_headers="x-forwarded-for x-forwarded-proto")
    return 0


def cmd_admin_shell(args) -> int:
    """nginx in front of the stand-in shell and the module's pages."""
    import signal
    import subprocess
    import threading

    from waitress import create_server

    from web.standin import (NCHAN_MODULE, NCHAN_PACKAGE, create_shell_app, load_users,
                             nginx_config, pbx_nginx_config)
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        raise CliError("nginx is not installed (apt-get install nginx), or use "
                       "`extcdr web --standin`")
    if not NCHAN_MODULE.exists():
        raise CliError(f"nginx's nchan module ({NCHAN_MODULE}) is missing, which open pages' "
                       f"live updates need (apt-get install {NCHAN_PACKAGE})")
    if args.pbx is None and (args.config is None or args.app is None):
        raise CliError("admin-shell: give --pbx, or --config and --app")
    accounts = load_users(args.users)
    user = "root" if os.geteuid() == 0 else None      # nginx workers must read the recordings
    args.run_dir.mkdir(parents=True, exist_ok=True)
    run_dir = args.run_dir.resolve()
    conf = run_dir / "nginx.conf"
    proc: subprocess.Popen | None = None
    supervisor = None
    if args.pbx is not None:
        from daemon.lifecycle import PbxTree
        from daemon.supervisor import Supervisor, reload_nginx
        tree = PbxTree.open(args.pbx)
        tree.locations.mkdir(parents=True, exist_ok=True)
        # Where the PBX's nginx listens, as MikoPBX keeps it (modules reach it on this machine).
        tree.set_setting("WEBPort", args.listen.rpartition(":")[2])
        supervisor = Supervisor(tree, reload_nginx=lambda: proc and reload_nginx(proc))
        home = "/admin-cabinet/"
        shell = create_server(create_shell_app(accounts, home, pbx=tree, supervisor=supervisor),
                              host="127.0.0.1", port=0, threads=4)
        text = pbx_nginx_config(run_dir=run_dir, listen=args.listen,
                                shell=f"127.0.0.1:{shell.effective_port}",
                                modules_locations=tree.locations, user=user)
    else:
        from daemon import settings as settings_module
        settings = settings_module.load(args.config, {})
        home = "/" + settings["web.prefix"].strip("/") + "/"
        shell = create_server(create_shell_app(accounts, home), host="127.0.0.1", port=0,
                              threads=4)
        text = nginx_config(
            run_dir=run_dir, listen=args.listen, shell=f"127.0.0.1:{shell.effective_port}",
            app=args.app, prefix=home, proxy_token=settings["web.proxy_token"],
            recordings_root=settings["pbx.recordings_root"], user=user)
    threading.Thread(target=shell.run, daemon=True).start()
    conf.write_text(text)
    conf.chmod(0o600)                                       # it holds the proxy token
    proc = subprocess.Popen([nginx, "-p", str(run_dir), "-c", str(conf),
                             "-e", str(run_dir / "error.log"), "-g", "daemon off;"])
    # From here on, stopping means nginx first, then (below) the workers: never leave them.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: proc.terminate())
    if supervisor is not None:
        supervisor.reconcile()
        threading.Thread(target=supervisor.run, daemon=True).start()
    print(f"admin shell on http://{args.listen}{home}", flush=True)
    if args.users is None:
        print("users: " + ", ".join(f"{a.user.name}/{a.password} ({a.user.role})"
                                    for a in accounts.values()), flush=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()
    finally:
        if supervisor is not None:
            supervisor.close()
        shell.close()


def cmd_ami_emulator(args) -> int:
    from daemon import amiemu
    return amiemu.run(args)


def cmd_package(args) -> int:
    from daemon.package import build
    if not args.out.parent.is_dir():
        raise CliError(f"{args.out.parent}: no such directory")
    built = build(args.out)
    print(json.dumps(built))
    return 0


def cmd_migrate(args) -> int:
    from db import schema
    open_module_db(args.db).close()
    print(f"{args.db}: schema {schema.LATEST}")
    return 0


def cmd_lifecycle(args) -> int:
    """install, upgrade, enable, disable, uninstall: one line of what was done."""
    import tempfile

    from daemon import lifecycle
    tree = lifecycle.PbxTree.open(args.pbx)
    if args.command in ("install", "upgrade"):
        with tempfile.TemporaryDirectory() as scratch:
            archive = args.archive or lifecycle.fetch(tree, MODULE_ID, Path(scratch))
            step = lifecycle.install if args.command == "install" else lifecycle.upgrade
            print(step(tree, archive))
        return 0
    if args.command == "uninstall":
        print(lifecycle.uninstall(tree, args.module, keep_settings=args.keep_settings))
        return 0
    print({"enable": lifecycle.enable, "disable": lifecycle.disable}[args.command](
        tree, args.module))
    if (args.command == "enable" and args.wait is not None
            and not lifecycle.wait_for_pages(tree, args.module, args.wait)):
        raise lifecycle.LifecycleError(
            f"{args.module} is enabled but its pages did not start within {args.wait:g} s: "
            f"is the PBX running its workers? See {tree.root / 'logs'}")
    return 0


def cmd_licence(args) -> int:
    import time as clock

    from daemon import lifecycle
    from daemon.licence import LicenceError, masked
    tree = lifecycle.PbxTree.open(args.pbx)
    if args.action == "activate":
        if not args.key:
            raise CliError("licence activate: give the key or coupon (or - to read it from stdin)")
        key = sys.stdin.readline() if args.key == "-" else args.key
        grant = lifecycle.activate(tree, args.module, key)
    else:
        try:
            grant = lifecycle.licence_check(tree, args.module).grant()
        except LicenceError as exc:
            print(f"{args.module}: no valid licence: {exc}")
            return 1
    until = clock.strftime("%Y-%m-%d", clock.gmtime(grant.expires))
    print(f"{args.module}: licensed to this PBX until {until} ({masked(grant.key)}, "
          f"product {grant.product_id}, feature {grant.feature_id})")
    return 0


def cmd_marketplace(args) -> int:
    from daemon import marketplace
    return marketplace.run(args)


def cmd_mail_catcher(args) -> int:
    from daemon import mailcatcher
    return mailcatcher.run(args)


COMMANDS = {"sync": cmd_sync, "daemon": cmd_daemon, "calls": cmd_calls, "status": cmd_status,
            "export": cmd_export, "web": cmd_web, "migrate": cmd_migrate,
            "install": cmd_lifecycle, "upgrade": cmd_lifecycle, "enable": cmd_lifecycle,
            "disable": cmd_lifecycle, "uninstall": cmd_lifecycle, "licence": cmd_licence,
            "package": cmd_package, "demo-data": cmd_demo_data,
            "ami-emulator": cmd_ami_emulator, "admin-shell": cmd_admin_shell,
            "marketplace": cmd_marketplace, "mail-catcher": cmd_mail_catcher}


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        args = _parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except (sqlite3.DatabaseError, peewee.DatabaseError) as exc:   # module.db damaged
        print(f"extcdr: {readable_error(getattr(args, 'db', None) or 'module.db', exc)}",
              file=sys.stderr)
        return 1
    except (CliError, SourceError, ModuleDbError, QueryError, ValueError, LifecycleError,
            MarketplaceError) as exc:
        print(f"extcdr: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()  # output cut by `| head`: not an error
        return 0
    except OSError as exc:
        print(f"extcdr: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
