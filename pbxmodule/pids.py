"""Whether a process still runs, by its pid (left by a worker or a scratch folder's owner)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def alive(pid: int, *, running: str | None = None) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped by its parent) does not. With
    `running`, only while its command line contains that text too: a pid read from a file may
    have been reused by an unrelated process since."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return running is None           # another user's process is never one of ours
    try:
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
        if running is None:
            return True
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        return running in command.decode(errors="replace")
    except OSError:
        return False


def remove_orphaned_folders(prefix: str) -> None:
    """Temp folders `<prefix><pid>-…` whose process is gone (it was killed before removing
    them): backfill scratch files, export files."""
    for path in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        pid = path.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
