"""API tokens: what scripts (a CRM pulling the worklist) send instead of a browser session.

An admin creates one with a name, a role and maybe an expiry. What it may see: an admin's
token every call; an operator's the calls its extensions took part in; a supervisor's the
calls its extensions or the members of its employee groups (as they are at each request, as a
supervisor an admin limited to groups on the settings page) took part in — never every call:
a supervisor's token names the groups or extensions it is for, and one that names neither
opens nothing. In a history several PBXs write, a token may be limited to some PBXs (`pbxs`):
it sees only their calls, whatever its role; one made by an admin limited to PBXs is limited to
theirs, and such an admin sees and revokes only tokens within them. The token is shown once:
only its SHA-256 digest is kept, so a copy of module.db opens nothing. A token is revoked,
never deleted (its name stays in the list, and in what it marked handled). The web process and
the CLI write the table in short transactions; a token's last use is written at most once a
minute.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import unicodedata
from dataclasses import dataclass

from peewee import Database, OperationalError

from mirror.dialect import run, write_transaction, write_transaction_at_once
from mirror.queries import group_names, within_pbxs
from mirror.settings import PBX_ID

PREFIX = "extcdr_"                  # recognisable in logs and by secret scanners
_TOKEN = re.compile(r"extcdr_[A-Za-z0-9_-]{43}")    # 32 random bytes, base64url
ROLES = ("admin", "supervisor", "operator")
NAME_LIMIT = 60
LAST_USED_EVERY_MS = 60_000         # a token's last use is written at most this often
MAX_EXPIRY_DAYS = 3650
_EXTENSION = re.compile(r"[0-9A-Za-z*#+_-]{1,20}")
_MARKUP = re.compile(r"[<>&\"'`]")


class TokenError(ValueError):
    """A token request users can correct (a bad name, role or extension)."""


class TokenRefused(Exception):
    """A request's token opens nothing: unknown, malformed, revoked or expired."""


@dataclass(frozen=True)
class TokenHolder:
    """Who a valid token speaks for."""
    id: int
    name: str
    role: str
    extensions: tuple[str, ...]
    groups: tuple[str, ...] = ()
    pbxs: tuple[str, ...] = ()      # the PBXs whose calls it sees (): every PBX's


def digest(token: str) -> str:
    """What is kept of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_fields(name: str, role: str, extensions,
                 groups=()) -> tuple[str, str, list[str], list[str]]:
    """A token's name, role, extensions and groups as kept; TokenError saying what is
    wrong."""
    name = " ".join(str(name).split())
    if not name:
        raise TokenError("give the token a name (who uses it: the CRM, a script)")
    if len(name) > NAME_LIMIT:
        raise TokenError(f"a token name has at most {NAME_LIMIT} characters")
    if _MARKUP.search(name) or any(unicodedata.category(ch)[0] == "C" for ch in name):
        raise TokenError("a token name is plain text: no < > & \" ' ` characters")
    if role not in ROLES:
        raise TokenError(f"unknown role {str(role)[:20]!r}; use one of: {', '.join(ROLES)}")
    extensions = sorted({str(e).strip() for e in extensions if str(e).strip()})
    bad = [e for e in extensions if not _EXTENSION.fullmatch(e)]
    if bad:
        raise TokenError(f"bad extension {bad[0][:20]!r}: give extension numbers, "
                         f"comma-separated")
    groups = sorted({" ".join(str(g).split()) for g in groups if str(g).strip()})
    bad = [g for g in groups if len(g) > NAME_LIMIT
           or any(unicodedata.category(ch)[0] == "C" for ch in g)]
    if bad:
        raise TokenError(f"bad group {bad[0][:20]!r}: give employee group names")
    if role == "operator" and not extensions:
        raise TokenError("an operator's token needs the extensions whose calls it may see")
    if role == "operator" and groups:
        raise TokenError("an operator's token sees its extensions' calls: give groups to a "
                         "supervisor's token")
    if role == "supervisor" and not extensions and not groups:
        raise TokenError("a supervisor's token needs the groups or extensions whose calls it "
                         "may see (an admin's token sees every call)")
    if role == "admin" and (extensions or groups):
        raise TokenError("an admin's token sees every call: give extensions or groups to an "
                         "operator's or a supervisor's token")
    return name, role, extensions, groups


def token_pbxs(chosen, limited_to=()) -> list[str]:
    """The PBXs a new token is limited to: those `chosen` (PBX ids; none: every PBX's), within
    `limited_to`, the PBXs of an admin limited to some (none chosen: all of theirs)."""
    chosen = sorted({str(p).strip() for p in chosen if str(p).strip()})
    bad = [p for p in chosen if not PBX_ID.fullmatch(p)]
    if bad:
        raise TokenError(f"bad PBX {bad[0][:40]!r}: give PBX ids (pbx.id: 1-32 of a-z, 0-9 "
                         f"and '-'), comma-separated")
    outside = [p for p in chosen if limited_to and p not in limited_to]
    if outside:
        raise TokenError(f"you may give a token only the PBXs whose calls you see, not "
                         f"{outside[0]!r}")
    return chosen or sorted(limited_to)


def _known_groups(db: Database, groups: list[str]) -> None:
    known = set(group_names(db))
    unknown = [g for g in groups if g not in known]
    if unknown:
        raise TokenError(f"unknown employee group {unknown[0][:40]!r}")


def create_token(db: Database, name: str, role: str, extensions, created_by: str,
                 now_ms: int, expires_days: int | None = None,
                 groups=(), pbxs=()) -> tuple[int, str]:
    """A new token: (its id, the token itself — shown once, never kept). `groups`: the
    employee groups a supervisor's token is for (each one the PBX has); `pbxs`: the PBXs
    whose calls it sees (`token_pbxs`; none: every PBX's)."""
    name, role, extensions, groups = token_fields(name, role, extensions, groups)
    pbxs = token_pbxs(pbxs)
    _known_groups(db, groups)
    if expires_days is not None and not 1 <= expires_days <= MAX_EXPIRY_DAYS:
        raise TokenError(f"a token expires after 1 to {MAX_EXPIRY_DAYS} days")
    token = PREFIX + secrets.token_urlsafe(32)
    expires_ms = now_ms + expires_days * 86_400_000 if expires_days else None
    with write_transaction(db):
        token_id = run(
            db, "INSERT INTO api_token (name, digest, role, extensions, groups, pbxs, "
            "created_by, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (name, digest(token), role, json.dumps(extensions),
             json.dumps(groups, ensure_ascii=False), json.dumps(pbxs), created_by, now_ms,
             expires_ms)
        ).fetchone()[0]
    return token_id, token


_COLUMNS = ("id", "name", "role", "extensions", "groups", "pbxs", "created_by", "created_ms",
            "expires_ms", "revoked_ms", "last_used_ms")


def token_list(db: Database, limited_to=()) -> list[dict]:
    """Every token (of an admin limited to the PBXs `limited_to`: those within them), newest
    first, without its digest."""
    rows = run(db, f"SELECT {', '.join(_COLUMNS)} FROM api_token ORDER BY id DESC")
    tokens = [{**dict(zip(_COLUMNS, row)), "extensions": json.loads(row[3]),
               "groups": json.loads(row[4]), "pbxs": json.loads(row[5])} for row in rows]
    return [token for token in tokens if within_pbxs(token["pbxs"], limited_to)]


def revoke_token(db: Database, token_id: int, now_ms: int, limited_to=()) -> None:
    """Revoke a token from now on (again: nothing changes); LookupError for an unknown id (or
    one not within the PBXs `limited_to` of an admin limited to some)."""
    with write_transaction(db):
        row = run(db, "SELECT pbxs FROM api_token WHERE id = ?", (token_id,)).fetchone()
        if row is None or not within_pbxs(json.loads(row[0]), limited_to):
            raise LookupError(token_id)
        run(db, "UPDATE api_token SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL",
            (now_ms, token_id))


def token_holder(db: Database, token: str, now_ms: int) -> TokenHolder:
    """Who `token` speaks for, its use noted; TokenRefused saying why it opens nothing."""
    if not _TOKEN.fullmatch(token):
        raise TokenRefused("malformed API token")
    wanted = digest(token)
    row = run(
        db, "SELECT id, name, role, extensions, digest, expires_ms, revoked_ms, last_used_ms, "
        "groups, pbxs FROM api_token WHERE digest = ?", (wanted,)).fetchone()
    # The lookup is by the digest (what a timing could reveal is of the digest, not the
    # token); the comparison itself takes the same time wherever the strings differ.
    if row is None or not hmac.compare_digest(row[4], wanted):
        raise TokenRefused("unknown API token")
    token_id, name, role, extensions, _, expires_ms, revoked_ms, last_used_ms, groups, pbxs = row
    extensions, groups = tuple(json.loads(extensions)), tuple(json.loads(groups))
    if revoked_ms is not None:
        raise TokenRefused("this API token was revoked")
    if expires_ms is not None and expires_ms <= now_ms:
        raise TokenRefused("this API token has expired")
    if role == "supervisor" and not extensions and not groups:
        raise TokenRefused("this supervisor's token names no groups or extensions to see "
                           "(made before they were required): create another")
    if last_used_ms is None or now_ms - last_used_ms >= LAST_USED_EVERY_MS:
        _note_use(db, token_id, now_ms)
    return TokenHolder(token_id, name, role, extensions, groups, tuple(json.loads(pbxs)))


def _note_use(db: Database, token_id: int, now_ms: int) -> None:
    """Write a token's last use if the database is free now: a request never waits for (nor
    fails because of) another writer holding it; the use is written by a later request."""
    try:
        with write_transaction_at_once(db):
            run(db, "UPDATE api_token SET last_used_ms = ? WHERE id = ? AND "
                "(last_used_ms IS NULL OR last_used_ms <= ?)",
                (now_ms, token_id, now_ms - LAST_USED_EVERY_MS))
    except OperationalError:            # busy: another writer has the database
        pass
