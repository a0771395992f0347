"""`./bin/demo` as a user runs it: the marketplace-to-history story on a fresh demo PBX, then
the admin panel and the module's pages served through nginx by the module's own workers; and
`./bin/demo --central`: two demo PBXs writing one PostgreSQL history."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from standin.crm_receiver import DeliveryLog
from standin.supervisor import child_processes
from tests import pgserver
from tests.conftest import ROOT
from tests.stack import PREFIX, free_port, nginx_binary
from tests.webclient import Browser

DEMO_OFFSET = "+03:00"          # the demo PBX is in Moscow
STORY = ("installed ModuleExtendedCDR 0.1.0; it is disabled until enabled",
         "ModuleExtendedCDR: licensed to this PBX until",
         "ModuleExtendedCDR is enabled")


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """One `./bin/demo` for the story and then for stopping it (the second test stops it;
    whatever is left then is killed here)."""
    nginx_binary()
    folder = tmp_path_factory.mktemp("demo-run")
    demo, port, output = start_demo(folder, calls=1500)
    yield {"demo": demo, "port": port, "output": output, "dir": folder}
    for pid, _ in session_processes(demo.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:               # gone with its parent meanwhile
            pass
    demo.wait(10)


def test_the_demo_walks_from_the_marketplace_to_the_history_page(running):
    port, output, folder = running["port"], running["output"], running["dir"]
    text = "".join(output)
    assert all(step in text for step in STORY), text
    admin = Browser(f"http://127.0.0.1:{port}")
    admin.login("admin", "admin")
    status, _, page = admin.request(PREFIX)
    assert status == 200 and "Extended call history" in page
    since = (date.today() - timedelta(days=30)).isoformat()
    assert len(admin.calls(PREFIX, **{"from": since})) > 0
    status, _, page = admin.request(PREFIX + "reports")
    assert status == 200 and "Missed calls every morning" in page
    status, _, page = admin.request("/admin-cabinet/pbx-extension-modules/index/")
    assert status == 200 and "MIKOUPD-*****-*****-*****-R0001" in page
    # Live calls: seen in progress first, then finished, in the PBX's time throughout.
    seen, deadline = {}, time.monotonic() + 180
    while time.monotonic() < deadline:
        status, _, body = admin.request(PREFIX + "api/v1/calls/in-progress")
        assert status == 200
        seen.update((c["linkedid"], c) for c in json.loads(body)["calls"])
        finished = [c for c in admin.calls(PREFIX, period="today") if c["linkedid"] in seen]
        if finished:
            break
        time.sleep(1)
    assert finished, f"no call seen in progress finished ({len(seen)} seen)"
    call = finished[0]
    assert call["start"][19:] == seen[call["linkedid"]]["start"][19:] == DEMO_OFFSET
    # The live calls reach the demo's CRM as webhooks, their signatures verified.
    crm = re.search(r"as webhooks: (http://127\.0\.0\.1:\d+/)", text).group(1)
    received, deadline = [], time.monotonic() + 90
    while not received and time.monotonic() < deadline:
        received = [entry for entry in DeliveryLog(folder / "demo" / "crm").newest()
                    if entry["verified"]]
        time.sleep(1)
    assert received, "the demo's CRM got no verified delivery"
    status, _, page = Browser(crm.rstrip("/")).request("/")
    assert status == 200 and received[0]["idempotency_key"] in page


def session_processes(session: int) -> list[tuple[int, str]]:
    """(pid, name) of the live processes of a session: everything a program started in its
    own session left running, wherever it moved in the process tree (/proc, no psutil)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _, _, sid = text.rsplit(")", 1)[1].split()[:4]
        if int(sid) == session and state != "Z":
            found.append((int(stat.parent.name), text[text.find("(") + 1:text.rfind(")")]))
    return found


def test_sigterm_to_the_demo_stops_everything_it_started(running):
    """`kill <pid>` of the script alone (after the story above, on the same demo): every
    program it started stops, the module's workers too, and its port is free again."""
    demo, port = running["demo"], running["port"]
    status, _, _ = Browser(f"http://127.0.0.1:{port}").request(PREFIX)
    assert status in (200, 302)
    started = session_processes(demo.pid)
    assert len(started) >= 8, started    # bash, 4 programs, nginx, the module's 2 workers
    os.kill(demo.pid, signal.SIGTERM)    # as `kill <pid>` does: the script alone
    demo.wait(60)
    deadline = time.monotonic() + 15
    while session_processes(demo.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session_processes(demo.pid) == [], f"left running of {started}"
    assert not list((running["dir"] / "demo" / "pbx" / "run").glob("*.pid"))
    with socket.socket() as listener:             # nothing holds the admin panel's port
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as nginx does
        listener.bind(("127.0.0.1", port))
        listener.listen()


def free_ports(count: int) -> int:
    """The first of `count` free loopback ports in a row."""
    while True:
        first = free_port()
        try:
            for port in range(first + 1, first + count):
                with socket.socket() as taken:
                    taken.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue


def start_demo(tmp_path: Path, calls: int, *args: str, ports: int = 1,
               archive: Path | None = None) -> tuple[subprocess.Popen, int, list[str]]:
    """`./bin/demo ARGS` in a session of its own (what it started can be found), on free ports
    (its admin panels'), publishing `archive` if given, once it says it is ready: (process,
    port, its output so far and to come)."""
    port = free_ports(ports)
    env = {**os.environ, "EXTCDR_DEMO_DIR": str(tmp_path / "demo"),
           "EXTCDR_DEMO_PORT": str(port), "EXTCDR_DEMO_CALLS": str(calls),
           "EXTCDR_DEMO_SPEED": "4",      # live calls of a minute last 15 s
           **({"EXTCDR_DEMO_ARCHIVE": str(archive)} if archive else {})}
    demo = subprocess.Popen(["bash", str(ROOT / "bin" / "demo"), *args], cwd=ROOT, env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    output: list[str] = []
    ready = threading.Event()

    def read():
        for line in demo.stdout:
            output.append(line)
            if "Press Ctrl-C" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(240):
        os.killpg(demo.pid, signal.SIGKILL)
        raise AssertionError("".join(output)[-3000:])
    return demo, port, output


@pytest.fixture(scope="module")
def central(archive):
    """One `./bin/demo --central` for what a visitor sees and then for stopping it: PBXs msk
    (600 calls, its admin panel on the port) and spb (300, on the next port), the module from
    the session's archive (the demo's own packaging is the test above's). Its folder is one
    PostgreSQL's `postgres` user reaches when the tests run as root (a pytest folder is closed
    to others)."""
    nginx_binary()
    pgserver.driver()
    pgserver.server_binaries()
    folder = Path(tempfile.mkdtemp(prefix="extcdr-central-"))
    folder.chmod(0o755)
    demo, port, output = start_demo(folder, 600, "--central", ports=2, archive=archive)
    postgres = folder / "demo" / "postgres"
    postmaster = int((postgres / "data" / "postmaster.pid").read_text().split()[0])
    yield {"demo": demo, "port": port, "output": output, "postgres": postgres,
           "url": (postgres / "url").read_text().strip(), "postmaster": postmaster}
    left = [pid for pid, _ in session_processes(demo.pid)]
    try:      # the postmaster, unless gone (and its number another program's by now)
        if str(postgres).encode() in Path(f"/proc/{postmaster}/cmdline").read_bytes():
            left.append(postmaster)
    except OSError:
        pass
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    demo.wait(10)
    shutil.rmtree(folder, ignore_errors=True)


def test_the_central_demo_shows_both_pbxs_calls_and_each_user_its_own(central):
    """msk's admin panel shows the calls of both PBXs, with the PBX select and column; the PBX
    filter narrows them to one PBX's; spb/spb sees only spb's; spb's panel shows the same
    history; both PBXs' live calls come in."""
    text, port = "".join(central["output"]), central["port"]
    assert text.count("ModuleExtendedCDR is enabled") == 2, text
    assert "pbx.id = msk" in text and "pbx.id = spb" in text
    assert "spb/spb is a supervisor who sees" in text
    since = (date.today() - timedelta(days=30)).isoformat()
    admin = Browser(f"http://127.0.0.1:{port}")
    admin.login("admin", "admin")
    calls = admin.calls(PREFIX, **{"from": since})
    by_pbx = {pbx: {c["linkedid"] for c in calls if c["pbx"] == pbx} for pbx in ("msk", "spb")}
    assert len(by_pbx["msk"]) >= 600 and len(by_pbx["spb"]) >= 300
    assert {c["pbx"] for c in calls} == {"msk", "spb"}
    status, _, page = admin.request(f"{PREFIX}?from={since}")
    assert status == 200 and '<select name="pbx"' in page
    assert '<td class="collapsing pbx">msk</td>' in page
    assert '<td class="collapsing pbx">spb</td>' in page
    status, _, page = admin.request(f"{PREFIX}?from={since}&pbx=spb")
    assert status == 200 and '<td class="collapsing pbx">spb</td>' in page
    assert 'class="collapsing pbx">msk<' not in page
    only_spb = admin.calls(PREFIX, **{"from": since, "pbx": "spb"})
    assert {c["linkedid"] for c in only_spb} >= by_pbx["spb"]
    assert {c["pbx"] for c in only_spb} == {"spb"}
    limited = Browser(f"http://127.0.0.1:{port}")
    limited.login("spb", "spb")
    seen = limited.calls(PREFIX, **{"from": since})
    assert {c["pbx"] for c in seen} == {"spb"} and {c["linkedid"] for c in seen} >= by_pbx["spb"]
    status, _, page = limited.request(f"{PREFIX}?from={since}")
    assert status == 200 and 'class="collapsing pbx">msk<' not in page
    other = Browser(f"http://127.0.0.1:{port + 1}")      # spb's admin panel: the same history
    other.login("admin", "admin")
    assert {c["pbx"] for c in other.calls(PREFIX, **{"from": since})} == {"msk", "spb"}
    live, deadline = set(), time.monotonic() + 90
    while live != {"msk", "spb"} and time.monotonic() < deadline:
        live = {c["pbx"] for c in admin.calls(PREFIX, period="today")}
        time.sleep(1)
    assert live == {"msk", "spb"}, "the live calls of both PBXs reach the central history"


def test_sigterm_to_the_central_demo_stops_everything_with_postgresql(central):
    """`kill <pid>` of the script: every program it started stops, the PostgreSQL server with
    all its processes too (its cluster kept for the next run), and the ports are free."""
    demo, postmaster = central["demo"], central["postmaster"]
    servers = [postmaster, *child_processes(postmaster)]   # each in a session of its own
    assert len(servers) >= 3, servers           # the postmaster, its workers, the daemons' links
    started = session_processes(demo.pid)
    assert postmaster in {pid for pid, _ in started}
    os.kill(demo.pid, signal.SIGTERM)
    demo.wait(60)
    deadline = time.monotonic() + 15
    while (session_processes(demo.pid) or _alive(servers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session_processes(demo.pid) == [], f"left running of {started}"
    assert not _alive(servers), "PostgreSQL's processes are left running"
    assert not (central["postgres"] / "data" / "postmaster.pid").exists()
    assert (central["postgres"] / "data" / "PG_VERSION").exists()     # kept for the next run
    port = int(central["url"].rsplit(":", 1)[1].split("/")[0])
    for taken in (port, central["port"], central["port"] + 1):
        with socket.socket() as listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", taken))


def _alive(pids: list[int]) -> bool:
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                return True
        except OSError:
            continue
    return False
