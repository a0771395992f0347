"""The mirror does not depend on how legs arrive: one batch, many batches, shuffled, live —
on either engine (conftest's `engine`): each mirror equals the SQLite one-batch reference."""
import shutil

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.mirror import append_rows, dump, shuffled, sync_once

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
                  workers=workers)
        assert dump(db) == demo_reference["dump"], f"{workers} workers"
