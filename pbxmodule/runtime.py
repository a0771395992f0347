"""The module's own Python for the PBX: a PyInstaller one-folder bundle of the interpreter,
the standard library and the module's dependencies, built from this tree for Linux x86_64
(glibc), which `extcdr package` puts at `bin/extcdr` + `bin/_internal/` of the archive. A
stock MikoPBX has no Python to trust (2025.1+ a minimal one without pip), and nothing on the
PBX downloads or compiles: the PHP worker starts `bin/extcdr` as it is.

Built once per set of inputs (the spec, the module's code, setup.cfg, the interpreter and the
installed dependencies) into a cache folder named by their hash, so tests and the demo reuse
it. The same inputs give the same bytes (fixed SOURCE_DATE_EPOCH and hash seed)."""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pbxmodule.package import PYTHON_PACKAGES, ROOT

FREEZE = Path(__file__).resolve().parent / "freeze"
CACHE = ROOT / ".cache" / "runtime"
NAME = "extcdr"                      # bin/extcdr in the archive; its runtime in bin/_internal
KEEP = 2                             # cached builds kept (the newest)
_EPOCH = "315532800"                 # 1980-01-01, as the archive's own times
_GLIBC = re.compile(rb"GLIBC_(\d+)\.(\d+)(?:\.(\d+))?")


class RuntimeBuildError(RuntimeError):
    """The runtime could not be built; the message says why."""


def build(root: Path = ROOT, cache: Path = CACHE) -> Path:
    """The runtime of this tree (a folder holding `extcdr` and `_internal/`), built unless the
    cache has it."""
    folder = Path(cache) / inputs_digest(root) / NAME
    if (folder / NAME).is_file():
        os.utime(folder.parent)                       # the newest use, for the sweep
        return folder
    if importlib.util.find_spec("PyInstaller") is None:       # a build tool: the `build` extra
        raise RuntimeBuildError("PyInstaller is not installed, which builds the module's "
                                "runtime: pip install -e '.[build]'")
    Path(cache).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".build-") as work:
        done = subprocess.run(
            [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
             "--distpath", f"{work}/dist", "--workpath", f"{work}/work",
             str(FREEZE / "extcdr.spec")],
            cwd=work, capture_output=True, text=True, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(root), "SOURCE_DATE_EPOCH": _EPOCH,
                 "PYTHONHASHSEED": "0"})
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise RuntimeBuildError("PyInstaller failed: " + " / ".join(tail))
        folder.parent.mkdir(exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        Path(work, "dist", NAME).rename(folder)
    _sweep(Path(cache))
    return folder


def inputs_digest(root: Path = ROOT) -> str:
    """What the runtime is built from: the spec, the module's code (its imports decide what
    is bundled), setup.cfg, this interpreter and the installed distributions."""
    digest = hashlib.sha256(sys.version.encode())
    for dist in sorted(f"{d.metadata['Name']}=={d.version}"
                       for d in importlib.metadata.distributions()):
        digest.update(dist.encode() + b"\n")
    files = [(f"freeze/{path.name}", path) for path in sorted(FREEZE.iterdir())]
    files += [(name, Path(root) / name) for name in ["setup.cfg"] + sorted(
        path.relative_to(root).as_posix() for package in PYTHON_PACKAGES
        for path in (Path(root) / package).rglob("*.py"))]
    for name, path in files:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def glibc_floor(folder: Path) -> tuple[int, ...]:
    """The newest glibc symbol version any file of the runtime asks for: the oldest glibc
    it runs on."""
    floor: tuple[int, ...] = (0,)
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as file:
                if file.read(4) != b"\x7fELF":
                    continue
                for match in _GLIBC.finditer(file.read()):
                    floor = max(floor, tuple(int(n) for n in match.groups() if n is not None))
    return floor


def _sweep(cache: Path) -> None:
    builds = sorted((p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in builds[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
