"""API tokens from the command line (`extcdr token`): create (the token is printed once; only
its digest is kept), list, revoke — what an admin does on the API tokens page. Whoever has a
shell on the PBX is its administrator."""
from __future__ import annotations

import getpass
import json
import sys
import time

from cli.base import CliError, add_db_argument
from mirror import settings as settings_module
from mirror.database import open_module_db
from mirror.records import iso_time
from mirror.tokens import MAX_EXPIRY_DAYS, ROLES, TokenError, create_token, revoke_token, token_list
from pbx.mirror_context import MirrorContext


def add_commands(sub) -> dict:
    token = sub.add_parser("token", help="API tokens for scripts: create, list, revoke")
    actions = token.add_subparsers(dest="token_action", required=True,
                                   parser_class=type(token))
    create = actions.add_parser("create", help="a new token, printed once")
    add_db_argument(create)
    create.add_argument("--name", required=True, help="who uses it (the CRM, a script)")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--extensions", default="",
                        help="an operator's or a supervisor's token: the extensions whose calls "
                             "it sees (201,202)")
    create.add_argument("--groups", default="",
                        help="a supervisor's token: the employee groups whose members' calls "
                             "it sees too (Sales,Support)")
    create.add_argument("--pbxs", default="",
                        help="a history several PBXs write: the PBXs whose calls it sees "
                             "(office,branch-2; default: every PBX's)")
    create.add_argument("--expires-days", type=int, metavar="N",
                        help=f"expires after N days (1 to {MAX_EXPIRY_DAYS}; default: never)")
    listing = actions.add_parser("list", help="the tokens (never the tokens themselves)")
    add_db_argument(listing)
    listing.add_argument("--format", choices=("text", "json"), default="text")
    revoke = actions.add_parser("revoke", help="revoke a token from now on")
    add_db_argument(revoke)
    revoke.add_argument("id", type=int, metavar="ID")
    return {"token": run}


def run(args) -> int:
    db = open_module_db(args.db)
    try:
        return {"create": _create, "list": _list, "revoke": _revoke}[args.token_action](db, args)
    except TokenError as error:
        raise CliError(str(error)) from None
    finally:
        db.close()


def _now() -> int:
    return int(time.time() * 1000)


def _create(db, args) -> int:
    if args.expires_days is not None and not 1 <= args.expires_days <= MAX_EXPIRY_DAYS:
        raise CliError(f"--expires-days: from 1 to {MAX_EXPIRY_DAYS}")
    token_id, token = create_token(db, args.name, args.role, args.extensions.split(","),
                                   f"{getpass.getuser()} (command line)", _now(),
                                   args.expires_days, groups=args.groups.split(","),
                                   pbxs=args.pbxs.split(","))
    print(token)
    print(f"token {token_id} created: shown this once, keep it now (only its digest is kept)",
          file=sys.stderr)
    return 0


def _list(db, args) -> int:
    tokens = token_list(db)
    if args.format == "json":
        for token in tokens:
            print(json.dumps(token, ensure_ascii=False))
        return 0
    tz = MirrorContext(settings_module.load(), db).clock().tz
    for token in tokens:
        print(" | ".join((str(token["id"]), token["name"], token["role"],
                          _scope(token),
                          "created " + _when(token["created_ms"], tz),
                          "last used " + _when(token["last_used_ms"], tz),
                          "expires " + _when(token["expires_ms"], tz),
                          "revoked " + _when(token["revoked_ms"], tz)
                          if token["revoked_ms"] else "active")))
    if not tokens:
        print("no API tokens")
    return 0


def _scope(token: dict) -> str:
    """What the token sees, in words: its extensions, then its groups; then its PBXs."""
    seen = "every call" if token["role"] == "admin" else ",".join(
        token["extensions"] + [f"group {g}" for g in token["groups"]])
    return seen + (f" of PBX {','.join(token['pbxs'])}" if token["pbxs"] else "")


def _when(epoch_ms: int | None, tz) -> str:
    return "never" if epoch_ms is None else iso_time(epoch_ms, tz)


def _revoke(db, args) -> int:
    try:
        revoke_token(db, args.id, _now())
    except LookupError:
        raise CliError(f"no API token {args.id}; see extcdr token list") from None
    print(f"token {args.id} revoked")
    return 0
