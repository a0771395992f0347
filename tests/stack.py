"""The whole web stack as the PBX runs it, for tests: real nginx in front, the stand-in admin
shell (login form, session, the `auth_request` endpoint) and the module's app, both served by
waitress on loopback ports. Used by tests/test_nginx.py and tests/test_browser.py."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from waitress import create_server

from daemon.settings import load
from web import create_app
from web.standin import create_shell_app, load_users, nginx_config

PREFIX = "/admin-cabinet/module-extended-cdr/"
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
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing: {install_hint}")
    pytest.skip(f"{what} is not installed")


def nginx_binary() -> str:
    return required_binary("nginx", ("nginx", "/usr/sbin/nginx"),
                           "./bin/test installs it (apt-get install nginx)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def serve(app, threads: int = 4):
    """A WSGI app on a free loopback port in a daemon thread: (host:port, server)."""
    server = create_server(app, host=LOOPBACK, port=0, threads=threads,
                           channel_request_lookahead=1)  # as `extcdr web`: sees left pages
    threading.Thread(target=server.run, daemon=True).start()
    return f"{LOOPBACK}:{server.effective_port}", server


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
                app_threads: int = 4) -> Iterator[dict]:
    """nginx + stand-in shell + module app over `mirror_path` (module.db) and the PBX's
    `recordings_root`; files under `run_dir`. `users`: a users JSON file, a list of user
    entries, or None for the demo users. Yields {"base": nginx URL, "app": the app's own URL
    (bypassing nginx), "shell": the stand-in's own URL, "prefix", "run_dir"}."""
    nginx = nginx_binary()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(users, (list, tuple)):
        (run_dir / "users.json").write_text(json.dumps(list(users)))
        users = run_dir / "users.json"
    accounts = load_users(users)
    with ExitStack() as cleanup:
        shell_addr, shell_server = serve(create_shell_app(accounts, PREFIX))
        cleanup.callback(shell_server.close)
        config = run_dir / "extcdr.toml"
        config.write_text(f'[web]\nproxy_token = "{proxy_token}"\n')
        app_addr, app_server = serve(create_app(load(config, {
            "module.db": mirror_path, "pbx.recordings_root": recordings_root})),
            threads=app_threads)
        cleanup.callback(app_server.close)
        port = free_port()
        listen = f"{LOOPBACK}:{port}"
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
