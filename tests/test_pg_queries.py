"""What reads the mirror, and what users keep in it, on both engines (issue 22): the same calls
written into a SQLite module.db and into a PostgreSQL one, then the page's filter, its
counters, a call's details, the users' own data, the worklist, the reports and the exports
through the real functions, with the same answers expected of each.

The calls are written row by row with the models (tests/test_pg_writer.py syncs a PBX into
both): the search text as the writer keeps it — SQLite's FTS5 tables `call_number` and
`call_name`, PostgreSQL's `numbers` and `names` columns of `call` —, the months' partitions
made first, and on PostgreSQL the rollups and callback waits the writer keeps there (SQLite's
triggers keep them).
"""
from __future__ import annotations

import csv
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import replace
from types import SimpleNamespace

import pytest
from openpyxl import load_workbook

from exports.writers import export_file
from mirror import analytics, schema
from mirror.annotations import (Actor, AnnotationError, add_call_tag, add_comment, create_tag,
                                delete_comment, edit_comment, remove_call_tag, set_call_tags,
                                tag_list)
from mirror.contacts import (add_contact, contact_fields, delete_contact, edit_contact,
                             find_contact, list_contacts, names_of_keys)
from mirror.database import open_module_db
from mirror.dialect import dialect_of, run, write_transaction
from mirror.models import Call, CallEmployee, CallName, CallNumber, Employee, GroupMember, SyncState
from mirror.pbxtime import PbxClock
from mirror.queries import (CallFilter, QueryError, Visibility, call_filter, call_rows, calls_query,
                            changes_since, counts_by_direction_and_status, find_call,
                            handled_unreturned, mirror_revision, tag_counts)
from mirror.report_rows import Owner, claim_due, link_secret, store_report
from mirror.rollups import ROLLUPS, returned_after
from mirror.settings import load
from mirror.staging import searchable_numbers
from mirror.tokens import TokenRefused, create_token, revoke_token, token_holder, token_list
from mirror.userdata import (default_filter, delete_filter, group_limit, save_filter, saved_filters,
                             set_supervisor_groups, set_user_setting, supervisor_groups,
                             user_settings)
from mirror.worklist import mark_handled, unmark_handled, worklist
from tests.stack import serving
from web import create_app

OCTOBER = 1_728_000_000_000          # 2024-10-04 00:00 UTC
NOVEMBER = 1_731_000_000_000         # 2024-11-07 17:20 UTC
HOUR = 3_600_000
DAY = 86_400_000
UTC = PbxClock("UTC")
ADMIN = Actor("admin", admin=True)
OCTOBER_4_AND_5 = CallFilter(start_ms=OCTOBER, end_ms=OCTOBER + 2 * 86_400_000)
BOTH_MONTHS = CallFilter(start_ms=OCTOBER, end_ms=NOVEMBER + 86_400_000)


def _call(linkedid, start_ms, direction, status, src, dst, *, src_name="", dst_name="",
          employees=(), missed_by=(), answered_by=None, talk_s=0, returned_by=None,
          callback_attempts=0, queue=None, recordings=()):
    external = {"incoming": src, "outgoing": dst}.get(direction)
    return {"linkedid": linkedid, "start_ms": start_ms, "end_ms": start_ms + 10_000 + talk_s
            * 1000, "direction": direction, "status": status, "answered": talk_s > 0,
            "src": src, "src_name": src_name, "dst": dst, "dst_name": dst_name,
            "external_number": external, "ext_key": external[-9:] if external else None,
            "did": "74950000000" if direction == "incoming" else None, "line": None,
            "answered_by": answered_by, "missed_by": json.dumps(list(missed_by)),
            "transferred_to": "[]", "employees": json.dumps(list(employees)),
            "wait_s": 10, "talk_s": talk_s, "duration_s": 10 + talk_s,
            "recordings": json.dumps(list(recordings)), "callback_of": None,
            "returned_by": returned_by, "callback_attempts": callback_attempts,
            "leg_count": 1, "revision": 1, "queue": queue}


# (call, [(extension, placed)]): a small history of two days in October and one in November.
CALLS = [
    (_call("mikopbx-1728036000.1", OCTOBER + 10 * HOUR, "incoming", "answered", "79161234567",
           "201", src_name="Иван Петров", dst_name="Anna Lee", employees=["201"],
           answered_by="201", talk_s=90, queue="Sales", recordings=["a.mp3"]),
     [("201", False)]),
    (_call("mikopbx-1728039600.2", OCTOBER + 11 * HOUR, "incoming", "missed", "79169990000",
           "201", src_name="Olga Smirnova", employees=["201", "202"], missed_by=["201", "202"],
           callback_attempts=1),
     [("201", False), ("202", False)]),
    (_call("mikopbx-1728043200.3", OCTOBER + 12 * HOUR, "outgoing", "answered", "202",
           "74951112233", src_name="Boris Kim", employees=["202"], answered_by="202",
           talk_s=30),
     [("202", True)]),
    (_call("mikopbx-1728046800.4", OCTOBER + 13 * HOUR, "internal", "answered", "201", "202",
           src_name="Anna Lee", dst_name="Boris Kim", employees=["201", "202"],
           answered_by="202", talk_s=15),
     [("201", True), ("202", False)]),
    (_call("mikopbx-1728118800.5", OCTOBER + 33 * HOUR, "incoming", "missed", "79035556677",
           "202", src_name="79035556677", employees=["202"], missed_by=["202"],
           returned_by="mikopbx-1728120600.6"),
     [("202", False)]),
    (_call("mikopbx-1728120600.6", OCTOBER + 33 * HOUR + HOUR // 2, "outgoing", "answered",
           "201", "79035556677", src_name="Anna Lee", employees=["201"], answered_by="201",
           talk_s=60),
     [("201", True)]),
    (_call("mikopbx-1728122400.7", OCTOBER + 34 * HOUR, "outgoing", "not_reached", "202",
           "79169990000", src_name="Boris Kim", employees=["202"]),
     [("202", True)]),
    (_call("mikopbx-1731000000.8", NOVEMBER, "incoming", "answered", "79161234567", "201",
           src_name="Иван Петров", dst_name="Anna Lee", employees=["201"], answered_by="201",
           talk_s=45),
     [("201", False)]),
]
LINKEDIDS = [call["linkedid"] for call, _ in CALLS]


def _names(call: dict) -> str:
    """What `mirror.schema.CALL_NAMES` keeps of a call: its names that are not only digits."""
    named = [name for name in (call["src_name"], call["dst_name"])
             if name and not set(name) <= set("0123456789+ ()-")]
    return "\n".join(dict.fromkeys(named))


def _write_history(db) -> None:
    """The calls, their employees, the PBX's employees and groups, as the writer keeps them."""
    if dialect_of(db).postgresql:
        schema.month_partitions(db, [call["start_ms"] for call, _ in CALLS])
    with db.bind_ctx([Call, CallEmployee, Employee, GroupMember, SyncState, CallNumber,
                      CallName]), write_transaction(db):
        for call, employees in CALLS:
            call_id = Call.insert(**call).execute()
            for extension, placed in employees:
                CallEmployee.insert(extension=extension, start_ms=call["start_ms"],
                                    call_id=call_id, placed=placed).execute()
            numbers = searchable_numbers(SimpleNamespace(
                **{**call, "employees": json.loads(call["employees"])}))
            names = _names(call)
            if dialect_of(db).postgresql:
                run(db, "UPDATE call SET numbers = ?, names = ? WHERE id = ?",
                    (numbers, names, call_id))
            else:
                CallNumber.insert(rowid=call_id, numbers=numbers).execute()
                if names:
                    CallName.insert(rowid=call_id, names=names).execute()
        Employee.insert_many([("201", "Anna Lee"), ("202", "Boris Kim")]).execute()
        GroupMember.insert_many([("Sales", "201"), ("Support", "202")]).execute()
        SyncState.insert(key="revision", value="1").execute()
        if dialect_of(db).postgresql:       # SQLite's triggers keep them; there, the writer
            run(db, f"UPDATE call SET returned_after_s = {returned_after('call')} "
                    "WHERE returned_by IS NOT NULL")
            for rollup in ROLLUPS:
                run(db, rollup.add(rollup.afresh("call", dialect_of(db))))


@pytest.fixture
def history(mirror_target):
    """The opened module.db on the test's engine (conftest's `engine`), holding CALLS."""
    db = open_module_db(mirror_target)
    _write_history(db)
    yield db
    db.close()


def linkedids(f: CallFilter, db) -> list[str]:
    """The calls of the filter as a page lists them (newest first), by their linkedid's tail."""
    return [row["linkedid"].rsplit(".", 1)[1] for row in call_rows(calls_query(f, db))]


def within(f: CallFilter = OCTOBER_4_AND_5, **changes) -> CallFilter:
    return replace(f, **changes)


# --- the page's filter ---------------------------------------------------------------------------

def test_each_kind_of_filter_selects_the_same_calls(history):
    db = history
    assert linkedids(OCTOBER_4_AND_5, db) == ["7", "6", "5", "4", "3", "2", "1"]
    assert linkedids(BOTH_MONTHS, db) == ["8", "7", "6", "5", "4", "3", "2", "1"]
    assert linkedids(within(directions=["incoming"]), db) == ["5", "2", "1"]
    assert linkedids(within(statuses=["missed", "not_reached"]), db) == ["7", "5", "2"]
    assert linkedids(within(tab="outgoing"), db) == ["7", "6", "3"]
    assert linkedids(within(tab="internal"), db) == ["4"]
    assert linkedids(within(tab="missed"), db) == ["5", "2"]
    assert linkedids(within(tab="unreturned"), db) == ["2"]
    assert linkedids(within(employees=["201"]), db) == ["6", "4", "2", "1"]
    assert linkedids(within(groups=["Support"]), db) == ["7", "5", "4", "3", "2"]
    assert linkedids(within(min_talk=30), db) == ["6", "3", "1"]
    assert linkedids(within(max_talk=20), db) == ["7", "5", "4", "2"]
    assert linkedids(within(recording=True), db) == ["1"]
    assert linkedids(within(queues=["Sales"]), db) == ["1"]
    assert linkedids(within(visible_to=Visibility(("201",))), db) == ["6", "4", "2", "1"]
    assert linkedids(within(visible_to=Visibility(("201",), "placed")), db) == ["6", "4"]
    assert linkedids(within(visible_to=Visibility(("201",), "except")), db) == ["7", "5", "3"]
    with pytest.raises(QueryError, match="unknown employee group 'Nobody'"):
        linkedids(within(groups=["Nobody"]), db)


@pytest.mark.parametrize("search, expected", [
    ("1234567", ["8", "1"]),               # digits anywhere in a number
    ("916", ["8", "7", "2", "1"]),
    ("79035556677", ["6", "5"]),
    ("201 916", ["8", "2", "1"]),         # every part must match
    ("src:7916", ["8", "2", "1"]),        # a field prefix
    ("иван", ["8", "1"]),                  # a caller's name, any case, Cyrillic too
    ("smirn", ["2"]),
    ("Boris", ["7", "5", "4", "3", "2"]),  # an employee's current name: the calls they had
    ("mikopbx-1728046800.4", ["4"]),       # a linkedid, whatever the period
    ("100%", []),                          # LIKE's wildcards are text
])
def test_the_number_search_finds_digits_names_and_linkedids(history, search, expected):
    assert linkedids(within(BOTH_MONTHS, number=search), history) == expected


def test_a_period_a_page_and_the_next_page(history):
    db = history
    f = call_filter({"from": "2024-10-05", "to": "2024-10-05"}, UTC, OCTOBER / 1000)
    assert linkedids(f, db) == ["7", "6", "5"]
    first = list(call_rows(calls_query(within(BOTH_MONTHS, limit=3), db)))
    assert [row["linkedid"][-1] for row in first] == ["8", "7", "6"]
    after = (first[-1]["start_ms"], first[-1]["id"])
    assert linkedids(within(BOTH_MONTHS, limit=3, after=after), db) == ["5", "4", "3"]


def test_the_counters_of_the_tabs_and_of_the_calls(history):
    db = history
    counts = counts_by_direction_and_status(OCTOBER_4_AND_5, db)
    assert counts == {("incoming", "answered"): 1, ("incoming", "missed"): 2,
                      ("outgoing", "answered"): 2, ("outgoing", "not_reached"): 1,
                      ("internal", "answered"): 1}


def test_the_tab_counters_of_a_filter_the_rollups_cannot_answer(history):
    """Counted from the calls (an employee filter), with the rollups' own SQL."""
    by_employee = within(employees=["202"])
    assert analytics.tab_counts(by_employee, history) == {
        "all": 5, "incoming": 2, "missed": 2, "outgoing": 2, "internal": 1, "unreturned": 1}
    assert all(type(n) is int for n in analytics.tab_counts(by_employee, history).values())


def test_one_calls_details(history):
    db = history
    call = find_call("mikopbx-1728036000.1", db)
    assert (call["src_name"], call["answered"], call["recordings"], call["employees"]) == (
        "Иван Петров", True, ["a.mp3"], ["201"])
    assert (call["tags"], call["comments"], call["hangup"]) == ([], [], None)
    assert find_call("mikopbx-1.1", db) is None


# --- what users add to calls ----------------------------------------------------------------------

def test_tags_and_comments_are_kept_shown_and_filtered(history):
    db = history
    vip = create_tag(db, ADMIN, "VIP", "red")
    late = create_tag(db, ADMIN, "callback later", "blue")
    with pytest.raises(AnnotationError, match="exists already"):
        create_tag(db, ADMIN, "vip")
    assert [tag["name"] for tag in tag_list(db)] == ["callback later", "VIP"]
    first, missed = "mikopbx-1728036000.1", "mikopbx-1728039600.2"
    revision = mirror_revision(db)
    set_call_tags(db, first, ADMIN, ["VIP", "Callback later"], 1)
    add_call_tag(db, missed, ADMIN, "vip", 2)
    add_call_tag(db, missed, ADMIN, "VIP", 3)                 # again: nothing changes
    remove_call_tag(db, missed, late["id"])
    note = add_comment(db, first, Actor("anna"), "Wants a 50% discount", 4)
    edit_comment(db, first, note["id"], Actor("anna"), "Wants a 50% discount, call Monday", 5)
    gone = add_comment(db, missed, Actor("anna"), "wrong number", 6)
    delete_comment(db, missed, gone["id"], ADMIN, 7)
    call = find_call(first, db)
    assert [tag["name"] for tag in call["tags"]] == ["callback later", "VIP"]
    assert [(c["author"], c["text"], c["edited_ms"]) for c in call["comments"]] == [
        ("anna", "Wants a 50% discount, call Monday", 5)]
    assert [tag["id"] for tag in find_call(missed, db)["tags"]] == [vip["id"]]
    assert linkedids(within(tags=["vip"]), db) == ["2", "1"]
    assert linkedids(within(tags=["vip", "callback later"], tag_mode="all"), db) == ["1"]
    assert linkedids(within(comment="50% DISCOUNT"), db) == ["1"]
    assert linkedids(within(comment="0% d"), db) == ["1"]
    assert tag_counts(OCTOBER_4_AND_5, db, 7) == {vip["id"]: 2, late["id"]: 1}
    assert tag_counts(OCTOBER_4_AND_5, db, 0) == {vip["id"]: 2, late["id"]: 1}
    rows, left = changes_since(OCTOBER_4_AND_5, revision, db)
    assert sorted(row["linkedid"] for row in rows) == [first, missed] and left == []
    assert mirror_revision(db) > revision


def test_the_worklist_and_calls_marked_handled(history):
    db = history
    missed = "mikopbx-1728039600.2"
    [open_call] = worklist(OCTOBER_4_AND_5, db, 10)
    assert open_call["linkedid"] == missed
    assert open_call["last_attempt"] == {"linkedid": "mikopbx-1728122400.7",
                                         "start_ms": OCTOBER + 34 * HOUR, "by": "202"}
    mark_handled(db, missed, "crm", "called from the CRM", 9)
    assert worklist(OCTOBER_4_AND_5, db, 10) == []
    assert linkedids(within(tab="unreturned"), db) == []
    assert handled_unreturned(OCTOBER_4_AND_5, db) == {("incoming", "missed"): 1}
    unmark_handled(db, missed)
    assert [row["linkedid"] for row in worklist(OCTOBER_4_AND_5, db, 10)] == [missed]


def test_saved_filters_settings_and_supervisor_groups(history):
    db = history
    first = save_filter(db, "anna", "Missed", {"tab": "missed"}, default=True)
    second = save_filter(db, "anna", "Mine", {"employee": "201"}, default=False)
    assert save_filter(db, "anna", "Missed", {"tab": "unreturned"}, default=False) == first
    save_filter(db, "boris", "Missed", {"tab": "missed"}, default=False)
    assert [(f["name"], f["params"], f["is_default"]) for f in saved_filters(db, "anna")] == [
        ("Mine", {"employee": "201"}, False), ("Missed", {"tab": "unreturned"}, True)]
    assert default_filter(db, "anna")["id"] == first
    delete_filter(db, "anna", first)
    with pytest.raises(LookupError):
        delete_filter(db, "anna", first)
    assert [f["id"] for f in saved_filters(db, "anna")] == [second]
    set_user_setting(db, "user", "language", "ru")           # a login that is SQL's keyword
    set_user_setting(db, "user", "language", "en")
    set_user_setting(db, "anna", "columns", "start,src")
    assert user_settings(db, "user") == {"language": "en"}
    assert user_settings(db, "anna") == {"columns": "start,src"}
    set_supervisor_groups(db, "user", ["Support"])
    set_supervisor_groups(db, "user", ["Sales", "Support"])
    assert supervisor_groups(db) == {"user": ["Sales", "Support"]}
    assert group_limit(db, "user") == ("201", "202")
    set_supervisor_groups(db, "user", [])
    assert group_limit(db, "user") is None


def test_api_tokens_are_made_listed_used_and_revoked(history):
    db = history
    token_id, token = create_token(db, "CRM", "operator", ["201"], "admin", OCTOBER)
    other_id, _ = create_token(db, "Wallboard", "supervisor", [], "admin", OCTOBER,
                               expires_days=30, groups=["Support"])
    assert other_id > token_id
    holder = token_holder(db, token, OCTOBER + 120_000)
    assert (holder.name, holder.role, holder.extensions) == ("CRM", "operator", ("201",))
    assert [(t["id"], t["name"], t["groups"], t["last_used_ms"]) for t in token_list(db)] == [
        (other_id, "Wallboard", ["Support"], None), (token_id, "CRM", [], OCTOBER + 120_000)]
    revoke_token(db, token_id, OCTOBER + 180_000)
    with pytest.raises(TokenRefused, match="revoked"):
        token_holder(db, token, OCTOBER + 240_000)
    with pytest.raises(LookupError):
        revoke_token(db, 999, OCTOBER)


def test_contacts_are_kept_found_and_name_the_calls(history):
    db = history
    olga = add_contact(db, contact_fields("Olga Smirnova", "Acme", "+7 916 999-00-00\n"
                                          "8 (903) 555-66-77", "", "", 9), "admin", OCTOBER, 9)
    kim = add_contact(db, contact_fields("boris kim", "", "74951112233", "", "", 9),
                      "admin", OCTOBER, 9)
    assert find_contact(db, olga)["numbers"] == ["+7 916 999-00-00", "8 (903) 555-66-77"]
    contacts, total = list_contacts(db)
    assert ([c["name"] for c in contacts], total) == (["boris kim", "Olga Smirnova"], 2)
    assert [c["id"] for c in list_contacts(db, "ACME")[0]] == [olga]
    names = names_of_keys(db, ["169990000", "035556677", "951112233", "000000000"])
    assert {key: found["name"] for key, found in names.items()} == {
        "169990000": "Olga Smirnova", "035556677": "Olga Smirnova", "951112233": "boris kim"}
    assert linkedids(within(number="acme"), db) == ["7", "6", "5", "2"]
    edit_contact(db, kim, contact_fields("Boris Kim", "Kim & Co", "74951112233", "", "", 9),
                 "admin", OCTOBER, 9)
    assert find_contact(db, kim)["company"] == "Kim & Co"
    delete_contact(db, olga)
    assert find_contact(db, olga) is None and names_of_keys(db, ["169990000"]) == {}
    with pytest.raises(LookupError):
        delete_contact(db, olga)


# --- reports, analytics, exports -----------------------------------------------------------------

# A mailed report's columns (mirror.report_rows.store_report), due at OCTOBER.
REPORT = {"name": "Daily", "filter_id": 0, "owner_role": "admin", "owner_extensions": "[]",
          "owner_scope": "involved", "filters": "{}", "period": "yesterday",
          "frequency": "daily", "at_time": "08:00", "on_day": None, "on_date": None,
          "format": "csv", "delivery": "attach", "link_hours": 72,
          "recipients": '["boss@example.com"]', "subject": "Calls", "body": "", "language": "en",
          "link_base": "http://127.0.0.1", "enabled": 1, "next_run_ms": OCTOBER,
          "requested_ms": None}


def test_a_mailed_reports_row_is_stored_and_claimed_once(history):
    db = history
    report_id = store_report(db, Owner("admin", "admin", ()), REPORT, 0, "Daily")
    [(report, send)] = claim_due(db, OCTOBER + 1, lambda report: OCTOBER + DAY)
    assert (report["id"], send["report_id"], send["due_ms"]) == (report_id, report_id, OCTOBER)
    assert claim_due(db, OCTOBER + 2, lambda report: None) == []
    secret = link_secret(db)                 # signs the reports' links
    assert type(secret) is bytes and len(secret) == 32


@pytest.fixture
def both(tmp_path, pg_schema_url):
    """The same history on each engine: (SQLite's module.db, PostgreSQL's)."""
    dbs = [open_module_db(tmp_path / "module.db"), open_module_db(pg_schema_url)]
    for db in dbs:
        _write_history(db)
    yield dbs
    for db in dbs:
        db.close()


@pytest.mark.parametrize("name", sorted(analytics.REPORT_TITLES))
def test_the_analytics_reports_read_the_same_on_both_engines(both, name):
    """A filter the rollups cannot answer (employees): counted from the calls."""
    f = within(BOTH_MONTHS, employees=["201", "202"])
    on_sqlite = analytics.build_report(name, f, both[0], UTC).as_json()
    on_postgresql = analytics.build_report(name, f, both[1], UTC).as_json()
    assert on_sqlite["source"] == "calls"
    assert json.loads(json.dumps(on_postgresql)) == on_sqlite       # whole numbers, no Decimal


def test_the_employees_report_counts_each_ones_calls(history):
    report = analytics.build_report("employees", within(employees=["201", "202"]), history, UTC)
    assert [(row["extension"], row["answered"], row["missed"], row["outgoing"], row["talk_s"])
            for row in report.rows] == [("202", 1, 2, 2, 45), ("201", 1, 1, 1, 150)]


def test_the_tab_counters_of_a_period_read_the_hourly_rollups(history):
    """Whole hours from `call_rollup`: kept by SQLite's triggers; PostgreSQL's triggers come
    with the writer's port (until then its rollups are empty)."""
    assert analytics.tab_counts(OCTOBER_4_AND_5, history) == {
        "all": 7, "incoming": 3, "missed": 2, "outgoing": 3, "internal": 1, "unreturned": 1}


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_an_export_of_the_filter(history, tmp_path, fmt):
    out = tmp_path / f"calls.{fmt}"
    written = export_file(out, fmt, within(directions=["incoming"]), history, UTC, "en", [])
    assert written == 3
    if fmt == "csv":
        rows = list(csv.reader(out.open(encoding="utf-8")))[1:]
    else:
        rows = list(load_workbook(out).worksheets[-1].iter_rows(values_only=True))[1:]
    assert len(rows) == 3
    assert any("79169990000" in str(cell) for cell in rows[1])


# --- the pages and the API, over real HTTP --------------------------------------------------------

PROXY_TOKEN = "proxy-secret"
PREFIX = "/admin-cabinet/module-extended-c-d-r/calls"


@pytest.fixture
def web(mirror_target, history, tmp_path):
    """The module's web process on the history's module.db (either engine): its base URL."""
    config = tmp_path / "extcdr.toml"
    config.write_text(f'[web]\nproxy_token = "{PROXY_TOKEN}"\n')
    app = create_app(load(config, {"module.db": mirror_target}))
    with serving(app, threads=2) as http:
        yield f"http://127.0.0.1:{http.effective_port}{PREFIX}"


def get(base: str, path: str, params=None, *, role="admin", extensions=""):
    url = f"{base}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    request = urllib.request.Request(url, headers={
        "X-Extcdr-User": "anna", "X-Extcdr-Role": role, "X-Extcdr-Extensions": extensions,
        "X-Extcdr-Proxy-Token": PROXY_TOKEN})
    try:
        with urllib.request.urlopen(request) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_the_api_lists_finds_and_refuses_calls(web):
    period = {"from": "2024-10-04", "to": "2024-10-05"}
    status, body = get(web, "/api/v1/calls", {**period, "number": "иван"})
    assert status == 200, body
    assert [call["linkedid"] for call in json.loads(body)["calls"]] == ["mikopbx-1728036000.1"]
    status, body = get(web, "/api/v1/calls", {**period, "direction": "outgoing"},
                       role="operator", extensions="202")
    assert [call["linkedid"][-1] for call in json.loads(body)["calls"]] == ["7", "3"]
    status, body = get(web, "/api/v1/calls/mikopbx-1728039600.2")
    assert status == 200 and json.loads(body)["call"]["missed_by"] == ["201", "202"]
    status, body = get(web, "/api/v1/calls", {**period, "direction": "sideways"})
    assert status == 400 and "unknown direction 'sideways'" in body
    status, body = get(web, "/api/v1/worklist/unreturned", {**period})
    assert status == 200, body
    assert [call["linkedid"] for call in json.loads(body)["calls"]] == ["mikopbx-1728039600.2"]


def test_a_calls_details_panel(web):
    status, body = get(web, "/calls/mikopbx-1728036000.1/details")
    assert status == 200, body
    assert "<code>mikopbx-1728036000.1</code>" in body and "201 Anna Lee" in body
    assert get(web, "/calls/mikopbx-1.1/details")[0] == 404


# --- the command line ---------------------------------------------------------------------------

def test_the_command_line_reads_and_annotates_either_engine(mirror_target, history, cli, tmp_path):
    config = tmp_path / "extcdr.toml"
    config.write_text('[pbx]\ntimezone = "UTC"\n')
    period = ("--from", "2024-10-04", "--to", "2024-10-05", "--config", config)
    code, out, err = cli("calls", "--db", mirror_target, *period, "--number", "smirn", "--format",
                         "jsonl")
    assert (code, err) == (0, "")
    assert [json.loads(line)["linkedid"] for line in out.splitlines()] == [
        "mikopbx-1728039600.2"]
    assert cli("tag", "--db", mirror_target, "--create", "VIP")[0] == 0
    assert cli("tag", "--db", mirror_target, "mikopbx-1728039600.2", "--add", "vip")[0] == 0
    assert cli("comment", "--db", mirror_target, "mikopbx-1728039600.2", "call back at 5")[0] == 0
    code, out, _ = cli("calls", "--db", mirror_target, *period, "--format", "jsonl")
    tagged = {call["linkedid"]: (call["tags"], [c["text"] for c in call["comments"]])
              for call in map(json.loads, out.splitlines())}
    assert tagged["mikopbx-1728039600.2"] == (["VIP"], ["call back at 5"])
    code, out, err = cli("token", "create", "--db", mirror_target, "--name", "CRM", "--role",
                         "operator", "--extensions", "201")
    assert code == 0 and "extcdr_" in out, err
    code, out, _ = cli("token", "list", "--db", mirror_target, "--format", "json")
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["CRM"]
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("name,company,phone\nOlga Smirnova,Acme,+7 916 999-00-00\n")
    code, out, err = cli("contacts", "import", "--db", mirror_target, contacts)
    assert code == 0, err
    code, out, _ = cli("contacts", "list", "--db", mirror_target, "--search", "acme")
    assert "Olga Smirnova" in out
    csv_file = tmp_path / "calls.csv"
    code, _, err = cli("export", "--db", mirror_target, *period, "--format", "csv", "--out",
                       csv_file)
    assert code == 0, err
    assert len(list(csv.reader(csv_file.open(encoding="utf-8")))) == 1 + 7
    code, _, err = cli("calls", "--db", mirror_target, *period, "--direction", "sideways")
    assert code == 2 and err.count("\n") == 1 and "sideways" in err


# Pages that count the calls of a filter the rollups cannot answer with `mirror.rollups`' SQL.
COUNTING = ("/?from=2024-10-04&to=2024-10-05&employee=202",)


@pytest.mark.parametrize("page, shows", [
    ("/?from=2024-10-04&to=2024-10-05&employee=202", "Olga Smirnova"),
    ("/rows?from=2024-10-04&to=2024-10-05&number=smirn", "Olga Smirnova"),
    ("/calls/mikopbx-1728039600.2/row", "Olga Smirnova"),
    ("/updates?from=2024-10-04&to=2024-10-05&since=0", "mikopbx-1728039600.2"),
    ("/tag-counts?from=2024-10-04&to=2024-10-05", "html"),
    ("/api/v1/calls/mikopbx-1728039600.2/comments", "comments"),
    ("/api/v1/tags", "colours"),
    ("/contacts", "Contacts"),
    ("/settings", "Settings"),
    ("/settings/tokens", "API tokens"),
    ("/reports", "Mailed reports"),
    ("/analytics", "Analytics"),
])
def test_the_pages_open_on_either_engine(web, history, page, shows):
    status, body = get(web, page)
    assert status == 200 and shows in body, body[body.find("<main"):][:800]


# --- several processes on one PostgreSQL history -------------------------------------------------

@pytest.fixture
def two_on_postgresql(pg_schema_url):
    """Two connections to one PostgreSQL history, as two daemons or web processes hold."""
    first = open_module_db(pg_schema_url)
    second = open_module_db(pg_schema_url)
    yield first, second
    first.close()
    second.close()


def test_two_senders_never_claim_the_same_report(two_on_postgresql):
    """While one daemon's claim is open (its report row locked), another's passes it by at
    once instead of waiting and then mailing it again."""
    first, second = two_on_postgresql
    store_report(first, Owner("admin", "admin", ()), {**REPORT, "name": "Daily"}, 0, "Daily")
    store_report(first, Owner("admin", "admin", ()), {**REPORT, "name": "Weekly"}, 0, "Weekly")
    seen_by_second = []

    def following_run(report):
        if not seen_by_second:          # inside the first claim's transaction
            started = time.monotonic()
            seen_by_second.append([r["name"] for r, _ in claim_due(second, OCTOBER + 1,
                                                                   lambda r: OCTOBER + DAY)])
            assert time.monotonic() - started < 2
        return OCTOBER + DAY

    claimed = [report["name"] for report, _ in claim_due(first, OCTOBER + 1, following_run)]
    assert len(claimed) + len(seen_by_second[0]) == 2
    assert set(claimed) | set(seen_by_second[0]) == {"Daily", "Weekly"}
    assert claim_due(second, OCTOBER + 2, lambda r: None) == []


def test_a_tokens_use_is_not_written_while_another_holds_its_row(two_on_postgresql):
    first, second = two_on_postgresql
    _, token = create_token(first, "CRM", "operator", ["201"], "admin", OCTOBER)
    with write_transaction(first):
        run(first, "UPDATE api_token SET name = name")           # the row locked
        started = time.monotonic()
        assert token_holder(second, token, OCTOBER + 120_000).name == "CRM"
        assert time.monotonic() - started < 2
    assert [t["last_used_ms"] for t in token_list(second)] == [None]
    token_holder(second, token, OCTOBER + 180_000)
    assert [t["last_used_ms"] for t in token_list(second)] == [OCTOBER + 180_000]


def test_a_periods_queries_read_its_months_partitions_only(pg_schema_url):
    """October's page, its number and name search and an employee's calls plan October's
    partitions, never November's (PostgreSQL prunes them by the period)."""
    db = open_module_db(pg_schema_url)
    _write_history(db)
    searched = {}
    for label, f in (("page", OCTOBER_4_AND_5), ("digits", within(number="916")),
                     ("name", within(number="anna")), ("employee", within(employees=["202"]))):
        sql, params = calls_query(within(f, limit=50), db).sql()
        plan = json.dumps(db.execute_sql("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()[0])
        searched[label] = sorted(set(re.findall(r'"Relation Name": "(\w+)"', plan)))
    db.close()
    assert searched == {"page": ["call_2024_10"], "digits": ["call_2024_10"],
                        "name": ["call_2024_10", "call_employee_2024_10"],
                        "employee": ["call_2024_10", "call_employee_2024_10"]}
