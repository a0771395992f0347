"""The skeleton of the daemon's threads that send things out — the mailed reports' scheduler
(`reports.scheduler`) and the webhooks' sender (`daemon.deliverer`): a connection of its own to
module.db, the settings the daemon reloads (with the PBX clock and the licence check they name),
and a thread that calls `step(now)` until `close()`, waiting between steps as long as the step
said, or until `nudge()`. It lives here, below the daemon, so that both may use it."""
from __future__ import annotations

import logging
import sqlite3
import threading
import time

import peewee

from mirror.database import open_module_db, readable_error
from mirror.settings import Settings
from pbx.mirror_context import MirrorContext
from pbxmodule.licence import LicenceCheck


class Worker:
    """One of the daemon's sending threads; subclasses give `step` and the class attributes."""
    what = "sending"                  # the log's name for it
    log = logging.getLogger("extcdr")
    check_interval = ""               # the setting: seconds between looks after a failed step
    close_wait_s = 10.0               # how long `close()` waits for a step under way

    def __init__(self, settings: Settings):
        self.db = open_module_db(settings["module.db"])
        self.settings = settings
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    @property
    def settings(self) -> Settings:
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        """New settings (the daemon reloaded them) bring the PBX clock they name and one
        licence check, which keeps what it verified."""
        self._settings = settings
        self.context = MirrorContext(settings, self.db)
        self.licence = LicenceCheck.of(settings)

    def step(self, now_s: float) -> float:
        """Do what is due at `now_s`; returns seconds until the next look."""
        raise NotImplementedError

    def run(self) -> None:
        complaint = None
        while not self.stop.is_set():
            wait = self.settings[self.check_interval]
            try:
                wait = self.step(time.time())
                complaint = None
            except (sqlite3.DatabaseError, peewee.DatabaseError) as exc:  # damaged: said once
                said, complaint = complaint, readable_error(self.settings["module.db"], exc)
                if complaint != said:
                    self.log.error("%s wait: %s", self.what, complaint)
            except Exception:          # anything else: try again later
                self.log.exception("%s: a step failed", self.what)
            self.wake.wait(wait)
            self.wake.clear()

    def nudge(self) -> None:
        """Look now, not when the step's wait is over."""
        self.wake.set()

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name=self.what, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop; a step under way is waited for `close_wait_s` at most (its connection is
        closed only when it is over)."""
        self.stop.set()
        self.wake.set()
        if self.thread is not None:
            self.thread.join(self.close_wait_s)
        if self.thread is None or not self.thread.is_alive():
            self.db.close()


def close_all(workers: list[Worker]) -> None:
    """Close the workers, all stopping at once: the wait is the slowest one's, not their sum."""
    for worker in workers:
        worker.stop.set()
        worker.wake.set()
    for worker in workers:
        worker.close()
