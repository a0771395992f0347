"""A PBX host without Python, for the module's runtime: a command prefix that runs a program in
a mount namespace of its own where every Python on this machine is hidden — each interpreter
and libpython (bound to /dev/null: they cannot run or load), each standard library,
site-packages and dist-packages folder, pyenv, the virtualenv and this development tree (empty
read-only folders). What is hidden is found by searching the machine's file system, so a Python
bundled by some other program is hidden too. util-linux `unshare`, then `exec`: the program
keeps its pid, so the PBX's signals reach it as on a PBX (bubblewrap stays a parent that does
not pass them on)."""
from __future__ import annotations

import functools
import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

# Not searched: kernel and device trees, temporary files (the tests' own PBXs, whose module
# brings its own Python), documentation.
NOT_SEARCHED = ("/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp", "/usr/share/doc")


@functools.cache
def pythons() -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """(folders, files) that give a program Python on this machine: interpreters and
    libpython files; standard library, site-packages and dist-packages folders; pyenv, this
    interpreter's prefixes and the development tree."""
    prune = [arg for path in NOT_SEARCHED for arg in ("-path", path, "-o")][:-1]
    found = subprocess.run(
        ["find", "/", "-xdev", "(", *prune, ")", "-prune", "-o",
         "(", "-type", "f", "(", "-name", "libpython*.so*", "-o", "(", "-regex",
         r".*/python[0-9.]*", "-perm", "-u+x", ")", ")", ")", "-printf", "f %p\\n", "-o",
         "(", "-type", "d", "(", "-name", "site-packages", "-o", "-name", "dist-packages",
         "-o", "-regex", r".*/lib\(64\)?/python[0-9.]+", ")", ")", "-printf", "d %p\\n"],
        capture_output=True, text=True, timeout=300).stdout.splitlines()
    folders = {Path(line[2:]) for line in found if line.startswith("d ")}
    folders |= {Path(sys.prefix), Path(sys.base_prefix), ROOT,
                Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))}
    folders = {f.resolve() for f in folders if f.is_dir()}
    folders = {f for f in folders
               if not any(f != other and f.is_relative_to(other) for other in folders)}
    files = {Path(line[2:]).resolve() for line in found if line.startswith("f ")}
    files = {f for f in files if not any(f.is_relative_to(folder) for folder in folders)}
    return tuple(sorted(folders)), tuple(sorted(files))


def no_python() -> list[str]:
    """`[*no_python(), program, *args]` runs the program where no Python can be found or run."""
    folders, files = pythons()
    mounts = [f"mount -t tmpfs -o ro,size=4k no-python {shlex.quote(str(f))}" for f in folders]
    mounts += [f"mount --bind /dev/null {shlex.quote(str(f))}" for f in files]
    return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-ec",
            "\n".join(mounts + ['exec "$@"']), "no-python"]
