"""Backfill benchmark: `extcdr sync --once` of a generated ~1,000,000-leg cdr.db.

Prints legs/s, peak RSS of the sync process and the ratio to a bare
`INSERT INTO cdr_general SELECT * FROM src.cdr_general` copy of the same table (same schema
and indexes as the PBX's) measured in the same run. Run: ./bin/bench backfill [--legs N]
"""
from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pbx import tables as pbxschema
from standin import demo

ROOT = Path(__file__).resolve().parents[2]


def generate(out: Path, legs: int, seed: int) -> int:
    """A demo PBX with about `legs` legs (calls scaled from a small probe run)."""
    probe = out / "probe"
    probe.mkdir()
    demo.generate(probe, 2_000, seed)
    per_call = _count(probe / "cdr.db") / 2_000
    demo.generate(out, int(legs / per_call), seed, recordings_limit=0)
    return _count(out / "cdr.db")


def _count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM cdr_general").fetchone()[0]


def bare_copy(cdr: Path, target: Path) -> float:
    conn = pbxschema.create(str(target), pbxschema.cdr_ddl())
    conn.execute("ATTACH DATABASE ? AS src", (f"file:{cdr}?mode=ro",))
    os.sync()  # each timed phase starts with no earlier writes still being flushed
    started = time.perf_counter()
    with conn:
        conn.execute("INSERT INTO main.cdr_general SELECT * FROM src.cdr_general")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def backfill(cdr: Path, pbx: Path, mirror: Path) -> tuple[float, int]:
    os.sync()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cli", "sync", "--cdr-db", str(cdr),
                    "--pbx-db", str(pbx), "--db", str(mirror), "--once"], cwd=ROOT, check=True)
    elapsed = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, peak_kib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--legs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="extcdr-bench-") as tmp:
        out = Path(tmp)
        started = time.perf_counter()
        legs = generate(out, args.legs, args.seed)
        print(f"generated {legs:,} legs in {time.perf_counter() - started:.1f} s")
        copy_s = bare_copy(out / "cdr.db", out / "copy.db")
        sync_s, rss_kib = backfill(out / "cdr.db", out / "mikopbx.db", out / "module.db")
        with sqlite3.connect(out / "module.db") as conn:
            calls = conn.execute("SELECT count(*) FROM call").fetchone()[0]
        print(f"bare INSERT…SELECT copy: {copy_s:.2f} s ({legs / copy_s:,.0f} rows/s)")
        print(f"backfill:                {sync_s:.2f} s ({legs / sync_s:,.0f} legs/s, "
              f"{calls:,} calls)")
        print(f"ratio backfill / copy:   {sync_s / copy_s:.2f}x   (budget <= 8x)")
        print(f"legs/s:                  {legs / sync_s:,.0f}   (budget >= 50,000)")
        print(f"peak RSS of the sync:    {rss_kib / 1024:.0f} MB   (budget <= 200 MB)")


if __name__ == "__main__":
    main()
