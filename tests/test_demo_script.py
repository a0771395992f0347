"""`./bin/demo` as a user runs it: the marketplace-to-history story on a fresh demo PBX, then
the admin panel and the module's pages served through nginx by the module's own workers."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from datetime import date, timedelta

from tests.conftest import ROOT
from tests.stack import PREFIX, free_port, nginx_binary
from tests.webclient import Browser

STORY = ("installed ModuleExtendedCDR 0.1.0; it is disabled until enabled",
         "ModuleExtendedCDR: licensed to this PBX until",
         "ModuleExtendedCDR is enabled")


def test_the_demo_walks_from_the_marketplace_to_the_history_page(tmp_path):
    nginx_binary()
    port = free_port()
    env = {**os.environ, "EXTCDR_DEMO_DIR": str(tmp_path / "demo"),
           "EXTCDR_DEMO_PORT": str(port), "EXTCDR_DEMO_CALLS": "1500"}
    demo = subprocess.Popen(["bash", str(ROOT / "bin" / "demo")], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    output: list[str] = []
    ready = threading.Event()

    def read():
        for line in demo.stdout:
            output.append(line)
            if "Press Ctrl-C" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(240), "".join(output)[-3000:]
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
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(60)
    pids = tmp_path / "demo" / "pbx" / "run"
    deadline = time.monotonic() + 15
    while list(pids.glob("*.pid")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not list(pids.glob("*.pid"))             # the module's workers stopped with it
