"""Many pages asking the same question at once cost one computation (web.coalesce)."""
import threading
import time

import pytest

from web.coalesce import Coalesced


def test_sixteen_pages_asking_at_once_share_one_count():
    answers, computed, start = Coalesced(), [], threading.Barrier(16)

    def count():
        computed.append(1)
        time.sleep(0.2)                      # a slow count: the others arrive meanwhile
        return {"all": 42}

    got = []

    def ask():
        start.wait()
        got.append(answers.get((7, "today"), count))

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got == [{"all": 42}] * 16 and len(computed) == 1
    assert answers.get((8, "today"), lambda: {"all": 43}) == {"all": 43}, "a new revision counts"


def test_a_failed_count_reaches_its_waiters_and_the_next_asker_tries_again():
    answers = Coalesced()
    with pytest.raises(RuntimeError, match="database is locked"):
        answers.get("k", lambda: (_ for _ in ()).throw(RuntimeError("database is locked")))
    assert answers.get("k", lambda: 5) == 5


def test_only_the_latest_answers_are_kept():
    answers = Coalesced(size=2)
    for key in ("a", "b", "c"):
        answers.get(key, lambda: key)
    assert answers.get("a", lambda: "again") == "again"      # the oldest went
    assert answers.get("c", lambda: "again") == "c"
