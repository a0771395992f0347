"""Big exports as background jobs: a thread builds the file (the same `export_file` as any
export) while the page shows its progress; the file waits an hour for its owner, then goes.

Bounded so that nobody can fill the disk or the process: a user has at most
`USER_RUNNING` exports being built and `USER_KEPT` kept, the process builds at most
`RUNNING` at once; the files live in a temp folder named with the process's pid, removed when
the process ends and swept at the next start if it was killed."""
from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pbxmodule.pids import remove_orphaned_folders

KEEP_SECONDS = 3600
USER_RUNNING = 2
USER_KEPT = 5
RUNNING = 4
_FOLDER_PREFIX = "extcdr-exports-"


class JobRefused(Exception):
    """Too many exports at once; the message says what to do."""


@dataclass
class ExportJob:
    user: str
    fmt: str
    total: int
    done: int = 0
    path: Path | None = None
    error: str | None = None
    finished_at: float | None = None
    download_name: str = ""           # the file's name for the user (its filter, when asked)

    def progress(self, done: int) -> None:
        self.done = done

    def as_dict(self) -> dict:
        return {"done": self.done, "total": self.total, "ready": self.path is not None,
                "error": self.error}


class ExportJobs:
    """The running and finished export jobs of this process, by id; each user sees only theirs."""

    def __init__(self, directory: Path | None = None):
        self._directory = directory
        self.jobs: dict[str, ExportJob] = {}
        self.lock = threading.Lock()
        remove_orphaned_folders(_FOLDER_PREFIX)

    @property
    def directory(self) -> Path:
        """Where the files go: a private temp dir made for the first job of the process."""
        with self.lock:
            if self._directory is None:
                self._directory = Path(tempfile.mkdtemp(prefix=f"{_FOLDER_PREFIX}{os.getpid()}-"))
                atexit.register(shutil.rmtree, self._directory, ignore_errors=True)
            return self._directory

    def start(self, user: str, fmt: str, total: int,
              build: Callable[[Path, Callable[[int], None]], object],
              download_name: str = "") -> str:
        """Run `build(path, progress)` in a thread; returns the job's id."""
        self.sweep()
        job_id = secrets.token_urlsafe(16)
        job = ExportJob(user, fmt, total, download_name=download_name or f"calls.{fmt}")
        with self.lock:
            self._admit(user)
            self.jobs[job_id] = job
        folder = self.directory / job_id
        threading.Thread(target=self._run, args=(job, folder, build), daemon=True,
                         name=f"export-{job_id[:6]}").start()
        return job_id

    def _run(self, job: ExportJob, folder: Path, build) -> None:
        folder.mkdir(parents=True)
        path = folder / f"calls.{job.fmt}"
        try:
            build(path, job.progress)
            job.path = path
        except Exception as exc:     # reported to the page: the export failed, say why
            job.error = str(exc) or type(exc).__name__
            shutil.rmtree(folder, ignore_errors=True)
        job.finished_at = time.time()

    def _admit(self, user: str) -> None:
        """Refuse a job over the caps (called under the lock)."""
        running = [job for job in self.jobs.values() if job.finished_at is None]
        mine = [job for job in self.jobs.values() if job.user == user]
        if sum(job.finished_at is None for job in mine) >= USER_RUNNING:
            raise JobRefused(f"{USER_RUNNING} of your exports are being built; wait until "
                             f"they are ready")
        if len(mine) >= USER_KEPT:
            raise JobRefused(f"you have {USER_KEPT} exports waiting to be downloaded; they go "
                             f"an hour after they are ready")
        if len(running) >= RUNNING:
            raise JobRefused("the PBX is building other exports; try again in a minute")

    def get(self, user: str, job_id: str) -> ExportJob | None:
        job = self.jobs.get(job_id)
        return job if job is not None and job.user == user else None

    def sweep(self, now: float | None = None) -> None:
        """Forget jobs (and delete files) finished more than an hour ago."""
        now = time.time() if now is None else now
        with self.lock:
            old = [i for i, j in self.jobs.items()
                   if j.finished_at is not None and now - j.finished_at > KEEP_SECONDS]
            for job_id in old:
                del self.jobs[job_id]
        for job_id in old:
            shutil.rmtree(self.directory / job_id, ignore_errors=True)

