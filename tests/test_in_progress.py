"""Calls still under way: legs in the PBX's temporary `cdr` table (MikoPBX) hold their call back.

MikoPBX moves each leg to `cdr_general` when that leg ends, so an IVR leg arrives while the same
call still rings a queue. Such a call must never show as missed or unreturned, be counted, or
be a missed call for the callback rules; it is listed by `extcdr calls --in-progress`, and once
its last leg has moved it is classified from all its legs.
"""
from __future__ import annotations

import json
import sqlite3

import pytest

from mirror.live import ChannelTable
from mirror.settings import load
from tests.mirror import dump
from tests.pbxfixture import DID, Pbx
from tests.stack import serving
from tests.test_web_api import PREFIX, TOKEN, get
from web import create_app

# An incoming call: the IVR, then the queue rings 201 and 202; 202 answers.
IVR_QUEUE_ANSWERED = """
    start    | answer   | end      | src          | dst
    10:00:00 | 10:00:00 | 10:00:20 | +79161234567 | 2020
    10:00:20 | 10:00:40 | 10:00:40 | +79161234567 | 2000
    10:00:20 |          | 10:00:40 | +79161234567 | 201
    10:00:20 | 10:00:40 | 10:03:40 | +79161234567 | 202
    """
# The IVR, then 201 rings and nobody answers.
IVR_THEN_201_RINGS = """
    start    | answer   | end      | src          | dst
    10:00:00 | 10:00:00 | 10:00:20 | +79161234567 | 2020
    10:00:20 |          | 10:00:50 | +79161234567 | 201
    """


@pytest.fixture
def pbx(tmp_path, capsys):
    return Pbx(tmp_path / "pbx", capsys)


def move(pbx: Pbx, rows: list[dict]) -> None:
    """The PBX ends these legs: out of `cdr`, into `cdr_general`, in one transaction."""
    with sqlite3.connect(pbx.cdr_db) as conn:
        for row in rows:
            conn.execute("DELETE FROM cdr WHERE UNIQUEID = ?", (row["UNIQUEID"],))
    pbx.write(rows)


def under_way(rows: list[dict]) -> list[dict]:
    """Legs as the `cdr` table holds them while they last: no end, no figures yet."""
    return [{**row, "endtime": "", "disposition": "", "billsec": 0, "duration": 0,
             "work_completed": "", "dialstatus": ""} for row in rows]


def in_progress(pbx: Pbx) -> list[dict]:
    rc, out, err = pbx.cli("calls", "--db", pbx.module_db, "--in-progress", "--format", "jsonl")
    assert rc == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_a_call_whose_queue_still_rings_is_in_progress_never_missed(pbx):
    call = pbx.build(IVR_QUEUE_ANSWERED, did=DID)
    ivr, queue, agent1, agent2 = call.rows
    pbx.write([ivr])                                       # the IVR leg ended and moved
    pbx.write(under_way([queue, agent1, {**agent2, "answer": ""}]), table="cdr")
    pbx.sync()
    assert pbx.calls() == []                              # not a finished call: not listed
    assert pbx.calls("--status", "missed") == []
    assert pbx.calls("--unreturned") == []
    rc, out, _ = pbx.cli("calls", "--db", pbx.module_db, "--format", "summary",
                         "--from", "2024-03-05", "--to", "2024-03-05")
    assert rc == 0 and "missed" not in out                 # not counted either
    (live,) = in_progress(pbx)
    assert live["linkedid"] == call.linkedid and live["direction"] == "incoming"
    assert live["state"] == "queue"
    assert {(p["to"], p["state"]) for p in live["parties"]} >= {("201", "ringing"),
                                                                  ("202", "ringing")}
    assert live["start"].startswith("2024-03-05T10:00:00+03:00")

    with sqlite3.connect(pbx.cdr_db) as conn:             # 202 answers
        conn.execute("UPDATE cdr SET answer = ? WHERE UNIQUEID = ?",
                     (agent2["answer"], agent2["UNIQUEID"]))
    move(pbx, [queue, agent1])
    pbx.sync()
    assert pbx.calls() == []
    (live,) = in_progress(pbx)
    assert live["state"] == "talking" and live["since"].startswith("2024-03-05T10:00:40")
    assert live["parties"][0]["from"] == "+79161234567" and live["parties"][0]["to"] == "202"

    move(pbx, [agent2])                                    # the last leg ends
    pbx.sync()
    assert in_progress(pbx) == []
    (done,) = pbx.calls()
    assert done["status"] == "answered" and done["answered_by"] == "202"
    assert done["missed_by"] == ["201"] and done["legs"] == 4 and done["talk_s"] == 180


def test_a_call_seen_finished_too_early_is_taken_back_while_it_goes_on(pbx):
    """The IVR leg moved before the queue leg was written: for a moment the call looked
    missed. When its next leg shows up in `cdr` it is in progress again, then answered."""
    call = pbx.build(IVR_QUEUE_ANSWERED, did=DID)
    ivr, queue, agent1, agent2 = call.rows
    pbx.write([ivr])
    pbx.sync()
    assert [c["status"] for c in pbx.calls()] == ["missed"]
    pbx.write(under_way([queue, agent1, agent2]), table="cdr")
    pbx.sync()
    assert pbx.calls() == [] and pbx.calls("--unreturned") == []
    assert [c["linkedid"] for c in in_progress(pbx)] == [call.linkedid]
    move(pbx, [queue, agent1, agent2])
    pbx.sync()
    assert [(c["status"], c["answered_by"]) for c in pbx.calls()] == [("answered", "202")]


def test_a_call_in_progress_is_no_missed_call_for_callbacks(pbx):
    """An outgoing call to the number while its incoming call is still in the IVR does not
    return anything; once the incoming call turns out answered, nothing was missed."""
    call = pbx.build(IVR_QUEUE_ANSWERED, did=DID)
    ivr, queue, agent1, agent2 = call.rows
    pbx.write([ivr])
    pbx.write(under_way([queue, agent1, agent2]), table="cdr")
    outgoing = pbx.call("""
        start    | answer   | end      | src | dst
        10:01:00 | 10:01:05 | 10:02:05 | 203 | 89161234567
        """)
    pbx.sync()
    (out,) = pbx.calls()
    assert out["linkedid"] == outgoing and out["status"] == "answered"
    assert out["callback_of"] is None
    move(pbx, [queue, agent1, agent2])
    pbx.sync()
    found = {c["linkedid"]: c for c in pbx.calls()}
    assert found[call.linkedid]["status"] == "answered"
    assert found[call.linkedid]["returned_by"] is None
    assert found[outgoing]["status"] == "answered" and found[outgoing]["callback_of"] is None


def test_a_call_in_progress_that_ends_missed_is_then_missed_and_returned(pbx):
    call = pbx.build(IVR_THEN_201_RINGS, did=DID)
    ivr, ringing = call.rows
    pbx.write([ivr])
    pbx.write(under_way([ringing]), table="cdr")
    pbx.sync()
    assert pbx.calls("--status", "missed") == []
    move(pbx, [ringing])
    back = pbx.call("""
        start    | answer   | end      | src | dst
        10:05:00 | 10:05:05 | 10:06:05 | 201 | 89161234567
        """)
    pbx.sync()
    found = {c["linkedid"]: c for c in pbx.calls()}
    assert found[call.linkedid]["status"] == "missed"
    assert found[call.linkedid]["returned_by"] == back
    assert found[back]["status"] == "we_called_back"


def test_arriving_leg_by_leg_gives_the_mirror_of_one_sync_at_the_end(tmp_path, capsys):
    """Order and batch independence: syncing after every step of the call gives the same
    mirror as syncing once when it is over."""
    step_by_step = Pbx(tmp_path / "a", capsys)
    at_once = Pbx(tmp_path / "b", capsys)
    other = """
        start    | answer   | end      | src | dst
        09:00:00 |          | 09:00:30 | +79161234567 | 203
        """
    for pbx in (step_by_step, at_once):
        pbx.call(other, did=DID, linkedid="mikopbx-1709618400.1")
    call = step_by_step.build(IVR_QUEUE_ANSWERED, did=DID, linkedid="mikopbx-1709622000.2")
    ivr, queue, agent1, agent2 = call.rows
    step_by_step.sync()
    step_by_step.write(under_way([ivr]), table="cdr")
    step_by_step.sync()
    move(step_by_step, [ivr])
    step_by_step.write(under_way([queue, agent1, agent2]), table="cdr")
    step_by_step.sync()
    move(step_by_step, [agent1])
    step_by_step.sync()
    move(step_by_step, [queue, agent2])
    step_by_step.sync()
    at_once.write(call.rows)
    at_once.sync()
    assert dump(step_by_step.module_db) == dump(at_once.module_db)
    assert in_progress(step_by_step) == []


def test_a_leg_left_in_cdr_by_a_crash_holds_nothing_back(pbx):
    """A leg that began half a day before the PBX's newest activity is a leftover."""
    stuck = pbx.build(IVR_THEN_201_RINGS, did=DID, day="2024-03-04")
    ivr, ringing = stuck.rows
    pbx.write([ivr])
    pbx.write(under_way([ringing]), table="cdr")           # never cleaned up
    pbx.call("""
        start    | answer   | end      | src | dst
        10:00:00 | 10:00:05 | 10:01:05 | 201 | 202
        """)                                               # the next day's traffic
    pbx.sync()
    assert stuck.linkedid in [c["linkedid"] for c in pbx.calls(date_from="2024-03-04")]
    assert in_progress(pbx) == []


def test_in_progress_table_lists_who_talks_to_whom(pbx):
    call = pbx.build("""
        start    | answer   | end | src | dst
        10:00:00 | 10:00:04 | ''  | 201 | 89161234567
        """)
    pbx.write(under_way(call.rows), table="cdr")
    pbx.sync()
    rc, out, err = pbx.cli("calls", "--db", pbx.module_db, "--in-progress")
    assert rc == 0, err
    assert "201 Иван Петров -> 89161234567 (talking)" in out
    assert "outgoing" in out and out.strip().endswith("1 call in progress")
    rc, _, err = pbx.cli("calls", "--db", pbx.module_db, "--in-progress", "--format", "summary")
    assert rc != 0 and "summary" in err and "Traceback" not in err
    rc, out, err = pbx.cli("status", "--db", pbx.module_db, "--format", "json")
    assert rc == 0 and json.loads(out)["in_progress"] == 1 and json.loads(out)["calls"] == 0


def test_stock_asterisk_channels_up_are_legs_in_progress():
    """Without MikoPBX's `cdr` table, AMI's channels say what is under way."""
    table = ChannelTable()
    caller = {"Event": "Newchannel", "Uniqueid": "1700000000.1", "Linkedid": "1700000000.1",
              "Channel": "PJSIP/201-00000001", "CallerIDNum": "201", "CallerIDName": "Ivan",
              "Exten": "202", "ChannelState": "4", "Timestamp": "1700000000.100000"}
    callee = {"Event": "Newchannel", "Uniqueid": "1700000000.2", "Linkedid": "1700000000.1",
              "Channel": "PJSIP/202-00000002", "CallerIDNum": "201", "Exten": "s",
              "ChannelState": "0", "Timestamp": "1700000000.300000"}
    assert table.record(caller) and table.record(callee)
    (leg,) = table.legs()
    assert (leg.src_num, leg.dst_num, leg.answer, leg.linkedid) == ("201", "202", None,
                                                                     "1700000000.1")
    assert table.record({**callee, "Event": "Newstate", "ChannelState": "6",
                         "Timestamp": "1700000005.000000"})
    table.record({**caller, "Event": "Newstate", "ChannelState": "6",
                  "Timestamp": "1700000005.000000"})
    (leg,) = table.legs()
    assert leg.answer == 1700000005000
    assert table.record({**callee, "Event": "Hangup"}) and table.record({**caller, "Event": "Hangup"})
    assert table.legs() == []


def test_the_api_lists_calls_in_progress_by_role_and_not_as_calls(pbx, tmp_path):
    """`api/v1/calls/in-progress` over real HTTP: an operator sees only calls they are in; the
    call list and the call itself do not have it until it ends."""
    call = pbx.build(IVR_QUEUE_ANSWERED, did=DID)
    ivr, queue, agent1, agent2 = call.rows
    pbx.write([ivr])
    pbx.write(under_way([queue, agent1, {**agent2, "answer": ""}]), table="cdr")
    other = pbx.build("""
        start    | answer   | end | src | dst
        10:01:00 | 10:01:02 | ''  | 204 | 89035550000
        """)
    pbx.write(under_way(other.rows), table="cdr")
    pbx.sync()
    config = tmp_path / "extcdr.toml"
    config.write_text(f'[web]\nproxy_token = "{TOKEN}"\n')
    with serving(create_app(load(config, {"module.db": pbx.module_db})), threads=2) as http:
        base = f"http://127.0.0.1:{http.effective_port}{PREFIX}"
        status, body = get(base, "/api/v1/calls/in-progress")
        assert status == 200
        assert {c["linkedid"]: c["state"] for c in body["calls"]} == {
            call.linkedid: "queue", other.linkedid: "talking"}
        assert "status" not in body["calls"][0]
        status, body = get(base, "/api/v1/calls/in-progress", role="operator",
                           extensions="201")
        assert status == 200 and [c["linkedid"] for c in body["calls"]] == [call.linkedid]
        status, body = get(base, "/api/v1/calls/in-progress", role="operator",
                           extensions="205")
        assert status == 200 and body["calls"] == []
        status, body = get(base, "/api/v1/calls", {"from": "2024-03-05", "to": "2024-03-05"})
        assert status == 200 and body["calls"] == []
        status, _ = get(base, f"/api/v1/calls/{call.linkedid}")
        assert status == 404


def test_after_a_reconnect_asterisk_lists_what_is_up():
    """A Hangup missed while AMI was down must not hold a call back forever: the table is
    cleared on login and rebuilt from `CoreShowChannel` (which carries the call's age)."""
    table = ChannelTable()
    table.record({"Event": "Newchannel", "Uniqueid": "1.1", "Linkedid": "1.1",
                  "Channel": "PJSIP/201-00000001", "CallerIDNum": "201", "Exten": "202",
                  "Timestamp": "1700000000.0"})
    table.clear()
    assert table.legs() == []
    assert table.record({"Event": "CoreShowChannel", "Uniqueid": "2.1", "Linkedid": "2.1",
                         "Channel": "PJSIP/203-00000003", "CallerIDNum": "203",
                         "Exten": "89161234567", "ChannelState": "6", "Duration": "00:01:05",
                         "Timestamp": "1700000100.0"})
    (leg,) = table.legs()
    assert (leg.linkedid, leg.src_num, leg.dst_num, leg.start) == (
        "2.1", "203", "89161234567", 1700000035000)
