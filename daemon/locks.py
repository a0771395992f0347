"""One writer per mirror: a second daemon (or `extcdr sync`) on the same module.db, or on the
same PBX's history in a central one, is refused with `AlreadyRunning`."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from mirror.database import open_module_db
from mirror.dialect import run
from mirror.schema import APPLICATION_ID
from mirror.settings import is_database_url, shown_target

DAEMON_LOCK = APPLICATION_ID + 2    # advisory lock key (mirror.schema has +0 and +1)


class AlreadyRunning(Exception):
    """Another daemon holds the mirror."""


class InstanceLock:
    """One daemon per module.db: an exclusive flock on `<module.db>.lock`, holding our pid."""

    def __init__(self, db_path: Path):
        self.path = Path(f"{db_path}.lock")
        self.file = None

    def __enter__(self):
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "?"
            self.file.close()
            raise AlreadyRunning(f"another extcdr daemon (pid {holder}) is running on "
                                 f"{self.path.with_suffix('')}") from None
        self.file.truncate(0)
        self.file.write(str(os.getpid()))
        self.file.flush()
        return self

    def __exit__(self, *exc):
        self.file.close()  # closing releases the lock


class CentralLock:
    """One writer per PBX of a central module.db (a `postgresql://` URL), each PBX's at the
    same time as the others': a session advisory lock of its schema and PBX id (`pbx.id`),
    held by a connection of its own for the writer's life (the server releases it when that
    connection ends, a kill -9 included)."""

    def __init__(self, url: str, pbx: str = ""):
        self.url = url
        self.pbx = pbx
        self.db = None

    def __enter__(self):
        self.db = open_module_db(self.url)
        if not run(self.db, "SELECT pg_try_advisory_lock(?, hashtext(current_schema() || ?))",
                   (DAEMON_LOCK, f"/{self.pbx}" if self.pbx else "")).fetchone()[0]:
            self.db.close()
            of = f" for PBX '{self.pbx}'" if self.pbx else ""
            raise AlreadyRunning(f"another extcdr daemon is running{of} on "
                                 f"{shown_target(self.url)} (or an extcdr sync)")
        problem = self._other_pbxs()
        if problem:
            self.db.close()
            raise AlreadyRunning(f"{shown_target(self.url)}: {problem}")
        return self

    def _other_pbxs(self) -> str | None:
        """Why this PBX may not write the history: the only PBX's (no `pbx.id`) beside others,
        or one PBX's without an id among those with one (their calls' ids would collide)."""
        others = "pbx = ''" if self.pbx else "pbx > ''"
        for table in ("employee", "call"):
            found = run(self.db, f"SELECT pbx FROM {table} WHERE {others} LIMIT 1").fetchone()
            if found and self.pbx:
                return ("it holds the history of a PBX without a pbx.id; a history shared by "
                        "several PBXs is written by PBXs with ids only")
            if found:
                return (f"it holds the history of PBX '{found[0]}'; each PBX writing a shared "
                        "history needs its own pbx.id")
        return None

    def __exit__(self, *exc):
        self.db.close()      # closing the session releases the lock


def instance_lock(target, pbx: str = "") -> InstanceLock | CentralLock:
    """The lock that keeps a second daemon off this module.db (a file), or off this PBX's
    history in it (a URL)."""
    return CentralLock(target, pbx) if is_database_url(target) else InstanceLock(target)
