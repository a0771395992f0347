"""`extcdr mail-catcher`: an SMTP server for the demo (and development) that keeps every mail
it is given as an `.eml` file, so mailed reports can be opened without a real mail server."""
from __future__ import annotations

import argparse
import signal
import socket
import threading
import time
from email import message_from_bytes, policy
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="127.0.0.1:8025", metavar="HOST:PORT",
                        help="where to take mail (loopback)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the .eml files")


class _Keeper:
    """aiosmtpd handler: each mail becomes `<time>-<n>.eml` in the folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        path = self.folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{self.count}.eml"
        path.write_bytes(envelope.content)
        subject = message_from_bytes(envelope.content, policy=policy.default)["Subject"]
        print(f"mail for {', '.join(envelope.rcpt_tos)}: {subject} -> {path}", flush=True)
        return "250 kept"


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def run(args: argparse.Namespace) -> int:
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        raise ValueError("mail-catcher needs aiosmtpd: ./bin/demo installs it") from None
    host, _, port = args.listen.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"--listen must be HOST:PORT, not {args.listen!r}")
    port = int(port) or _free_port(host)
    args.out.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())   # before anyone may know it runs
    controller = Controller(_Keeper(args.out), hostname=host, port=port)
    controller.start()
    print(f"mail catcher listening on {host}:{port}, keeping mail in {args.out}", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    controller.stop()
    return 0

