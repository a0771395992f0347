"""`extcdr`: one entry point, one subcommand per job, one module per group of commands:
`cli.mirror` (the mirror: sync, calls, export, status, migrate), `cli.stats` (analytics
reports), `cli.work` (working with calls: comment, tag, delete), `cli.contact_commands`
(contacts: import, list), `cli.api_tokens` (API tokens), `cli.hooks` (webhooks: list, log),
`cli.retention_command` (months of history kept), `cli.serve` (the module's processes: daemon,
web), `cli.module` (the module on a PBX: package, install … uninstall, licence). Another group
plugs in through `main(groups=…)` (the development tree's stand-in PBX: `python -m standin`).
Errors are one line on stderr."""
from __future__ import annotations

import sqlite3
import sys
from types import ModuleType

import peewee

from cli import (api_tokens, contact_commands, hooks, mirror, module, retention_command, serve,
                 stats, work)
from cli.base import CliError, Parser
from mirror.database import ModuleDbError, readable_error
from mirror.queries import QueryError
from pbx.cdr import SourceError
from pbxmodule.errors import LifecycleError, MarketplaceError

# Each group: `add_commands(subparsers) -> {name: command}`; a later group may add to the
# commands of an earlier one (their parsers are in `subparsers.choices`).
GROUPS: tuple[ModuleType, ...] = (mirror, stats, work, contact_commands, api_tokens, hooks,
                                  retention_command, serve, module)


def main(argv: list[str] | None = None, groups: tuple[ModuleType, ...] = GROUPS) -> int:
    args = None
    try:
        parser = Parser(prog="extcdr", description="Extended call history for MikoPBX.")
        sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
        commands = {}
        for group in groups:
            commands.update(group.add_commands(sub))
        args = parser.parse_args(argv)
        return commands[args.command](args)
    except (sqlite3.DatabaseError, peewee.DatabaseError) as exc:   # module.db damaged
        print(f"extcdr: {readable_error(getattr(args, 'db', None) or 'module.db', exc)}",
              file=sys.stderr)
        return 1
    except (CliError, SourceError, ModuleDbError, QueryError, ValueError, LifecycleError,
            MarketplaceError) as exc:
        print(f"extcdr: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()  # output cut by `| head`: not an error
        return 0
    except OSError as exc:
        print(f"extcdr: {exc}", file=sys.stderr)
        return 1
