"""Abuse benchmark: what hostile users cost everyone else.

A demo PBX (`--calls`) is mirrored; its pages are served by the real app on waitress (16
threads, as `extcdr web`), logged in through the stand-in form. Measured:

* **templates** — other users' page p95 while 16 users save report templates that would run
  unbounded (loops of loops, a billion-character string) at once, against the same page idle
  (budget: ≤ 1.5× idle), and how long each refusal took.

Run: ./bin/bench abuse [--calls 20000] [--runs 40]
(Open pages on nchan — 200 live pages plus 20 API clients — are measured once the live
updates leave the app's threads; see issue 15.)
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path

from waitress import create_server

from daemon import demo
from daemon.cli import main as extcdr
from daemon.settings import load
from tests.webclient import Browser
from web import create_app
from web.standin import load_users

PREFIX = "/admin-cabinet/module-extended-cdr/"
HOSTILE = ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
           "{{ ('x' * (10 ** 9)) | length }}")
USERS = [{"name": f"user{i}", "password": f"user{i}", "role": "admin", "extensions": []}
         for i in range(17)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        demo.generate(root / "pbx", args.calls, 7, recordings_limit=0)
        assert extcdr(["sync", "--cdr-db", str(root / "pbx" / "cdr.db"), "--pbx-db",
                       str(root / "pbx" / "mikopbx.db"), "--db", str(root / "module.db"),
                       "--once"]) == 0
        (root / "users.json").write_text(json.dumps(USERS))
        app = create_app(load(None, {"module.db": root / "module.db",
                                     "pbx.config_db": root / "pbx" / "mikopbx.db"}),
                         standin_accounts=load_users(root / "users.json"))
        server = create_server(app, host="127.0.0.1", port=0, threads=16)
        threading.Thread(target=server.run, daemon=True).start()
        base = f"http://127.0.0.1:{server.effective_port}"
        try:
            templates(base, args.runs)
        finally:
            server.close()


def templates(base: str, runs: int) -> None:
    reader = logged_in(base, "user16")
    idle = timed(lambda: page(reader), runs)
    attackers = [logged_in(base, f"user{i}") for i in range(16)]
    filters = [saved_filter(user, f"f{i}") for i, user in enumerate(attackers)]
    refusals: list[tuple[int, float]] = []
    start = threading.Barrier(17)

    def attack(user: Browser, filter_id: int, n: int) -> None:
        start.wait()
        began = time.perf_counter()
        status, _, _ = user.request(PREFIX + "reports", {
            "name": f"hostile {n}", "filter": filter_id, "period": "yesterday",
            "frequency": "daily", "at": "08:00", "weekday": "0", "monthday": "1",
            "format": "xlsx", "delivery": "attach", "link_hours": "72",
            "recipients": "x@example.com", "subject": "s", "body": HOSTILE[n % 2],
            "enabled": "on", "csrf_token": csrf(user)})
        refusals.append((status, time.perf_counter() - began))

    threads = [threading.Thread(target=attack, args=(user, f, n))
               for n, (user, f) in enumerate(zip(attackers, filters))]
    for thread in threads:
        thread.start()
    start.wait()
    loaded = timed(lambda: page(reader), runs)
    while any(thread.is_alive() for thread in threads):   # the whole attack, not a part of it
        loaded += timed(lambda: page(reader), 1)
    for thread in threads:
        thread.join()
    p95_idle, p95_loaded = p95(idle), p95(loaded)
    print(f"templates: page p95 idle {p95_idle:.1f} ms, while 16 hostile templates are saved "
          f"{p95_loaded:.1f} ms = {p95_loaded / p95_idle:.2f}x   (budget <= 1.5x)")
    statuses = sorted({status for status, _ in refusals})
    print(f"           16 saves answered {statuses}, each in {min(s for _, s in refusals):.2f}-"
          f"{max(s for _, s in refusals):.2f} s")


def logged_in(base: str, name: str) -> Browser:
    user = Browser(base)
    assert user.login(name, name)[0] == 302
    return user


def csrf(user: Browser) -> str:
    _, _, body = user.request(PREFIX + "reports/new")
    return re.search(r'name="csrf_token" value="([^"]+)"', body).group(1)


def saved_filter(user: Browser, name: str) -> int:
    _, _, body = user.request(PREFIX + "?period=today")
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', body).group(1)
    assert user.request(PREFIX + "filters", {"name": name, "query": "period=today",
                                             "csrf_token": token})[0] == 302
    _, _, form = user.request(PREFIX + "reports/new")
    return int(re.search(rf'<option value="(\d+)"[^>]*>{name}</option>', form).group(1))


def page(user: Browser) -> None:
    status, _, _ = user.request(PREFIX + "?period=this_month")
    assert status == 200


def timed(action, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        action()
        times.append((time.perf_counter() - began) * 1000)
    return times


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


if __name__ == "__main__":
    main()
