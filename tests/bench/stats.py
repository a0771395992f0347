"""Analytics benchmark: `build_report` of the six reports on a mirror of a generated
~1,000,000-call PBX, from the rollups (the default, `auto`) and from the calls
(`Options(source="calls")`: the plain GROUP BY over the period's calls), for the last month,
3 months and year of the data; and the history page's tab counters for a year.

Each case is timed `--runs` times after `--warmup` unmeasured runs; p95 is the wall time of the
call. Budgets (p95, from the rollups): a month <= 100 ms, a year <= 300 ms (3 months: none);
tab counters <= 250 ms (as in the page benchmark). The ratio calls/rollups says what the rollups
save. Nothing fails on time: the figures are for reading.

Run: ./bin/bench stats [--calls 1000000] [--runs 15] [--keep DIR]
`--keep DIR` builds (or reuses) the PBX and mirror as the page benchmark does
(./bin/bench page --keep DIR), e.g. `./bin/bench stats --keep /work/.cache/bench-1m`.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from mirror.analytics import REPORTS, Options, build_report, tab_counts
from mirror.database import open_module_db
from mirror.pbxtime import PbxClock
from mirror.queries import call_filter
from tests.bench.page import TIMEZONE, Case, Timing, last_days, measure, prepare

PERIODS = (("month", 30, 100), ("3 months", 91, None), ("year", 365, 300))  # (label, days, ms)
COUNTS_BUDGET_MS = 250


@dataclass
class Row:
    """One report over one period, timed both ways."""
    report: str
    period: str
    calls: int
    budget_ms: float | None
    rollups: Timing
    scan: Timing
    source: str                     # where the auto path took the figures from


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=15, help="measured runs per case")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured runs per case")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="build the PBX and mirror here and reuse them in later runs")
    args = parser.parse_args()
    end_day = datetime.now(ZoneInfo(TIMEZONE)).date()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        run(args.keep, args, end_day)
    else:
        with tempfile.TemporaryDirectory(prefix="extcdr-stats-") as tmp:
            run(Path(tmp), args, end_day)


def run(root: Path, args, end_day: date) -> None:
    prepare(root, str(root / "module.db"), args.calls, args.seed, end_day, reuse=True)
    open_module_db(root / "module.db").close()        # the writer brings it to the schema
    db = open_module_db(root / "module.db", readonly=True)
    clock = PbxClock(TIMEZONE)
    try:
        rows = []
        for label, days, budget in PERIODS:
            f = call_filter(last_days(end_day, days), clock, time.time())
            calls = tab_counts(f, db)["all"]
            for name in REPORTS:
                timed = {source: measure(Case(f"{name} {label} {source}", lambda name=name, f=f,
                                              source=source: build_report(
                                                  name, f, db, clock, Options(source=source))),
                                         args) for source in ("auto", "calls")}
                origin = build_report(name, f, db, clock).source
                rows.append(Row(name, label, calls, budget, timed["auto"], timed["calls"],
                                origin))
                print_row(rows[-1], header=len(rows) == 1)
        year = call_filter(last_days(end_day, 365), clock, time.time())
        counters = {source: measure(Case(f"tab_counts year {source}", lambda source=source:
                                         tab_counts(year, db, source=source)), args)
                    for source in ("auto", "calls")}
        print_summary(rows, counters, tab_counts(year, db)["all"])
    finally:
        db.close()


def print_row(row: Row, *, header: bool) -> None:
    if header:
        print(f"\n{'report':<10} {'period':<9} {'calls':>8} {'source':>7} {'p95 ms':>8} "
              f"{'budget':>6} {'p95/budget':>10} {'calls p95':>10} {'calls/rollups':>13}",
              flush=True)
    budget = f"{row.budget_ms:6.0f}" if row.budget_ms else f"{'-':>6}"
    share = f"{row.rollups.p95 / row.budget_ms:9.2f}x" if row.budget_ms else f"{'-':>10}"
    print(f"{row.report:<10} {row.period:<9} {row.calls:>8,} {row.source:>7} "
          f"{row.rollups.p95:8.1f} {budget} {share} {row.scan.p95:10.1f} "
          f"{row.scan.p95 / row.rollups.p95:12.1f}x", flush=True)


def print_summary(rows: list[Row], counters: dict[str, Timing], calls: int) -> None:
    auto, scan = counters["auto"], counters["calls"]
    print(f"\ntab counters (mirror.analytics.tab_counts), year, {calls:,} calls: p95 "
          f"{auto.p95:.1f} ms from the rollups (budget {COUNTS_BUDGET_MS}), {scan.p95:.1f} ms "
          f"from the calls ({scan.p95 / auto.p95:.1f}x)")
    budgeted = [r for r in rows if r.budget_ms]
    over = [r for r in budgeted if r.rollups.p95 > r.budget_ms]
    worst = max(budgeted, key=lambda r: r.rollups.p95 / r.budget_ms)
    print(f"{len(budgeted) - len(over)} of {len(budgeted)} budgeted cases within budget"
          + (f"; over: {', '.join(f'{r.report} {r.period}' for r in over)}" if over else "")
          + f"; worst p95/budget {worst.rollups.p95 / worst.budget_ms:.2f}x "
            f"({worst.report} {worst.period})")


if __name__ == "__main__":
    main()
