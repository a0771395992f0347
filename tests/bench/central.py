"""Central history benchmark: N PBXs (default 10) of M calls each (default 100,000), each
mirrored by its own `extcdr sync --once --pbx-id pbxI` process into one PostgreSQL history, all
at the same time; against the same histories backfilled one after another into SQLite
mirrors (one PBX each, as a PBX's own module.db).

Prints the concurrent run's legs/s over every PBX's legs, the SQLite backfills' legs/s, and
checks that no call was lost or duplicated: each PBX's calls in the central history (its
qualified linkedids, stamped with its id) are its SQLite mirror's calls, and the rollups are
exact. PostgreSQL: `--url` (an empty database or schema), else a private server started here
as the tests start theirs (tests.pgserver: fsync off). Run: ./bin/bench central [--pbxs N]
[--calls M] [--batch-rows R] [--history DIR]
"""
from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from mirror.database import open_module_db
from mirror.dialect import run
from standin import demo
from tests.mirror import rollups_off

ROOT = Path(__file__).resolve().parents[2]


def histories(folder: Path, pbxs: int, calls: int, seed: int) -> list[Path]:
    """One demo PBX per PBX id (seeds seed, seed + 1, …), kept in `folder` and reused by a
    later run of the same sizes."""
    made = []
    for n in range(pbxs):
        pbx = folder / f"pbx{n}-{calls}-{seed + n}"
        if not (pbx / "done").exists():
            shutil.rmtree(pbx, ignore_errors=True)
            demo.generate(pbx, calls, seed + n, recordings_limit=0)
            (pbx / "done").touch()
        made.append(pbx)
    return made


def sync_command(pbx: Path, db: str, pbx_id: str, args) -> list[str]:
    return [sys.executable, "-m", "cli", "sync", "--cdr-db", str(pbx / "cdr.db"), "--pbx-db",
            str(pbx / "mikopbx.db"), "--db", db, "--once", "--batch-rows", str(args.batch_rows),
            *(["--pbx-id", pbx_id] if pbx_id else [])]


def concurrent(pbxs: list[Path], url: str, out: Path, args) -> float:
    """Every PBX's sync at once into `url`; seconds until the last one is done."""
    logs = [out / f"pbx{n}.log" for n in range(len(pbxs))]
    started = time.perf_counter()
    procs = [subprocess.Popen(sync_command(pbx, url, f"pbx{n}", args), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=log.open("w"))
             for (n, pbx), log in zip(enumerate(pbxs), logs)]
    failed = [n for n, proc in enumerate(procs) if proc.wait()]
    elapsed = time.perf_counter() - started
    if failed:
        last = logs[failed[0]].read_text().strip().splitlines()[-1:]
        raise SystemExit(f"the sync of pbx{failed[0]} failed: {' '.join(last)}")
    return elapsed


def one_after_another(pbxs: list[Path], out: Path, args) -> tuple[float, list[Path]]:
    """Each PBX's history backfilled into its own SQLite mirror; total seconds."""
    mirrors, total = [], 0.0
    for n, pbx in enumerate(pbxs):
        mirror = out / f"pbx{n}.db"
        started = time.perf_counter()
        subprocess.run(sync_command(pbx, str(mirror), "", args), cwd=ROOT, check=True)
        total += time.perf_counter() - started
        mirrors.append(mirror)
    return total, mirrors


def check(url: str, mirrors: list[Path]) -> list[str]:
    """What differs between the central history and the PBXs' own mirrors (nothing: exact)."""
    problems = []
    db = open_module_db(url, readonly=True)
    try:
        for n, mirror in enumerate(mirrors):
            with sqlite3.connect(mirror) as own:
                expected = {linkedid for (linkedid,) in own.execute("SELECT linkedid FROM call")}
                legs = own.execute("SELECT count(*) FROM leg").fetchone()[0]
            found = [linkedid for (linkedid,) in run(
                db, "SELECT linkedid FROM call WHERE pbx = ?", (f"pbx{n}",))]
            central = {linkedid.removeprefix(f"pbx{n}:") for linkedid in found}
            if len(found) != len(central) or central != expected:
                problems.append(f"pbx{n}: {len(expected - central)} calls lost, "
                                f"{len(central - expected)} unknown, "
                                f"{len(found) - len(central)} twice")
            central_legs = run(db, "SELECT count(*) FROM leg WHERE pbx = ?",
                               (f"pbx{n}",)).fetchone()[0]
            if central_legs != legs:
                problems.append(f"pbx{n}: {central_legs} legs, its own mirror {legs}")
        off = rollups_off(db)
        if off:
            problems.append(f"{len(off)} rollup figures differ from the calls, e.g. {off[0]}")
    finally:
        db.close()
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pbxs", type=int, default=10)
    parser.add_argument("--calls", type=int, default=100_000, help="calls per PBX")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-rows", type=int, default=40_000)
    parser.add_argument("--url", help="an empty PostgreSQL database or schema to write")
    parser.add_argument("--history", type=Path, help="keep the generated PBXs here for reuse")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="extcdr-bench-") as tmp:
        out = Path(tmp)
        started = time.perf_counter()
        pbxs = histories(args.history or out, args.pbxs, args.calls, args.seed)
        legs = 0
        for pbx in pbxs:
            with sqlite3.connect(pbx / "cdr.db") as conn:
                legs += conn.execute("SELECT count(*) FROM cdr_general").fetchone()[0]
        print(f"{args.pbxs} PBXs, {legs:,} legs of {args.pbxs * args.calls:,} calls "
              f"({time.perf_counter() - started:.1f} s to generate or find)", flush=True)
        sqlite_s, mirrors = one_after_another(pbxs, out, args)
        print(f"SQLite, one PBX after another: {sqlite_s:.1f} s ({legs / sqlite_s:,.0f} legs/s)",
              flush=True)
        if args.url:
            server = nullcontext(args.url)
        else:
            from tests.pgserver import running
            server = running()
        with server as running_server:
            url = running_server if args.url else running_server.url
            open_module_db(url).close()           # migrated once, before the clock starts
            central_s = concurrent(pbxs, url, out, args)
            print(f"PostgreSQL, {args.pbxs} PBXs at once: {central_s:.1f} s "
                  f"({legs / central_s:,.0f} legs/s)", flush=True)
            problems = check(url, mirrors)
    print("no call lost or duplicated, rollups exact" if not problems else "\n".join(problems))
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
