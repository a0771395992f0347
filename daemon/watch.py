"""File triggers (watchdog): the PBX history file changed -> read new rows; the settings file
changed -> reload. SQLite in WAL mode touches `cdr.db-wal` on every commit, and a restored
backup replaces `cdr.db` itself, so both names count. The slow poll stays the safety net."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


class _Triggers(FileSystemEventHandler):
    def __init__(self, routes: dict[Path, Callable[[], None]]):
        self.routes = routes

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("opened", "closed_no_write"):
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            callback = self.routes.get(Path(path)) if path else None
            if callback:
                callback()


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
