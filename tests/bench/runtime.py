"""Runtime benchmark: the module's own Python (pbxmodule.runtime, `bin/extcdr` of the archive)
against the development tree's .venv, over the same module files.

Measured: the time to build the runtime (into a fresh cache), the archive's size (budget
<= 60 MB) and the runtime's glibc floor; cold start of the daemon (exec to its "started" log
line) and of the web process (exec to its first answered request) from the bundle (budget
<= 1.5 s each; the first start ever, which compiles the module's .py files, shown apart); and
backfill (`sync --once` of a demo PBX of --calls calls), a page of calls (`calls --limit 50`,
a whole process; and the API's first page served by a running web process) and an XLSX export (`export --format xlsx` of the month) from the bundle vs .venv (budget
<= 1.1x), each the best of --runs.

Run: ./bin/bench runtime [--calls 20000] [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from pbxmodule import package, runtime
from standin import demo

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        began = time.perf_counter()
        bundle = runtime.build(cache=tmp / "cache")
        built_s = time.perf_counter() - began
        archive = tmp / "ModuleExtendedCDR.zip"
        package.build(archive, runtime=bundle)
        size = archive.stat().st_size
        print(f"runtime: built in {built_s:.1f} s; archive {size / 2**20:.1f} MB "
              f"(budget <= 60 MB) = {size / (60 * 2**20):.2f}x; unpacked "
              f"{sum(p.stat().st_size for p in bundle.rglob('*') if p.is_file()) / 2**20:.0f} MB "
              f"runtime; glibc >= {'.'.join(map(str, runtime.glibc_floor(bundle)))}")
        module = tmp / "module"
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                zipped.extract(info, module)
                os.chmod(module / info.filename, info.external_attr >> 16 & 0o777)
        pbx = tmp / "pbx"
        demo.generate(pbx, args.calls, 7, recordings_limit=0)
        frozen = [str(module / "bin" / "extcdr")]
        venv = [str(ROOT / ".venv" / "bin" / "python"), "-P", "-m", "cli"]
        env = {**os.environ, "PYTHONPATH": str(module)}
        config = tmp / "extcdr.toml"
        port = _free_port()
        config.write_text(f'[web]\nlisten = "127.0.0.1:{port}"\nproxy_token = "bench"\n'
                          f'[module]\ndb = "{tmp / "m.db"}"\n[pbx]\ncdr_db = "{pbx / "cdr.db"}"\n'
                          f'config_db = "{pbx / "mikopbx.db"}"\n[ami]\nenabled = false\n')
        first = _daemon_start(frozen, config, env)
        print(f"cold start, the first ever (compiles the module's files): daemon {first:.2f} s")
        for name, command in (("bundle", frozen), (".venv", venv)):
            daemon = min(_daemon_start(command, config, env) for _ in range(args.runs))
            web = min(_web_start(command, config, env, port) for _ in range(args.runs))
            print(f"cold start from {name}: daemon {daemon:.2f} s, web {web:.2f} s"
                  + (f" (budget <= 1.5 s) = {max(daemon, web) / 1.5:.2f}x" if name == "bundle"
                     else ""))
        db = tmp / "bench.db"
        xlsx = tmp / "calls.xlsx"
        steps = {
            "backfill": (["sync", "--cdr-db", pbx / "cdr.db", "--pbx-db", pbx / "mikopbx.db",
                          "--db", db, "--once"], lambda: db.unlink(missing_ok=True)),
            "page": (["calls", "--db", db, "--period", "this_month", "--limit", "50",
                      "--pbx-db", pbx / "mikopbx.db"], None),
            "export": (["export", "--db", db, "--format", "xlsx", "--out", xlsx, "--period",
                        "this_month", "--pbx-db", pbx / "mikopbx.db"], None),
        }
        for step, (argv, before) in steps.items():
            times = {}
            for name, command in (("bundle", frozen), (".venv", venv)):
                times[name] = min(_timed(command + [str(a) for a in argv], env, before)
                                  for _ in range(args.runs))
            ratio = times["bundle"] / times[".venv"]
            print(f"{step} ({args.calls} calls): bundle {times['bundle']:.2f} s, .venv "
                  f"{times['.venv']:.2f} s = {ratio:.2f}x (budget <= 1.1x)")
        # A page as users get it: served by a running web process (no start in the figure).
        served = tmp / "served.toml"
        served.write_text(config.read_text().replace(str(tmp / "m.db"), str(db)))
        pages: dict[str, float] = {}
        for _ in range(args.runs):                    # in turn: neither gets the warmer machine
            for name, command in ((".venv", venv), ("bundle", frozen)):
                pages[name] = min(pages.get(name, float("inf")),
                                  _pages(command, served, env, port))
        print(f"page served (API, 50 calls, best of {args.runs} medians of {PAGES}): bundle "
              f"{pages['bundle'] * 1000:.1f} ms, .venv {pages['.venv'] * 1000:.1f} ms = "
              f"{pages['bundle'] / pages['.venv']:.2f}x (budget <= 1.1x)")


def _timed(argv: list[str], env: dict, before=None) -> float:
    if before:
        before()
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}")
    return elapsed


def _daemon_start(command: list[str], config: Path, env: dict) -> float:
    began = time.perf_counter()
    proc = subprocess.Popen(command + ["daemon", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "started: mirror" in line:
                return time.perf_counter() - began
        sys.exit("the daemon ended before it started")
    finally:
        proc.terminate()
        proc.wait(20)


def _web_start(command: list[str], config: Path, env: dict, port: int) -> float:
    began = time.perf_counter()
    proc = subprocess.Popen(command + ["web", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
            except urllib.error.HTTPError:
                pass                                  # an answer: it serves
            except OSError:
                time.sleep(0.01)
                continue
            return time.perf_counter() - began
        sys.exit("the web process ended before it served")
    finally:
        proc.terminate()
        proc.wait(20)


PAGES = 100


def _pages(command: list[str], config: Path, env: dict, port: int) -> float:
    """The median time of the first page of this month's calls by the JSON API, as nginx
    would ask it for an admin."""
    proc = subprocess.Popen(command + ["web", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = (f"http://127.0.0.1:{port}/admin-cabinet/module-extended-c-d-r/calls/api/v1/calls"
           "?period=this_month&limit=50")
    request = urllib.request.Request(url, headers={
        "X-Extcdr-User": "admin", "X-Extcdr-Role": "admin", "X-Extcdr-Proxy-Token": "bench"})
    try:
        while True:
            try:
                urllib.request.urlopen(request, timeout=10).read()
                break
            except OSError:
                if proc.poll() is not None:
                    sys.exit("the web process ended before it served")
                time.sleep(0.05)
        times = []
        for _ in range(PAGES):
            began = time.perf_counter()
            urllib.request.urlopen(request, timeout=10).read()
            times.append(time.perf_counter() - began)
        return statistics.median(times)
    finally:
        proc.terminate()
        proc.wait(20)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
