"""The module marketplace as the PBX side uses it: `MarketplaceClient` is the one place that
speaks the marketplace's protocol (list modules, download an archive, activate a key for this
host's feature); a real MikoPBX licence service plugs in by offering the same three calls
(`MarketplaceService`). The development tree's stand-in server is `standin.marketplace_server`."""
from __future__ import annotations

import hashlib
import json
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol

from pbxmodule.errors import MarketplaceError
from pbxmodule.licence import LicenceError, check_key

log = logging.getLogger("extcdr.marketplace")


class MarketplaceService(Protocol):
    """What the PBX side asks of a marketplace. `MarketplaceClient` speaks the stand-in's HTTP;
    an adapter to MikoPBX's own licence service (its `MarketPlaceProvider`) offers the same
    three calls and returns a licence text `pbxmodule.licence.verify` accepts."""

    def modules(self) -> list[dict]: ...

    def download(self, uniqid: str, dest: Path, *, max_bytes: int) -> dict: ...

    def activate(self, key: str, *, host_id: str, product_id: int, feature_id: int) -> str: ...


class MarketplaceClient:
    def __init__(self, url: str, timeout: float = 15.0):
        self.url = url.rstrip("/") + "/"
        self.timeout = timeout

    def modules(self) -> list[dict]:
        """Modules on offer: {uniqid, version, min_pbx_version, name, sha256, size}."""
        return json.loads(self._request("api/v1/modules"))

    def download(self, uniqid: str, dest: Path, *, max_bytes: int) -> dict:
        """The newest archive of a module into `dest` (checksum checked, at most `max_bytes`
        read); its listing entry."""
        offers = [m for m in self.modules() if m["uniqid"] == uniqid]
        if not offers:
            raise MarketplaceError(f"the marketplace does not offer {uniqid}")
        offer = max(offers, key=lambda m: version_key(m["version"]))
        data = self._request(f"api/v1/modules/{uniqid}/{offer['version']}.zip",
                             max_bytes=max_bytes)
        if hashlib.sha256(data).hexdigest() != offer["sha256"]:
            raise MarketplaceError(f"{uniqid} {offer['version']}: the download is damaged "
                                   "(checksum differs); try again")
        partial = dest.with_name(f".{dest.name}.partial")
        partial.write_bytes(data)
        partial.replace(dest)
        return offer

    def activate(self, key: str, *, host_id: str, product_id: int, feature_id: int) -> str:
        """The signed licence for this host's feature. The key's format is checked first:
        a malformed key never leaves the PBX."""
        key = check_key(key)
        body = {"key": key, "host_id": host_id, "product_id": product_id,
                "feature_id": feature_id}
        try:
            return self._request("api/v1/licences", body).decode()
        except MarketplaceError as exc:
            raise LicenceError(str(exc)) from None

    def _request(self, path: str, body: dict | None = None, *,
                 max_bytes: int = 2**20) -> bytes:
        """The answer's body; one larger than `max_bytes` (a listing or licence: 1 MB) is
        refused, not read whole."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={
            "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                answer = reply.read(max_bytes + 1)
        except urllib.error.HTTPError as exc:
            try:
                reason = json.loads(exc.read(2**16))["error"]
            except (ValueError, KeyError, TypeError):
                reason = f"HTTP {exc.code}"
            raise MarketplaceError(f"the marketplace refused: {reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MarketplaceError(f"the marketplace at {self.url} cannot be reached: "
                                   f"{reason}") from None
        if len(answer) > max_bytes:
            raise MarketplaceError(f"the marketplace's answer to {path} is larger than "
                                   f"{max_bytes // 2**20} MB: refused")
        return answer


def version_key(version: str) -> tuple[int, ...]:
    """'2024.1.114' -> (2024, 1, 114); a suffix such as '-dev' is ignored."""
    numbers = re.match(r"\d+(\.\d+)*", version.strip())
    if numbers is None:
        raise ValueError(f"{version!r} is not a version number")
    return tuple(int(part) for part in numbers.group().split("."))
