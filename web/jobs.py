"""Big exports as background jobs: a thread builds the file (the same `export_file` as any
export) while the page shows its progress; the file waits an hour for its owner, then goes."""
from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

KEEP_SECONDS = 3600


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

    @property
    def directory(self) -> Path:
        """Where the files go: a private temp dir made for the first job of the process."""
        with self.lock:
            if self._directory is None:
                self._directory = Path(tempfile.mkdtemp(prefix="extcdr-exports-"))
            return self._directory

    def start(self, user: str, fmt: str, total: int,
              build: Callable[[Path, Callable[[int], None]], object],
              download_name: str = "") -> str:
        """Run `build(path, progress)` in a thread; returns the job's id."""
        self.sweep()
        job_id = secrets.token_urlsafe(16)
        job = ExportJob(user, fmt, total, download_name=download_name or f"calls.{fmt}")
        with self.lock:
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
