"""What the PBX does for enabled modules, as the admin-shell stand-in does it: keep their
workers running (restarting any that exit), stop the workers of disabled modules, and reload
nginx when a module's location appears or goes. MikoPBX does the same with its worker
watchdog and its generated nginx includes."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from daemon.lifecycle import PbxTree, worker_pid_file

log = logging.getLogger("extcdr.supervisor")
_RESTART_DELAY_S = 2.0


@dataclass
class _Worker:
    process: subprocess.Popen
    version: str
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    def __init__(self, tree: PbxTree, reload_nginx: Callable[[], None]):
        self.tree = tree
        self.reload_nginx = reload_nginx
        self.workers: dict[tuple[str, str], _Worker] = {}
        self.exited: dict[tuple[str, str], float] = {}
        self.locations: tuple = self._locations()
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def run(self, interval: float = 1.0) -> None:
        while not self.stopping.wait(interval):
            try:
                self.reconcile()
            except Exception:               # the config DB busy, a file half-written: next time
                log.exception("supervisor: reconcile failed")

    def reconcile(self) -> None:
        """Bring workers and nginx in line with the modules' state now."""
        with self.lock:
            # nginx first: a module going away leaves no location pointing at stopped workers.
            locations = self._locations()
            if locations != self.locations:
                self.locations = locations
                self.reload_nginx()
            wanted = self._wanted()
            for key in [k for k, w in self.workers.items()
                        if k not in wanted or wanted[k][1] != w.version]:
                self._stop(key)
            now = time.monotonic()
            for key, (argv, version, cwd) in wanted.items():
                worker = self.workers.get(key)
                if worker is not None and worker.process.poll() is None:
                    continue
                if worker is not None:
                    log.warning("%s %s worker exited with %s; restarting", *key,
                                worker.process.returncode)
                    self.workers.pop(key)
                    self.exited[key] = now
                if now - self.exited.get(key, -_RESTART_DELAY_S) >= _RESTART_DELAY_S:
                    self._start(key, argv, version, cwd)

    def wait_listening(self, module_id: str, address: str, timeout: float = 15.0) -> bool:
        """Whether the module's web worker accepts connections within `timeout`."""
        host, _, port = address.rpartition(":")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, int(port)), timeout=0.5).close()
                return True
            except OSError:
                time.sleep(0.1)
                self.reconcile()
        return False

    def close(self) -> None:
        self.stopping.set()
        with self.lock:
            for key in list(self.workers):
                self._stop(key)

    def _wanted(self) -> dict[tuple[str, str], tuple[list[str], str, Path]]:
        wanted = {}
        for row in self.tree.installed():
            folder = self.tree.module_dir(row["uniqid"])
            if row["disabled"] != "0" or not (folder / "registration.json").is_file():
                continue
            registration = json.loads((folder / "registration.json").read_text())
            for name, argv in registration.get("workers", {}).items():
                wanted[(row["uniqid"], name)] = (argv, row["version"], folder)
        return wanted

    def _start(self, key: tuple[str, str], argv: list[str], version: str, cwd: Path) -> None:
        module_id, name = key
        logs = self.tree.root / "logs"
        logs.mkdir(exist_ok=True)
        self.tree.run_dir.mkdir(exist_ok=True)
        with open(logs / f"{module_id}.{name}.log", "ab") as out:
            process = subprocess.Popen([sys.executable, *argv], cwd=cwd, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env={**os.environ, "PYTHONPATH": str(cwd)})
        worker_pid_file(self.tree, module_id, name).write_text(str(process.pid))
        self.workers[key] = _Worker(process, version)
        log.info("started %s %s worker (pid %d)", module_id, name, process.pid)

    def _stop(self, key: tuple[str, str]) -> None:
        worker = self.workers.pop(key)
        worker.process.terminate()
        try:
            worker.process.wait(10)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
        worker_pid_file(self.tree, *key).unlink(missing_ok=True)
        log.info("stopped %s %s worker", *key)

    def _locations(self) -> tuple:
        return tuple(sorted((p.name, p.stat().st_mtime_ns)
                            for p in self.tree.locations.glob("*.conf")))


def reload_nginx(master: subprocess.Popen, patience_s: float = 5.0) -> None:
    """Make nginx re-read its configuration, and return once workers with the new one run
    (the old ones stop taking connections then), so the next request sees the change."""
    before = _children(master.pid)
    master.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline and not (_children(master.pid) - before):
        time.sleep(0.02)


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found
