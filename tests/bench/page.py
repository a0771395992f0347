"""History page benchmark: server time of the page and the JSON API on a mirror of a generated
~1,000,000-call PBX, with the PBX's own history queries on `cdr_general` as the baseline.

A demo PBX with `--calls` calls ending today (PBX time) is generated and mirrored with
`extcdr sync --once`; the real Flask app then answers through its test client (the whole WSGI
app in-process, logged in through the stand-in login form as admin and as operator201). Each
case is timed `--runs` times after `--warmup` unmeasured runs; p50/p95 are wall times of the
request, body included. Budgets (p95): first page of the history page and of `api/v1/calls`
<= 50 ms, number search <= 150 ms, tab counters alone (`mirror.analytics.tab_counts`) <= 250 ms,
keyset next pages <= 50 ms. Also prints the page's weight (HTML and static assets, raw and
gzip). Nothing fails on time: the figures and ratios are for reading.

Run: ./bin/bench page [--calls 1000000] [--runs 30] [--keep DIR] [--postgresql [URL]]
`--postgresql` mirrors into a central history on PostgreSQL instead of module.db (a private
server started for the run, or an empty database or schema at URL) and times the same cases:
issue 22's budgets there are the same first page and search, and tab counters <= 50 ms.
The mirror gets what a busy office adds to calls (tags, comments, who hung up: `annotate`), and
the filters of working with calls are timed like the others.
`--keep DIR` builds the PBX and mirror in DIR and reuses them in later runs with the same
--calls and --seed on the same day (1,000,000 calls take a minute or two to generate and sync).
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from mirror.analytics import tab_counts
from mirror.database import open_module_db
from mirror.dialect import run as run_sql
from mirror.queries import TABS, Visibility, call_filter, period_bounds, sync_state, tag_counts
from mirror.settings import load
from standin import demo
from standin.shell import StandinLogin
from web import create_app

ROOT = Path(__file__).resolve().parents[2]
TIMEZONE = "Europe/Moscow"                  # the demo PBX's default timezone
PREFIX = "/admin-cabinet/module-extended-c-d-r/calls"
ADMIN, OPERATOR = "admin", "operator201"    # stand-in demo users (password = name)
OPERATOR_EXTENSIONS = ("201",)
EMPLOYEE, GROUP = "201", "Sales"            # in every demo PBX
PAGE_BUDGET_MS, SEARCH_BUDGET_MS, COUNTS_BUDGET_MS = 50, 150, 250
CENTRAL_COUNTS_BUDGET_MS = 50               # PostgreSQL's tab counters (rollups, issue 22)
DEPTHS = (2, 10, 40)                        # keyset pages timed, followed via next_cursor


@dataclass
class Case:
    """One timed thing: `run()` once per sample."""
    name: str
    run: Callable[[], object]
    budget_ms: float | None = None
    calls: int | None = None                # how many calls its filter selects
    baseline: str | None = None             # key of the PBX baseline it compares with


@dataclass
class Timing:
    """A case's measured percentiles, in ms."""
    case: Case
    p50: float
    p95: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30, help="measured runs per case")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured runs per case")
    parser.add_argument("--only", default="", metavar="TEXT",
                        help="time only the cases whose label holds TEXT (e.g. 'search')")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="build the PBX and mirror here and reuse them in later runs")
    parser.add_argument("--postgresql", nargs="?", const="", metavar="URL",
                        help="mirror into PostgreSQL (a private server, or this empty database)")
    args = parser.parse_args()
    end_day = datetime.now(ZoneInfo(TIMEZONE)).date()
    with central_history(args.postgresql) as target:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            run(args.keep, target, args, end_day)
        else:
            with tempfile.TemporaryDirectory(prefix="extcdr-page-") as tmp:
                run(Path(tmp), target, args, end_day)


@contextmanager
def central_history(url: str | None) -> Iterator[str | None]:
    """The PostgreSQL URL to mirror into (a private server for the run if none is given), or
    None for module.db beside the PBX."""
    if url is None or url:
        yield url
        return
    from tests.pgserver import running
    with running() as server:
        yield server.url


def run(root: Path, target: str | None, args, end_day: date) -> None:
    """Build (or reuse) the PBX and mirror (module.db in root, or `target`), time every case,
    print the tables."""
    db = target or str(root / "module.db")
    prepare(root, db, args.calls, args.seed, end_day, reuse=target is None)
    annotate(db)
    app = make_app(root, db)
    clients = {name: logged_in(app, name, name) for name in (ADMIN, OPERATOR)}
    numbers = search_numbers(app)
    baselines = pbx_baselines(root / "pbx" / demo.CDR_DB, end_day, numbers["4 digits"])
    counts_budget_ms = CENTRAL_COUNTS_BUDGET_MS if target else COUNTS_BUDGET_MS
    cases = (first_page_cases(app, clients, end_day) + search_cases(app, clients, numbers, end_day)
             + counter_cases(app, end_day, counts_budget_ms) + keyset_cases(app, clients, end_day))
    cases = [case for case in cases if args.only in case.name]
    baseline_timings = {key: measure(case, args) for key, case in baselines.items()}
    print_baselines(root / "pbx" / demo.CDR_DB, baseline_timings)
    print_cases([measure(case, args) for case in cases], baseline_timings)
    print_weight(clients[ADMIN])


# -- the PBX and its mirror ----------------------------------------------------------------------

def prepare(root: Path, db: str, calls: int, seed: int, end_day: date, *, reuse: bool) -> None:
    """Generate the demo PBX into root/pbx and mirror it into db, unless a build of the same
    calls, seed and end day is already there (the PBX only, when the mirror is not `reuse`d)."""
    marker = root / "built.json"
    wanted = {"calls": calls, "seed": seed, "end_day": end_day.isoformat()}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        print(f"reusing the demo PBX in {root} ({calls:,} calls up to {end_day})")
        if reuse:
            return
    else:
        marker.unlink(missing_ok=True)
        started = time.perf_counter()
        stats = demo.generate(root / "pbx", calls, seed, end_day=end_day, recordings_limit=0,
                              overwrite=True)
        print(f"generated {stats.calls:,} calls ({stats.legs:,} legs, "
              f"{stats.first_start:%Y-%m-%d} to {stats.last_end:%Y-%m-%d}) in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
    for stale in ("module.db", "module.db-wal", "module.db-shm"):
        (root / stale).unlink(missing_ok=True)
    started = time.perf_counter()
    pbx = root / "pbx"
    subprocess.run([sys.executable, "-m", "cli", "sync", "--cdr-db", str(pbx / demo.CDR_DB),
                    "--pbx-db", str(pbx / demo.CONFIG_DB), "--groups-db", str(pbx / demo.GROUPS_DB),
                    "--db", db, "--once"], cwd=ROOT, check=True)
    print(f"mirrored in {time.perf_counter() - started:.1f} s", flush=True)
    marker.write_text(json.dumps(wanted))


# What a busy office adds to calls: tags on one call in 20 (three tags), a comment on one in
# 50, and who hung up for four calls in five (the daemon saw them end).
TAGS = ("Sales lead", "Complaint", "Жалоба")


def annotate(target: str) -> None:
    """Add the office's tags, comments and hang-ups to the mirror (once)."""
    db = open_module_db(target)
    try:
        if run_sql(db, "SELECT EXISTS (SELECT 1 FROM tag)").fetchone()[0]:
            return
        started = time.perf_counter()
        with db.atomic():
            for name in TAGS:
                run_sql(db, "INSERT INTO tag (name, colour) VALUES (?, 'teal')", (name,))
            run_sql(db, "INSERT INTO call_tag (linkedid, tag_id, set_by, set_ms) "
                    "SELECT linkedid, 1 + (id / 20) % 3, 'admin', end_ms FROM call "
                    "WHERE id % 20 = 0")
            run_sql(db, "INSERT INTO comment (linkedid, author, created_ms, text, folded) "
                    "SELECT linkedid, 'admin', end_ms, 'Клиент просит перезвонить ' || id, "
                    "'клиент просит перезвонить ' || id FROM call WHERE id % 50 = 0")
            run_sql(db, "INSERT INTO call_hangup (linkedid, side, channel, number, cause, "
                    "cause_txt, at_ms) SELECT linkedid, CASE id % 3 WHEN 0 THEN 'caller' "
                    "WHEN 1 THEN 'callee' ELSE 'pbx' END, '', src, 16, 'Normal Clearing', "
                    "end_ms FROM call WHERE id % 5 <> 0")
        print(f"annotated: tags on 1 call in 20, comments on 1 in 50, who hung up on 4 in 5 "
              f"({time.perf_counter() - started:.1f} s)", flush=True)
    finally:
        db.close()


def make_app(root: Path, db: str):
    """The real app on the mirror, with the stand-in admin shell's login in-process."""
    settings = load(None, {"module.db": db,
                           "pbx.recordings_root": str(root / "pbx" / demo.MONITOR)})
    return create_app(settings, login=StandinLogin.from_file(None))


def logged_in(app, name: str, password: str):
    """A test client logged in through the stand-in login form (CSRF token included)."""
    client = app.test_client()
    form = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    reply = client.post("/login", data={"username": name, "password": password,
                                        "csrf_token": token})
    if reply.status_code != 302:
        raise SystemExit(f"login as {name} failed: HTTP {reply.status_code}")
    return client


def search_numbers(app) -> dict[str, str]:
    """Number searches built from this month's calls: parts of the most frequent client's
    number, the whole number, it with the employee who answered it most, and the area code of
    the busiest line (digits that many numbers share)."""
    db = app.config["EXTCDR_DB"]
    month = period_bounds("this_month", app.config["EXTCDR_CONTEXT"].clock(), time.time())
    number, employee = run_sql(
        db,
        "SELECT external_number, answered_by FROM call WHERE start_ms >= ? AND start_ms < ? "
        "AND external_number IS NOT NULL AND answered_by IS NOT NULL "
        "GROUP BY external_number, answered_by ORDER BY count(*) DESC, 1, 2 LIMIT 1",
        month).fetchone()
    (did,) = run_sql(
        db,
        "SELECT did FROM call WHERE start_ms >= ? AND start_ms < ? AND did IS NOT NULL "
        "GROUP BY did ORDER BY count(*) DESC, 1 LIMIT 1", month).fetchone()
    caller = next(name for (name,) in run_sql(
        db, "SELECT src_name FROM call WHERE start_ms >= ? AND start_ms < ? AND direction = "
        "'incoming' AND length(src_name) > 5 GROUP BY src_name ORDER BY count(*) DESC, 1 "
        "LIMIT 1000", month).fetchall() if re.search("[a-zA-Zа-яА-Я]", name))
    (linkedid,) = run_sql(db, "SELECT linkedid FROM call WHERE start_ms >= ? AND start_ms < ? "
                          "ORDER BY start_ms LIMIT 1", month).fetchone()
    digits = re.sub(r"\D", "", number)[-10:]
    word = max(caller.split(), key=len)     # inside a word: 'ООО Ромашка' is searched as 'омаш'
    return {"3 digits": digits[-4:-1], "4 digits": digits[-7:-3], "full number": number,
            "two numbers": f"{employee} {number}",
            "area code": re.sub(r"\D", "", did)[-10:-7],
            "employee's name": _name_of(db, employee).split()[0].lower(),
            "caller's name": word[1:5], "3 letters": word[1:4].upper(),
            "no such name": "Quetzalcoatl", "linkedid": linkedid}


def _name_of(db, extension: str) -> str:
    return run_sql(db, "SELECT name FROM employee WHERE extension = ?", (extension,)
                   ).fetchone()[0]


# -- cases ----------------------------------------------------------------------------------------

def typical_filters(end_day: date) -> list[tuple[str, dict[str, str], str]]:
    """(label, query parameters, user) of the filters people use most."""
    month = {"period": "this_month"}
    week_ago = (end_day - timedelta(days=6)).isoformat()
    quarter = last_days(end_day, 91)
    return [
        ("today", {"period": "today"}, ADMIN),
        ("this week", {"period": "this_week"}, ADMIN),
        ("this month", month, ADMIN),
        ("last 7 days (from/to)", {"from": week_ago, "to": end_day.isoformat()}, ADMIN),
        *((f"this month, tab {tab}", {**month, "tab": tab}, ADMIN) for tab in TABS if tab != "all"),
        ("this month, status missed+not_reached", {**month, "status": "missed,not_reached"}, ADMIN),
        (f"this month, employee {EMPLOYEE}", {**month, "employee": EMPLOYEE}, ADMIN),
        (f"this month, group {GROUP}", {**month, "group": GROUP}, ADMIN),
        ("this month, min_talk 60", {**month, "min_talk": "60"}, ADMIN),
        (f"this month, as {OPERATOR}", month, OPERATOR),
        ("this month, tag Complaint", {**month, "tag": "Complaint"}, ADMIN),
        ("this month, tags Sales lead+Жалоба (any)", {**month, "tag": "Sales lead,Жалоба"},
         ADMIN),
        ("this month, with a recording", {**month, "recording": "yes"}, ADMIN),
        ("this month, talk 30..120 s", {**month, "min_talk": "30", "max_talk": "120"}, ADMIN),
        ("this month, queue 2000", {**month, "queue": "2000"}, ADMIN),
        ("this month, caller hung up", {**month, "hangup": "caller"}, ADMIN),
        ("this month, hang-up unknown", {**month, "hangup": "unknown"}, ADMIN),
        ("this month, comment 'перезвонить'", {**month, "comment": "перезвонить"}, ADMIN),
        ("last 3 months", quarter, ADMIN),
        (f"last 3 months, group {GROUP}", {**quarter, "group": GROUP}, ADMIN),
    ]


def last_days(end_day: date, days: int) -> dict[str, str]:
    """from/to of the `days` whole days ending on end_day."""
    return {"from": (end_day - timedelta(days=days - 1)).isoformat(), "to": end_day.isoformat()}


def first_page_cases(app, clients, end_day: date) -> list[Case]:
    """The first page of the history page (counters included) and of the API, per filter."""
    cases = []
    for label, params, user in typical_filters(end_day):
        calls = selected(app, params, user)
        cases += [Case(f"page {label}", get(clients[user], page_url(params)), PAGE_BUDGET_MS,
                       calls, "period"),
                  Case(f"api  {label}", get(clients[user], api_url(params)), PAGE_BUDGET_MS,
                       calls, "period")]
    return cases


def search_cases(app, clients, numbers: dict[str, str], end_day: date) -> list[Case]:
    """Number and name searches in this month (names also in the last 3 months), on the
    history page and the API."""
    cases = []
    periods = {"": {"period": "this_month"}, ", last 3 months": last_days(end_day, 91)}
    for label, number in numbers.items():
        for period_label, period in periods.items():
            if period_label and "name" not in label and "letters" not in label:
                continue
            params = {**period, "number": number}
            calls = selected(app, params, ADMIN)
            name = f"search {label}{period_label} '{number}'"
            cases += [Case(f"page {name}", get(clients[ADMIN], page_url(params)),
                           SEARCH_BUDGET_MS, calls, "search"),
                      Case(f"api  {name}", get(clients[ADMIN], api_url(params)),
                           SEARCH_BUDGET_MS, calls, "search")]
    return cases


def counter_cases(app, end_day: date, budget_ms: float) -> list[Case]:
    """`tab_counts` alone, called directly, for growing periods."""
    db = app.config["EXTCDR_DB"]
    cases = []
    for label, params in (("this week", {"period": "this_week"}),
                          ("this month", {"period": "this_month"}),
                          ("last 3 months", last_days(end_day, 91)),
                          ("last 12 months", last_days(end_day, 365))):
        flt = filter_of(app, params, ADMIN)
        calls = tab_counts(flt, db)["all"]
        cases.append(Case(f"tab_counts {label}", lambda flt=flt: tab_counts(flt, db),
                          budget_ms, calls, "count" if label == "this month" else None))
        # The tag counts a page asks for once it is shown (`tag-counts`), uncached.
        cases.append(Case(f"tag_counts {label}", lambda flt=flt, calls=calls: tag_counts(
            flt, db, calls), budget_ms, calls))
    return cases


def keyset_cases(app, clients, end_day: date) -> list[Case]:
    """Pages DEPTHS deep (as far as the filter has pages), reached by following next_cursor,
    of the API and of the page's "show more"."""
    missed = {**last_days(end_day, 91), "tab": "missed"}
    cases = []
    for label, params in (("this month", {"period": "this_month"}),
                          ("last 3 months, tab missed", missed)):
        calls = selected(app, params, ADMIN)
        for kind, url in (("api ", api_url), ("rows", rows_url)):
            cursors = follow(clients[ADMIN], url(params), max(DEPTHS))
            for depth in (d for d in DEPTHS if d in cursors):
                paged = url({**params, "cursor": cursors[depth]})
                cases.append(Case(f"{kind} {label}, page {depth}", get(clients[ADMIN], paged),
                                  PAGE_BUDGET_MS, calls, "offset"))
    return cases


def follow(client, url: str, depth: int) -> dict[int, str]:
    """The cursor that opens each page 2..depth (fewer if the filter has fewer pages),
    following next_cursor from the first page."""
    cursors, cursor = {}, None
    for page in range(2, depth + 1):
        cursor = client.get(url + (f"&cursor={cursor}" if cursor else "")).get_json()["next_cursor"]
        if cursor is None:
            break
        cursors[page] = cursor
    return cursors


def selected(app, params: dict[str, str], user: str) -> int:
    """How many calls the filter (tab included) selects for the user."""
    flt = filter_of(app, params, user)
    return tab_counts(flt, app.config["EXTCDR_DB"])[flt.tab]


def filter_of(app, params: dict[str, str], user: str):
    """The filter the app builds for these parameters and this user."""
    return call_filter(params, app.config["EXTCDR_CONTEXT"].clock(), time.time(),
                       number_match_digits=int(sync_state(app.config["EXTCDR_DB"]).get(
                           "number_match_digits", 9)),
                       visible_to=Visibility(OPERATOR_EXTENSIONS) if user == OPERATOR else None)


def page_url(params: dict[str, str]) -> str:
    return f"{PREFIX}/?{urlencode(params)}"


def api_url(params: dict[str, str]) -> str:
    return f"{PREFIX}/api/v1/calls?{urlencode(params)}"


def rows_url(params: dict[str, str]) -> str:
    return f"{PREFIX}/rows?{urlencode(params)}"


def get(client, url: str) -> Callable[[], bytes]:
    """A GET of `url` through the whole WSGI app, body read; anything but 200 stops the run."""
    def run() -> bytes:
        reply = client.get(url)
        body = reply.get_data()
        if reply.status_code != 200:
            raise SystemExit(f"GET {url}: HTTP {reply.status_code} {body[:300]!r}")
        return body
    return run


# -- the PBX's own queries ------------------------------------------------------------------------

def pbx_baselines(cdr: Path, end_day: date, digits: str) -> dict[str, Case]:
    """What the PBX's history page runs on cdr_general (legs, its own indexes), this month."""
    conn = sqlite3.connect(f"file:{cdr}?mode=ro", uri=True, check_same_thread=False)
    first = end_day.replace(day=1)
    last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    month = (f"{first} 00:00:00", f"{last} 23:59:59.999")
    like = f"%{digits}%"
    queries = {
        "newest": ("newest 50 legs", "SELECT * FROM cdr_general ORDER BY start DESC LIMIT 50", ()),
        "period": ("newest 50 legs of this month",
                   "SELECT * FROM cdr_general WHERE start BETWEEN ? AND ? "
                   "ORDER BY start DESC LIMIT 50", month),
        "offset": ("this month, page 40 (OFFSET 1950)",
                   "SELECT * FROM cdr_general WHERE start BETWEEN ? AND ? "
                   "ORDER BY start DESC LIMIT 50 OFFSET 1950", month),
        "search": (f"this month, src_num/dst_num LIKE '{like}'",
                   "SELECT * FROM cdr_general WHERE start BETWEEN ? AND ? AND "
                   "(src_num LIKE ? OR dst_num LIKE ?) ORDER BY start DESC LIMIT 50",
                   month + (like, like)),
        "search_all": (f"all time, src_num/dst_num LIKE '{like}'",
                       "SELECT * FROM cdr_general WHERE src_num LIKE ? OR dst_num LIKE ? "
                       "ORDER BY start DESC LIMIT 50", (like, like)),
        "count": ("count legs of this month",
                  "SELECT count(*) FROM cdr_general WHERE start BETWEEN ? AND ?", month),
    }
    return {key: Case(f"PBX {label}", lambda sql=sql, params=params:
                      conn.execute(sql, params).fetchall())
            for key, (label, sql, params) in queries.items()}


# -- measuring and printing ------------------------------------------------------------------------

def measure(case: Case, args) -> Timing:
    """p50 and p95 (ms) of the case over args.runs runs after args.warmup unmeasured ones."""
    for _ in range(args.warmup):
        case.run()
    samples = []
    for _ in range(args.runs):
        started = time.perf_counter()
        case.run()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return Timing(case, statistics.median(samples), samples[int(0.95 * (len(samples) - 1))])


def print_baselines(cdr: Path, timings: dict[str, Timing]) -> None:
    with sqlite3.connect(f"file:{cdr}?mode=ro", uri=True) as conn:
        legs = conn.execute("SELECT max(id) FROM cdr_general").fetchone()[0]
    print(f"\nBaseline: the PBX's own queries on cdr.db (cdr_general, {legs:,} legs, the PBX's "
          f"indexes), p50 / p95 ms")
    for key, timing in timings.items():
        print(f"  {key:<11} {timing.case.name:<62} {timing.p50:8.2f} {timing.p95:8.2f}")


def print_cases(timings: list[Timing], baselines: dict[str, Timing]) -> None:
    print(f"\n{'case':<58} {'calls':>7} {'p50 ms':>7} {'p95 ms':>7} {'budget':>6} "
          f"{'p95/budget':>10}  {'p50 vs PBX':<18}")
    for t in timings:
        base = baselines.get(t.case.baseline)
        versus = f"{t.p50 / base.p50:7.0f}x {t.case.baseline}" if base else f"{'-':>8}"
        print(f"{t.case.name:<58} {t.case.calls:>7,} {t.p50:7.1f} {t.p95:7.1f} "
              f"{t.case.budget_ms:6.0f} {t.p95 / t.case.budget_ms:9.2f}x  {versus}")
    over = [t for t in timings if t.p95 > t.case.budget_ms]
    worst = max(timings, key=lambda t: t.p95 / t.case.budget_ms)
    print(f"\n{len(timings) - len(over)} of {len(timings)} cases within budget"
          + (f"; over: {', '.join(t.case.name for t in over)}" if over else "")
          + f"; worst p95/budget {worst.p95 / worst.case.budget_ms:.2f}x ({worst.case.name})")


def print_weight(client) -> None:
    """Bytes of the first page's HTML and of the static files it references, raw and gzip."""
    html = get(client, page_url({"period": "this_month"}))()
    assets = re.findall(rf'(?:href|src)="({re.escape(PREFIX)}/static/[^"]+)"', html.decode())
    print("\nPage weight (first page, this month, 50 rows), bytes raw / gzip -6:")
    total_raw, total_gzip = 0, 0
    for name, body in [("HTML", html)] + [(url.split("/static/", 1)[1], get(client, url)())
                                          for url in assets]:
        packed = len(gzip.compress(body, compresslevel=6))
        total_raw, total_gzip = total_raw + len(body), total_gzip + packed
        print(f"  {name:<62} {len(body):>9,} {packed:>9,}")
    print(f"  {'total (fonts the CSS loads not counted)':<62} {total_raw:>9,} {total_gzip:>9,}")


if __name__ == "__main__":
    main()
