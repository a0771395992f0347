"""`extcdr daemon`: one resident process that keeps the mirror up to date, forever.

A loop of one step: `Daemon.step(now)` does whatever is due (read new rows, refresh calls an
AMI event named, who hung up the calls AMI saw end, the safety-net poll, the history's retention
at start and hourly) and says when it next has work; `run()` only calls it and sleeps until then
or until a trigger wakes it. Triggers come from other threads — the AMI link (`refresh`,
`hung_up`) and the file watcher (`changed`) — through a queue; signals only set flags.
Only this loop writes the mirror; the mailed reports' scheduler (`reports.scheduler`, its own
thread) writes only the reports' rows, and the webhooks' sender (`daemon.deliverer`, its own
thread, woken after each step) only the outbox's states and the log of deliveries.
"""
from __future__ import annotations

import faulthandler
import io
import logging
import queue
import signal
import sqlite3
import threading
import time
from typing import Callable

import peewee

from daemon import watch
from daemon.ami import AmiLink, cdr_event_to_row, linkedid_of_event
from daemon.deliverer import Deliverer
from daemon.locks import instance_lock
from daemon.sync import Sync, mirror_sync
from mirror.database import ModuleDbError, open_module_db, readable_error
from mirror.hangups import CallHangup, HangupTracker
from mirror.live import ChannelTable
from mirror.retention import utc_day
from mirror.settings import Settings, SettingsError, is_database_url, load, shown_target
from pbx.cdr import LEG_SOURCE_COLUMNS, SourceBusy, SourceError
from pbx.mirror_context import MirrorContext
from pbxmodule.licence import LicenceCheck
from reports.scheduler import ReportScheduler
from reports.worker import close_all

log = logging.getLogger("extcdr.daemon")

_RETRY_BUSY_S = 1.0      # PBX DB locked by a writer
_RETRY_WRITE_S = 5.0     # module.db could not be written (disk full, ...)
_LICENCE_RECHECK_S = 5.0  # while paused for want of a licence
_DB_RECHECK_S = 30.0      # while module.db is damaged or another program's file
_RETENTION_CHECK_S = 3600.0  # between looks at the history's retention (cheap when not due)
_NEW_ROWS = object()     # queue item: "read new rows"
_HANGUPS_HELD = 10_000   # who hung up, waiting for module.db to be writable again (at most)


class Daemon:
    """The mirror's writer with its triggers. Thread-safe entry points: `changed`, `refresh`,
    `add_row`, `hung_up`, `request_stop`, `request_reload`; everything else runs on the loop's
    thread."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.on_reload: Callable[[Settings, Settings], None] | None = None
        self.on_written: Callable[[], None] | None = None   # after each step (calls may be written)
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        self.wake = threading.Event()
        self.stopping = False
        self.reloading = False
        self.new_rows_due: float | None = 0.0     # catch up at start
        self.refresh_due: dict[str, float] = {}
        self.event_rows: list[tuple] = []           # legs from AMI `Cdr` events, not yet mirrored
        self.hangups: list[CallHangup] = []         # who ended calls AMI saw, not yet written
        self.next_poll = 0.0
        self.next_retention = 0.0                   # at start, then every _RETENTION_CHECK_S
        self.backfilled = False
        self._complaint: str | None = None        # the last problem logged (logged once)
        self.db = open_module_db(settings["module.db"])
        self.channels = ChannelTable()              # stock Asterisk: channels up, from AMI
        self.context = MirrorContext(self.settings, self.db)
        self.sync = self._new_sync()
        self.licence = LicenceCheck.of(settings)

    # --- triggers (any thread) ----------------------------------------------------------------

    def changed(self) -> None:
        """The PBX history file changed (watchdog) or a call ended (AMI): read new rows."""
        self.requests.put(_NEW_ROWS)
        self.wake.set()

    def refresh(self, linkedid: str) -> None:
        """AMI named a call whose rows may have changed."""
        self.requests.put(linkedid)
        self.wake.set()

    def add_row(self, row: tuple) -> None:
        """A finished leg from an AMI `Cdr` event (LEG_SOURCE_COLUMNS order)."""
        self.requests.put(row)
        self.wake.set()

    def hung_up(self, hangup: CallHangup) -> None:
        """AMI saw who ended a call."""
        self.requests.put(hangup)
        self.wake.set()

    def request_stop(self, *_) -> None:
        self.stopping = True
        self.wake.set()

    def request_reload(self, *_) -> None:
        self.reloading = True
        self.wake.set()

    # --- the loop ------------------------------------------------------------------------------

    def step(self, now: float) -> float:
        """Do what is due at `now`; returns seconds until something else is due. Without a
        valid licence nothing is done (the triggers wait in the queue) until it is back."""
        problem = self.licence.problem()
        if problem is not None:
            self._complain(f"paused, the mirror is kept as it is: {problem}")
            self.new_rows_due = 0.0                 # catch up once licensed again
            return _LICENCE_RECHECK_S
        if self.context.clock() is not self.sync.clock:
            self.sync = self._new_sync()            # the PBX's timezone changed: new rows use it
        debounce = self.settings["sync.debounce"]
        while True:
            try:
                item = self.requests.get_nowait()
            except queue.Empty:
                break
            if item is _NEW_ROWS:
                due = now + debounce
                self.new_rows_due = due if self.new_rows_due is None else min(self.new_rows_due, due)
            elif isinstance(item, CallHangup):
                self.hangups.append(item)
            elif isinstance(item, tuple):
                self.event_rows.append(item)
            else:
                self.refresh_due.setdefault(item, now + debounce)
        if now >= self.next_retention:            # before a catch-up: its cutoff applies
            self.next_retention = now + _RETENTION_CHECK_S
            self._guarded(now, self._retain)
        if now >= self.next_poll:
            self.new_rows_due = now
        if self.new_rows_due is not None and now >= self.new_rows_due:
            self._guarded(now, self._read_new_rows, now)
        due = [linkedid for linkedid, at in self.refresh_due.items() if at <= now]
        if due:
            self._guarded(now, self._refresh, due)
        if self.event_rows:
            self._guarded(now, self._apply_event_rows)
        if self.hangups:
            self._guarded(now, self._record_hangups)
        if self.on_written is not None:
            self.on_written()          # the webhooks' sender looks at the outbox
        return self._next_due(now)

    def run(self, on_start: Callable[["Daemon"], None] | None = None) -> int:
        """Run until SIGTERM/SIGINT; SIGHUP reloads the settings."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        log.info("started: mirror %s of %s", shown_target(self.settings["module.db"]),
                 self.settings["pbx.cdr_db"])
        if on_start:
            on_start(self)
        while not self.stopping:
            if self.reloading:
                self.reload()
            wait = self.step(time.monotonic())
            self.wake.wait(wait)
            self.wake.clear()
        self.db.close()
        log.info("stopped")
        return 0

    def reload(self) -> None:
        """Re-read the settings file; a bad one is reported and the running settings kept."""
        self.reloading = False
        try:
            fresh = load(self.settings.source, self.settings.overrides)
        except SettingsError as exc:
            log.error("settings not reloaded, keeping the running ones: %s", exc)
            return
        if fresh == self.settings:
            return
        if fresh["module.db"] != self.settings["module.db"]:
            log.error("settings not reloaded: module.db cannot change while running")
            return
        previous, self.settings = self.settings, fresh
        self.context = MirrorContext(self.settings, self.db)
        self.sync = self._new_sync()
        self.licence = LicenceCheck.of(fresh)
        self.new_rows_due = 0.0
        self.backfilled = False
        log.info("settings reloaded: %s", fresh.describe())
        if self.on_reload:
            self.on_reload(previous, fresh)

    # --- internals -----------------------------------------------------------------------------

    def _new_sync(self) -> Sync:
        if not self.settings["pbx.config_db"].is_file():
            log.warning("%s: no PBX config DB; numbers of up to %d digits count as internal",
                        self.settings["pbx.config_db"], self.settings["calls.extension_length"])
        return mirror_sync(self.settings, self.db, self.context.clock(),
                           live_legs=self.channels.legs if self.settings["ami.cdr_events"]
                           else None)

    def _read_new_rows(self, now: float) -> None:
        self.new_rows_due = None
        if self.settings["ami.cdr_events"]:
            self.next_poll = now + self.settings["sync.poll_interval"]
            self.sync.follow_live()
            return  # no history file: legs come from AMI `Cdr` events
        if now >= self.next_poll or not self.backfilled:
            # The safety net, and the first pass: everything, the tail re-check included.
            self.next_poll = now + self.settings["sync.poll_interval"]
            read = self.sync.catch_up(should_stop=lambda: self.stopping)
            if not self.backfilled and read:
                log.info("caught up with the PBX history (%d rows)", read)
            self.backfilled = True
            return
        while not self.stopping and self.sync.step()[0]:
            pass

    def _apply_event_rows(self) -> None:
        self.sync.apply_rows(self.event_rows)
        self.event_rows = []

    def _record_hangups(self) -> None:
        """One short transaction; when module.db cannot be written they wait for the retry
        (the oldest dropped beyond _HANGUPS_HELD: those calls stay unknown)."""
        del self.hangups[:-_HANGUPS_HELD]
        self.sync.record_hangups(self.hangups)
        self.hangups = []

    def _retain(self) -> None:
        """Drop the months the history no longer keeps (`history.keep_months`): a log line
        each."""
        retained = self.sync.retain(int(time.time() * 1000))
        for month in retained.dropped:
            log.info("retention: dropped %s (%d calls); the history keeps calls from %s UTC",
                     month.name, month.calls, utc_day(retained.cutoff_ms))

    def _refresh(self, linkedids: list[str]) -> None:
        for linkedid in linkedids:
            del self.refresh_due[linkedid]
        self.sync.refresh(linkedids)

    def _guarded(self, now: float, work, *args) -> None:
        """Run a piece of work; a PBX or disk problem is logged once and retried later."""
        try:
            work(*args)
        except SourceBusy as exc:
            self._complain(f"PBX history locked, retrying: {exc}")
            self.new_rows_due = now + _RETRY_BUSY_S
            return
        except SourceError as exc:
            self._complain(f"PBX history unreadable, retrying: {exc}")
            self.next_poll = now + self.settings["sync.poll_interval"]
            return
        except (sqlite3.Error, peewee.DatabaseError) as exc:
            self._complain(f"module DB not written, retrying (nothing lost): "
                           f"{readable_error(self.settings['module.db'], exc)}")
            self.new_rows_due = now + _RETRY_WRITE_S
            if is_database_url(self.settings["module.db"]):
                self._reconnect_later()
            return
        if self._complaint is not None:
            log.info("back to normal after: %s", self._complaint)
            self._complaint = None

    def _reconnect_later(self) -> None:
        """A central history's server may have gone away (restarted, network): the session
        is dropped, and the next write connects again (its transaction was rolled back by
        the server; the writer makes its staging tables again)."""
        try:
            self.db.close()
        except peewee.DatabaseError:
            pass                          # already broken: peewee forgets it all the same

    def _complain(self, message: str) -> None:
        if message != self._complaint:
            log.warning(message)
            self._complaint = message

    def _next_due(self, now: float) -> float:
        times = [self.next_poll, self.next_retention, *self.refresh_due.values()]
        if self.new_rows_due is not None:
            times.append(self.new_rows_due)
        return max(0.0, min(times) - now)


def serve(settings: Settings) -> int:
    """The resident process: lock, loop, file watcher and AMI link; returns the exit code."""
    _stacks_on_usr1()
    with instance_lock(settings["module.db"], settings["pbx.id"]):
        daemon = _daemon_once_db_opens(settings)
        if daemon is None:
            return 0
        watcher = watch.start(settings["pbx.cdr_db"], settings.source,
                              on_history=daemon.changed, on_settings=daemon.request_reload)
        ami = _AmiFollower(daemon)
        ami.start(settings)
        # On a central history every PBX's daemon sends too: each webhook's lane and each
        # report's send is one daemon's at a time (mirror.dialect.hold).
        deliverer = Deliverer(settings)
        senders = [ReportScheduler(settings), deliverer]
        for sender in senders:
            sender.start()

        def reloaded(old: Settings, new: Settings) -> None:
            ami.settings_changed(old, new)
            for sender in senders:
                sender.settings = new

        daemon.on_reload = reloaded
        daemon.on_written = deliverer.nudge
        try:
            return daemon.run()
        finally:
            close_all(senders)
            ami.stop()
            watcher.stop()
            watcher.join(2)


def _stacks_on_usr1() -> None:
    """`kill -USR1 <pid>` writes every thread's stack to the log: what a stuck daemon is
    doing. Not when the log is no file (the daemon run inside another program, e.g. a test)."""
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (io.UnsupportedOperation, ValueError):
        pass


def _daemon_once_db_opens(settings: Settings) -> Daemon | None:
    """The daemon, once module.db opens. A damaged file, or another program's, is logged once
    and looked at again every _DB_RECHECK_S until it is repaired or replaced: exiting would
    only have the PBX restart the worker in a loop. None: stopped (SIGTERM) while waiting."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    complaint = None
    while not stop.is_set():
        try:
            daemon = Daemon(settings)
        except ModuleDbError as exc:
            if str(exc) != complaint:
                complaint = str(exc)
                log.error("waiting, nothing is mirrored until it is repaired or replaced: %s",
                          exc)
            stop.wait(_DB_RECHECK_S)
            continue
        for signum in (signal.SIGTERM, signal.SIGINT):     # a stop from now on reaches it
            signal.signal(signum, daemon.request_stop)
        if stop.is_set():                                  # one came while it was starting
            daemon.request_stop()
        return daemon
    return None


class _AmiFollower:
    """The AMI link of a running daemon: its events trigger the daemon and tell who hung up;
    restarted when the `[ami]` settings change."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.link = None
        self.cdr_events = False
        self.hangups = HangupTracker()
        self._hangups_lock = threading.Lock()     # events' thread vs. the link's at login

    def start(self, settings: Settings) -> None:
        if not settings["ami.enabled"]:
            return
        self.cdr_events = settings["ami.cdr_events"]
        handlers = {"Hangup": self._hangup, "UserEvent": self._call_changed,
                    "Newchannel": self._new_channel, "HangupRequest": self._follow_hangups,
                    "SoftHangupRequest": self._follow_hangups}
        if self.cdr_events:
            handlers.update(Cdr=self._cdr_event, Newstate=self._channel_event,
                            CoreShowChannel=self._channel_event)
        self.link = AmiLink(settings["ami.host"], settings["ami.port"],
                            settings["ami.username"], settings["ami.secret"], handlers,
                            on_login=self._logged_in)
        self.link.start()

    def settings_changed(self, old: Settings, new: Settings) -> None:
        if old.section("ami") != new.section("ami"):
            self.stop()
            self.start(new)

    def stop(self) -> None:
        if self.link is not None:
            self.link.stop()
            self.link = None

    def _call_changed(self, event) -> None:
        linkedid = linkedid_of_event(event)
        if linkedid:
            self.daemon.refresh(linkedid)
            self.daemon.changed()

    def _logged_in(self, send_action) -> None:
        """(Re)connected: what was up before is unknown (who hangs up those calls too); on a
        stock Asterisk, it lists what is up now."""
        with self._hangups_lock:
            self.hangups.forget_all()
        if not self.cdr_events:
            return
        self.daemon.channels.clear()
        self.daemon.changed()
        send_action({"Action": "CoreShowChannels"})

    def _follow_hangups(self, event) -> None:
        with self._hangups_lock:
            decided = self.hangups.feed(event)
        if decided is not None:
            self.daemon.hung_up(decided)

    def _new_channel(self, event) -> None:
        self._follow_hangups(event)
        if self.cdr_events:
            self._channel_event(event)

    def _channel_event(self, event) -> None:
        """Stock Asterisk: a channel came up or changed state (calls in progress)."""
        if self.daemon.channels.record(event):
            self.daemon.changed()

    def _hangup(self, event) -> None:
        self._follow_hangups(event)
        if self.cdr_events:
            self.daemon.channels.record(event)
        self._call_changed(event)

    def _cdr_event(self, event) -> None:
        row = cdr_event_to_row(event)
        self.daemon.add_row(tuple(0 if column == "id" else row.get(column, "")
                                  for column in LEG_SOURCE_COLUMNS))
