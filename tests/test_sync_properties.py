"""The mirror does not depend on how legs arrive: one batch, many batches, shuffled, live —
on either engine (conftest's `engine`): each mirror equals the SQLite one-batch reference."""
import itertools
import shutil
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirror import bulk
from mirror.analytics import figures, tab_counts
from mirror.database import open_module_db
from mirror.dialect import run
from mirror.queries import DAY_MS, CallFilter, QueryError, calls_query
from mirror.rollups import CALLS
from tests.conftest import run_extcdr
from tests.mirror import append_rows, dump, schema, shuffled, sync_once

# What each engine tries. A PostgreSQL writer's pass costs a server round trip per statement
# (about 0.15 s a batch on the shared test machine against SQLite's few ms), so there the
# arrivals come in fewer, larger batches: the same kinds of arrival, a fraction of the passes.
EXAMPLES = {"sqlite": 12, "postgresql": 2}
SMALLEST_BATCH = {"sqlite": 16, "postgresql": 300}
ONE_BY_ONE = {"sqlite": 400, "postgresql": 40}           # legs synced one at a time
WORKERS = {"sqlite": (1, 2, 3), "postgresql": (3,)}


def test_mirror_is_the_same_however_legs_arrive(engine, demo_pbx, demo_reference, mirror_targets,
                                               tmp_path_factory):
    cols, rows = demo_reference["rows"]

    @settings(max_examples=EXAMPLES[engine], deadline=None)
    # Batches of 16 rows and more: a batch of one row each is test_one_leg_at_a_time's
    # (thousands of one-row batches of the whole demo would take minutes an example).
    @given(batch_rows=st.integers(min_value=SMALLEST_BATCH[engine], max_value=700),
           chunks=st.integers(min_value=1, max_value=12),
           order_seed=st.integers(min_value=0, max_value=10**6))
    def arrival(batch_rows, chunks, order_seed):
        tmp = tmp_path_factory.mktemp("arrival")
        cdr, db = tmp / "cdr.db", mirror_targets(tmp)
        arrival = shuffled(rows, order_seed)
        size = -(-len(arrival) // chunks)
        for i in range(0, len(arrival), size):    # the PBX moves legs in, we sync in between
            append_rows(cdr, cols, arrival[i:i + size])
            sync_once(cdr, demo_pbx / "mikopbx.db", db, batch_rows=batch_rows)
        assert dump(db) == demo_reference["dump"]
        shutil.rmtree(tmp)
    arrival()


def test_reference_mirror_is_not_trivial(demo_reference):
    calls = demo_reference["dump"]["calls"]
    statuses = {call[4] for call in calls}
    assert {"answered", "missed", "not_reached", "transferred", "client_called_back",
            "we_called_back", "application"} <= statuses
    assert any(call[24] for call in calls)  # some missed call was returned
    # the writer's counters, kept batch by batch, are those of its calls (so are every run's)
    assert demo_reference["dump"]["rollups_off"] == []


def test_one_leg_at_a_time_gives_the_same_mirror(engine, demo_pbx, demo_reference,
                                                 mirror_targets, tmp_path):
    cols, rows = demo_reference["rows"]
    window = rows[:ONE_BY_ONE[engine]]     # every leg its own arrival: keep it small
    cdr, db = tmp_path / "cdr.db", mirror_targets(tmp_path)
    whole = mirror_targets(tmp_path / "whole")
    for row in window:
        append_rows(cdr, cols, [row])
        sync_once(cdr, demo_pbx / "mikopbx.db", db)
    sync_once(cdr, demo_pbx / "mikopbx.db", whole)
    assert dump(db) == dump(whole)


def test_demo_holds_a_call_across_the_dst_fall_back(demo_reference):
    """The arrival tests above cover the repeated hour: a leg there has a negative billsec."""
    cols, rows = demo_reference["rows"]
    billsec = cols.index("billsec")
    assert any(row[billsec] is not None and row[billsec] < 0 for row in rows)


def test_parallel_backfill_equals_one_process(engine, demo_pbx, demo_reference, mirror_targets,
                                              tmp_path):
    """Worker processes classify id ranges side by side; calls cut by a range border are
    completed at merge time. The result is the one-process, one-batch mirror."""
    for workers in WORKERS[engine]:
        db = mirror_targets(tmp_path / f"workers-{workers}")
        sync_once(demo_pbx / "cdr.db", demo_pbx / "mikopbx.db", db, batch_rows=97,
                  workers=workers, range_rows=97)
        assert dump(db) == demo_reference["dump"], f"{workers} workers"


def _stopping_after(questions: int):
    """A `should_stop` that answers yes from its `questions`+1-th question on (a daemon told to
    stop in the middle of a catch-up)."""
    asked = itertools.count()
    return lambda: next(asked) >= questions


def _loading(db) -> bool:
    database = open_module_db(db)
    try:
        return bulk.loading(database)
    finally:
        database.close()


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(range_rows=st.integers(min_value=150, max_value=1_500),
       workers=st.integers(min_value=2, max_value=3),
       stops=st.lists(st.integers(min_value=1, max_value=6), max_size=3),
       first_share=st.floats(min_value=0.5, max_value=1.0),
       order_seed=st.integers(min_value=0, max_value=10**6))
def test_bulk_load_gives_the_mirror_written_call_by_call(
        demo_pbx, demo_reference, tmp_path_factory, range_rows, workers, stops, first_share,
        order_seed):
    """A first sync into an empty mirror loads in bulk; stopped anywhere and resumed, then
    followed by the PBX's later legs, it gives the mirror and the schema of one batch."""
    cols, rows = demo_reference["rows"]
    tmp = tmp_path_factory.mktemp("bulk")
    cdr, db, pbx = tmp / "cdr.db", tmp / "module.db", demo_pbx / "mikopbx.db"
    arrival = shuffled(rows, order_seed)
    first = int(len(arrival) * first_share)
    append_rows(cdr, cols, arrival[:first])
    for questions in stops:
        sync_once(cdr, pbx, db, batch_rows=range_rows, workers=workers, range_rows=range_rows,
                  should_stop=_stopping_after(questions))
    sync_once(cdr, pbx, db, batch_rows=range_rows, workers=workers, range_rows=range_rows)
    assert not _loading(db)
    if first < len(arrival):
        append_rows(cdr, cols, arrival[first:])
        sync_once(cdr, pbx, db, batch_rows=range_rows, workers=workers, range_rows=range_rows)
    assert dump(db) == demo_reference["dump"]
    open_module_db(tmp / "empty.db").close()
    assert schema(db) == schema(tmp / "empty.db")
    shutil.rmtree(tmp)


def test_a_history_still_loading_is_counted_from_its_calls_and_not_searched(
        demo_pbx, demo_reference, tmp_path):
    """Stopped in the middle of its bulk load, the mirror shows the calls loaded so far with
    counters counted from them; a search says the history is still loading instead of finding
    only what is indexed. Resumed, the load is built: counters from the rollups, search."""
    db, pbx = tmp_path / "module.db", demo_pbx / "mikopbx.db"
    sync_once(demo_pbx / "cdr.db", pbx, db, batch_rows=500, range_rows=500,
              should_stop=_stopping_after(2))
    database = open_module_db(db)
    try:
        assert bulk.loading(database)
        assert not run(database, "SELECT 1 FROM sqlite_master WHERE name = 'call_status'"
                       ).fetchall()
        loaded = run(database, "SELECT count(*), min(start_ms), max(start_ms) FROM call"
                     ).fetchone()
        assert 0 < loaded[0] < len(demo_reference["dump"]["calls"])
        everything = CallFilter(start_ms=loaded[1] - DAY_MS, end_ms=loaded[2] + DAY_MS)
        counts = tab_counts(everything, database)
        assert counts["all"] == loaded[0]
        assert counts == tab_counts(everything, database, source="calls")
        with pytest.raises(QueryError, match="still loading"):
            calls_query(replace(everything, number="4930"), database).count()
    finally:
        database.close()
    searched = run_extcdr("calls", "--db", db, "--from", "2000-01-01", "--to", "2100-01-01",
                          "--number", "4930")
    assert searched.returncode != 0 and "Traceback" not in searched.stderr
    assert searched.stderr.strip().endswith(
        "the history is still loading: search by number or name works once it is loaded")
    assert '"loading": true' in run_extcdr("status", "--db", db, "--format", "json").stdout
    sync_once(demo_pbx / "cdr.db", pbx, db, batch_rows=500, range_rows=500)
    database = open_module_db(db)
    try:
        assert not bulk.loading(database)
        assert figures(CALLS, everything, database, ("direction",))[1] == "rollups"
        assert calls_query(replace(everything, number="4930"), database).count() > 0
    finally:
        database.close()
    assert dump(db) == demo_reference["dump"]
