"""Users' message templates (mailed reports' subject and message), rendered bounded.

A template is Jinja in a sandbox: it reaches nothing but the values it is given. The sandbox
does not bound the work, though: a loop of loops, a string of a billion characters or a number
of five thousand digits would hold a web thread or the reports' scheduler and grow the process
without end. So templates render in a child process of their own (`python -m
reports.templates`, values and answer as JSON over its pipes) that limits its own CPU time
and address space before it reads anything; the parent kills it after a wall-clock timeout and
checks the answer's size. Whatever goes wrong becomes one readable `TemplateRefused`.

So that many at once cannot crowd out everyone else, a process renders at most `AT_ONCE`
messages at a time (more are refused at once, holding no thread) and the renderer runs at the
lowest CPU priority.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Sequence

SECONDS = 2                   # wall clock for all templates of one message
CPU_SECONDS = 2
MEMORY_MB = 256               # more address space than the renderer had when it started
OUTPUT_CHARS = 1_000_000      # all templates of one message together
AT_ONCE = 2                   # messages rendered at the same time by one process
_ROOT = Path(__file__).resolve().parent.parent
_slots = threading.BoundedSemaphore(AT_ONCE)


class TemplateRefused(ValueError):
    """A template that does not render within its bounds; the message says why."""


def render(templates: Sequence[str], values: dict) -> list[str]:
    """Each template filled with `values`, in a bounded child process."""
    if not _slots.acquire(blocking=False):
        raise TemplateRefused("other messages are being checked just now; try again in a few "
                              "seconds")
    try:
        return _render_in_child(templates, values)
    finally:
        _slots.release()


def _render_in_child(templates: Sequence[str], values: dict) -> list[str]:
    request = json.dumps({"templates": list(templates), "values": values})
    child = subprocess.Popen(
        [sys.executable, "-m", "reports.templates"], cwd=_ROOT,
        env={**os.environ, "PYTHONPATH": str(_ROOT)}, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        out, _ = child.communicate(request, timeout=SECONDS + 1)   # + the interpreter's start
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise TemplateRefused(f"it takes too long to fill in (more than {SECONDS} s)") from None
    if len(out) > 2 * OUTPUT_CHARS + 1000:
        raise TemplateRefused(f"it makes more than {OUTPUT_CHARS:,} characters")
    try:
        kind, answer = json.loads(out)
    except ValueError:                # killed by a limit before it could answer
        raise TemplateRefused(_death(child.returncode)) from None
    if kind == "refused":
        raise TemplateRefused(answer)
    return answer


def _render_here() -> None:
    """The child: limits first, then the request from stdin, the answer to stdout."""
    os.nice(19)
    _limit(resource.RLIMIT_CPU, CPU_SECONDS)
    _limit(resource.RLIMIT_AS, _address_space() + MEMORY_MB * 1024 * 1024)
    from jinja2 import StrictUndefined, TemplateError
    from jinja2.sandbox import SandboxedEnvironment
    request = json.loads(sys.stdin.read())
    sandbox = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                   keep_trailing_newline=True)
    try:
        filled = [sandbox.from_string(template).render(request["values"])
                  for template in request["templates"]]
        if sum(map(len, filled)) > OUTPUT_CHARS:
            raise TemplateRefused(f"it makes more than {OUTPUT_CHARS:,} characters")
        answer = ["filled", filled]
    except TemplateRefused as exc:
        answer = ["refused", str(exc)]
    except TemplateError as exc:
        where = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        answer = ["refused", f"it does not work{where}: {(exc.message or '').rstrip('.')}"]
    except MemoryError:
        answer = ["refused", f"it needs too much memory (more than {MEMORY_MB} MB)"]
    except RecursionError:
        answer = ["refused", "it nests too deep"]
    except Exception as exc:       # 1/0, 10**5000 printed, calls + 'x': the template's faults
        answer = ["refused", f"it fails: {_said(exc)}"]
    sys.stdout.write(json.dumps(answer))


def _limit(kind: int, soft: int) -> None:
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(kind, (soft, hard))


def _address_space() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _death(returncode: int | None) -> str:
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return f"it takes too long to fill in (more than {CPU_SECONDS} s of work)"
    return f"it needs too much memory (more than {MEMORY_MB} MB)"


def _said(exc: Exception) -> str:
    text = str(exc).split("\n")[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


if __name__ == "__main__":
    _render_here()
