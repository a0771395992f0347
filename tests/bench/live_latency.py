"""Live latency: time from a call's last hang-up (the emulator's final event and cdr.db move)
to the finished call being readable in module.db, for 500 calls played at a realistic rate
through the AMI emulator and `extcdr daemon` (budget: p95 <= 1 s).

`--webhook` also measures the webhooks: a receiver (http.server on 127.0.0.1) gets the calls'
`missed` and `answered` events from the daemon's sender, and the time from the hang-up to the
first delivery of each call is reported (budget: p95 <= 2 s).

Run: ./bin/bench live_latency [--calls 500] [--per-second 8] [--speed 10] [--webhook]
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mirror.database import open_module_db
from standin import demo
from standin.amiemu import AmiEmulator

ROOT = Path(__file__).resolve().parents[2]
SEED = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--per-second", type=float, default=8.0, help="calls started per second")
    parser.add_argument("--speed", type=float, default=10.0, help="call durations divided by")
    parser.add_argument("--webhook", action="store_true",
                        help="also the time to a webhook's delivery (a receiver on 127.0.0.1)")
    args = parser.parse_args()
    delivered: dict[str, float] = {}
    receiver = Receiver(delivered) if args.webhook else None
    with tempfile.TemporaryDirectory(prefix="extcdr-latency-") as tmp:
        root = Path(tmp)
        demo.generate(root, 0, SEED, recordings_limit=0)
        if receiver:
            receiver.hook(root / "module.db")
        with AmiEmulator(cdr_db=root / "cdr.db") as emulator:
            host, port = emulator.address
            config = root / "extcdr.toml"
            config.write_text(f'[ami]\nhost = "{host}"\nport = {port}\nsecret = "extcdr-demo"\n'
                              f'[sync]\npoll_interval = 600\n'
                              f'[webhooks]\nallowed_hosts = "127.0.0.1"\n')
            daemon = subprocess.Popen(
                [sys.executable, "-m", "cli", "daemon", "--config", str(config),
                 "--cdr-db", str(root / "cdr.db"), "--pbx-db", str(root / "mikopbx.db"),
                 "--db", str(root / "module.db")], cwd=ROOT, stderr=subprocess.DEVNULL)
            try:
                emulator.wait_for_listeners(1, timeout=15)
                latencies, hung_up = measure(emulator, root / "module.db", args)
                if receiver:
                    time.sleep(3)                   # the last calls' deliveries
            finally:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(10)
    report("hang-up -> readable in module.db", latencies, 1000)
    if receiver:
        receiver.server.shutdown()
        report("hang-up -> webhook delivered", [
            delivered[lid] - hung_up[lid] for lid in delivered if lid in hung_up], 2000)


def report(what: str, latencies: list[float], budget_ms: int) -> None:
    latencies.sort()
    p50 = statistics.median(latencies)
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    print(f"{len(latencies)} calls, {what}: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
          f"max {latencies[-1] * 1000:.0f} ms   (budget p95 <= {budget_ms} ms)")


class Receiver:
    """A CRM on 127.0.0.1: when each call's first event arrived (monotonic)."""

    def __init__(self, delivered: dict[str, float]):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                delivered.setdefault(body["call"]["linkedid"], time.monotonic())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hook(self, mirror: Path) -> None:
        """An enabled hook for missed and answered calls, created now."""
        db = open_module_db(mirror)
        try:
            db.execute_sql(
                "INSERT INTO webhook (name, url, secret, events, created_ms, created_by) "
                "VALUES ('bench', ?, 's', '[\"missed\", \"answered\"]', ?, 'bench')",
                (f"http://127.0.0.1:{self.server.server_port}/", int(time.time() * 1000)))
        finally:
            db.close()


def measure(emulator: AmiEmulator, db: Path, args) -> tuple[list[float], dict[str, float]]:
    pbx = demo.DemoPbx(SEED, "Europe/Moscow")
    rng = random.Random(SEED)
    # Every kind but the 35-55 minute long calls (they would only stretch the run).
    weights_by_kind = {k: w for k, w in demo.SCENARIO_WEIGHTS.items() if k != "long_call"}
    kinds, weights = list(weights_by_kind), list(weights_by_kind.values())
    hung_up: dict[str, float] = {}      # linkedid -> when its last leg moved
    expected: dict[str, int] = {}       # linkedid -> legs
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch_mirror() -> None:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        while not done.is_set():
            now = time.monotonic()
            try:
                for linkedid, legs in conn.execute("SELECT linkedid, leg_count FROM call"):
                    if linkedid not in seen and expected.get(linkedid) == legs:
                        seen[linkedid] = now
            except sqlite3.Error:
                pass
            time.sleep(0.005)
        conn.close()

    watcher = threading.Thread(target=watch_mirror, daemon=True)
    watcher.start()
    futures = []
    for _ in range(args.calls):
        legs = pbx.call_legs(rng.choices(kinds, weights)[0], time.time())
        linkedid = legs[0].row["linkedid"]
        expected[linkedid] = len(legs)
        future = emulator.play_call(legs, speed=args.speed)
        future.add_done_callback(lambda _, lid=linkedid: hung_up.setdefault(lid, time.monotonic()))
        futures.append(future)
        time.sleep(1 / args.per_second)
    for future in futures:
        future.result(timeout=600)
    deadline = time.monotonic() + 10
    while len(seen) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    watcher.join()
    missing = len(expected) - len(seen)
    if missing:
        print(f"{missing} calls never became readable", file=sys.stderr)
    return [seen[lid] - hung_up[lid] for lid in seen], hung_up


if __name__ == "__main__":
    main()
