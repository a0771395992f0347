"""What every command group shares: the one-line error, the parser that raises it, logging."""
from __future__ import annotations

import argparse
import logging
import logging.handlers
import sys
from pathlib import Path
from typing import Callable

from mirror.settings import database_target

Command = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A problem the user can fix; printed as one line."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one readable line instead of usage + message
        raise CliError(f"{self.prog}: {message} (see --help)")


def setup_logging(level: str, syslog: bool) -> None:
    """One line per event worth knowing, in the PBX's style (syslog tag `extcdr`)."""
    if syslog and Path("/dev/log").exists():
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter("extcdr[%(process)d]: %(levelname)s %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s extcdr[%(process)d] %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def add_db_argument(parser, required: bool = True,
                    help: str = "the module's mirror: module.db, or a postgresql:// URL") -> None:
    """`--db`: the mirror the command works on."""
    parser.add_argument("--db", required=required, type=database_target, help=help)


def add_user_arguments(parser, user_help: str) -> None:
    """`--user`/`--users`: act as a user of the admin shell, with their role and extensions."""
    parser.add_argument("--user", help=user_help)
    parser.add_argument("--users", type=Path, help="JSON list of {name, password, role, "
                        "extensions[, language]} (default: the demo users)")
    # The user-loader hook: `users(path) -> {name: web.auth.User}`, given by whatever knows
    # the users (the stand-in shell); a PBX's users live in its admin shell.
    parser.set_defaults(users_of=None)


def chosen_user(args):
    """The user `--user` names (see add_user_arguments), or None without --user."""
    if args.user is None:
        return None
    if args.users_of is None:
        raise CliError("--user: no users are known here (a PBX's users live in its admin "
                       "shell)")
    user = args.users_of(args.users).get(args.user)
    if user is None:
        raise CliError(f"unknown user {args.user!r}" + (f" in {args.users}" if args.users
                                                        else " (give --users FILE)"))
    return user
