"""The archive's whole life through the stand-in PBX's Core, which runs the module's own PHP
under stubs of each platform's Core (2024.1 and 2026.1): the Setup installs (the data an
uninstall kept copied back, `extcdr prepare` for this PBX, registered disabled with its sidebar
item), the Conf's hooks enable (nginx location, manager.conf section), the real PHP worker runs
the Python processes and the disable stops them gracefully, an upgrade keeps everything and runs
the new code, and Core's `kill -9` reaches whatever still holds a file in `bin/`."""
import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from pbxmodule.glue import GLUE_FILE
from standin.coreshim import PROFILES, install_core
from tests.conftest import wait_for
from tests.test_lifecycle import (MODULE, build_variant, count, in_use, licensed,  # noqa: F401
                                  make_pbx, market, module_db, registration, sync_history,
                                  user_data)


@pytest.fixture(params=PROFILES)
def pbx(request, tmp_path, market, cli):  # noqa: F811
    tree = make_pbx(tmp_path / "pbx", market, cli)
    install_core(tree, request.param)
    assert json.loads((tree / "core.json").read_text())["profile"] == request.param
    return tree


def start_worker(pbx: Path) -> subprocess.Popen:
    """The module's PHP worker as Core starts it (`php -f <worker> start`), with Core's
    classes from the stand-in's stubs."""
    from pbxmodule.lifecycle import PbxTree
    tree = PbxTree.open(pbx)
    return subprocess.Popen(tree.worker_command(MODULE, "Lib/WorkerExtendedCDR.php"),
                            env=tree.core_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_install_enable_disable_through_cores_steps(pbx, archive, cli):
    code, out, err = cli("install", "--pbx", pbx, "--archive", archive)
    assert code == 0, err
    installed = pbx / "custom_modules" / MODULE
    row = registration(pbx)
    assert (row["disabled"], row["name"]) == ("1", "Extended call history")
    own = (installed / "db" / "extcdr.toml").read_text()
    assert f'config_db = "{pbx / "mikopbx.db"}"' in own            # Core's paths, via the Setup
    assert f'recordings_root = "{pbx / "monitor"}"' in own
    licensed(pbx, cli)
    assert cli("enable", "--pbx", pbx)[0] == 0
    glue = json.loads((installed / GLUE_FILE).read_text())
    location = pbx / "nginx" / "modules_locations" / f"{MODULE}.conf"
    assert location.read_text() == glue["nginx_location"]          # what the Conf returned
    assert (pbx / "asterisk" / "manager_modules" / f"{MODULE}.conf").read_text() == \
        glue["manager_conf"]
    registered = json.loads((installed / "registration.json").read_text())
    assert registered["workers"] == {"WorkerExtendedCDR": "Lib/WorkerExtendedCDR.php"}

    worker = start_worker(pbx)
    try:
        assert wait_for(lambda: len(children(worker.pid)) == 2, 30), "daemon and web started"
        processes = children(worker.pid)
        assert (installed / "db" / "worker.pid").read_text().strip() == str(worker.pid)
        code, out, err = cli("disable", "--pbx", pbx)
        assert code == 0, err
        # onBeforeModuleDisable stopped the worker, which stopped its processes gracefully
        assert worker.wait(20) == 0
        assert not any(alive(pid) for pid in processes)
        assert not (installed / "db" / "worker.pid").exists()
        assert not location.exists()
        # The processes' output went where Core keeps logs (core.logsDir/<id>/).
        assert (pbx / "logs" / MODULE / "processes.log").is_file()
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)


def test_an_upgrade_through_core_keeps_everything_and_runs_the_new_code(pbx, archive, cli,
                                                                       tmp_path):
    assert cli("install", "--pbx", pbx, "--archive", archive)[0] == 0
    calls, before, settings_before = in_use(pbx, cli)
    newer = build_variant(tmp_path, "0.2.0", code_edits={"Messages/en.php": [
        ("'Extended call history',\n", "'Extended call history 2',\n")]})

    code, out, err = cli("upgrade", "--pbx", pbx, "--archive", newer)
    assert code == 0, err
    assert out.strip() == f"upgraded {MODULE} 0.1.0 -> 0.2.0, data kept"
    assert count(pbx, "call") == calls and user_data(pbx) == before
    assert (module_db(pbx).parent / "extcdr.toml").read_text() == settings_before
    row = registration(pbx)
    assert (row["version"], row["disabled"]) == ("0.2.0", "0")
    assert row["name"] == "Extended call history 2"   # registered anew from the new Messages
    installed = pbx / "custom_modules" / MODULE
    assert json.loads((installed / "module.json").read_text())["version"] == "0.2.0"


def test_uninstall_kills_what_holds_bin_then_keeps_the_data_for_the_next_install(pbx, archive,
                                                                                 cli):
    assert cli("install", "--pbx", pbx, "--archive", archive)[0] == 0
    calls = sync_history(pbx, cli)
    installed = pbx / "custom_modules" / MODULE
    holder = subprocess.Popen(["python3", "-c", "import sys, time\nf = open(sys.argv[1])\n"
                               "print('open', flush=True)\ntime.sleep(60)",
                               installed / "bin" / "extcdr"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout.readline() == "open\n"
        code, out, err = cli("uninstall", "--pbx", pbx, "--keep-settings")
        assert code == 0, err
        assert holder.wait(10) == -signal.SIGKILL              # Core's kill -9
    finally:
        if holder.poll() is None:
            holder.kill()
    assert not installed.exists() and registration(pbx) is None
    kept = pbx / "custom_modules" / "Backup" / MODULE / "db" / "module.db"
    with sqlite3.connect(kept) as conn:
        assert conn.execute("SELECT count(*) FROM call").fetchone()[0] == calls
    code, out, err = cli("install", "--pbx", pbx, "--archive", archive)
    assert code == 0 and "kept at uninstall" in out, err
    assert count(pbx, "call") == calls


def test_the_sidebar_entry_leads_to_the_pages_through_the_controller(pbx, archive, cli):
    assert cli("install", "--pbx", pbx, "--archive", archive)[0] == 0
    core = json.loads((pbx / "core.json").read_text())
    done = subprocess.run([*core["php"], core["shim"], core["profile"], str(pbx), "index",
                           MODULE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["redirect"] == "/admin-cabinet/module-extended-c-d-r/calls/"


def test_a_pbx_without_a_core_installs_nothing(tmp_path, market, archive, cli):  # noqa: F811
    tree = make_pbx(tmp_path / "bare", market, cli)
    (tree / "core.json").unlink()
    code, _, err = cli("install", "--pbx", tree, "--archive", archive)
    assert code == 2 and "no Core" in err and err.count("\n") == 1
    assert not (tree / "custom_modules" / MODULE).exists()


def test_prepare_says_in_one_line_what_stops_it(pbx, archive, cli):
    """What Core's install runs through the Setup: a damaged settings file (kept from before)
    is one line, a failure of the install, and the module is not left half-installed."""
    assert cli("install", "--pbx", pbx, "--archive", archive)[0] == 0
    installed = pbx / "custom_modules" / MODULE
    code, out, err = cli("prepare", "--module-dir", installed, "--config-db", pbx / "mikopbx.db",
                         "--cdr-db", pbx / "cdr.db", "--recordings", pbx / "monitor")
    assert (code, out.strip()) == (0, f"{MODULE}: prepared"), err
    assert cli("uninstall", "--pbx", pbx, "--keep-settings")[0] == 0
    kept = pbx / "custom_modules" / "Backup" / MODULE / "db" / "extcdr.toml"
    kept.write_text("[web\n")
    code, _, err = cli("install", "--pbx", pbx, "--archive", archive)
    assert code == 2 and "extcdr.toml: not valid TOML" in err and err.count("\n") == 1
    assert registration(pbx) is None and not installed.exists()
    code, _, err = cli("prepare", "--module-dir", pbx, "--config-db", pbx / "mikopbx.db",
                       "--cdr-db", pbx / "cdr.db", "--recordings", pbx / "monitor")
    assert code == 2 and "not an installed module" in err and err.count("\n") == 1
