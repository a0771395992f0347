"""The house's rules (setup.cfg, [importlinter]): imports only go down, nothing shipped imports
the stand-in PBX, the daemon never loads Flask, no import cycles inside a room. A change that
breaks one fails here with import-linter's own report of the offending import chain."""
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SHIPPED = ("cli", "daemon", "web", "reports", "exports", "pbxmodule", "pbx", "mirror", "i18n")


def test_the_import_contracts_hold():
    done = subprocess.run([Path(sys.executable).with_name("lint-imports"), "--no-cache"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 kept, 0 broken" in done.stdout


def test_a_new_upward_import_would_be_caught(tmp_path):
    """The contracts are live: the same check on a copy of the tree where the mirror imports
    the pages fails, naming the import."""
    copy = tmp_path / "tree"
    copy.mkdir()
    for name in (*SHIPPED, "standin"):
        subprocess.run(["cp", "-r", ROOT / name, copy / name], check=True)
    (copy / "setup.cfg").write_text((ROOT / "setup.cfg").read_text())
    (copy / "mirror" / "upward.py").write_text("import web.history\n")
    done = subprocess.run([Path(sys.executable).with_name("lint-imports"), "--no-cache"],
                          cwd=copy, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert done.returncode != 0
    assert "mirror.upward -> web.history" in done.stdout


def test_the_room_names_are_unique():
    """No two modules share a name in different rooms (a reader finds each by its name)."""
    seen: dict[str, Path] = {}
    clashes = []
    for room in (*SHIPPED, "standin"):
        for path in (ROOT / room).rglob("*.py"):
            if path.name in ("__init__.py", "__main__.py"):
                continue
            if path.stem in seen:
                clashes.append(f"{path.relative_to(ROOT)} and {seen.get(path.stem)}")
            seen[path.stem] = path.relative_to(ROOT)
    assert clashes == []
