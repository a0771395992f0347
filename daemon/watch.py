"""File triggers (watchdog): the PBX history file changed -> read new rows; the settings file
changed -> reload. SQLite in WAL mode touches `cdr.db-wal` on every commit, and a restored
backup replaces `cdr.db` itself, so both names count. Our own read-only opens make inotify
report the WAL "modified" too, so a trigger fires only when a file's size or mtime really
changed (else the daemon would wake itself forever). The slow poll stays the safety net."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


class _Triggers(FileSystemEventHandler):
    def __init__(self, routes: dict[Path, Callable[[], None]]):
        self.routes = routes
        self.seen = {path: _fingerprint(path) for path in routes}

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("opened", "closed_no_write"):
            return
        for name in (event.src_path, getattr(event, "dest_path", "")):
            path = Path(name) if name else None
            if path in self.routes:
                now = _fingerprint(path)
                if now != self.seen[path]:
                    self.seen[path] = now
                    self.routes[path]()


def _fingerprint(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def start(cdr_db: Path, settings_file: Path | None, *, on_history: Callable[[], None],
          on_settings: Callable[[], None]) -> Observer:
    """Watch the history DB (and its WAL) and the settings file; returns the running observer."""
    cdr_db = Path(cdr_db).resolve()
    routes = {cdr_db: on_history, Path(f"{cdr_db}-wal"): on_history}
    if settings_file is not None:
        routes[Path(settings_file).resolve()] = on_settings
    observer = Observer()
    handler = _Triggers(routes)
    for folder in {path.parent for path in routes}:
        if folder.is_dir():
            observer.schedule(handler, str(folder), recursive=False)
    observer.daemon = True
    observer.start()
    return observer
