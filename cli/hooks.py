"""The webhooks from the command line: `extcdr webhooks list` (the hooks and their outbox's
counts) and `extcdr webhooks log HOOK` (its deliveries, newest first); `--redeliver ID` puts
one back to pending. Hooks are created and changed on the settings page."""
from __future__ import annotations

import json

from cli.base import CliError, add_db_argument
from mirror import webhooks
from mirror.database import open_module_db
from mirror.queries import whole_number


def add_commands(sub) -> dict:
    hooks = sub.add_parser("webhooks", help="the webhooks and their deliveries")
    hooks.add_argument("action", choices=("list", "log"))
    hooks.add_argument("hook", nargs="?", help="with log: the hook's id")
    add_db_argument(hooks)
    hooks.add_argument("--limit", default="50", help="with log: deliveries shown (newest)")
    hooks.add_argument("--redeliver", metavar="ID", help="with log: put delivery ID back")
    hooks.add_argument("--format", choices=("text", "json"), default="text")
    return {"webhooks": cmd_webhooks}


def cmd_webhooks(args) -> int:
    db = open_module_db(args.db)
    try:
        if args.action == "list":
            for hook in webhooks.hooks(db):
                hook.pop("secret")
                _print(args.format, hook, lambda h: (
                    f"{h['id']:>4}  {'on ' if h['enabled'] else 'off'}  {h['name']}  {h['url']}"
                    f"  {','.join(h['events'])}  "
                    + " ".join(f"{state} {n}" for state, n in sorted(h["counts"].items()))))
            return 0
        if args.hook is None:
            raise CliError("webhooks log: give the hook's id (see `extcdr webhooks list`)")
        hook_id = whole_number(args.hook, "hook", 1)
        try:
            webhooks.hook_of(db, hook_id)
            if args.redeliver is not None:
                webhooks.redeliver(db, hook_id, whole_number(args.redeliver, "redeliver", 1))
        except LookupError:
            raise CliError(f"no such webhook or delivery: {args.redeliver or hook_id}") from None
        for row in webhooks.deliveries(db, hook_id, limit=whole_number(args.limit, "limit", 1)):
            _print(args.format, row, lambda r: (
                f"{r['id']:>6}  {r['event']:<10} {r['linkedid']}  {r['state']:<9} "
                f"attempts {r['attempts']}  status {r['status'] if r['status'] else '-'}  "
                f"{(r['response'] or '')[:60]!r}"))
        return 0
    finally:
        db.close()


def _print(fmt: str, item: dict, line) -> None:
    print(json.dumps(item, ensure_ascii=False) if fmt == "json" else line(item))
