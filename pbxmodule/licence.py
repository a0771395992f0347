"""The module's licence: a grant of the module's feature to one PBX, signed by the marketplace.

Users type a licence key (`MIKO-XXXXX-XXXXX-XXXXX-XXXXX`) or a coupon
(`MIKOUPD-XXXXX-XXXXX-XXXXX-XXXXX`); the marketplace answers with a `Grant` (this host's id,
the product and feature, an expiry) signed with its Ed25519 key. The module checks the
signature offline with the marketplace's public key, so a licence edited by hand or copied
from another PBX does not verify. The key's format is checked before anything goes out.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pbxmodule.core_licence import CoreLicence
from pbxmodule.package import manifest

KEY_PATTERN = re.compile(r"(MIKO|MIKOUPD)(-[0-9A-Z]{5}){4}")
KEY_FORMATS = "a licence key MIKO-XXXXX-XXXXX-XXXXX-XXXXX or a coupon MIKOUPD-XXXXX-XXXXX-XXXXX-XXXXX"


DAMAGED = "the licence file is damaged: activate the key again"


class LicenceError(ValueError):
    """No usable licence; the message says why and is shown to the user as it is."""


def check_key(text: str) -> str:
    """The key or coupon as the marketplace expects it (upper case, no spaces), or LicenceError."""
    key = "".join(text.split()).upper()
    if not KEY_PATTERN.fullmatch(key):
        raise LicenceError(f"{_shown(text)!r} is not {KEY_FORMATS}")
    return key


def masked(key: str) -> str:
    """A key as pages and logs show it: its kind and last group only."""
    kind, _, rest = key.partition("-")
    return f"{kind}-*****-*****-*****-{rest[-5:]}" if rest else "-"


@dataclass(frozen=True)
class Grant:
    """What a licence says: this feature of this product works on this host until `expires`."""
    key: str
    host_id: str
    product_id: int
    feature_id: int
    issued: int          # UTC epoch seconds
    expires: int

    def payload(self) -> bytes:
        """The signed bytes: canonical JSON, so the same grant always signs the same."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


def verify(text: str, public_key: str, *, host_id: str, product_id: int, feature_id: int,
           now: float | None = None) -> Grant:
    """The grant of a licence text, if the marketplace signed it for this host and feature and
    it has not expired; LicenceError saying what is wrong otherwise."""
    try:
        document = json.loads(text)
        grant = Grant(**{name: document["grant"][name] for name in Grant.__dataclass_fields__})
        signature = base64.b64decode(document["signature"], validate=True)
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error):
        raise LicenceError(DAMAGED) from None
    try:
        _public_key(public_key).verify(signature, grant.payload())
    except InvalidSignature:
        raise LicenceError("the licence was not issued by the marketplace or was altered: "
                           "activate the key again") from None
    if grant.host_id != host_id:
        raise LicenceError(f"the licence was issued for another PBX (host {grant.host_id[:8]}…, "
                           f"this is {host_id[:8]}…): activate a key for this PBX")
    if (grant.product_id, grant.feature_id) != (product_id, feature_id):
        raise LicenceError(f"the licence is for product {grant.product_id} feature "
                           f"{grant.feature_id}, not this module's ({product_id}/{feature_id})")
    if (time.time() if now is None else now) >= grant.expires:
        raise LicenceError(_expired(grant))
    return grant


def _expired(grant: Grant) -> str:
    day = time.strftime("%Y-%m-%d", time.gmtime(grant.expires))
    return f"the licence expired on {day}: renew it or activate a new key"


def _stamp(path: Path) -> tuple:
    """What changes when a file is written or replaced."""
    st = path.stat()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _public_key(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error):
        raise LicenceError("the marketplace's public key is not valid (licence.public_key)") from None


@dataclass(frozen=True)
class LicenceCheck:
    """The module's own check, as its settings say: which public key, licence file and host
    identity. With no public key (a development run outside a PBX) nothing is checked."""
    public_key: str
    file: Path
    host_id_file: Path
    product_id: int
    feature_id: int
    _verified: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, settings) -> "LicenceCheck | CoreLicence":
        """The check the settings name: Core's licence service on a real MikoPBX
        (`licence.core_url`), else the licence file the marketplace signed."""
        if settings["licence.core_url"]:
            return CoreLicence(settings["licence.core_url"])
        description = manifest()
        return cls(settings["licence.public_key"], settings["licence.file"],
                   settings["licence.host_id_file"], int(description["lic_product_id"]),
                   int(description["lic_feature_id"]))

    @property
    def required(self) -> bool:
        return bool(self.public_key)

    def problem(self, now: float | None = None) -> str | None:
        """Why the module may not work now, or None when its licence is valid (or not checked)."""
        if not self.required:
            return None
        try:
            self.grant(now)
        except LicenceError as exc:
            return str(exc)
        return None

    def grant(self, now: float | None = None) -> Grant:
        """The valid grant, or LicenceError. A file verified once is not verified again until
        it (or the host id) changes; its expiry is checked every time."""
        try:
            stamp = _stamp(self.file)
        except FileNotFoundError:
            raise LicenceError("the module has no licence: activate a key or coupon in "
                               "Module marketplace → Licence management") from None
        except OSError as exc:
            raise LicenceError(f"the licence cannot be read: {exc.strerror}") from None
        try:
            stamp += _stamp(self.host_id_file)
        except OSError:
            raise LicenceError(f"this PBX's host id cannot be read ({self.host_id_file})") \
                from None
        verified = self._verified.get(stamp)
        if verified is None:
            try:
                text = self.file.read_text(encoding="utf-8")
            except OSError as exc:
                raise LicenceError(f"the licence cannot be read: {exc.strerror}") from None
            except UnicodeDecodeError:      # binary garbage, a file of another program
                raise LicenceError(DAMAGED) from None
            verified = verify(text, self.public_key, host_id=read_host_id(self.host_id_file),
                              product_id=self.product_id, feature_id=self.feature_id, now=0)
            self._verified.clear()
            self._verified[stamp] = verified
        if (time.time() if now is None else now) >= verified.expires:
            raise LicenceError(_expired(verified))
        return verified


def read_host_id(path: Path) -> str:
    try:
        host_id = path.read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        raise LicenceError(f"this PBX's host id cannot be read ({path})") from None
    if not host_id:
        raise LicenceError(f"this PBX's host id is empty ({path})")
    return host_id


def _shown(text: str) -> str:
    """At most 40 characters of what the user typed, for the message."""
    return text if len(text) <= 40 else text[:37] + "..."
