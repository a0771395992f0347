"""What the PBX does for enabled modules, as the admin-shell stand-in does it: keep their PHP
workers running as Core starts them (`php -f <worker> start`, restarting any that exit), stop
the workers of disabled modules, and reload nginx when a module's location appears or goes.
MikoPBX does the same with its worker watchdog (WorkerSafeScriptsCore) and its generated nginx
includes; a module whose worker keeps dying is disabled (DisabledByCrashLoop) — Core 2026.1 at
100 crashes in 30 minutes, the stand-in at 5 in 2 minutes."""
from __future__ import annotations

import json
import logging
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pbxmodule.lifecycle import DISABLED_BY_CRASH_LOOP, PbxTree, worker_pid_file

log = logging.getLogger("extcdr.supervisor")
_RESTART_DELAY_S = 2.0
_CRASH_LIMIT = 5          # exits within the window that disable a module, as MikoPBX does
_CRASH_WINDOW_S = 120.0


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
        self.exits: dict[tuple[str, str], list[float]] = {}     # recent exits, oldest first
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
            self._reload_nginx_if_changed()
            wanted = self._wanted()
            for key in [k for k, w in self.workers.items()
                        if k not in wanted or wanted[k][1] != w.version]:
                self._stop(key)
            now = time.monotonic()
            for key, (argv, version, cwd) in wanted.items():
                worker = self.workers.get(key)
                if worker is not None and worker.process.poll() is None:
                    continue
                if worker is not None and self._exited(key, worker, now):
                    continue
                exits = self.exits.get(key, [])
                if not exits or now - exits[-1] >= _RESTART_DELAY_S:
                    self._start(key, argv, version, cwd)
            self._reload_nginx_if_changed()          # a module disabled for its crashes

    def _reload_nginx_if_changed(self) -> None:
        locations = self._locations()
        if locations != self.locations:
            self.locations = locations
            self.reload_nginx()

    def _exited(self, key: tuple[str, str], worker: _Worker, now: float) -> bool:
        """Note a worker's exit; True when its module was disabled for exiting too often."""
        self.workers.pop(key)
        worker_pid_file(self.tree, *key).unlink(missing_ok=True)
        exits = [t for t in self.exits.get(key, []) if now - t < _CRASH_WINDOW_S] + [now]
        self.exits[key] = exits
        module_id, name = key
        log_file = self.tree.root / "logs" / f"{module_id}.{name}.log"
        if len(exits) < _CRASH_LIMIT:
            log.warning("%s %s worker exited with %s; restarting", module_id, name,
                        worker.process.returncode)
            return False
        reason = (f"its {name} worker exited {len(exits)} times within "
                  f"{_CRASH_WINDOW_S:.0f} s (exit code {worker.process.returncode}); see "
                  f"{log_file}")
        log.error("%s disabled: %s", module_id, reason)
        self.tree.set_state(module_id, disabled=True, reason=DISABLED_BY_CRASH_LOOP, text=reason)
        self.tree.location_file(module_id).unlink(missing_ok=True)
        self.exits.pop(key)
        return True

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
            for name, file in registration.get("workers", {}).items():
                wanted[(row["uniqid"], name)] = (
                    self.tree.worker_command(row["uniqid"], file), row["version"], folder)
        return wanted

    def _start(self, key: tuple[str, str], argv: list[str], version: str, cwd: Path) -> None:
        module_id, name = key
        logs = self.tree.root / "logs"
        logs.mkdir(exist_ok=True)
        self.tree.run_dir.mkdir(exist_ok=True)
        with open(logs / f"{module_id}.{name}.log", "ab") as out:
            process = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=self.tree.core_env())
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
    """Make nginx re-read its configuration, and return once no worker with the old one takes
    connections (each has exited or says it is shutting down, which it does when it closes
    its listening sockets), so the next request sees the change."""
    before = child_processes(master.pid)
    master.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline and any(_accepting(pid) for pid in before):
        time.sleep(0.02)


def _accepting(pid: int) -> bool:
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return bool(title) and b"shutting down" not in title


def child_processes(pid: int) -> set[int]:
    """The processes whose parent is `pid` (/proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found
