"""`bin/_venv.sh`: one install stamp; an install of a bigger extra (test ⊇ demo ⊇ base)
satisfies every smaller one, so `./bin/extcdr` after `./bin/demo` installs nothing."""
import shutil
import subprocess

from tests.conftest import ROOT


def run_scripts(tmp_path, *extras: str) -> list[str]:
    """`ensure_venv EXTRA` once per extra ("" is the base), in a copy of bin/_venv.sh whose
    .venv's python only logs what pip was asked to install; returns those installs."""
    (tmp_path / "bin").mkdir(exist_ok=True)
    shutil.copy(ROOT / "bin" / "_venv.sh", tmp_path / "bin" / "_venv.sh")
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path}/pip.log"\n')
    python.chmod(0o755)
    script = "; ".join(f"ensure_venv {extra}" for extra in extras)
    done = subprocess.run(["bash", "-c", f"source bin/_venv.sh; {script}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    log = tmp_path / "pip.log"
    installs = [line.split()[-1] for line in log.read_text().splitlines()] if log.exists() else []
    assert done.stderr.count("installing") == len(installs), done.stderr
    return installs


def test_the_base_after_the_demo_installs_nothing(tmp_path):
    assert run_scripts(tmp_path, "demo", "", "demo", "") == [".[demo]"]


def test_a_bigger_extra_is_installed_once_and_then_covers_the_smaller_ones(tmp_path):
    assert run_scripts(tmp_path, "", "demo", "test", "", "demo", "test") == [
        ".", ".[demo]", ".[test]"]
    assert len(list((tmp_path / ".venv").glob(".extcdr-*"))) == 1


def test_a_changed_setup_cfg_installs_again(tmp_path):
    assert run_scripts(tmp_path, "test") == [".[test]"]
    (tmp_path / "pip.log").unlink()
    with open(tmp_path / "setup.cfg", "a") as cfg:
        cfg.write("\n# changed\n")
    done = subprocess.run(["bash", "-c", "source bin/_venv.sh; ensure_venv"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "installing" in done.stderr
    assert len(list((tmp_path / ".venv").glob(".extcdr-*"))) == 1
