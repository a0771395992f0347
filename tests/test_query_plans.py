"""Every filter of the history page is an index range scan in newest-first order."""
import pytest
from peewee import fn

from mirror import queries
from mirror.analytics import tab_counts
from mirror.database import open_module_db
from mirror.models import Call
from mirror.queries import CallFilter, Visibility, calls_query, changes_since, mirror_revision

DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def mirror(demo_mirror):
    db = open_module_db(demo_mirror, readonly=True)
    yield db
    db.close()


def plan(db, **filters) -> list[str]:
    end = db.execute_sql("SELECT max(start_ms) FROM call").fetchone()[0] + 1
    query = calls_query(CallFilter(start_ms=end - 7 * DAY_MS, end_ms=end, limit=50, **filters), db)
    sql, params = query.sql()
    steps = [row[3] for row in db.execute_sql("EXPLAIN QUERY PLAN " + sql, params)]
    print(filters, steps)
    return steps


def no_full_scan(steps):
    """A full scan of `call` (or of the employees table) reads every call ever mirrored."""
    assert not any(s.startswith("SCAN") and "VIRTUAL TABLE" not in s for s in steps), steps


@pytest.mark.parametrize("filters, index", [
    ({}, "call_period (start_ms>? AND start_ms<?)"),
    ({"directions": ["incoming"]}, "call_direction (direction=? AND start_ms>? AND start_ms<?)"),
    ({"statuses": ["missed"]}, "call_status (status=? AND start_ms>? AND start_ms<?)"),
    ({"unreturned": True}, "call_status (status=? AND start_ms>? AND start_ms<?)"),
    ({"min_talk": 30}, "call_period (start_ms>? AND start_ms<?)"),
    ({"after": (1_700_000_000_000, 10)}, "call_period (start_ms>? AND start_ms<?)"),
])
def test_single_range_scan_already_in_page_order(mirror, filters, index):
    steps = plan(mirror, **filters)
    assert any(f"USING INDEX {index}" in s or f"USING COVERING INDEX {index}" in s
               for s in steps), steps
    assert not any("TEMP B-TREE" in s for s in steps), steps   # no sort: rows come in order
    no_full_scan(steps)


@pytest.mark.parametrize("filters", [
    {"employees": ["201"]},
    {"employees": ["201", "202", "203"]},
])
def test_employee_filter_is_a_range_of_the_employee_index(mirror, filters):
    steps = plan(mirror, **filters)
    # a page walks the period newest first and stops after its rows: no sort of all the
    # employees' calls of the period
    assert not any("TEMP B-TREE" in s for s in steps), steps
    assert any("call_employee USING PRIMARY KEY (extension=? AND start_ms>? AND start_ms<?)"
               in s.replace("t2", "call_employee") or
               "USING PRIMARY KEY (extension=? AND start_ms>? AND start_ms<?)" in s
               for s in steps), steps
    no_full_scan(steps)


def test_number_substring_uses_the_trigram_index_within_the_periods_ids(mirror):
    steps = plan(mirror, number="916")
    # FTS5 MATCH (M) with a rowid range (the ids of the period's calls), not all of history
    assert any("VIRTUAL TABLE INDEX" in s and ":M" in s and ">" in s.split(":")[-1]
               and "<" in s.split(":")[-1] for s in steps), steps
    no_full_scan(steps)


@pytest.mark.parametrize("number", ["Анна", "tom"])
def test_name_search_uses_the_name_trigram_index_within_the_periods_ids(mirror, number):
    steps = plan(mirror, number=number)
    assert any("VIRTUAL TABLE INDEX" in s and ":M" in s and ">" in s.split(":")[-1]
               and "<" in s.split(":")[-1] for s in steps), steps
    # employees of that name: their calls of the period, a range of the employee index
    assert number != "Анна" or any(
        "USING PRIMARY KEY (extension=? AND start_ms>? AND start_ms<?)" in s for s in steps), steps
    no_full_scan(steps)


def test_tab_counters_read_only_the_period_index(mirror):
    end = mirror.execute_sql("SELECT max(start_ms) FROM call").fetchone()[0] + 1
    flt = CallFilter(start_ms=end - 30 * DAY_MS, end_ms=end)
    query = calls_query(flt, mirror, counting=True).select(
        Call.direction, Call.status, Call.returned_by.is_null(), fn.COUNT(Call.id)).order_by(
        ).group_by(Call.direction, Call.status, Call.returned_by.is_null())
    sql, params = query.sql()
    steps = [row[3] for row in mirror.execute_sql("EXPLAIN QUERY PLAN " + sql, params)]
    assert any("USING COVERING INDEX call_period (start_ms>? AND start_ms<?)" in s
               for s in steps), steps
    assert tab_counts(flt, mirror)["all"] == calls_query(flt, mirror, counting=True).count()


def test_several_statuses_scan_one_range_per_status(mirror):
    steps = plan(mirror, statuses=["missed", "answered"])
    assert any("call_status (status=? AND start_ms>? AND start_ms<?)" in s for s in steps)
    no_full_scan(steps)


@pytest.mark.parametrize("scope", ["involved", "placed", "except"])
def test_what_a_restricted_user_sees_is_a_range_of_the_employee_index(mirror, scope):
    """ModuleUsersUI's access groups (mirror.queries.Visibility): the page still walks the
    period in order, the employees' calls a range of their index."""
    steps = plan(mirror, visible_to=Visibility(("201", "202"), scope))
    assert not any("TEMP B-TREE" in s for s in steps), steps
    assert any("USING PRIMARY KEY (extension=? AND start_ms>? AND start_ms<?)"
               in s for s in steps), steps
    no_full_scan(steps)


def test_what_open_pages_ask_at_each_change_reads_only_the_calls_written_since(mirror,
                                                                              monkeypatch):
    """Every open page asks at every change: by the revision index, never the whole history."""
    monkeypatch.setattr(queries, "CHANGES_LIMIT", 10_000)   # the demo history came in one write
    statements = []
    end = mirror.execute_sql("SELECT max(start_ms) FROM call").fetchone()[0] + 1
    flt = CallFilter(start_ms=end - 7 * DAY_MS, end_ms=end, limit=50, visible_to=Visibility(("201",)))
    since = mirror_revision(mirror) - 1
    conn = mirror.connection()
    conn.set_trace_callback(statements.append)
    try:
        rows, _ = changes_since(flt, since, mirror)
    finally:
        conn.set_trace_callback(None)
    assert rows is not None and len(statements) >= 3, statements
    for statement in statements:
        steps = [row[3] for row in mirror.execute_sql("EXPLAIN QUERY PLAN " + statement)]
        print(statement, steps)
        if statement.startswith("SELECT EXISTS (SELECT 1 FROM "):
            continue          # whether a table of notes has any row: its first row read
        no_full_scan(steps)
        assert not any(s.startswith("SCAN call_gone") for s in steps), steps
    plans = " ".join(row[3] for statement in statements[:2]
                     for row in mirror.execute_sql("EXPLAIN QUERY PLAN " + statement))
    assert "call_revision (revision>?)" in plans and "call_gone_revision (revision>?)" in plans


@pytest.mark.parametrize("filters, index", [
    ({"recording": True}, "call_recorded (start_ms>? AND start_ms<?)"),
    ({"recording": False}, "call_unrecorded (start_ms>? AND start_ms<?)"),
    ({"max_talk": 120}, "call_period (start_ms>? AND start_ms<?)"),
])
def test_working_with_calls_filters_are_range_scans_in_page_order(mirror, filters, index):
    steps = plan(mirror, **filters)
    assert any(f"USING INDEX {index}" in s or f"USING COVERING INDEX {index}" in s
               for s in steps), steps
    assert not any("TEMP B-TREE" in s for s in steps), steps
    no_full_scan(steps)


def test_the_queue_filter_reads_the_queue_index(mirror):
    steps = plan(mirror, queues=["2000"])
    assert any("call_queue (queue=? AND start_ms>? AND start_ms<?)" in s for s in steps), steps
    no_full_scan(steps)


@pytest.mark.parametrize("sides", [["caller"], ["unknown"], ["callee", "unknown"]])
def test_who_hung_up_is_looked_up_per_call_of_the_period_walked_in_page_order(mirror, sides):
    steps = plan(mirror, hangup=sides)
    assert any("call_period (start_ms>? AND start_ms<?)" in s for s in steps), steps
    assert any("SUBQUERY" in s for s in steps), steps        # per call: one key lookup
    assert any("USING PRIMARY KEY (linkedid=?)" in s for s in steps), steps
    assert not any("TEMP B-TREE" in s for s in steps), steps
    no_full_scan(steps)


def test_the_comment_filter_looks_each_call_of_the_period_up_in_page_order(mirror):
    steps = plan(mirror, comment="перезвонить")
    assert any("call_period (start_ms>? AND start_ms<?)" in s for s in steps), steps
    assert any("comment_of_call (linkedid=?)" in s for s in steps), steps
    assert not any("TEMP B-TREE" in s for s in steps), steps
    no_full_scan(steps)
