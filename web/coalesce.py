"""One computation for many identical questions: when a new call is written, every open page
asks at once, and pages with the same filter and visibility want the same counters. Answers
are kept per history revision (a new revision is a new key), and a question being answered is
waited for, not asked again."""
from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Callable, Hashable, TypeVar

T = TypeVar("T")


class Coalesced:
    """The latest `size` answers by key; concurrent askers of one key share one computation."""

    def __init__(self, size: int = 256):
        self.size = size
        self._lock = threading.Lock()
        self._answers: OrderedDict[Hashable, Future] = OrderedDict()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            answer = self._answers.get(key)
            mine = answer is None
            if mine:
                answer = self._answers[key] = Future()
                while len(self._answers) > self.size:
                    self._answers.popitem(last=False)
            else:
                self._answers.move_to_end(key)
        if mine:
            try:
                answer.set_result(compute())
            except BaseException as exc:       # the waiters get it too; the next asker retries
                answer.set_exception(exc)
                with self._lock:
                    if self._answers.get(key) is answer:
                        del self._answers[key]
        return answer.result()

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()
