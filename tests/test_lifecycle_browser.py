"""The administrator's whole path in real Chromium through real nginx and the stand-in PBX's
admin panel (`extcdr admin-shell --pbx`): install the module from the stand-in marketplace,
enabling refused without a licence, activate a coupon in Licence management, enable, and the
history page opens with the PBX's calls served by the module's own workers."""
from __future__ import annotations

import json
import re
import shutil
import threading
from datetime import date, timedelta
from pathlib import Path

import pytest

from standin.marketplace_server import serve as serve_marketplace
from tests.browser import ARTIFACTS, chromium, chromium_binary
from tests.conftest import wait_for
from tests.stack import PREFIX, nginx_binary, pbx_admin_shell
from tests.test_lifecycle import COUPON, FEATURE, MODULE, PRODUCT, registration
from tests.webclient import Browser


@pytest.fixture
def pbx_shell(tmp_path, archive, cli):
    nginx_binary()
    chromium_binary()
    market_dir = tmp_path / "market"
    (market_dir / "archives").mkdir(parents=True)
    shutil.copy(archive, market_dir / "archives")
    (market_dir / "keys.json").write_text(json.dumps(
        {COUPON: {"product_id": PRODUCT, "features": [FEATURE], "days": 365}}))
    market, _ = serve_marketplace(market_dir)
    threading.Thread(target=market.serve_forever, daemon=True).start()
    pbx = tmp_path / "pbx"
    code, _, err = cli("demo-data", "--out", pbx, "--calls", 400, "--seed", 3,
                       "--end-day", (date.today() - timedelta(days=1)).isoformat())
    assert code == 0, err
    shutil.copy(market_dir / "endpoint.json", pbx / "marketplace.json")
    with pbx_admin_shell(pbx, tmp_path) as shell:
        try:
            assert wait_for(lambda: _serving(shell["base"]), 20), shell["log"].read_text()
            yield {"base": shell["base"], "pbx": pbx, "market": market.market}
        finally:
            market.shutdown()
            market.server_close()
    assert not list((pbx / "run").glob("*.pid"))       # the workers stopped with the shell


def _serving(base: str) -> bool:
    try:
        return Browser(base).request("/login")[0] == 200
    except OSError:
        return False


def test_install_activate_enable_then_the_history_page_opens(pbx_shell):
    base, pbx = pbx_shell["base"], pbx_shell["pbx"]
    with chromium() as browser:
        page = browser.new_page(locale="en-US", viewport={"width": 1400, "height": 900})
        page.set_default_timeout(20_000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{base}/")
        page.fill("#username", "admin")
        page.fill("#password", "admin")
        with page.expect_navigation():
            page.click("button[type=submit]")
        page.wait_for_url(re.compile("pbx-extension-modules"))
        assert page.locator("p.no-modules").is_visible()

        offer = page.locator(f"table.marketplace-offers tr[data-module={MODULE}]")
        assert "Extended call history" in offer.inner_text()
        with page.expect_navigation():
            offer.locator("button", has_text="Install").click()
        assert f"installed {MODULE} 0.1.0" in page.locator(".message.done").inner_text()
        row = page.locator(f"table.installed-modules tr[data-module={MODULE}]")
        assert row.locator("td.version").inner_text() == "0.1.0"
        assert row.locator("button.module-switch").inner_text().strip() == "Disabled"

        with page.expect_navigation():
            row.locator("button.module-switch").click()          # no licence yet
        alert = page.locator("[role=alert]").inner_text()
        assert f"{MODULE} stays disabled by licence: the module has no licence" in alert
        assert "Disabled by licence" in row.locator(".disabled-reason").inner_text()
        assert page.locator("a.module-entry").count() == 0

        with page.expect_navigation():
            page.click("text=Licence management")
        page.fill("#key", "MIKO-123")
        with page.expect_navigation():
            page.click("form.activate button[type=submit]")
        assert "is not a licence key" in page.locator("[role=alert]").inner_text()
        assert page.input_value("#key") == "MIKO-123"          # what was typed is kept
        assert not [r for r in pbx_shell["market"].requests if r.startswith("POST")]
        page.fill("#key", COUPON)
        with page.expect_navigation():
            page.click("form.activate button[type=submit]")
        assert "activated for this PBX until" in page.locator(".message.done").inner_text()
        assert "valid until" in page.locator(".licence-state").inner_text()

        with page.expect_navigation():
            page.click("text=Module marketplace")
        with page.expect_navigation():
            row.locator("button.module-switch").click()
        assert f"{MODULE} is enabled" in page.locator(".message.done").inner_text()
        assert row.locator("button.module-switch").inner_text().strip() == "Enabled"
        assert registration(pbx)["disabled"] == "0"
        entry = page.locator("a.module-entry", has_text="Extended call history")
        with page.expect_navigation():
            entry.click()
        assert page.url == f"{base}{PREFIX}"
        assert page.title().startswith("Extended call history")
        # The module's own daemon mirrors the PBX: its calls appear on the page.
        page.goto(f"{base}{PREFIX}?from={date.today() - timedelta(days=30)}")
        page.wait_for_selector("table.calls tbody tr")
        assert page.locator("table.calls tbody tr").count() > 0
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "lifecycle-history.png"))
        with page.expect_navigation():                   # every page of the installed copy
            page.click("text=Mailed reports")
        assert page.url == f"{base}{PREFIX}reports" and page.locator("h1").is_visible()

        # Disabled again: the pages are gone, the data is not.
        page.goto(f"{base}/admin-cabinet/pbx-extension-modules/index/")
        with page.expect_navigation():
            row.locator("button.module-switch").click()
        assert page.goto(f"{base}{PREFIX}").status == 404
        assert (pbx / "custom_modules" / MODULE / "db" / "module.db").stat().st_size > 0
    assert errors == []


def test_only_administrators_reach_the_admin_panel(pbx_shell):
    operator = Browser(pbx_shell["base"])
    operator.login("operator201", "operator201")
    for path in ("/admin-cabinet/pbx-extension-modules/index/",
                 "/admin-cabinet/licensing/modify/"):
        status, _, page = operator.request(path)
        assert status == 403                                  # in the operator's Russian:
        assert "Модулями и лицензиями управляют только администраторы АТС." in page
    status, _, _ = operator.request("/admin-cabinet/pbx-extension-modules/install",
                                    {"module": MODULE})
    assert status == 403 and registration(pbx_shell["pbx"]) is None
    status, _, _ = Browser(pbx_shell["base"]).request("/admin-cabinet/pbx-extension-modules/index/")
    assert status == 302                                  # not logged in: to the login form


def test_upgrade_and_uninstall_from_the_admin_panel_keep_the_data(pbx_shell, tmp_path, cli):
    """A newer release in the marketplace: Upgrade restarts the workers on the new code with
    the data kept; Uninstall with "keep settings" and Install bring it all back."""
    from tests.test_lifecycle import build_variant, count, save_filter, user_data
    base, pbx, market = pbx_shell["base"], pbx_shell["pbx"], pbx_shell["market"]
    admin = Browser(base)
    admin.login("admin", "admin")

    def act(action: str, **fields) -> str:
        _, _, page = admin.request("/admin-cabinet/pbx-extension-modules/index/")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        status, headers, body = admin.request(f"/admin-cabinet/pbx-extension-modules/{action}",
                                              {"csrf_token": token, "module": MODULE, **fields})
        assert status == 303, body
        return admin.request(headers["Location"])[2]

    act("install")
    _, _, page = admin.request("/admin-cabinet/licensing/modify/")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert admin.request("/admin-cabinet/licensing/activate",
                         {"csrf_token": token, "key": COUPON})[0] == 303
    act("enable")
    assert wait_for(lambda: count(pbx, "call") > 0, 20)      # the module's daemon mirrors
    save_filter(pbx, "Kept across upgrades")
    before = (count(pbx, "call"), user_data(pbx))
    worker_pid = (pbx / "run" / f"{MODULE}.WorkerExtendedCDR.pid").read_text()

    newer = build_variant(tmp_path, "0.2.0", lambda code: code.replace(
        "LATEST = len(MIGRATIONS)", "MIGRATIONS = MIGRATIONS + ((\"CREATE TABLE call_note "
        "(call_id INTEGER, note TEXT)\",),)\nLATEST = len(MIGRATIONS)"))
    shutil.copy(newer, market.folder / "archives")
    _, _, page = admin.request("/admin-cabinet/pbx-extension-modules/index/")
    assert "Upgrade" in page
    page = act("upgrade")
    assert f"upgraded {MODULE} 0.1.0 -&gt; 0.2.0, data kept" in page
    assert registration(pbx)["version"] == "0.2.0" and registration(pbx)["disabled"] == "0"
    assert wait_for(lambda: (pbx / "run" / f"{MODULE}.WorkerExtendedCDR.pid").exists(), 10)
    assert (pbx / "run" / f"{MODULE}.WorkerExtendedCDR.pid").read_text() != worker_pid
    assert (count(pbx, "call"), user_data(pbx)) == before
    assert admin.request(PREFIX)[0] == 200

    page = act("uninstall", keep_settings="on")
    assert f"uninstalled {MODULE}; its data is kept" in page
    assert admin.request(PREFIX)[0] == 404
    act("install")                                   # the marketplace's newest: 0.2.0
    assert registration(pbx)["version"] == "0.2.0"
    act("enable")
    assert (count(pbx, "call"), user_data(pbx)) == before
    assert admin.request(PREFIX)[0] == 200


def test_a_worker_that_dies_is_restarted_and_one_that_keeps_dying_disables_its_module(pbx_shell,
                                                                                      archive,
                                                                                      cli):
    """The module's PHP worker, as Core starts it, runs the daemon and the pages and starts a
    process that dies again; the PBX restarts a worker that exits, and disables a module whose
    worker keeps dying (a broken file), with the reason."""
    import os
    import signal
    pbx = pbx_shell["pbx"]
    for step in (("install", "--pbx", pbx, "--archive", archive),
                 ("licence", "activate", COUPON, "--pbx", pbx), ("enable", "--pbx", pbx)):
        code, _, err = cli(*step)
        assert code == 0, err
    pid_file = pbx / "run" / f"{MODULE}.WorkerExtendedCDR.pid"
    assert wait_for(pid_file.exists, 10)                # the shell noticed within its second
    worker = int(pid_file.read_text())
    assert wait_for(lambda: _child(worker, "daemon"), 20)
    first = _child(worker, "daemon")
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: _child(worker, "daemon") not in (None, first), 15)
    # A worker that cannot start (its file broken) exits again and again: after five exits
    # the module is disabled with the reason, its pages go, its data stays.
    (pbx / "custom_modules" / MODULE / "Lib" / "WorkerExtendedCDR.php").write_text("<?php nope(")
    os.kill(worker, signal.SIGTERM)                      # it stops its processes and exits
    assert wait_for(lambda: registration(pbx)["disabled"] == "1", 40)
    row = registration(pbx)
    assert row["disableReason"] == "DisabledByCrashLoop"
    assert "its WorkerExtendedCDR worker exited 5 times" in row["disableReasonText"]
    assert not (pbx / "nginx" / "modules_locations" / f"{MODULE}.conf").exists()
    assert wait_for(lambda: not list((pbx / "run").glob("*.pid")), 15)
    admin = Browser(pbx_shell["base"])
    admin.login("admin", "admin")
    _, _, page = admin.request("/admin-cabinet/pbx-extension-modules/index/")
    assert "Stopped after repeated crashes" in page
    assert wait_for(lambda: admin.request(PREFIX)[0] == 404, 10)   # nginx reloaded without it


def _child(parent: int, command: str) -> int | None:
    """The pid of `parent`'s child running `extcdr <command>`, if any."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z" and command.encode() in argv:
            return int(stat.parent.name)
    return None
