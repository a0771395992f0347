"""Tells open pages that calls changed, without holding a thread per page.

One thread per web process watches the history's revision (`mirror.queries.mirror_revision`: each
writer transaction that changes what pages show takes the next one) and publishes it to the
PBX nginx's nchan channel. Every open page subscribes to that channel through nginx, behind
the same access check as the pages; on a message it asks `updates` (role-checked) what changed
for its filter and user. Only the revision number goes through the channel, never call data.
Whoever writes the history (the daemon, `extcdr sync --once`) is seen the same way.
"""
from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request

from peewee import Database

from mirror.queries import mirror_revision
from mirror.settings import Settings
from pbx.config import SourceError, read_pbx_setting
from web.auth import TOKEN_HEADER

log = logging.getLogger("extcdr.web")

CHECK_SECONDS = 0.1        # how often the revision is looked at (one indexed row)
RETRY_SECONDS = 2          # while nginx (or the PBX's web port) cannot be reached


class ChangePublisher:
    """Publishes the history's revision to nginx each time it moves (start, stop)."""

    def __init__(self, db: Database | None, settings: Settings):
        self.db = db
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        if (self.db is None or self.settings["web.publish_url"] == "off"
                or self._thread is not None):
            return
        self._thread = threading.Thread(target=self._run, name="extcdr-changes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        published = None
        while not self._stop.wait(RETRY_SECONDS if self._failing else CHECK_SECONDS):
            try:
                revision = mirror_revision(self.db)
            except Exception as exc:            # a damaged file: the pages say why
                self._failed(f"cannot read the call history's revision: {exc}")
                continue
            if revision != published and self._publish(revision):
                published = revision

    def _publish(self, revision: int) -> bool:
        url = self.url()
        if url is None:
            return False
        request = urllib.request.Request(
            url, data=str(revision).encode(), method="POST",
            headers={TOKEN_HEADER: self.settings["web.proxy_token"],
                     "Content-Type": "text/plain"})
        try:
            with urllib.request.urlopen(request, timeout=2) as reply:
                reply.read()
        except (OSError, urllib.error.URLError) as exc:
            self._failed(f"cannot tell open pages that calls changed ({url}: {exc})")
            return False
        if self._failing:
            log.info("open pages are told of changes again (%s)", url)
            self._failing = False
        return True

    def url(self) -> str | None:
        """The publisher location: the setting, else the PBX's own nginx on this machine."""
        configured = self.settings["web.publish_url"]
        if configured:
            return configured
        try:
            port = read_pbx_setting(self.settings["pbx.config_db"], "WEBPort")
        except SourceError as exc:
            self._failed(f"live updates wait for the PBX's web port: {exc}")
            return None
        if port is None:
            self._failed("live updates wait for the PBX's web port (WEBPort in m_PbxSettings)")
            return None
        prefix = "/" + self.settings["web.prefix"].strip("/") + "/"
        return f"http://127.0.0.1:{port}{prefix}changes/publish"

    def _failed(self, message: str) -> None:
        if not self._failing:                   # once per streak, not ten times a second
            log.warning("%s", message)
            self._failing = True

