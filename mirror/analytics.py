"""Analytics: six reports of how calls went over a period, each a table and the chart of it.

Every figure is a sum over the rollups (mirror.rollups) of the period's whole slots plus the
calls of its partial slots, when the filter is one their keys answer (an unrestricted user,
the period and directions); otherwise the same sums over the filter's calls (`figures`). Both
ways give the same numbers: tests compare them over random periods, filters and histories.
In a history several PBXs write, the Employees, Lines, Menus and Queues reports have a row per
PBX and employee, line, menu or queue, each PBX's counted from its own calls (`_per_pbx`).
A report is plain data (JSON for the API, rows for the CLI and the exports); its titles are
English, translated where they are shown. Nothing here imports Flask.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from peewee import Database

from mirror import bulk
from mirror.calls import qualified
from mirror.dialect import dialect_of, run
from mirror.models import Call
from mirror.queries import (TABS, CallFilter, QueryError, calls_query, counted_by_the_hour,
                            employee_names, handled_unreturned, names_by_pbx, pbx_ids)
from mirror.rollups import CALLBACKS, CALLS, EMPLOYEES, LINES, MENUS, QUEUES, Rollup

REPORTS = ("employees", "traffic", "lines", "menus", "queues", "callbacks")
REPORT_TITLES = {"employees": "Employees", "traffic": "Traffic by hour and day",
                 "lines": "Lines and DIDs", "menus": "Voice menus (IVR)",
                 "queues": "Queues and ring groups", "callbacks": "Missed calls and callbacks"}
GRAINS = ("day", "week", "month")
SERVICE_LEVEL_S = 20                 # the queues' service level: answered within N seconds
MAX_SERVICE_LEVEL_S = 3600
OPTION_PARAMETERS = ("report", "grain", "service_level", "source")
REPORT_OPTIONS = {"traffic": "grain", "queues": "service_level"}   # a report's own option
SOURCES = ("auto", "calls")          # `calls`: always from the calls (benchmarks, tests)
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
QUARTER_HOUR_MS = 900_000            # every timezone's offset is a whole number of them


@dataclass(frozen=True)
class Options:
    grain: str = "day"                       # the traffic trend: per day, week or month
    service_level_s: int = SERVICE_LEVEL_S
    source: str = "auto"

    def __post_init__(self):
        if self.grain not in GRAINS:
            raise QueryError(f"unknown grain {self.grain!r}; use one of: {', '.join(GRAINS)}")
        if self.source not in SOURCES:
            raise QueryError(f"unknown source {self.source!r}; use one of: {', '.join(SOURCES)}")
        if not 0 <= self.service_level_s <= MAX_SERVICE_LEVEL_S:
            raise QueryError(f"service level must be 0 to {MAX_SERVICE_LEVEL_S} seconds")


def report_options(params) -> tuple[str, Options]:
    """The report named and its options, from text parameters (the rest is the filter)."""
    name = params.get("report") or ""
    if name not in REPORTS:
        raise QueryError(f"unknown report {name!r}; use one of: {', '.join(REPORTS)}")
    level = params.get("service_level") or str(SERVICE_LEVEL_S)
    if not level.isascii() or not level.isdigit() or len(level) > 5:
        raise QueryError(f"service level must be 0 to {MAX_SERVICE_LEVEL_S} seconds")
    return name, Options(grain=params.get("grain") or "day", service_level_s=int(level),
                         source=params.get("source") or "auto")


@dataclass
class Report:
    name: str
    columns: list[tuple[str, str, str]]          # (key, English title, kind)
    rows: list[dict]
    chart: dict                                   # {type, labels, series: [{key, title, values}]}
    totals: dict | None = None
    extra: dict = field(default_factory=dict)     # e.g. the traffic heat map
    source: str = "rollups"                       # where the figures came from

    def as_json(self) -> dict:
        return {"report": self.name, "title": REPORT_TITLES[self.name], "source": self.source,
                "columns": [{"key": k, "title": t, "kind": kind} for k, t, kind in self.columns],
                "rows": self.rows, "totals": self.totals, "chart": self.chart, **self.extra}


# Column kinds: how a value reads (exports format them, the page too).
COUNT, SECONDS, PERCENT, TEXT = "count", "seconds", "percent", "text"


def build_report(name: str, f: CallFilter, db: Database, clock,
                 options: Options = Options()) -> Report:
    f = replace(f, tab="all", after=None, limit=None)
    return _BUILDERS[name](f, db, clock, options)


# --- figures: rollups where they answer, the calls otherwise ------------------------------------

def tab_counts(f: CallFilter, db: Database, *, source: str = "auto") -> dict[str, int]:
    """How many calls each tab of the history page would show with the rest of the filter.
    The counters know the missed calls nobody called back, not the ones marked handled: those
    are subtracted from the Unreturned tab (and, filtered by `unreturned`, from every tab)."""
    counts = dict.fromkeys(TABS, 0)
    flt = replace(f, tab="all", unreturned=False, after=None, limit=None)
    rows, _ = figures(CALLS, flt, db, ("direction", "status", "unreturned"), source=source)
    for direction, status, not_returned, n, _talk, _wait in rows:
        unreturned = status == "missed" and not_returned
        if f.unreturned and not unreturned:
            continue
        counts["all"] += n
        counts[direction] += n
        counts["missed"] += n if status == "missed" else 0
        counts["unreturned"] += n if unreturned else 0
    handled = handled_unreturned(flt, db)
    for (direction, _status), n in handled.items():
        for tab in ("all", direction, "missed") if f.unreturned else ():
            counts[tab] -= n
        counts["unreturned"] -= n
    return counts


def answers(rollup: Rollup, f: CallFilter) -> bool:
    """Whether the rollup's keys answer the filter: the period, and directions and statuses
    where it keeps them, for a user who may see every call. Never `unreturned`: the rollups
    know who was called back, not which calls were marked handled (`tab_counts` subtracts
    those itself)."""
    return (counted_by_the_hour(f) and f.tab == "all" and not f.unreturned
            and (not f.directions or "direction" in rollup.filters)
            and (not f.statuses or "status" in rollup.filters))


def figures(rollup: Rollup, f: CallFilter, db: Database, by: tuple[str, ...], *,
            per_slot: bool = False, source: str = "auto") -> tuple[list[tuple], str]:
    """The rollup's measures summed by the keys `by` (and by slot start, epoch ms, with
    `per_slot`) over the filter's calls; and where they came from ('rollups' or 'calls'). While
    the history loads in bulk the rollups are not built yet: the calls are counted."""
    sums: dict[tuple, list[int]] = {}
    first, last = -(-f.start_ms // rollup.grain_ms), f.end_ms // rollup.grain_ms
    if source == "auto" and answers(rollup, f) and first < last and not bulk.loading(db):
        rows = _from_table(rollup, f, first, last, by, per_slot, db)
        for start, end in ((f.start_ms, first * rollup.grain_ms),
                           (last * rollup.grain_ms, f.end_ms)):
            if start < end:
                rows += _from_calls(rollup, replace(f, start_ms=start, end_ms=end), db, by,
                                    per_slot)
        origin = "rollups"
    else:
        rows, origin = _from_calls(rollup, f, db, by, per_slot), "calls"
    width = len(by) + per_slot
    for row in rows:
        kept = sums.setdefault(tuple(row[:width]), [0] * len(rollup.measures))
        for i, value in enumerate(row[width:]):
            kept[i] += value or 0
    return [(*key, *values) for key, values in sums.items()], origin


def _grouped(rollup: Rollup, by: tuple[str, ...], per_slot: bool) -> tuple[str, str]:
    unknown = [k for k in by if k not in rollup.key_names]
    if unknown:
        raise ValueError(f"{rollup.table} has no key {unknown[0]!r}")
    keys = ([f"{rollup.slot} * {rollup.grain_ms}"] if per_slot else []) + list(by)
    return (", ".join(keys) + ", " if keys else ""), (
        " GROUP BY " + ", ".join(str(i + 1) for i in range(len(keys))) if keys else "")


def _from_table(rollup, f, first, last, by, per_slot, db) -> list[tuple]:
    keys, group = _grouped(rollup, by, per_slot)
    conditions, params = [f"{rollup.slot} >= ?", f"{rollup.slot} < ?"], [first, last]
    for column, values in (("direction", f.directions), ("status", f.statuses)):
        if values:
            conditions.append(f"{column} IN ({','.join('?' * len(values))})")
            params += values
    return list(run(db, f"SELECT {keys}{_sums(rollup)} FROM {rollup.table} "
                        f"WHERE {' AND '.join(conditions)}{group}", params))


def _from_calls(rollup, f, db, by, per_slot) -> list[tuple]:
    calls, params = (calls_query(f, db, counting=True)
                     .select(*(getattr(Call, c) for c in rollup.columns)).order_by().sql())
    keys, group = _grouped(rollup, by, per_slot)
    # House SQL around the filter's query, which peewee wrote for its engine already.
    dialect = dialect_of(db)
    return list(db.execute_sql(f"WITH chosen AS ({calls}) "
                               + dialect.sql(f"SELECT {keys}{_sums(rollup)} FROM "
                                             f"({rollup.afresh('chosen', dialect)}) AS rolled"
                                             f"{group}"),
                               params))


def _sums(rollup: Rollup) -> str:
    """The measures summed, whole numbers on both engines (PostgreSQL's sum of a bigint is a
    numeric, a Decimal in Python)."""
    return ", ".join(f"CAST(sum({m}) AS bigint)" for m in rollup.measures)


def _rate(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def _average(total: int, n: int) -> int | None:
    return round(total / n) if n else None


def _rank(histogram: dict[int, int], share: float) -> int | None:
    """The nearest-rank percentile of a histogram value -> count."""
    n = sum(histogram.values())
    if not n:
        return None
    wanted, seen = math.ceil(share * n), 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= wanted:
            return value
    return None


def _worst(*origins: str) -> str:
    return "calls" if "calls" in origins else "rollups"


# --- per PBX: two PBXs' extension 201, queue 2001 or line of one name are two things --------------

def _pbxs(f: CallFilter, db: Database) -> list[str] | None:
    """The PBXs a report has rows of in a history several PBXs write: each the user sees, or
    the one the filter chose. None for the only PBX: its rows name no PBX."""
    if len(pbx_ids(db)) < 2:
        return None
    return [f.pbx] if f.pbx else pbx_ids(db, f.visible_to)


def _per_pbx(rollup: Rollup, f: CallFilter, db: Database, pbxs: list[str] | None,
             by: tuple[str, ...], options: Options) -> tuple[list[tuple], str]:
    """`figures` by `by`, each row led by its PBX (of `_pbxs`; '' for the only one), and where
    they came from: each PBX's counted from its own calls (the counters know no PBX)."""
    rows, origins = [], []
    for pbx in [""] if pbxs is None else pbxs:
        found, origin = figures(rollup, replace(f, pbx=pbx) if pbx else f, db, by,
                                source=options.source)
        rows += [(pbx, *row) for row in found]
        origins.append(origin)
    return rows, _worst(*origins)


def _names(f: CallFilter, db: Database, pbxs: list[str] | None) -> dict[str, dict[str, str]]:
    """The employees' names: pbx -> extension -> name, each PBX's own ('' the only PBX's)."""
    return {"": employee_names(db, f.pbx)} if pbxs is None else names_by_pbx(db)


def _led_by_pbx(pbxs: list[str] | None, columns: list[tuple[str, str, str]]
                ) -> list[tuple[str, str, str]]:
    """A report's columns, the PBX's first in a history several PBXs write."""
    return columns if pbxs is None else [("pbx", "PBX", TEXT), *columns]


def _pbx_cell(pbxs: list[str] | None, pbx: str) -> dict:
    """A row's PBX cell: none for the only PBX."""
    return {} if pbxs is None else {"pbx": pbx}


# --- 1. employees ---------------------------------------------------------------------------------

def _employees(f, db, clock, options) -> Report:
    """A row per employee: by extension; in a history several PBXs write, by PBX and
    extension (two PBXs' 201 are two people), each PBX's counted from its calls (the daily
    counters know no PBX)."""
    pbxs = _pbxs(f, db)
    names = _names(f, db, pbxs)
    rows, origin = _per_pbx(EMPLOYEES, f, db, pbxs, ("extension", "role"), options)
    people: dict[tuple[str, str], dict] = defaultdict(lambda: dict.fromkeys(
        ("answered", "missed", "returned", "outgoing", "outgoing_answered", "talk_s",
         "answered_wait_s"), 0))
    for pbx, extension, role, calls, answered, talk_s, wait_s, returned in rows:
        p = people[pbx, extension]
        if role == "answered":
            p["answered"] += calls
            p["talk_s"] += talk_s
            p["answered_wait_s"] += wait_s
        elif role == "missed":
            p["missed"] += calls
            p["returned"] += returned
        else:
            p["outgoing"] += calls
            p["outgoing_answered"] += answered
            p["talk_s"] += talk_s
    shown = [key for key, p in people.items() if any(p.values()) and (
        f.visible_to is None or f.visible_to.shows_employee(key[1], key[0]))]
    table = []
    for key in sorted(shown, key=lambda k: (-(people[k]["answered"] + people[k]["outgoing"]), k)):
        p, (pbx, ext) = people[key], key
        table.append({
            **_pbx_cell(pbxs, pbx), "extension": ext, "name": names.get(pbx, {}).get(ext, ""),
            "answered": p["answered"], "missed": p["missed"], "outgoing": p["outgoing"],
            "talk_s": p["talk_s"],
            "average_talk_s": _average(p["talk_s"], p["answered"] + p["outgoing_answered"]),
            "average_wait_s": _average(p["answered_wait_s"], p["answered"]),
            "callback_rate": _rate(p["returned"], p["missed"])})
    labels = [f"{qualified(r.get('pbx', ''), r['extension'])} {r['name']}".strip()
              for r in table]
    return Report(
        "employees",
        _led_by_pbx(pbxs, [
            ("extension", "Extension", TEXT), ("name", "Employee", TEXT),
            ("answered", "Answered", COUNT), ("missed", "Missed", COUNT),
            ("outgoing", "Outgoing", COUNT), ("talk_s", "Talk time", SECONDS),
            ("average_talk_s", "Average talk", SECONDS),
            ("average_wait_s", "Average wait", SECONDS),
            ("callback_rate", "Missed called back", PERCENT)]),
        table,
        {"type": "bar", "stacked": True, "labels": labels, "series": [
            {"key": key, "title": title, "values": [r[key] for r in table]}
            for key, title in (("answered", "Answered"), ("missed", "Missed"),
                               ("outgoing", "Outgoing"))]},
        totals={key: sum(r[key] for r in table) for key in ("answered", "missed", "outgoing",
                                                            "talk_s")},
        source=origin)


# --- 2. traffic -----------------------------------------------------------------------------------

def _traffic(f, db, clock, options) -> Report:
    current, origin = _slots(f, db, clock, options, ("direction", "status"))
    span = f.end_ms - f.start_ms
    previous, origin_before = _slots(replace(f, start_ms=f.start_ms - span, end_ms=f.start_ms),
                                     db, clock, options, ())
    heat = [[0] * 24 for _ in WEEKDAYS]
    for local, _, calls in current:
        heat[local.weekday()][local.hour] += sum(calls.values())
    buckets = _buckets(f.start_ms, f.end_ms, clock, options.grain)
    before = _buckets(f.start_ms - span, f.start_ms, clock, options.grain)
    trend = {b: dict.fromkeys(("calls", "incoming", "outgoing", "internal", "missed"), 0)
             for b in buckets}
    for local, _, calls in current:
        counts = trend[_bucket(local.date(), options.grain)]
        for (direction, status), n in calls.items():
            counts["calls"] += n
            counts[direction] += n
            counts["missed"] += n if status == "missed" else 0
    earlier = dict.fromkeys(before, 0)
    for local, _, calls in previous:
        earlier[_bucket(local.date(), options.grain)] += sum(calls.values())
    table = []
    for i, b in enumerate(buckets):
        then = before[i] if i < len(before) else None
        table.append({"period": _label(b, options.grain), **trend[b],
                      "previous_period": _label(then, options.grain) if then else "",
                      "previous_calls": earlier[then] if then else None})
    labels = [r["period"] for r in table]
    return Report(
        "traffic",
        [("period", "Period", TEXT), ("calls", "Calls", COUNT), ("incoming", "Incoming", COUNT),
         ("outgoing", "Outgoing", COUNT), ("internal", "Internal", COUNT),
         ("missed", "Missed", COUNT), ("previous_period", "Previous period", TEXT),
         ("previous_calls", "Calls then", COUNT)],
        table,
        {"type": "line", "labels": labels, "series": [
            {"key": "calls", "title": "Calls", "values": [r["calls"] for r in table]},
            {"key": "missed", "title": "Missed", "values": [r["missed"] for r in table]},
            {"key": "previous_calls", "title": "Previous period",
             "values": [r["previous_calls"] for r in table]}]},
        totals={k: sum(r[k] for r in table) for k in ("calls", "incoming", "outgoing",
                                                      "internal", "missed")}
        | {"previous_calls": sum(earlier.values())},
        extra={"heatmap": {"days": list(WEEKDAYS), "hours": list(range(24)), "values": heat}},
        source=_worst(origin, origin_before))


def _slots(f, db, clock, options, by: tuple[str, ...]
           ) -> tuple[list[tuple[datetime, int, dict]], str]:
    """(local start, slot ms, {values of `by`: calls}) per slot with calls: whole hours where
    the timezone's offset is a whole number of hours all period, else quarter hours."""
    for rollup in (CALLS, replace(CALLS, grain_ms=QUARTER_HOUR_MS)):
        source = options.source if rollup is CALLS else "calls"
        rows, origin = figures(rollup, f, db, by, per_slot=True, source=source)
        slots: dict[int, dict] = defaultdict(lambda: defaultdict(int))
        for slot_ms, *keys, calls, _talk, _wait in rows:
            if calls:
                slots[slot_ms][tuple(keys)] += calls
        locals_ = {ms: clock.to_local(ms / 1000) for ms in slots}
        if rollup is CALLS and any(t.utcoffset().total_seconds() % 3600 for t in
                                   locals_.values()):
            continue
        return [(locals_[ms], ms, dict(calls)) for ms, calls in sorted(slots.items())], origin
    raise AssertionError("unreachable")


def _buckets(start_ms: int, end_ms: int, clock, grain: str) -> list[date]:
    day = clock.to_local(start_ms / 1000).date()
    last = clock.to_local((end_ms - 1) / 1000).date()
    out: list[date] = []
    while day <= last:
        b = _bucket(day, grain)
        if not out or out[-1] != b:
            out.append(b)
        day += timedelta(days=1)
    return out


def _bucket(day: date, grain: str) -> date:
    if grain == "week":
        return day - timedelta(days=day.weekday())
    if grain == "month":
        return day.replace(day=1)
    return day


def _label(b: date, grain: str) -> str:
    return b.strftime("%Y-%m") if grain == "month" else b.isoformat()


# --- 3. lines -------------------------------------------------------------------------------------

def _lines(f, db, clock, options) -> Report:
    """A row per line and DID; in a history several PBXs write, per PBX (two PBXs' trunks of
    one name are two lines)."""
    pbxs = _pbxs(f, db)
    rows, origin = _per_pbx(LINES, f, db, pbxs, ("line", "did", "direction"), options)
    lines: dict[tuple[str, str, str], dict] = defaultdict(lambda: dict.fromkeys(
        ("incoming", "outgoing", "answered", "missed", "talk_s", "wait_s"), 0))
    for pbx, line, did, direction, calls, answered, missed, talk_s, wait_s in rows:
        row = lines[(pbx, line, did)]
        row[direction] += calls
        row["answered"] += answered
        row["missed"] += missed
        row["talk_s"] += talk_s
        row["wait_s"] += wait_s if direction == "incoming" else 0
    table = [{**_pbx_cell(pbxs, pbx), "line": line, "did": did, "incoming": r["incoming"],
              "outgoing": r["outgoing"], "answered": r["answered"], "missed": r["missed"],
              "talk_s": r["talk_s"], "average_wait_s": _average(r["wait_s"], r["incoming"])}
             for (pbx, line, did), r in sorted(lines.items(), key=lambda kv: (
                 -(kv[1]["incoming"] + kv[1]["outgoing"]), kv[0])) if r["incoming"] + r["outgoing"]]
    per_line: dict[str, dict] = defaultdict(lambda: {"incoming": 0, "outgoing": 0})
    for r in table:
        line = qualified(r.get("pbx", ""), r["line"])
        per_line[line]["incoming"] += r["incoming"]
        per_line[line]["outgoing"] += r["outgoing"]
    return Report(
        "lines",
        _led_by_pbx(pbxs, [
            ("line", "Line", TEXT), ("did", "DID", TEXT), ("incoming", "Incoming", COUNT),
            ("outgoing", "Outgoing", COUNT), ("answered", "Answered", COUNT),
            ("missed", "Missed", COUNT), ("talk_s", "Talk time", SECONDS),
            ("average_wait_s", "Average wait", SECONDS)]),
        table,
        {"type": "bar", "stacked": True, "labels": list(per_line), "series": [
            {"key": key, "title": title, "values": [v[key] for v in per_line.values()]}
            for key, title in (("incoming", "Incoming"), ("outgoing", "Outgoing"))]},
        totals={k: sum(r[k] for r in table) for k in ("incoming", "outgoing", "answered",
                                                      "missed", "talk_s")},
        source=origin)


# --- 4. menus -------------------------------------------------------------------------------------

def _menus(f, db, clock, options) -> Report:
    """A row per menu and option pressed; in a history several PBXs write, per PBX (the
    chart's menus named by PBX too: `office:2000`)."""
    pbxs = _pbxs(f, db)
    rows, origin = _per_pbx(MENUS, f, db, pbxs, ("menu", "digits"), options)
    table = [{**_pbx_cell(pbxs, pbx), "menu": menu, "option": digits, "calls": calls,
              "answered": answered, "left_in_menu": left}
             for pbx, menu, digits, calls, answered, left in sorted(rows) if calls]
    by = {(qualified(r.get("pbx", ""), r["menu"]), r["option"]): r["calls"] for r in table}
    menus = sorted({menu for menu, _ in by})
    options_seen = sorted({option for _, option in by})
    return Report(
        "menus",
        _led_by_pbx(pbxs, [
            ("menu", "Menu", TEXT), ("option", "Option pressed", TEXT),
            ("calls", "Calls", COUNT), ("answered", "Answered", COUNT),
            ("left_in_menu", "Hung up in the menu", COUNT)]),
        table,
        {"type": "bar", "stacked": True, "labels": menus, "series": [
            {"key": option or "none", "title": option or "No choice",
             "values": [by.get((menu, option), 0) for menu in menus]}
            for option in options_seen]},
        totals={k: sum(r[k] for r in table) for k in ("calls", "answered", "left_in_menu")},
        source=origin)


# --- 5. queues ------------------------------------------------------------------------------------

def _queues(f, db, clock, options) -> Report:
    """A row per queue; in a history several PBXs write, per PBX (two PBXs' queue 2001 are
    two queues), who answered named as their own PBX names them."""
    pbxs = _pbxs(f, db)
    rows, origin = _per_pbx(QUEUES, f, db, pbxs, ("queue", "answered", "wait_s"), options)
    agents, origin_agents = _per_pbx(EMPLOYEES, f, db, pbxs, ("queue", "role", "extension"),
                                     options)
    names = _names(f, db, pbxs)
    waits: dict[tuple[str, str], dict[int, dict[int, int]]] = defaultdict(lambda: {0: {}, 1: {}})
    for pbx, queue, answered, wait_s, calls in rows:
        if calls:
            histogram = waits[pbx, queue][answered]
            histogram[wait_s] = histogram.get(wait_s, 0) + calls
    who: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    for pbx, queue, role, extension, calls, *_ in agents:
        if role == "answered" and queue and calls:
            who[pbx, queue].append((calls, extension))
    level = options.service_level_s
    table = []
    for pbx, queue in sorted(waits):
        taken, dropped = waits[pbx, queue][1], waits[pbx, queue][0]
        answered, abandoned = sum(taken.values()), sum(dropped.values())
        within = sum(n for w, n in taken.items() if w <= level)
        mine = names.get(pbx, {})
        table.append({
            **_pbx_cell(pbxs, pbx), "queue": queue, "offered": answered + abandoned,
            "answered": answered, "abandoned": abandoned, "answered_within": within,
            "service_level": _rate(within, answered + abandoned),
            "average_wait_s": _average(sum(w * n for w, n in taken.items()), answered),
            "p90_wait_s": _rank(taken, 0.9),
            "average_abandon_s": _average(sum(w * n for w, n in dropped.items()), abandoned),
            "answered_by": ", ".join(
                f"{ext}{' ' + mine[ext] if mine.get(ext) else ''} ({n})"
                for n, ext in sorted(who[pbx, queue], key=lambda t: (-t[0], t[1])))})
    return Report(
        "queues",
        _led_by_pbx(pbxs, [
            ("queue", "Queue", TEXT), ("offered", "Offered", COUNT),
            ("answered", "Answered", COUNT), ("abandoned", "Abandoned", COUNT),
            ("answered_within", f"Answered within {level} s", COUNT),
            ("service_level", "Service level", PERCENT),
            ("average_wait_s", "Average wait", SECONDS),
            ("p90_wait_s", "90% waited at most", SECONDS),
            ("average_abandon_s", "Average wait before hanging up", SECONDS),
            ("answered_by", "Who answered", TEXT)]),
        table,
        {"type": "bar", "labels": [qualified(r.get("pbx", ""), r["queue"]) for r in table],
         "series": [{"key": key, "title": title, "values": [r[key] for r in table]}
                    for key, title in (("answered", "Answered"), ("abandoned", "Abandoned"),
                                       ("answered_within", f"Answered within {level} s"))]},
        totals={k: sum(r[k] for r in table) for k in ("offered", "answered", "abandoned",
                                                      "answered_within")},
        extra={"service_level_s": level},
        source=_worst(origin, origin_agents))


# --- 6. callbacks ---------------------------------------------------------------------------------

# How soon missed calls were returned: (upper bound in minutes, exclusive; title).
CALLBACK_BANDS = ((5, "Within 5 min"), (15, "5 to 15 min"), (60, "15 to 60 min"),
                  (240, "1 to 4 hours"), (1440, "4 to 24 hours"), (None, "Later"))


def _callbacks(f, db, clock, options) -> Report:
    rows, origin = figures(CALLBACKS, f, db, ("after_min",), source=options.source)
    returned: dict[int, int] = {}
    unreturned = attempts = 0
    for after_min, calls, tries in rows:
        if after_min < 0:
            unreturned += calls
            attempts += tries
        elif calls:
            returned[after_min] = returned.get(after_min, 0) + calls
    called_back = sum(returned.values())
    missed = called_back + unreturned
    bands, low = [], 0
    for high, title in CALLBACK_BANDS:
        n = sum(c for m, c in returned.items() if m >= low and (high is None or m < high))
        bands.append({"band": title, "calls": n, "share": _rate(n, missed)})
        low = high or low
    bands.append({"band": "Not called back", "calls": unreturned, "share": _rate(unreturned,
                                                                               missed)})
    median = _rank(returned, 0.5)
    return Report(
        "callbacks",
        [("band", "Called back", TEXT), ("calls", "Missed calls", COUNT),
         ("share", "Share", PERCENT)],
        bands,
        {"type": "bar", "labels": [b["band"] for b in bands], "series": [
            {"key": "calls", "title": "Missed calls", "values": [b["calls"] for b in bands]}]},
        totals={"missed": missed, "called_back": called_back, "unreturned": unreturned,
                "callback_rate": _rate(called_back, missed),
                "median_callback_s": None if median is None else median * 60,
                "attempts_unreturned": attempts},
        source=origin)


_BUILDERS = {"employees": _employees, "traffic": _traffic, "lines": _lines, "menus": _menus,
             "queues": _queues, "callbacks": _callbacks}
