"""The whole web stack as the PBX runs it, for tests: real nginx in front, the stand-in admin
shell (login form, session, the `auth_request` endpoint) and the module's app, both served by
waitress on loopback ports. Used by tests/test_nginx.py and tests/test_browser.py."""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from waitress import create_server, wasyncore

from mirror.settings import load
from standin.admin_panel import create_shell_app
from standin.shell import load_users, missing_nginx_modules, nginx_config
from tests.conftest import ROOT
from web import create_app

PREFIX = "/admin-cabinet/module-extended-c-d-r/calls/"
TOKEN = "nginx-only-7f3a9c"
LOOPBACK = "127.0.0.1"


def required_binary(what: str, candidates: tuple[str, ...], install_hint: str) -> str:
    """The path of a program the stack needs. Missing: a failure under CI=true (the CI image
    must have it), else a skip."""
    for candidate in candidates:
        found = shutil.which(candidate) or (candidate if os.path.isabs(candidate)
                                            and os.access(candidate, os.X_OK) else None)
        if found:
            return found
    missing(what, install_hint)


def missing(what: str, install_hint: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing: {install_hint}")
    pytest.skip(f"{what} is not installed")


def nginx_binary() -> str:
    """nginx with the nchan module (live updates), as MikoPBX's nginx is built."""
    nginx = required_binary("nginx", ("nginx", "/usr/sbin/nginx"),
                            "./bin/test installs it (apt-get install nginx)")
    if missing_nginx_modules():
        missing("nginx's lua, ndk or nchan module",
                f"./bin/test installs them ({missing_nginx_modules()})")
    return nginx


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@contextmanager
def serving(app, threads: int = 4) -> Iterator:
    """A WSGI app (waitress) on a free loopback port for the `with` block; `address(server)`
    says where. Stopped after: its workers first — each holds its own connection to
    module.db, closed with the thread (servers left running piled up descriptors until a new
    one's got a number past select()'s 1024 and its loop died) — then its loop, which looks
    for a stop every 20 ms, and only then every socket it had is closed: nothing is closed
    under a running select(), and no thread writes to the loop's wake-up pipe (waitress's
    trigger) while the loop may be closing it."""
    server = create_server(app, host=LOOPBACK, port=0, threads=threads)
    stop = threading.Event()

    def run():
        while not stop.is_set() and server._map:
            wasyncore.loop(timeout=0.02, map=server._map, count=1)

    loop = threading.Thread(target=run, daemon=True)
    loop.start()
    try:
        yield server
    finally:
        server.task_dispatcher.shutdown()
        stop.set()
        loop.join(10)
        assert not loop.is_alive(), "the served app's loop did not stop within 10 s"
        wasyncore.close_all(server._map)


def address(server) -> str:
    """host:port of a server from `serving`."""
    return f"{LOOPBACK}:{server.effective_port}"


class Apart:
    """A WSGI app made and served in a forked process of its own, as the PBX runs the module's
    web process and its login (benchmarks: the server shares no interpreter with the load)."""

    def __init__(self, make_app, threads: int):
        ready = multiprocessing.get_context("fork").Queue()

        def run():
            logging.getLogger("waitress.queue").setLevel(logging.ERROR)   # load is the point
            server = create_server(make_app(), host=LOOPBACK, port=0, threads=threads)
            ready.put(server.effective_port)
            server.run()

        self.process = multiprocessing.get_context("fork").Process(target=run, daemon=True)
        self.process.start()
        self.address = f"{LOOPBACK}:{ready.get(timeout=60)}"

    def close(self):
        self.process.terminate()
        self.process.join(10)


def _wait_listening(port: int, proc: subprocess.Popen, log: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            socket.create_connection((LOOPBACK, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"nginx did not start listening on port {port}: {detail}")


@contextmanager
def admin_shell(mirror_path: Path, recordings_root: Path, run_dir: Path,
                users: Path | list[dict] | None = None, *, proxy_token: str = TOKEN,
                app_threads: int = 4, apart: bool = False,
                cabinet: str | None = None, settings: str = "") -> Iterator[dict]:
    """nginx + stand-in shell + module app over `mirror_path` (module.db) and the PBX's
    `recordings_root`; files under `run_dir`. `users`: a users JSON file, a list of user
    entries, or None for the demo users. Yields {"base": nginx URL, "app": the app's own URL
    (bypassing nginx), "shell": the stand-in's own URL, "prefix", "run_dir"}. `apart`: the
    shell and the app each in a process of its own (see Apart). `cabinet`: the address of
    another admin cabinet to log in to and ask the access check of, instead of the shell.
    `settings`: more of the app's settings, as TOML sections."""
    nginx = nginx_binary()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(users, (list, tuple)):
        (run_dir / "users.json").write_text(json.dumps(list(users)))
        users = run_dir / "users.json"
    accounts = load_users(users)
    with ExitStack() as cleanup:
        if apart:
            shell = Apart(lambda: create_shell_app(accounts, PREFIX), threads=4)
            shell_addr = shell.address
            cleanup.callback(shell.close)
        else:
            shell_addr = address(cleanup.enter_context(serving(create_shell_app(accounts,
                                                                                PREFIX))))
        shell_addr = cabinet or shell_addr
        port = free_port()
        listen = f"{LOOPBACK}:{port}"
        config = run_dir / "extcdr.toml"
        config.write_text(f'[web]\nproxy_token = "{proxy_token}"\n'
                          f'publish_url = "http://{listen}{PREFIX}changes/publish"\n' + settings)
        def make_app():
            app = create_app(load(config, {
                "module.db": mirror_path, "pbx.recordings_root": recordings_root}))
            app.extensions["extcdr_changes"].start()      # as `extcdr web`
            return app
        if apart:
            app_server = Apart(make_app, threads=app_threads)
            app_addr = app_server.address
            cleanup.callback(app_server.close)
        else:
            app = make_app()
            cleanup.callback(app.extensions["extcdr_changes"].stop)
            app_addr = address(cleanup.enter_context(serving(app, threads=app_threads)))
        (run_dir / "nginx.conf").write_text(nginx_config(
            run_dir=run_dir, listen=listen, shell=shell_addr, app=app_addr, prefix=PREFIX,
            proxy_token=proxy_token, recordings_root=recordings_root,
            user="root" if os.geteuid() == 0 else None))
        error_log = run_dir / "error.log"
        stderr = cleanup.enter_context(open(run_dir / "nginx.stderr", "wb"))
        proc = subprocess.Popen([nginx, "-p", str(run_dir), "-c", str(run_dir / "nginx.conf"),
                                 "-e", str(error_log), "-g", "daemon off;"], stderr=stderr)

        def stop_nginx():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        cleanup.callback(stop_nginx)
        _wait_listening(port, proc, error_log)
        yield {"base": f"http://{listen}", "app": f"http://{app_addr}",
               "shell": f"http://{shell_addr}", "prefix": PREFIX, "run_dir": run_dir}


@contextmanager
def pbx_admin_shell(pbx: Path, work: Path) -> Iterator[dict]:
    """The stand-in PBX's admin shell for the PBX folder `pbx` as its own process (`extcdr
    admin-shell --pbx`: nginx, the admin panel, the PBX's workers), files under `work`. Yields
    {"base": its URL, "log": its output file}; stopped (and its workers) on leaving."""
    port = free_port()
    log_path = Path(work) / "shell.log"
    with open(log_path, "w") as log:
        shell = subprocess.Popen([sys.executable, "-m", "standin", "admin-shell", "--pbx", pbx,
                                  "--listen", f"{LOOPBACK}:{port}", "--run-dir",
                                  Path(work) / "nginx"],
                                 cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield {"base": f"http://{LOOPBACK}:{port}", "log": log_path}
        finally:
            shell.terminate()
            shell.wait(30)
