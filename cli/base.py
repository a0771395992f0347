"""What every command group shares: the one-line error, the parser that raises it, logging."""
from __future__ import annotations

import argparse
import logging
import logging.handlers
import sys
from pathlib import Path
from typing import Callable

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
