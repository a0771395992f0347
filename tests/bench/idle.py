"""Idle cost of `extcdr daemon`: CPU used over a quiet minute (budget: under 1% of a core).

Run: ./bin/bench idle [--seconds 60]. The daemon mirrors a small demo PBX, catches up and keeps
its AMI link to a quiet emulator (keepalive pings), its file watcher and its safety-net poll;
its CPU time (user + system, from /proc) over the window is reported.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from standin import demo
from standin.amiemu import AmiEmulator

ROOT = Path(__file__).resolve().parents[2]
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="extcdr-idle-") as tmp, \
            AmiEmulator() as emulator:          # a quiet PBX: the link stays up and pings
        pbx = Path(tmp)
        demo.generate(pbx, 2_000, seed=3)
        host, port = emulator.address
        config = pbx / "extcdr.toml"
        config.write_text(f'[ami]\nhost = "{host}"\nport = {port}\nsecret = "extcdr-demo"\n')
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "daemon", "--config", str(config),
             "--cdr-db", str(pbx / "cdr.db"), "--pbx-db", str(pbx / "mikopbx.db"),
             "--db", str(pbx / "module.db")], cwd=ROOT, stderr=subprocess.DEVNULL)
        try:
            time.sleep(5)                      # start-up and the first catch-up
            before, started = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(args.seconds)
            used, elapsed = cpu_seconds(proc.pid) - before, time.monotonic() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    print(f"idle daemon: {used:.2f} s CPU in {elapsed:.0f} s = {100 * used / elapsed:.2f}% "
          f"of a core   (budget < 1%)")


if __name__ == "__main__":
    main()
