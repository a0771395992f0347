"""Abuse benchmark: what hostile users cost everyone else.

A demo PBX (`--calls`) is mirrored; its pages are served by the real app on waitress (as
many threads as `extcdr web`), logged in through the stand-in form. Measured:

* **templates** — other users' page p95 while 16 users save report templates that would run
  unbounded (loops of loops, a billion-character string) at once, against the same page idle
  (budget: ≤ 1.5× idle), and how long each refusal took.
* **pages** — 200 open pages with live updates (subscribed through real nginx and its nchan
  module, each asking `updates` when told, as the page's script does) plus 20 clients paging
  the JSON API (as fast as they are answered, or `--think` ms between pages), while a new
  call is written every 2 s (synced by a resident process of its own, as the daemon): the API's p95
  (budget ≤ 100 ms), errors, how long a new call takes from its commit to every open page
  (budget ≤ 1 s), and how many connections to the app the open pages hold (budget: none). The
  app (`extcdr web`'s threads) and the stand-in login each run in a process of their own, as
  on a PBX; the load is one asyncio loop. All of it shares this machine's cores.

Run: ./bin/bench abuse [--calls 20000] [--runs 40] [--pages 200] [--api-clients 20]
                      [--think 0] [--seconds 30] [--only templates|pages]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from contextlib import closing
from pathlib import Path

from waitress import create_server

from cli.serve import WEB_THREADS
from mirror.settings import load
from standin import demo
from standin.cli import main as extcdr
from standin.shell import StandinLogin
from tests.mirror import append_rows, pbx_rows
from tests.stack import admin_shell
from tests.webclient import Browser
from web import create_app

PREFIX = "/admin-cabinet/module-extended-c-d-r/calls/"
HOSTILE = ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
           "{{ ('x' * (10 ** 9)) | length }}")
USERS = ([{"name": f"user{i}", "password": f"user{i}", "role": "admin", "extensions": []}
          for i in range(17)]
         + [{"name": f"operator{i}", "password": f"operator{i}", "role": "operator",
             "extensions": ["201"]} for i in range(10)])
NEW_CALL_EVERY = 2.0
APP_THREADS = WEB_THREADS                    # as `extcdr web`
ASK_SPREAD = 0.3                             # web/static/extcdr.js ASK_SPREAD


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--api-clients", type=int, default=20)
    parser.add_argument("--think", type=int, default=0, help="ms an API client waits per page")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--only", choices=("templates", "pages"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        demo.generate(root / "pbx", args.calls, 7, recordings_limit=0)
        sync(root)
        (root / "users.json").write_text(json.dumps(USERS))
        if args.only in (None, "templates"):
            app = create_app(load(None, {"module.db": root / "module.db",
                                         "pbx.config_db": root / "pbx" / "mikopbx.db"}),
                             login=StandinLogin.from_file(root / "users.json"))
            server = create_server(app, host="127.0.0.1", port=0, threads=APP_THREADS)
            threading.Thread(target=server.run, daemon=True).start()
            try:
                templates(f"http://127.0.0.1:{server.effective_port}", args.runs)
            finally:
                server.close()
        if args.only in (None, "pages"):
            with admin_shell(root / "module.db", root / "pbx" / "monitor", root / "nginx",
                             root / "users.json", app_threads=APP_THREADS, apart=True) as stack:
                pages(root, stack, args)


def sync(root: Path) -> None:
    assert extcdr(["sync", "--cdr-db", str(root / "pbx" / "cdr.db"), "--pbx-db",
                   str(root / "pbx" / "mikopbx.db"), "--db", str(root / "module.db"),
                   "--once"]) == 0


class Writer:
    """The PBX and the daemon: a resident process that, when asked, writes a finished call to
    the PBX's history and syncs it into the mirror (no interpreter started per call)."""

    def __init__(self, root: Path):
        context = multiprocessing.get_context("fork")
        self.pipe, theirs = context.Pipe()
        self.process = context.Process(target=self._serve, args=(root, theirs), daemon=True)
        self.process.start()

    @staticmethod
    def _serve(root: Path, pipe) -> None:
        cols, rows = pbx_rows(root / "pbx" / "cdr.db")
        template = dict(zip(cols, rows[-1]))
        while (n := pipe.recv()) is not None:
            linkedid = f"mikopbx-{2_000_000_000 + n}.{n}"
            append_rows(root / "pbx" / "cdr.db", cols, [new_call(cols, template, linkedid, n)])
            sync(root)
            pipe.send(linkedid)

    def write(self, n: int) -> str:
        self.pipe.send(n)
        return self.pipe.recv()

    def close(self) -> None:
        self.pipe.send(None)
        self.process.join(10)


class Commits(threading.Thread):
    """When each revision of the mirror was committed, seen from outside (every 5 ms)."""

    def __init__(self, db: Path):
        super().__init__(daemon=True)
        self.db, self.at, self.stopped = db, {}, threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        while not self.stopped.wait(0.005):
            revision = conn.execute(
                "SELECT value FROM sync_state WHERE key = 'revision'").fetchone()[0]
            self.at.setdefault(int(revision), time.monotonic())
        conn.close()

    def of_call(self, linkedid: str) -> float:
        with closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as conn:
            revision = conn.execute("SELECT revision FROM call WHERE linkedid = ?",
                                    (linkedid,)).fetchone()[0]
        return self.at[revision]


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


async def http_get(address: tuple[str, int], path: str, cookie: str) -> tuple[int, bytes]:
    """One GET through nginx (a connection each, as a browser's fetch may)."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: {address[0]}:{address[1]}\r\n"
                 f"Cookie: {cookie}\r\n\r\n".encode())
    reply = await reader.read()
    writer.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


class OpenPage:
    """A history page left open with live updates on: subscribed to `changes` through nginx,
    it asks `updates` for its filter whenever told, as web/static/extcdr.js does (one ask at a
    time, asking again if told meanwhile)."""

    QUERY = "period=this_month"

    def __init__(self, user: Browser, address: tuple[str, int], seen: dict[str, dict]):
        self.address, self.seen = address, seen
        self.cookie = "; ".join(f"{c.name}={c.value}" for c in user.jar)
        status, _, body = user.request(PREFIX + "?" + self.QUERY)
        assert status == 200, body[:200]
        self.revision = int(re.search(r'data-revision="(\d+)"', body).group(1))
        self.now = re.search(r'id="now" data-key="([^"]+)"', body).group(1)
        self.errors, self.reloads, self.asking, self.again = 0, 0, False, False
        self.tasks: set[asyncio.Task] = set()

    async def listen(self, subscribed: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection(*self.address)
        writer.write(f"GET {PREFIX}changes HTTP/1.1\r\nHost: {self.address[0]}\r\n"
                     f"Accept: text/event-stream\r\nCookie: {self.cookie}\r\n\r\n".encode())
        assert b" 200 " in await reader.readline()
        subscribed.set()
        try:
            while line := await reader.readline():
                if line.startswith(b"data: ") and int(line[6:]) != self.revision:
                    task = asyncio.ensure_future(self.ask_soon())
                    self.tasks.add(task)                 # the loop keeps only weak references
                    task.add_done_callback(self.tasks.discard)
        finally:
            writer.close()

    async def ask_soon(self) -> None:
        await asyncio.sleep(random.random() * ASK_SPREAD)    # as the page spreads its asks
        await self.ask()

    async def ask(self) -> None:
        if self.asking:
            self.again = True
            return
        self.asking = True
        try:
            while True:
                status, body = await http_get(
                    self.address,
                    f"{PREFIX}updates?{self.QUERY}&since={self.revision}&now={self.now}",
                    self.cookie)
                if status != 200:
                    self.errors += 1
                else:
                    self.apply(json.loads(body))
                if not self.again:
                    break
                self.again = False
        except Exception as exc:                      # counted, and the page asks again later
            self.errors += 1
            print(f"a page's ask failed: {exc!r}", file=sys.stderr)
        finally:
            self.asking = False

    def apply(self, update: dict) -> None:
        if update.get("reload"):
            self.reloads += 1
            return
        self.revision = update["revision"]
        if "now" in update:
            self.now = re.search(r'data-key="([^"]+)"', update["now"]).group(1)
        arrived = time.monotonic()
        for call in update["calls"]:
            self.seen.setdefault(call["linkedid"], {}).setdefault(id(self), arrived)


class ApiClient:
    """An integration paging the JSON API through nginx as fast as it is answered."""

    def __init__(self, user: Browser, address: tuple[str, int], answers: list, think_ms: int):
        self.address, self.answers, self.think = address, answers, think_ms / 1000
        self.cookie = "; ".join(f"{c.name}={c.value}" for c in user.jar)

    async def page_through(self, stop: asyncio.Event) -> None:
        cursor = None
        while not stop.is_set():
            query = "period=this_month&limit=50" + (f"&cursor={cursor}" if cursor else "")
            began = time.perf_counter()
            status, body = await http_get(self.address, f"{PREFIX}api/v1/calls?{query}",
                                          self.cookie)
            self.answers.append((status, (time.perf_counter() - began) * 1000))
            cursor = json.loads(body).get("next_cursor") if status == 200 else None
            await asyncio.sleep(self.think)


def pages(root: Path, stack: dict, args) -> None:
    base = stack["base"]
    address = (urllib.parse.urlsplit(base).hostname, urllib.parse.urlsplit(base).port)
    seen: dict[str, dict] = {}
    users = [logged_in(base, entry["name"]) for entry in USERS[-20:]]   # 10 admins, 10 operators
    opened = [OpenPage(users[n % len(users)], address, seen) for n in range(args.pages)]
    api: list[tuple[int, float]] = []
    clients = [ApiClient(logged_in(base, USERS[n % 17]["name"]), address, api, args.think)
               for n in range(args.api_clients)]
    written: dict[str, float] = {}
    writer = Writer(root)
    commits = Commits(root / "module.db")
    commits.start()

    async def load() -> int:
        subscribed = [asyncio.Event() for _ in opened]
        listening = [asyncio.ensure_future(page.listen(event))
                     for page, event in zip(opened, subscribed)]
        for event in subscribed:
            await event.wait()
        held = app_connections(stack["app"])
        stop = asyncio.Event()
        paging = [asyncio.ensure_future(client.page_through(stop)) for client in clients]
        deadline = time.monotonic() + args.seconds
        n = 0
        while time.monotonic() < deadline:
            n += 1
            linkedid = await asyncio.to_thread(writer.write, n)
            written[linkedid] = commits.of_call(linkedid)
            await asyncio.sleep(NEW_CALL_EVERY)
        settle = time.monotonic() + 5         # the last call's asks, or what never comes
        while time.monotonic() < settle and any(
                len(seen.get(linkedid, ())) < len(opened) for linkedid in written):
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*paging)
        for task in listening:
            task.cancel()
        return held

    held = asyncio.run(load())
    commits.stopped.set()
    writer.close()
    api_ms = [ms for _, ms in api]
    errors = sum(1 for status, _ in api if status != 200) + sum(p.errors for p in opened)
    print(f"pages: {len(opened)} open pages (20 users), {args.api_clients} API clients "
          f"({args.think} ms between pages), "
          f"{len(written)} new calls in {args.seconds} s; app threads {APP_THREADS}, its own "
          f"process")
    print(f"       API p95 {p95(api_ms):.1f} ms over {len(api_ms)} requests "
          f"(budget <= 100 ms) = {p95(api_ms) / 100:.2f}x; errors {errors}")
    print(f"       connections to the app held by the open pages: {held} (budget 0)")
    if not opened:
        return
    reach = [max(seen.get(linkedid, {}).values(), default=float("inf")) - at
             for linkedid, at in written.items()]
    missing = sum(len(opened) - len(seen.get(linkedid, {})) for linkedid in written)
    print("       each new call -> its last page: "
          + ", ".join(f"{r * 1000:.0f}" for r in reach) + " ms")
    print(f"       new call -> every open page: p50 {statistics.median(reach) * 1000:.0f} ms, "
          f"max {max(reach) * 1000:.0f} ms (budget <= 1000 ms) = {max(reach):.2f}x; "
          f"page-calls never arrived {missing}; reloads {sum(p.reloads for p in opened)}")


def new_call(cols: list[str], template: dict, linkedid: str, n: int) -> tuple:
    """A finished incoming call to 201 that began now (the PBX's row shape)."""
    began = time.time() - 60
    at = lambda seconds: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(began + seconds))
    row = {**template, "start": at(0) + ".000", "answer": at(5) + ".000",
           "endtime": at(59) + ".000", "linkedid": linkedid, "UNIQUEID": f"{linkedid}1",
           "src_num": f"7495111{n:04d}", "dst_num": "201", "dst_chan": f"PJSIP/201-{n:08x}",
           "is_app": "", "appname": "", "recordingfile": ""}
    return tuple(row[c] for c in cols)


def app_connections(app_url: str) -> int:
    """Established TCP connections to the app's port (open pages would each hold one)."""
    port = int(app_url.rsplit(":", 1)[1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":
            count += 1
    return count


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
