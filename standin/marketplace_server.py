"""A stand-in module marketplace and licence service for tests and the demo
(`extcdr marketplace`): it serves the archives in a folder and issues licences for the keys and
coupons in its `keys.json`, signed with its own Ed25519 key; it binds each key to the first PBX
that activates it. The module reaches it through `pbxmodule.marketplace.MarketplaceClient`.

Folder: `archives/*.zip`, `keys.json` ({"KEY": {"product_id", "features", "days"}}),
`activations.json` (key -> host id, written by the server), `signing.key` (created on first
start), `endpoint.json` (its URL and public key, written when it listens).
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import threading
import time
import zipfile
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (Encoding, NoEncryption, PrivateFormat,
                                                          PublicFormat, load_pem_private_key)

from pbxmodule.licence import Grant, LicenceError, check_key

log = logging.getLogger("extcdr.marketplace")


# --- the licence service's half: signing ------------------------------------------------

def sign(grant: Grant, private_key: Ed25519PrivateKey) -> str:
    """The licence text the marketplace hands out: the grant and its signature."""
    signature = base64.b64encode(private_key.sign(grant.payload())).decode()
    return json.dumps({"grant": asdict(grant), "signature": signature}, indent=1) + "\n"


def public_key_text(private_key: Ed25519PrivateKey) -> str:
    """The public half, as the PBX is told to trust it (base64 of the raw 32 bytes)."""
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()



# --- the server ---------------------------------------------------------------------------

class Marketplace:
    """The stand-in's state: its folder, signing key and the requests it was asked."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        (self.folder / "archives").mkdir(parents=True, exist_ok=True)
        self.signing_key = _signing_key(self.folder / "signing.key")
        self.public_key = public_key_text(self.signing_key)
        self.requests: list[str] = []
        self.lock = threading.Lock()

    def offers(self) -> list[dict]:
        offers = []
        for archive in sorted((self.folder / "archives").glob("*.zip")):
            with zipfile.ZipFile(archive) as z:
                description = json.loads(z.read("module.json"))
            data = archive.read_bytes()
            offers.append({"uniqid": description["moduleUniqueID"],
                           "version": description["version"],
                           "min_pbx_version": description.get("min_pbx_version", ""),
                           "name": description.get("name", {}), "size": len(data),
                           "sha256": hashlib.sha256(data).hexdigest(), "file": archive.name})
        return offers

    def activate(self, body: dict) -> tuple[int, str]:
        """(HTTP status, licence text or error message) for an activation request."""
        try:
            key = check_key(str(body["key"]))
            host_id = str(body["host_id"])
            product_id, feature_id = int(body["product_id"]), int(body["feature_id"])
        except LicenceError as exc:
            return 400, str(exc)
        except (KeyError, TypeError, ValueError):
            return 400, "key, host_id, product_id and feature_id are required"
        keys = _read_json(self.folder / "keys.json")
        entry = keys.get(key)
        if entry is None:
            return 404, "this key or coupon is unknown: check it for typos"
        if product_id != entry.get("product_id") or feature_id not in entry.get("features", []):
            return 403, f"this key does not include product {product_id} feature {feature_id}"
        with self.lock:
            activations = _read_json(self.folder / "activations.json")
            bound = activations.setdefault(key, {"host_id": host_id, "at": int(time.time())})
            if bound["host_id"] != host_id:
                return 409, "this key was already activated on another PBX"
            _write_json(self.folder / "activations.json", activations)
        expires = bound["at"] + int(entry.get("days", 365)) * 86_400
        if time.time() >= expires:
            return 403, "this key has expired"
        grant = Grant(key=key, host_id=host_id, product_id=product_id, feature_id=feature_id,
                      issued=int(time.time()), expires=expires)
        return 200, sign(grant, self.signing_key)


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def do_GET(self):
        market = self.server.market
        market.requests.append(f"GET {self.path}")
        if self.path == "/api/v1/modules":
            offers = [{k: v for k, v in o.items() if k != "file"} for o in market.offers()]
            return self._reply(200, json.dumps(offers).encode())
        found = re.fullmatch(r"/api/v1/modules/([A-Za-z0-9_]+)/([0-9A-Za-z.\-]+)\.zip", self.path)
        for offer in market.offers() if found else ():
            if (offer["uniqid"], offer["version"]) == found.groups():
                data = (market.folder / "archives" / offer["file"]).read_bytes()
                return self._reply(200, data, "application/zip")
        self._reply(404, json.dumps({"error": "no such module version"}).encode())

    def do_POST(self):
        market = self.server.market
        market.requests.append(f"POST {self.path}")
        if self.path != "/api/v1/licences":
            return self._reply(404, b'{"error": "not found"}')
        try:
            body = json.loads(self.rfile.read(min(int(self.headers.get("Content-Length", 0)),
                                                  65_536)))
        except ValueError:
            body = {}
        status, text = market.activate(body if isinstance(body, dict) else {})
        reply = text.encode() if status == 200 else json.dumps({"error": text}).encode()
        self._reply(status, reply)

    def _reply(self, status: int, data: bytes, kind: str = "application/json"):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        log.info("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, market: Marketplace):
        super().__init__(address, _Handler)
        self.market = market


def serve(folder: Path, host: str = "127.0.0.1", port: int = 0) -> tuple[_Server, str]:
    """A listening stand-in (not yet serving: call `serve_forever`) and its URL; its URL and
    public key are also written to `endpoint.json` in the folder."""
    market = Marketplace(folder)
    server = _Server((host, port), market)
    url = f"http://{host}:{server.server_address[1]}/"
    _write_json(market.folder / "endpoint.json", {"url": url, "public_key": market.public_key})
    return server, url


def add_arguments(parser) -> None:
    parser.add_argument("--dir", required=True, type=Path,
                        help="archives/, keys.json, activations.json, signing.key")
    parser.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT")


def run(args) -> int:
    host, _, port = args.listen.rpartition(":")
    server, url = serve(args.dir, host or "127.0.0.1", int(port or 0))
    print(f"marketplace on {url} (public key in {args.dir / 'endpoint.json'})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _signing_key(path: Path) -> Ed25519PrivateKey:
    if path.exists():
        return load_pem_private_key(path.read_bytes(), password=None)
    key = Ed25519PrivateKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return key


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def _write_json(path: Path, value: dict) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    partial.replace(path)
