"""Users' message templates (mailed reports' subject and message), rendered bounded.

A template is Jinja in a sandbox: it reaches nothing but the values it is given. The sandbox
does not bound the work, though: a loop of loops, a string of a billion characters or a number
of five thousand digits would hold a web thread or the reports' scheduler and grow the process
without end. So templates render in a child process (forked from a clean, single-threaded
server process) with a CPU-time and an address-space limit and a wall-clock timeout after
which it is killed; its answer is checked for size. Whatever goes wrong becomes one readable
`TemplateRefused`.
"""
from __future__ import annotations

import multiprocessing
import resource
import signal
from typing import Sequence

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

SECONDS = 2                   # wall clock for all templates of one message
CPU_SECONDS = 2
MEMORY_MB = 256               # more address space than the renderer had when it started
OUTPUT_CHARS = 1_000_000      # all templates of one message together

_SANDBOX = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                keep_trailing_newline=True)
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(["db.message_templates", "jinja2", "jinja2.sandbox"])


class TemplateRefused(ValueError):
    """A template that does not render within its bounds; the message says why."""


def render(templates: Sequence[str], values: dict) -> list[str]:
    """Each template filled with `values`, in a bounded child process."""
    receiver, sender = _context.Pipe(duplex=False)
    child = _context.Process(target=_render_in_child, args=(list(templates), values, sender),
                             daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(SECONDS):
            raise TemplateRefused(f"it takes too long to fill in (more than {SECONDS} s)")
        try:
            kind, answer = receiver.recv()
        except EOFError:               # killed by a limit before it could answer
            raise TemplateRefused(_death(child)) from None
    finally:
        if child.is_alive():
            child.kill()
        child.join(1)
        receiver.close()
    if kind == "refused":
        raise TemplateRefused(answer)
    return answer


def _render_in_child(templates: list[str], values: dict, sender) -> None:
    _limit(resource.RLIMIT_CPU, CPU_SECONDS)
    _limit(resource.RLIMIT_AS, _address_space() + MEMORY_MB * 1024 * 1024)
    try:
        filled = [_SANDBOX.from_string(template).render(values) for template in templates]
        if sum(map(len, filled)) > OUTPUT_CHARS:
            raise TemplateRefused(f"it makes more than {OUTPUT_CHARS:,} characters")
        sender.send(("filled", filled))
    except TemplateRefused as exc:
        sender.send(("refused", str(exc)))
    except TemplateError as exc:
        where = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        sender.send(("refused", f"it does not work{where}: {(exc.message or '').rstrip('.')}"))
    except MemoryError:
        sender.send(("refused", f"it needs too much memory (more than {MEMORY_MB} MB)"))
    except RecursionError:
        sender.send(("refused", "it nests too deep"))
    except Exception as exc:       # 1/0, 10**5000 printed, calls + 'x': the template's faults
        sender.send(("refused", f"it fails: {_said(exc)}"))
    finally:
        sender.close()


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


def _death(child) -> str:
    child.join(1)
    if child.exitcode in (-signal.SIGXCPU, -signal.SIGKILL):
        return f"it takes too long to fill in (more than {CPU_SECONDS} s of work)"
    return f"it needs too much memory (more than {MEMORY_MB} MB)"


def _said(exc: Exception) -> str:
    text = str(exc).split("\n")[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
