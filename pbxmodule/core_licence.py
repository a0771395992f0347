"""The licence as a real MikoPBX says: Core's `license` service, asked through the module's
REST callback (`Lib/ExtendedCDRConf.php`, action `licence`) on the PBX's own loopback. Core
captured the feature at the marketplace install and checked it at enable; this answers the
pages and the daemon between Core's hourly checks. The same seam as the signed licence file
(`pbxmodule.licence.LicenceCheck`): `required` and `problem()`.
"""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlsplit

ASK_EVERY_S = 300.0       # a granted feature is asked again after this long
RETRY_S = 15.0            # a refusal, or no answer: asked again after this long
GRACE_S = 3600.0          # Core not answering: the last grant holds this long (Core's own check
                          # is hourly)
TIMEOUT_S = 5.0


@dataclass
class CoreLicence:
    """Core's answer on the module's feature, asked at `url` (loopback only), remembered: a
    grant for ASK_EVERY_S, a refusal or silence for RETRY_S; while Core is silent, the last
    grant holds for GRACE_S."""
    url: str
    required = True            # (not a field) the seam of pbxmodule.licence.LicenceCheck
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)
    _granted_at: float | None = field(default=None, compare=False, repr=False)
    _next_ask: float = field(default=0.0, compare=False, repr=False)
    _answer: str | None = field(default=None, compare=False, repr=False)

    def problem(self, now: float | None = None) -> str | None:
        """Why the module may not work now (Core denies the feature, or has not answered for
        longer than the grace), or None."""
        now = time.time() if now is None else now
        parts = urlsplit(self.url)
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "::1", "localhost"):
            return (f"licence.core_url {self.url!r}: the PBX's licence service is asked on this "
                    f"machine only (http://127.0.0.1/…)")
        with self._lock:
            if now < self._next_ask:
                return self._answer
            try:
                available = self._ask()
            except OSError as exc:
                self._next_ask = now + RETRY_S
                if self._granted_at is not None and now - self._granted_at < GRACE_S:
                    self._answer = None
                else:
                    self._answer = f"the PBX's licence service does not answer ({_reason(exc)})"
                return self._answer
            if available:
                self._granted_at, self._answer, self._next_ask = now, None, now + ASK_EVERY_S
            else:
                self._granted_at, self._next_ask = None, now + RETRY_S
                self._answer = ("the PBX's licence does not include this module: activate it "
                                "in Module marketplace → Licence management")
            return self._answer

    def _ask(self) -> bool:
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as reply:
            body = reply.read(65536)
        try:
            answer = json.loads(body)
            return answer["result"] is True and answer["data"]["available"] is True
        except (ValueError, KeyError, TypeError):
            raise OSError("an answer that is not the module's") from None


def _reason(exc: OSError) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
