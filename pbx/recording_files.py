"""Where the PBX keeps a call's recordings: only files inside the recordings root are ever
reached (served or deleted) — no `..`, no absolute path elsewhere, no symlink out of the root."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def resolve(written: str, root: Path, written_as: str) -> Path | None:
    """The file a PBX recording path names, if it lies inside `root` (symlinks resolved)."""
    prefix = written_as.rstrip("/") + "/"
    if not written.startswith(prefix):
        return None
    relative = written[len(prefix):]
    if not relative or relative.startswith("/") or "\x00" in relative:
        return None
    root = root.resolve()
    target = (root / relative).resolve()
    if os.path.commonpath([root, target]) != str(root):
        return None
    return target


@dataclass(frozen=True)
class RecordingFiles:
    """The recordings root on this machine, and the path the PBX writes it as in its history
    (the same on a PBX; the stand-in keeps its files elsewhere)."""
    root: Path
    written_as: str

    def locate(self, written: str) -> Path | None:
        """The file of a recording as the PBX wrote its path, if inside the root."""
        return resolve(written, self.root, self.written_as)
