"""Backfill benchmark: `extcdr sync --once` of a generated ~1,000,000-leg cdr.db.

Prints legs/s, peak RSS of the sync's processes and the ratio to a bare un-indexed
`CREATE TABLE cdr_general AS SELECT * FROM src.cdr_general` copy of the same rows measured in
the same run. Run: ./bin/bench backfill [--legs N] [--history DIR]

The peak RSS is the largest of the sync and its worker processes, read by a small launcher
that waits for them (`RUSAGE_CHILDREN`): read here, it would be this process's own peak
(generating the history) — Linux starts a child's peak with its parent's when it execs.

`--without-analytics-rollups` creates the mirror's schema before the sync, drops the triggers
that keep analytics' daily rollups and each returned call's wait for its callback (schema 13)
and has the writer keep only the hourly counters of each batch (mirror.rollups.kept_by_writer):
what analytics' upkeep costs a backfill is the difference of the two runs' legs/s.

`--webhook now|always --rounds R` measures the webhooks' outbox: R alternating backfills of the
same history into fresh mirrors, without a hook and with one enabled hook for every event
created before the sync — `now` (the history is older: the writer only finds that no call is
new enough) or `always` (created at the epoch: every call of the history queues its events, the
worst case); prints each run and the median cost (budget <= 5%) of wall and CPU time.

`--history DIR` keeps the generated history in DIR and reuses it in later runs of the same
`--legs` and `--seed` (generating a million legs takes half a minute); the sync only reads it.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mirror.database import open_module_db
from standin import demo

ROOT = Path(__file__).resolve().parents[2]
# The triggers of schema 13 that keep analytics' rollups (mirror.rollups) and returned_after_s.
ANALYTICS_TRIGGERS = ("employee_rollup_*", "line_rollup_*", "queue_rollup_*",
                      "callback_rollup_*", "menu_rollup_*", "call_returned_after_*")


# Runs a command and prints the peak RSS (KiB) of its processes, started from a small process.
MEASURED = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")

# The writer as it was before analytics: keeping only the hourly counters of migration 12
# (and no call's wait for its callback).
ONLY_HOURLY_COUNTERS = ("import sys, cli, mirror.rollups as r; r.ROLLUPS = (r.CALLS,); "
                        "r.ROLLED_COLUMNS = (*r.CALLS.columns, 'returned_after_s'); "
                        "r.RETURNED_AFTER = 'NULL'; sys.exit(cli.main(sys.argv[1:]))")


def generate(out: Path, legs: int, seed: int) -> int:
    """A demo PBX with about `legs` legs (calls scaled from a small probe run)."""
    probe = out / "probe"
    probe.mkdir()
    demo.generate(probe, 2_000, seed)
    per_call = _count(probe / "cdr.db") / 2_000
    demo.generate(out, int(legs / per_call), seed, recordings_limit=0)
    return _count(out / "cdr.db")


def history(folder: Path, legs: int, seed: int) -> int:
    """The history of `generate` kept in `folder`: generated once per (legs, seed)."""
    marker = folder / "history.txt"
    wanted = f"{legs} {seed}"
    if marker.exists() and marker.read_text().split()[:2] == wanted.split():
        return int(marker.read_text().split()[2])
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    generated = generate(folder, legs, seed)
    marker.write_text(f"{wanted} {generated}\n")
    return generated


def _count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM cdr_general").fetchone()[0]


def bare_copy(cdr: Path, target: Path) -> float:
    """Seconds to copy the PBX's rows into a new table without an index."""
    conn = sqlite3.connect(target)
    conn.execute("PRAGMA journal_mode = WAL")       # as module.db
    conn.execute("ATTACH DATABASE ? AS src", (f"file:{cdr}?mode=ro",))
    os.sync()  # each timed phase starts with no earlier writes still being flushed
    started = time.perf_counter()
    with conn:
        conn.execute("CREATE TABLE main.cdr_general AS SELECT * FROM src.cdr_general")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def without_analytics_rollups(mirror: Path) -> list[str]:
    """Create the mirror's schema and drop the analytics triggers; returns their names."""
    db = open_module_db(mirror)
    try:
        names = [row[0] for row in db.execute_sql(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND ("
            + " OR ".join("name GLOB ?" for _ in ANALYTICS_TRIGGERS) + ") ORDER BY name",
            ANALYTICS_TRIGGERS)]
        for name in names:
            db.execute_sql(f'DROP TRIGGER "{name}"')
    finally:
        db.close()
    return names


def add_webhook(mirror: Path, since: str) -> None:
    """One enabled hook for every event, created now or (`always`) at the epoch."""
    created_ms = 0 if since == "always" else int(time.time() * 1000)
    db = open_module_db(mirror)
    try:
        db.execute_sql(
            "INSERT INTO webhook (name, url, secret, events, created_ms, created_by) VALUES "
            "('bench', 'http://127.0.0.1:9/', 's', "
            "'[\"missed\", \"unreturned\", \"answered\", \"callback\"]', ?, 'bench')",
            (created_ms,))
    finally:
        db.close()


def webhook_cost(out: Path, source: Path, legs: int, since: str, rounds: int) -> None:
    """Alternating backfills of `source`'s history into mirrors in `out`, without and with a
    hook; the median of their times."""
    times: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for n in range(rounds):
        for hooked in (False, True) if n % 2 == 0 else (True, False):
            mirror = out / f"mirror-{n}-{int(hooked)}.db"
            open_module_db(mirror).close()
            if hooked:
                add_webhook(mirror, since)
            used = _children_cpu_s()
            elapsed, _ = backfill(source / "cdr.db", source / "mikopbx.db", mirror)
            used = _children_cpu_s() - used
            with sqlite3.connect(mirror) as conn:
                queued = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
            times[hooked].append(elapsed)
            cpu[hooked].append(used)
            print(f"round {n + 1} {'with' if hooked else 'without'} a hook: {elapsed:.2f} s, "
                  f"CPU {used:.2f} s ({legs / elapsed:,.0f} legs/s, {queued:,} events queued)",
                  flush=True)
            for leftover in out.glob(f"{mirror.name}*"):
                leftover.unlink()
    for what, runs in (("time", times), ("CPU time", cpu)):
        plain, hooked = statistics.median(runs[False]), statistics.median(runs[True])
        print(f"median {what} without: {plain:.2f} s, with a hook ({since}): {hooked:.2f} s; "
              f"the outbox's cost: {(hooked / plain - 1) * 100:+.1f}%   (budget <= 5%)")


def _own_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def backfill(cdr: Path, pbx: Path, mirror: Path, *,
             analytics: bool = True) -> tuple[float, int]:
    """Seconds of `extcdr sync --once` into `mirror`, and the peak RSS (KiB) of its processes."""
    os.sync()
    started = time.perf_counter()
    command = [sys.executable, "-m", "cli"] if analytics else [
        sys.executable, "-c", ONLY_HOURLY_COUNTERS]
    done = subprocess.run([sys.executable, "-c", MEASURED, *command, "sync", "--cdr-db",
                           str(cdr), "--pbx-db", str(pbx), "--db", str(mirror), "--once"],
                          cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    return elapsed, int(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--legs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--without-analytics-rollups", action="store_true",
                        help="drop the triggers of analytics' rollups before the backfill")
    parser.add_argument("--webhook", choices=("now", "always"),
                        help="compare backfills without and with a hook created then")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs (--webhook)")
    parser.add_argument("--history", type=Path,
                        help="keep the generated history here, reused by later runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="extcdr-bench-") as tmp:
        out = Path(tmp)
        started = time.perf_counter()
        if args.history:
            legs = history(args.history, args.legs, args.seed)
        else:
            legs = generate(out, args.legs, args.seed)
        source = args.history or out
        print(f"{legs:,} legs in {source} ({time.perf_counter() - started:.1f} s)")
        if args.webhook:
            webhook_cost(out, source, legs, args.webhook, args.rounds)
            return
        copy_s = bare_copy(source / "cdr.db", out / "copy.db")
        if args.without_analytics_rollups:
            dropped = without_analytics_rollups(out / "module.db")
            print(f"without analytics' rollups: dropped {len(dropped)} triggers "
                  f"({', '.join(dropped)})")
        sync_s, rss_kib = backfill(source / "cdr.db", source / "mikopbx.db", out / "module.db",
                                   analytics=not args.without_analytics_rollups)
        with sqlite3.connect(out / "module.db") as conn:
            calls = conn.execute("SELECT count(*) FROM call").fetchone()[0]
        print(f"bare copy (CREATE TABLE … AS SELECT): {copy_s:.2f} s "
              f"({legs / copy_s:,.0f} rows/s)")
        print(f"backfill:               {sync_s:.2f} s ({legs / sync_s:,.0f} legs/s, "
              f"{calls:,} calls)")
        print(f"ratio backfill / copy:  {sync_s / copy_s:.2f}x   (budget <= 6x)")
        print(f"legs/s:                 {legs / sync_s:,.0f}   (budget >= 50,000)")
        print(f"peak RSS of the sync:   {rss_kib / 1024:.0f} MB   (budget <= 200 MB; its "
              f"processes, not this one's {_own_peak_mb():.0f} MB)")


if __name__ == "__main__":
    main()
