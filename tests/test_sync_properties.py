"""The mirror does not depend on how legs arrive: one batch, many batches, shuffled, live."""
import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.mirror import append_rows, dump, shuffled, sync_once


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
# Batches of 16 rows and more: a batch of one row each is test_one_leg_at_a_time's (thousands
# of one-row batches of the whole demo would take minutes an example).
@given(batch_rows=st.integers(min_value=16, max_value=700),
       chunks=st.integers(min_value=1, max_value=12),
       order_seed=st.integers(min_value=0, max_value=10**6))
def test_mirror_is_the_same_however_legs_arrive(demo_pbx, demo_reference, tmp_path_factory,
                                               batch_rows, chunks, order_seed):
    cols, rows = demo_reference["rows"]
    tmp = tmp_path_factory.mktemp("arrival")
    cdr, db = tmp / "cdr.db", tmp / "module.db"
    arrival = shuffled(rows, order_seed)
    size = -(-len(arrival) // chunks)
    for i in range(0, len(arrival), size):        # the PBX moves legs in, we sync in between
        append_rows(cdr, cols, arrival[i:i + size])
        sync_once(cdr, demo_pbx / "mikopbx.db", db, batch_rows=batch_rows)
    assert dump(db) == demo_reference["dump"]
    shutil.rmtree(tmp)


def test_reference_mirror_is_not_trivial(demo_reference):
    calls = demo_reference["dump"]["calls"]
    statuses = {call[4] for call in calls}
    assert {"answered", "missed", "not_reached", "transferred", "client_called_back",
            "we_called_back", "application"} <= statuses
    assert any(call[24] for call in calls)  # some missed call was returned
    # the writer's counters, kept batch by batch, are those of its calls (so are every run's)
    assert demo_reference["dump"]["rollups_off"] == []


def test_one_leg_at_a_time_gives_the_same_mirror(demo_pbx, demo_reference, tmp_path):
    cols, rows = demo_reference["rows"]
    window = rows[:400]                    # every leg its own arrival: keep it small
    cdr, db, whole = tmp_path / "cdr.db", tmp_path / "module.db", tmp_path / "whole.db"
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


def test_parallel_backfill_equals_one_process(demo_pbx, demo_reference, tmp_path):
    """Worker processes classify id ranges side by side; calls cut by a range border are
    completed at merge time. The result is the one-process, one-batch mirror."""
    for workers in (1, 2, 3):
        db = tmp_path / f"workers-{workers}.db"
        sync_once(demo_pbx / "cdr.db", demo_pbx / "mikopbx.db", db, batch_rows=97,
                  workers=workers)
        assert dump(db) == demo_reference["dump"], f"{workers} workers"
