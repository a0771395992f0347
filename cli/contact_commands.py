"""The module's contacts from the command line: `contacts import` (a CSV or vCard file, with the
page's preview printed: counts and a line per row with a message; `--dry-run` saves nothing)
and `contacts list`. The shell's user acts as an admin (whoever has a shell on the PBX is one).
"""
from __future__ import annotations

import getpass
import time
from pathlib import Path

from cli.base import CliError, Parser, add_db_argument
from mirror import contacts
from mirror import settings as settings_module
from mirror.contact_files import MAX_FILE_BYTES, parse_contacts_file
from mirror.database import open_module_db
from pbx.mirror_context import MirrorContext

_ACTIONS = {"add": "to add", "update": "to update", "same": "unchanged", "refused": "refused"}


def add_commands(sub) -> dict:
    group = sub.add_parser("contacts", help="import or list the contacts (names for outside "
                           "numbers)")
    actions = group.add_subparsers(dest="contacts_command", required=True, parser_class=Parser)
    imports = actions.add_parser("import", help="import a CSV or vCard file; re-importing "
                                 "updates its contacts, never duplicates them")
    add_db_argument(imports)
    imports.add_argument("file", metavar="FILE", type=Path)
    imports.add_argument("--dry-run", action="store_true",
                         help="print what would change, save nothing")
    imports.add_argument("--config", type=Path, help="settings file (TOML)")
    listing = actions.add_parser("list", help="the contacts by name")
    add_db_argument(listing)
    listing.add_argument("--search", default="", metavar="TEXT",
                         help="a part of a name, company, e-mail or number")
    listing.add_argument("--config", type=Path, help="settings file (TOML)")
    return {"contacts": cmd_contacts}


def cmd_contacts(args) -> int:
    return {"import": _import, "list": _list}[args.contacts_command](args)


def _import(args) -> int:
    if not args.file.is_file():
        raise CliError(f"{args.file}: no such file")
    if args.file.stat().st_size > MAX_FILE_BYTES:
        raise CliError(f"{args.file}: the file is too big: at most "
                       f"{MAX_FILE_BYTES // 1024 // 1024} MB of contacts at once")
    data = args.file.read_bytes()
    db = open_module_db(args.db)
    try:
        digits = MirrorContext(settings_module.load(args.config), db).match_digits()
        try:
            parsed = parse_contacts_file(data, digits)
        except contacts.ContactFileError as exc:
            raise CliError(f"{args.file}: {exc}") from None
        plan = contacts.plan_import(db, parsed, digits)
        kind = "vCard" if plan.kind == "vcard" else "CSV"
        counts = plan.counts()
        print(f"{args.file.name} ({kind}, {plan.encoding}): "
              + ", ".join(f"{counts[action]} {words}" for action, words in _ACTIONS.items()))
        for row in plan.rows:
            for message in row.messages:
                print(f"row {row.row}: {_ACTIONS[row.action]}: {message}")
        if args.dry_run:
            print("dry run: nothing saved")
        else:
            contacts.apply_import(db, plan, getpass.getuser(), int(time.time() * 1000), digits)
    finally:
        db.close()
    return 0


def _list(args) -> int:
    db = open_module_db(args.db, readonly=True)
    try:
        rows, total = contacts.list_contacts(db, args.search, limit=10**9)
    finally:
        db.close()
    for contact in rows:
        company = f" ({contact['company']})" if contact["company"] else ""
        print(f"{contact['id']:>6}  {contact['name']}{company}  {', '.join(contact['numbers'])}"
              + (f"  {contact['email']}" if contact["email"] else ""))
    print(f"{total:,} contact{'' if total == 1 else 's'}"
          + (f" matching {args.search!r}" if args.search else ""))
    return 0
