"""Black-box scenarios: legs in `cdr_general` → `extcdr sync` → `extcdr calls` → call records.

Each test writes the legs of a real-looking call into a real PBX `cdr.db` (see pbxfixture.py for
the table notation), runs the CLI in-process and checks the fields a supervisor reads, with
module.db on each engine: an SQLite file and a PostgreSQL schema (conftest's `engine`). The spec
is ../shared/design/call-semantics.md; where it is silent the expected value is what a call-centre
supervisor would call correct, and a comment says so.
"""
from __future__ import annotations

import json
import sqlite3
from datetime import datetime

import pytest

from tests.pbxfixture import DID, MONITOR, PROVIDER_NAME, Pbx, linkedid_at

FIELDS = ("linkedid", "start", "end", "direction", "status", "reason", "src", "src_name", "dst",
          "dst_name", "external_number", "did", "line", "answered_by", "missed_by",
          "transferred_to", "employees", "wait_s", "talk_s", "duration_s", "recordings",
          "callback_of", "returned_by", "callback_attempts", "legs")
LIST_FIELDS = ("missed_by", "transferred_to", "employees", "recordings")
NUMBER_FIELDS = ("src", "dst", "external_number", "answered_by")
# Fields whose order the spec does not fix: compared as sorted lists.
UNORDERED = {"missed_by", "employees"}

REC = f"{MONITOR}/2024/03/05/10"


@pytest.fixture
def make_pbx(tmp_path, capsys, mirror_targets):
    """make_pbx(**kwargs) -> a new PBX whose module.db is on the test's engine."""
    made = []

    def make(**kwargs) -> Pbx:
        root = tmp_path / f"pbx{len(made)}"
        made.append(Pbx(root, capsys, module_db=mirror_targets(root), **kwargs))
        return made[-1]
    return make


@pytest.fixture
def pbx(make_pbx) -> Pbx:
    return make_pbx()


def check_contract(rec: dict, pbx: Pbx) -> None:
    """The shape every call record must have, whatever the scenario."""
    missing = [f for f in FIELDS if f not in rec]
    assert not missing, f"call record lacks {missing}"
    for name in LIST_FIELDS:
        assert isinstance(rec[name], list), f"{name} must be a list, got {rec[name]!r}"
        assert all(isinstance(item, str) for item in rec[name]), f"{name}: {rec[name]!r}"
    for name in NUMBER_FIELDS:
        assert rec[name] is None or isinstance(rec[name], str), f"{name}: {rec[name]!r}"
    assert rec["direction"] in {"incoming", "outgoing", "internal"}
    assert rec["status"] in {"answered", "transferred", "missed", "not_reached",
                             "client_called_back", "we_called_back", "application"}
    for name in ("start", "end"):
        when = datetime.fromisoformat(rec[name])
        assert when.utcoffset() is not None, f"{name} {rec[name]} has no UTC offset"
        assert when.utcoffset() == when.astimezone(pbx.tz).utcoffset(), \
            f"{name} {rec[name]} is not in the PBX timezone {pbx.tz_name}"


def view(rec: dict, expected: dict) -> dict:
    """The record's values for the expected keys, normalised for comparison."""
    got = {}
    for key in expected:
        value = rec[key]
        if key in UNORDERED and isinstance(value, list):
            value = sorted(value)
        if key in ("start", "end") and value:
            value = datetime.fromisoformat(value).isoformat(timespec="seconds")
        got[key] = value
    return got


def expect(rec: dict, **expected) -> None:
    assert view(rec, expected) == expected


def record(pbx: Pbx, linkedid: str) -> dict:
    rec = pbx.record(linkedid)
    check_contract(rec, pbx)
    return rec


def leg_count(rec: dict) -> int:
    legs = rec["legs"]
    return legs if isinstance(legs, int) else len(legs)


NOTHING_ELSE = dict(reason=None, transferred_to=[], callback_of=None, returned_by=None,
                    callback_attempts=0)


# ---- internal calls -------------------------------------------------------------------------

INTERNAL = {
    "answered": ("""
        start    | answer   | end      | src | dst
        10:00:00 | 10:00:05 | 10:01:05 | 201 | 202
        """, dict(status="answered", reason=None, answered_by="202", missed_by=[],
                  wait_s=5, talk_s=60, duration_s=65, end="2024-03-05T10:01:05+03:00")),
    # A busy extension never rang: empty dst_chan.
    "busy": ("""
        start    | end      | src | dst | dst_chan | dialstatus
        10:00:00 | 10:00:01 | 201 | 202 | ''       | BUSY
        """, dict(status="not_reached", reason="BUSY", answered_by=None, missed_by=[],
                  wait_s=1, talk_s=0, duration_s=1, end="2024-03-05T10:00:01+03:00")),
    "no answer": ("""
        start    | end      | src | dst | dialstatus
        10:00:00 | 10:00:20 | 201 | 202 | NOANSWER
        """, dict(status="not_reached", reason="NOANSWER", answered_by=None, missed_by=["202"],
                  wait_s=20, talk_s=0, duration_s=20, end="2024-03-05T10:00:20+03:00")),
}


@pytest.mark.parametrize("legs, expected", INTERNAL.values(), ids=INTERNAL.keys())
def test_internal_call(pbx, legs, expected):
    linkedid = pbx.call(legs)
    pbx.sync()
    rec = record(pbx, linkedid)
    expect(rec, direction="internal", src="201", dst="202", external_number=None,
           transferred_to=[], recordings=[], callback_of=None, returned_by=None,
           callback_attempts=0, start="2024-03-05T10:00:00+03:00", **expected)
    # Spec silent: an employee who was dialled took part, even when busy — a supervisor
    # filtering by 202 expects to see the calls that tried to reach 202.
    expect(rec, employees=["201", "202"])
    assert not rec["line"], "an internal call used no trunk"
    assert leg_count(rec) == 1


def test_internal_call_keeps_caller_and_callee_names(pbx):
    linkedid = pbx.call("""
        start    | answer   | end      | src | dst
        10:00:00 | 10:00:05 | 10:01:05 | 201 | 202
        """)
    pbx.sync()
    expect(record(pbx, linkedid), src_name="Иван Петров", dst_name="Мария Смирнова")


# ---- outgoing calls -------------------------------------------------------------------------

OUTGOING = {
    "answered": ("""
        start    | answer   | end      | src | dst
        10:00:00 | 10:00:12 | 10:01:42 | 201 | 89161234567
        """, dict(status="answered", reason=None, answered_by="201", wait_s=12, talk_s=90,
                  duration_s=102, line=PROVIDER_NAME)),
    "busy": ("""
        start    | end      | src | dst         | dialstatus
        10:00:00 | 10:00:03 | 201 | 89161234567 | BUSY
        """, dict(status="not_reached", reason="BUSY", answered_by=None, wait_s=3, talk_s=0,
                  duration_s=3, line=PROVIDER_NAME)),
    "no answer": ("""
        start    | end      | src | dst         | dialstatus
        10:00:00 | 10:00:30 | 201 | 89161234567 | NOANSWER
        """, dict(status="not_reached", reason="NOANSWER", answered_by=None, wait_s=30,
                  talk_s=0, duration_s=30, line=PROVIDER_NAME)),
    # The trunk is down: no channel was created.
    "unavailable": ("""
        start    | end      | src | dst         | dst_chan | dialstatus
        10:00:00 | 10:00:01 | 201 | 89161234567 | ''       | CHANUNAVAIL
        """, dict(status="not_reached", reason="CHANUNAVAIL", answered_by=None, wait_s=1,
                  talk_s=0, duration_s=1)),
}


@pytest.mark.parametrize("legs, expected", OUTGOING.values(), ids=OUTGOING.keys())
def test_outgoing_call(pbx, legs, expected):
    linkedid = pbx.call(legs)
    pbx.sync()
    rec = record(pbx, linkedid)
    # Spec silent on answered_by of an unanswered outgoing call: nobody answered, so null.
    expect(rec, direction="outgoing", src="201", dst="89161234567",
           external_number="89161234567", missed_by=[], employees=["201"], transferred_to=[],
           recordings=[], callback_of=None, returned_by=None, callback_attempts=0,
           start="2024-03-05T10:00:00+03:00", **expected)


# ---- incoming calls -------------------------------------------------------------------------

INCOMING = {
    "answered": ("""
        start    | answer   | end      | src          | dst
        10:00:00 | 10:00:06 | 10:02:06 | +79161234567 | 201
        """, dict(status="answered", reason=None, answered_by="201", missed_by=[],
                  wait_s=6, talk_s=120, duration_s=126)),
    "missed": ("""
        start    | end      | src          | dst | dialstatus
        10:00:00 | 10:00:25 | +79161234567 | 201 | CANCEL
        """, dict(status="missed", reason="CANCEL", answered_by=None, missed_by=["201"],
                  wait_s=25, talk_s=0, duration_s=25)),
}


@pytest.mark.parametrize("legs, expected", INCOMING.values(), ids=INCOMING.keys())
def test_incoming_call(pbx, legs, expected):
    linkedid = pbx.call(legs, did=DID)
    pbx.sync()
    expect(record(pbx, linkedid), direction="incoming", src="+79161234567", dst="201",
           external_number="+79161234567", did=DID, line=PROVIDER_NAME, employees=["201"],
           transferred_to=[], recordings=[], start="2024-03-05T10:00:00+03:00", **expected)


def test_short_outside_numbers_are_external_when_the_pbx_db_says_so(pbx):
    """With a PBX DB, internal means an employee extension there — not "at most 4 digits"."""
    bank = pbx.call("""
        start    | answer   | end      | src | dst
        10:00:00 | 10:00:04 | 10:01:04 | 900 | 201
        """, did=DID)
    emergency = pbx.call("""
        start    | answer   | end      | src | dst
        11:00:00 | 11:00:02 | 11:00:32 | 202 | 112
        """)
    pbx.sync()
    expect(record(pbx, bank), direction="incoming", external_number="900", answered_by="201",
           line=PROVIDER_NAME)
    expect(record(pbx, emergency), direction="outgoing", external_number="112",
           answered_by="202", line=PROVIDER_NAME)


def test_employee_mobile_is_an_external_number(pbx):
    """m_Extensions type EXTERNAL (an employee's mobile) is not an internal number."""
    incoming = pbx.call("""
        start    | answer   | end      | src         | dst
        10:00:00 | 10:00:04 | 10:01:04 | 79169990011 | 202
        """)
    outgoing = pbx.call("""
        start    | answer   | end      | src | dst
        11:00:00 | 11:00:04 | 11:01:04 | 202 | 79169990011
        """)
    pbx.sync()
    expect(record(pbx, incoming), direction="incoming", external_number="79169990011",
           answered_by="202", status="answered")
    expect(record(pbx, outgoing), direction="outgoing", external_number="79169990011",
           answered_by="202", status="answered")


# ---- IVR, queues, ring groups -----------------------------------------------------------------

IVR_QUEUE = """
    start    | answer   | end      | src          | dst   | dialstatus
    # the IVR answers and plays its menu, the caller presses 1: queue 2000
    10:00:00 | 10:00:00 | 10:00:12 | +79035551122 | 2020  | ANSWER
    10:00:12 | 10:00:31 | 10:00:31 | +79035551122 | 2000  | ANSWER
    # the queue rings its agents through Local/ channels, round 1: nobody answers
    10:00:12 |          | 10:00:27 | +79035551122 | 201   | NOANSWER
    10:00:12 |          | 10:00:27 | +79035551122 | 202   | NOANSWER
    10:00:12 |          | 10:00:27 | +79035551122 | 203   | NOANSWER
    # round 2: 202 answers, the others stop ringing
    10:00:29 |          | 10:00:31 | +79035551122 | 201#2 | CANCEL
    10:00:29 | 10:00:31 | 10:03:31 | +79035551122 | 202#2 | ANSWER
    10:00:29 |          | 10:00:31 | +79035551122 | 203#2 | CANCEL
    """


def test_ivr_then_queue_answered_by_one_agent(pbx):
    linkedid = pbx.call(IVR_QUEUE, did=DID)
    pbx.sync()
    rec = record(pbx, linkedid)
    expect(rec, direction="incoming", status="answered", reason=None, answered_by="202",
           missed_by=["201", "203"], transferred_to=[], employees=["201", "202", "203"],
           external_number="+79035551122", did=DID, line=PROVIDER_NAME,
           wait_s=31, talk_s=180, duration_s=211,
           start="2024-03-05T10:00:00+03:00", end="2024-03-05T10:03:31+03:00")
    assert leg_count(rec) == 8


def test_queue_everybody_missed(pbx):
    linkedid = pbx.call("""
        start    | end      | src          | dst   | dialstatus
        11:00:00 | 11:01:00 | +79035551122 | 2000  | NOANSWER
        11:00:00 | 11:00:15 | +79035551122 | 201   | NOANSWER
        11:00:00 | 11:00:15 | +79035551122 | 202   | NOANSWER
        11:00:00 | 11:00:15 | +79035551122 | 203   | NOANSWER
        11:00:20 | 11:00:35 | +79035551122 | 201#2 | NOANSWER
        11:00:20 | 11:00:35 | +79035551122 | 202#2 | NOANSWER
        11:00:20 | 11:00:35 | +79035551122 | 203#2 | NOANSWER
        # the caller gives up during round 3
        11:00:40 | 11:01:00 | +79035551122 | 201#3 | CANCEL
        11:00:40 | 11:01:00 | +79035551122 | 202#3 | CANCEL
        11:00:40 | 11:01:00 | +79035551122 | 203#3 | CANCEL
        """, did=DID)
    pbx.sync()
    expect(record(pbx, linkedid), direction="incoming", status="missed", reason="CANCEL",
           answered_by=None, missed_by=["201", "202", "203"], transferred_to=[],
           employees=["201", "202", "203"], wait_s=60, talk_s=0, duration_s=60,
           recordings=[], returned_by=None)


def test_ring_group_rings_everyone_one_answers(pbx):
    """Employee 205 calls group 2000, which rings 201, 202 and 203 at once; 203 answers."""
    linkedid = pbx.call("""
        start    | answer   | end      | src | dst  | dialstatus
        12:00:00 | 12:00:09 | 12:00:09 | 205 | 2000 | ANSWER
        12:00:00 |          | 12:00:09 | 205 | 201  | CANCEL
        12:00:00 |          | 12:00:09 | 205 | 202  | CANCEL
        12:00:00 | 12:00:09 | 12:02:09 | 205 | 203  | ANSWER
        """)
    pbx.sync()
    expect(record(pbx, linkedid), direction="internal", status="answered", answered_by="203",
           missed_by=["201", "202"], employees=["201", "202", "203", "205"],
           external_number=None, wait_s=9, talk_s=120, duration_s=129, **NOTHING_ELSE)


def test_internal_call_to_a_group_nobody_answers_is_not_an_application_call(pbx):
    """The queue leg is an app leg, but agents rang: the caller did not reach anyone."""
    linkedid = pbx.call("""
        start    | end      | src | dst  | dialstatus
        12:00:00 | 12:00:30 | 205 | 2000 | NOANSWER
        12:00:00 | 12:00:30 | 205 | 201  | CANCEL
        12:00:00 | 12:00:30 | 205 | 202  | CANCEL
        """)
    pbx.sync()
    expect(record(pbx, linkedid), direction="internal", status="not_reached", reason="CANCEL",
           answered_by=None, missed_by=["201", "202"], employees=["201", "202", "205"],
           wait_s=30, talk_s=0)


TWO_DEVICES = {
    # 201's desk phone and softphone ring; the softphone answers.
    "answered on the second device": ("""
        start    | answer   | end      | src          | dst | dst_chan           | UNIQUEID                                   | dialstatus
        10:00:00 |          | 10:00:07 | +79161234567 | 201 | PJSIP/201-000000a1 | mikopbx-1709622000.500_0a1b2c               | CANCEL
        10:00:00 | 10:00:07 | 10:01:07 | +79161234567 | 201 | PJSIP/201-000000a2 | mikopbx-1709622000.500_PJSIP/201-000000a2   | ANSWER
        """, dict(status="answered", answered_by="201", missed_by=[], talk_s=60, wait_s=7)),
    "neither device answers": ("""
        start    | end      | src          | dst | dst_chan           | UNIQUEID                                   | dialstatus
        10:00:00 | 10:00:30 | +79161234567 | 201 | PJSIP/201-000000a1 | mikopbx-1709622000.500_0a1b2c               | NOANSWER
        10:00:00 | 10:00:30 | +79161234567 | 201 | PJSIP/201-000000a2 | mikopbx-1709622000.500_PJSIP/201-000000a2   | NOANSWER
        """, dict(status="missed", answered_by=None, missed_by=["201"], talk_s=0, wait_s=30)),
}


@pytest.mark.parametrize("legs, expected", TWO_DEVICES.values(), ids=TWO_DEVICES.keys())
def test_two_devices_of_one_extension_count_once(pbx, legs, expected):
    linkedid = pbx.call(legs)
    pbx.sync()
    rec = record(pbx, linkedid)
    expect(rec, direction="incoming", employees=["201"], transferred_to=[], **expected)
    assert rec["missed_by"].count("201") <= 1 and rec["employees"].count("201") == 1


def test_caller_gives_up_in_ivr(pbx):
    linkedid = pbx.call(f"""
        start    | answer   | end      | src          | dst  | dialstatus | recordingfile
        10:00:00 | 10:00:00 | 10:00:20 | +79161234567 | 2020 | ANSWER     | {REC}/ivr-menu-2020.mp3
        """, did=DID)
    pbx.sync()
    # No human leg: the reason is the dial status of the last leg (the IVR's).
    expect(record(pbx, linkedid), direction="incoming", status="missed", reason="ANSWER",
           answered_by=None, missed_by=[], transferred_to=[], employees=[], recordings=[],
           wait_s=20, talk_s=0, duration_s=20, returned_by=None)


def test_voicemail_is_missed_not_answered(pbx):
    linkedid = pbx.call(f"""
        start    | answer   | end      | src          | dst | dst_chan  | dialstatus | recordingfile
        10:00:00 |          | 10:00:20 | +79161234567 | 201 |           | NOANSWER   | ''
        10:00:20 | 10:00:20 | 10:00:50 | +79161234567 | 201 | VOICEMAIL | ANSWER     | {REC}/voicemail-201-0001.mp3
        """, did=DID)
    pbx.sync()
    expect(record(pbx, linkedid), direction="incoming", status="missed", reason="NOANSWER",
           answered_by=None, missed_by=["201"], transferred_to=[], recordings=[],
           wait_s=50, talk_s=0, duration_s=50, returned_by=None)


def test_employee_dials_service_numbers(pbx):
    echo = pbx.call("""
        start    | answer   | end      | src | dst
        10:00:00 | 10:00:00 | 10:00:15 | 201 | 2200
        """)
    ivr = pbx.call("""
        start    | answer   | end      | src | dst
        10:10:00 | 10:10:00 | 10:10:40 | 201 | 2020
        """)
    pbx.sync()
    for linkedid, duration in ((echo, 15), (ivr, 40)):
        # Spec silent on answered_by of an application call: no human answered, so null.
        expect(record(pbx, linkedid), direction="internal", status="application",
               reason=None, answered_by=None, missed_by=[], transferred_to=[],
               employees=["201"], external_number=None, talk_s=0, duration_s=duration,
               recordings=[])


# ---- transfers, forwarding, pickup -----------------------------------------------------------

def test_blind_transfer(pbx):
    # The transfer row comes from a phone-side REFER: UNIQUEID without `_`, times without
    # milliseconds, no DID; its transfer flag was reset to 0 when the row closed.
    linkedid = pbx.call(f"""
        start               | answer              | end                 | src          | dst | UNIQUEID              | did
        10:00:00            | 10:00:05            | 10:01:00            | +79161234567 | 201 |                       | {DID}
        2024-03-05 10:01:00 | 2024-03-05 10:01:08 | 2024-03-05 10:03:08 | +79161234567 | 202 | mikopbx-1709622060.77 | ''
        """)
    pbx.sync()
    expect(record(pbx, linkedid), direction="incoming", status="transferred", did=DID,
           answered_by="201", transferred_to=["202"], missed_by=[], employees=["201", "202"],
           wait_s=5, talk_s=55 + 120, duration_s=188, end="2024-03-05T10:03:08+03:00")


def test_attended_transfer_with_consultation(pbx):
    linkedid = pbx.call(f"""
        start    | answer   | end      | src          | dst | recordingfile
        10:00:00 | 10:00:05 | 10:01:30 | +79161234567 | 201 | {REC}/a-201.mp3
        # 201 puts the caller on hold and consults 202 on a second line
        10:01:00 | 10:01:04 | 10:01:30 | 201#2        | 202 | {REC}/consult-201-202.mp3
        # 201 hangs up: the caller is connected to 202
        10:01:30 | 10:01:30 | 10:04:30 | +79161234567 | 202 | {REC}/transfer-202.mp3
        """, did=DID)
    pbx.sync()
    expect(record(pbx, linkedid), direction="incoming", status="transferred",
           answered_by="201", transferred_to=["202"], missed_by=[], employees=["201", "202"],
           wait_s=5, talk_s=85 + 180, duration_s=270,
           recordings=[f"{REC}/a-201.mp3", f"{REC}/consult-201-202.mp3",
                       f"{REC}/transfer-202.mp3"])


def test_cancelled_attended_transfer_stays_answered(pbx):
    linkedid = pbx.call("""
        start    | answer   | end      | src          | dst
        10:00:00 | 10:00:05 | 10:03:00 | +79161234567 | 201
        # 201 consults 202, then returns to the caller
        10:01:00 | 10:01:04 | 10:01:20 | 201#2        | 202
        """, did=DID)
    pbx.sync()
    expect(record(pbx, linkedid), direction="incoming", status="answered", answered_by="201",
           transferred_to=[], missed_by=[], employees=["201", "202"],
           wait_s=5, talk_s=175, duration_s=180)


def test_internal_attended_transfer_counts_every_talk(pbx):
    linkedid = pbx.call("""
        start    | answer   | end      | src   | dst
        10:00:00 | 10:00:05 | 10:01:25 | 201   | 202
        # 202 consults 203, then connects 201 with 203
        10:01:00 | 10:01:05 | 10:01:25 | 202#2 | 203
        10:01:25 | 10:01:25 | 10:03:05 | 201   | 203
        """)
    pbx.sync()
    # Internal calls: talk_s is the talk of every leg that talked, the consultation included.
    expect(record(pbx, linkedid), direction="internal", status="transferred",
           answered_by="202", transferred_to=["203"], missed_by=[],
           employees=["201", "202", "203"], external_number=None,
           wait_s=5, talk_s=80 + 20 + 100, duration_s=185)


def test_outgoing_call_transferred_to_a_colleague(pbx):
    linkedid = pbx.call("""
        start    | answer   | end      | src         | dst
        10:00:00 | 10:00:10 | 10:01:10 | 201         | 89161234567
        # 201 blind-transfers the client to 202
        10:01:10 | 10:01:15 | 10:02:15 | 89161234567 | 202
        """)
    pbx.sync()
    expect(record(pbx, linkedid), direction="outgoing", status="transferred",
           answered_by="201", transferred_to=["202"], missed_by=[], employees=["201", "202"],
           external_number="89161234567", line=PROVIDER_NAME,
           wait_s=10, talk_s=60 + 60, duration_s=135)


def test_forwarding_of_unregistered_extension_is_not_a_transfer(pbx):
    # 203 is not registered (empty dst_chan) yet the PBX wrote ANSWER/ANSWERED with billsec 0;
    # its forwarding sends the call to 204, who talks.
    linkedid = pbx.call("""
        start    | answer   | end          | src          | dst | dst_chan | dialstatus | disposition
        10:00:00 | 10:00:00 | 10:00:00.400 | +79161234567 | 203 | ''       | ANSWER     | ANSWERED
        10:00:00 | 10:00:08 | 10:02:08     | +79161234567 | 204 |          |            |
        """, did=DID)
    pbx.sync()
    # Spec silent on employees here: 203 was the number dialled, so a supervisor filtering by
    # 203 expects this call too.
    expect(record(pbx, linkedid), direction="incoming", status="answered", answered_by="204",
           transferred_to=[], missed_by=[], employees=["203", "204"],
           wait_s=8, talk_s=120, duration_s=128)


def test_pickup_by_a_colleague(pbx):
    linkedid = pbx.call(f"""
        start    | answer   | end      | src          | dst | dialstatus | recordingfile
        10:00:00 |          | 10:00:07 | +79161234567 | 201 | CANCEL     |
        # 202 picks the ringing call up (*8)
        10:00:07 | 10:00:07 | 10:02:07 | +79161234567 | 202 | ANSWER     | {REC}/pickup_202.mp3
        """, did=DID)
    pbx.sync()
    expect(record(pbx, linkedid), direction="incoming", status="answered", answered_by="202",
           missed_by=["201"], transferred_to=[], employees=["201", "202"],
           wait_s=7, talk_s=120, duration_s=127, recordings=[f"{REC}/pickup_202.mp3"])


def test_pickup_dropped_within_the_same_second_did_not_talk(pbx):
    linkedid = pbx.call("""
        start        | answer       | end          | src          | dst | dialstatus
        10:00:00     |              | 10:00:07     | +79161234567 | 201 | CANCEL
        10:00:07.100 | 10:00:07.200 | 10:00:07.900 | +79161234567 | 202 | ANSWER
        """, did=DID)
    pbx.sync()
    expect(record(pbx, linkedid), direction="incoming", status="missed", reason="ANSWER",
           answered_by=None, missed_by=["201", "202"], transferred_to=[], talk_s=0)


# ---- click-to-call -------------------------------------------------------------------------

def test_failed_click_to_call(pbx):
    linkedid = pbx.call("""
        start    | end      | src_chan | src_num | dst         | dst_chan | appname   | dialstatus
        10:00:00 | 10:00:30 | ''       | 201     | 89161234567 | ''       | originate | NOANSWER
        """)
    pbx.sync()
    expect(record(pbx, linkedid), direction="outgoing", status="not_reached",
           reason="NOANSWER", external_number="89161234567", answered_by=None, missed_by=[],
           employees=["201"], talk_s=0, wait_s=30, duration_s=30)


def test_successful_click_to_call_starts_at_its_first_leg(pbx):
    # The linkedid was made when the PBX started ringing the employee, 4 s before the leg.
    linkedid = pbx.call("""
        start    | answer   | end      | src | dst
        10:00:04 | 10:00:10 | 10:01:10 | 201 | 89161234567
        """, linkedid_shift=-4)
    pbx.sync()
    expect(record(pbx, linkedid), direction="outgoing", status="answered", answered_by="201",
           external_number="89161234567", start="2024-03-05T10:00:04+03:00",
           end="2024-03-05T10:01:10+03:00", wait_s=6, talk_s=60, duration_s=66,
           **NOTHING_ELSE)


# ---- callbacks -----------------------------------------------------------------------------

MISSED_AT_10 = """
    start    | end      | src         | dst | dialstatus
    10:00:00 | 10:00:25 | 89161234567 | 201 | CANCEL
    """


def unreturned(pbx: Pbx, **days) -> list[str]:
    return [c["linkedid"] for c in pbx.calls("--unreturned", **days)]


@pytest.mark.parametrize("syncs", ["one sync", "a sync between the calls"])
def test_client_called_back(pbx, syncs):
    missed = pbx.call(MISSED_AT_10, did=DID)
    if syncs != "one sync":
        pbx.sync()
        assert unreturned(pbx) == [missed]
    # The client calls again two hours later, writing their number in another format.
    back = pbx.call("""
        start    | answer   | end      | src          | dst
        12:00:00 | 12:00:05 | 12:03:05 | +79161234567 | 202
        """, did=DID)
    pbx.sync()
    assert [c["linkedid"] for c in pbx.calls()] == [back, missed], "newest first"
    expect(record(pbx, missed), status="missed", returned_by=back, callback_of=None,
           callback_attempts=0)
    expect(record(pbx, back), direction="incoming", status="client_called_back",
           callback_of=missed, returned_by=None, answered_by="202")
    assert unreturned(pbx) == []


def test_we_called_back_after_a_failed_attempt(pbx):
    before = pbx.call("""
        start    | end      | src | dst         | dialstatus
        09:00:00 | 09:00:30 | 203 | 89161234567 | NOANSWER
        """)
    missed = pbx.call("""
        start    | end      | src          | dst | dialstatus
        10:00:00 | 10:00:25 | +79161234567 | 201 | CANCEL
        """, did=DID)
    attempt = pbx.call("""
        start    | end      | src | dst         | dialstatus
        10:30:00 | 10:30:30 | 201 | 89161234567 | NOANSWER
        """)
    back = pbx.call("""
        start    | answer   | end      | src | dst
        11:00:00 | 11:00:10 | 11:05:10 | 202 | 89161234567
        """)
    pbx.sync()
    # The 09:00 call came before the missed call: not an attempt to return it.
    expect(record(pbx, missed), status="missed", callback_attempts=1, returned_by=back)
    expect(record(pbx, attempt), status="not_reached", callback_of=None, returned_by=None)
    expect(record(pbx, before), status="not_reached", callback_of=None)
    expect(record(pbx, back), direction="outgoing", status="we_called_back", callback_of=missed,
           answered_by="202")
    assert unreturned(pbx) == []


def test_callback_outside_the_window_does_not_return_the_missed_call(pbx):
    missed = pbx.call(MISSED_AT_10, day="2024-03-05", did=DID)
    attempt_in_window = pbx.call("""
        start    | end      | src | dst         | dialstatus
        15:00:00 | 15:00:30 | 201 | 89161234567 | NOANSWER
        """, day="2024-03-05")
    late_answer = pbx.call("""
        start    | answer   | end      | src          | dst
        10:30:00 | 10:30:04 | 10:32:04 | +79161234567 | 202
        """, day="2024-03-06", did=DID)
    late_attempt = pbx.call("""
        start    | end      | src | dst         | dialstatus
        11:00:00 | 11:00:05 | 201 | 89161234567 | BUSY
        """, day="2024-03-06")
    pbx.sync()
    expect(record(pbx, missed), status="missed", returned_by=None, callback_attempts=1)
    expect(record(pbx, late_answer), status="answered", callback_of=None)
    expect(record(pbx, attempt_in_window), status="not_reached", callback_of=None)
    expect(record(pbx, late_attempt), status="not_reached", callback_of=None)
    assert unreturned(pbx, date_from="2024-03-05", date_to="2024-03-06") == [missed]


def test_two_missed_calls_returned_by_one_call(pbx):
    first = pbx.call("""
        start    | end      | src          | dst | dialstatus
        10:00:00 | 10:00:25 | +79161234567 | 201 | CANCEL
        """, did=DID)
    second = pbx.call("""
        start    | end      | src         | dst | dialstatus
        10:30:00 | 10:30:20 | 89161234567 | 202 | NOANSWER
        """, did=DID)
    back = pbx.call("""
        start    | answer   | end      | src | dst
        11:00:00 | 11:00:10 | 11:02:10 | 203 | 79161234567
        """)
    pbx.sync()
    assert [c["linkedid"] for c in pbx.calls()] == [back, second, first], "newest first"
    expect(record(pbx, back), status="we_called_back", callback_of=second)
    # The client's second (incoming) try is not an attempt of ours to call them back.
    expect(record(pbx, first), status="missed", returned_by=back, callback_attempts=0)
    expect(record(pbx, second), status="missed", returned_by=back, callback_attempts=0)
    assert unreturned(pbx) == []


@pytest.mark.parametrize("number", ["anonymous", "''"])
def test_callers_without_a_number_are_not_linked(pbx, number):
    missed = pbx.call(f"""
        start    | end      | src      | dst | dialstatus
        10:00:00 | 10:00:25 | {number} | 201 | CANCEL
        """, did=DID)
    other = pbx.call(f"""
        start    | answer   | end      | src      | dst
        11:00:00 | 11:00:05 | 11:01:05 | {number} | 202
        """, did=DID)
    pbx.sync()
    # Spec silent: without a number nobody can tell the two callers are the same person.
    expect(record(pbx, missed), direction="incoming", status="missed", returned_by=None)
    expect(record(pbx, other), direction="incoming", status="answered", callback_of=None)
    assert unreturned(pbx) == [missed]


def test_late_leg_of_an_old_call_unlinks_its_callback(pbx):
    call = pbx.build("""
        start    | answer   | end      | src          | dst | dialstatus
        10:00:00 |          | 10:00:07 | +79161234567 | 201 | CANCEL
        10:00:07 | 10:00:07 | 10:02:07 | +79161234567 | 202 | ANSWER
        """, did=DID)
    pbx.write(call.rows[:1])
    later = pbx.call("""
        start    | answer   | end      | src         | dst
        12:00:00 | 12:00:05 | 12:03:05 | 89161234567 | 203
        """, did=DID)
    pbx.sync()
    expect(record(pbx, call.linkedid), status="missed", returned_by=later)
    expect(record(pbx, later), status="client_called_back", callback_of=call.linkedid)
    # The pickup leg reaches cdr_general late: the first call was answered after all.
    pbx.write(call.rows[1:])
    pbx.sync()
    expect(record(pbx, call.linkedid), status="answered", answered_by="202", returned_by=None)
    expect(record(pbx, later), status="answered", callback_of=None)
    assert unreturned(pbx) == []


def test_missed_call_arriving_after_its_return_is_linked(pbx):
    missed = pbx.build(MISSED_AT_10, did=DID)
    back = pbx.call("""
        start    | answer   | end      | src          | dst
        12:00:00 | 12:00:05 | 12:03:05 | +79161234567 | 202
        """, did=DID)
    pbx.sync()
    expect(record(pbx, back), status="answered", callback_of=None)
    pbx.write(missed.rows)
    pbx.sync()
    expect(record(pbx, back), status="client_called_back", callback_of=missed.linkedid)
    expect(record(pbx, missed.linkedid), status="missed", returned_by=back)


DST_WINDOWS = {
    # Autumn: the wall clock says 23 h 45 min, but 24 h 25 min really passed — not returned.
    "fall-back": ("2024-10-26", "2024-10-27", "09:45:00", False),
    # Spring: the wall clock says 24 h 15 min, but 23 h 15 min really passed — returned.
    "spring-forward": ("2024-03-30", "2024-03-31", "10:15:00", True),
}


@pytest.mark.parametrize("day1, day2, back_at, returned", DST_WINDOWS.values(),
                         ids=DST_WINDOWS.keys())
def test_callback_window_is_real_time_across_dst(make_pbx, day1, day2, back_at, returned):
    pbx = make_pbx(tz="Europe/Berlin")
    missed = pbx.call("""
        start    | end      | src            | dst | dialstatus
        10:00:00 | 10:00:20 | +4915112345678 | 201 | CANCEL
        """, day=day1)
    back = pbx.call(f"""
        start     | answer   | end      | src            | dst
        {back_at} | 10:30:00 | 10:35:00 | 004915112345678 | 202
        """, day=day2)
    pbx.sync()
    expect(record(pbx, missed), status="missed", external_number="+4915112345678",
           returned_by=back if returned else None)
    expect(record(pbx, back), status="client_called_back" if returned else "answered",
           external_number="004915112345678", callback_of=missed if returned else None)


# ---- recordings -------------------------------------------------------------------------------

def test_recordings_of_the_talk_only_deduplicated_in_time_order(pbx):
    linkedid = pbx.call(f"""
        start    | answer   | end      | src          | dst  | dialstatus | recordingfile
        # the IVR's prompt is an app recording, not a conversation
        10:00:00 | 10:00:00 | 10:00:10 | +79161234567 | 2020 | ANSWER     | {REC}/ivr-2020.mp3
        # 202 rings but does not answer; the PBX had already named a file for it
        10:00:10 |          | 10:00:15 | +79161234567 | 202  | CANCEL     | {REC}/never-202.mp3
        10:00:10 | 10:00:15 | 10:02:00 | +79161234567 | 201  | ANSWER     | {REC}/talk-1.mp3
        # blind transfer to 203: the recording goes on in the same file
        10:02:00 | 10:02:05 | 10:03:00 | +79161234567 | 203  | ANSWER     | {REC}/talk-1.mp3
        # 204 talks unrecorded ("-"), then 205 with a file of their own
        10:03:00 | 10:03:02 | 10:04:00 | +79161234567 | 204  | ANSWER     | -
        10:04:00 | 10:04:03 | 10:05:00 | +79161234567 | 205  | ANSWER     | {REC}/talk-2.mp3
        10:05:00 | 10:05:00 | 10:05:30 | +79161234567 | 206  | ANSWER     | ''
        """, did=DID)
    pbx.sync()
    expect(record(pbx, linkedid), status="transferred", answered_by="201",
           transferred_to=["203", "204", "205", "206"],
           recordings=[f"{REC}/talk-1.mp3", f"{REC}/talk-2.mp3"])


# ---- time zones -------------------------------------------------------------------------------

def test_call_across_dst_fall_back(make_pbx):
    """Europe/Berlin, 2024-10-27: at 03:00 CEST the clock goes back to 02:00 CET."""
    pbx = make_pbx(tz="Europe/Berlin", day="2024-10-27")
    # 02:50 CEST → 02:10 CET: the PBX's billsec from the strings is negative, duration 0.
    across = pbx.call("""
        start    | answer   | end      | src            | dst | duration
        02:50:00 | 02:50:10 | 02:10:00 | +4915112345678 | 201 | 0
        """, linkedid=linkedid_at("2024-10-27 00:50:00", 11))
    # The same wall-clock strings twice: once in the first 02:xx hour, once in the second.
    first_hour = pbx.call("""
        start    | answer   | end      | src | dst
        02:20:00 | 02:20:05 | 02:25:05 | 204 | 205
        """, linkedid=linkedid_at("2024-10-27 00:20:00", 12))
    second_hour = pbx.call("""
        start    | answer   | end      | src | dst
        02:20:00 | 02:20:05 | 02:25:05 | 202 | 203
        """, linkedid=linkedid_at("2024-10-27 01:20:00", 13))
    pbx.sync()
    rows = sqlite3.connect(pbx.cdr_db).execute(
        "SELECT billsec FROM cdr_general WHERE linkedid = ?", (across,)).fetchall()
    assert rows[0][0] < 0, "the fixture must reproduce the PBX's negative billsec"

    assert [c["linkedid"] for c in pbx.calls()] == [second_hour, across, first_hour]
    expect(record(pbx, across), direction="incoming", status="answered", answered_by="201",
           start="2024-10-27T02:50:00+02:00", end="2024-10-27T02:10:00+01:00",
           wait_s=10, talk_s=1190, duration_s=1200)
    expect(record(pbx, first_hour), start="2024-10-27T02:20:00+02:00",
           end="2024-10-27T02:25:05+02:00", talk_s=300, duration_s=305)
    expect(record(pbx, second_hour), start="2024-10-27T02:20:00+01:00",
           end="2024-10-27T02:25:05+01:00", talk_s=300, duration_s=305)


def test_impossible_billsec_is_replaced_by_the_real_talk(pbx):
    """A billsec larger than the leg itself cannot be true: the talk is end − answer."""
    linkedid = pbx.call("""
        start    | answer   | end      | src          | dst | billsec
        10:00:00 | 10:00:05 | 10:01:05 | +79161234567 | 201 | 3600
        """, did=DID)
    pbx.sync()
    expect(record(pbx, linkedid), status="answered", talk_s=60, wait_s=5, duration_s=65)


def test_talk_that_goes_on_across_the_dst_fall_back(make_pbx):
    """Answered at 02:01 in the first 02:xx hour, hung up at 02:00:30 in the second one.

    Only one reading is possible: the hang-up comes after the answer, so it is 02:00:30 CET.
    The PBX's billsec from the strings is −30: the talk is end − answer in real time.
    """
    pbx = make_pbx(tz="Europe/Berlin", day="2024-10-27")
    linkedid = pbx.call("""
        start    | answer   | end      | src            | dst
        01:59:00 | 02:01:00 | 02:00:30 | +4915112345678 | 201
        """, linkedid=linkedid_at("2024-10-26 23:59:00", 21))
    pbx.sync()
    expect(record(pbx, linkedid), status="answered", answered_by="201",
           start="2024-10-27T01:59:00+02:00", end="2024-10-27T02:00:30+01:00",
           wait_s=120, talk_s=3570, duration_s=3690)


# ---- PBX releases and arrival order -----------------------------------------------------------

def test_older_schema_without_names(make_pbx):
    pbx = make_pbx(older=True)
    columns = {r[1] for r in sqlite3.connect(pbx.cdr_db).execute("PRAGMA table_info(cdr_general)")}
    assert "src_name" not in columns and "dst_name" not in columns
    linkedid = pbx.call(IVR_QUEUE, did=DID)
    pbx.sync()
    rec = record(pbx, linkedid)
    expect(rec, direction="incoming", status="answered", answered_by="202",
           missed_by=["201", "203"], talk_s=180, wait_s=31, line=PROVIDER_NAME)
    assert not rec["src_name"], "an outside caller has no name in an older PBX"


def test_nulls_where_the_pbx_usually_writes_empty_strings(pbx):
    """Every cdr_general column is nullable: NULL reads like an empty value."""
    busy = pbx.call("""
        start    | answer | end      | src | dst | dst_chan | dialstatus | recordingfile | did
        10:00:00 | NULL   | 10:00:01 | 201 | 202 | NULL     | BUSY       | NULL          | NULL
        """)
    missed = pbx.call("""
        start    | answer | end      | src          | dst | dialstatus | recordingfile | is_app
        11:00:00 | NULL   | 11:00:20 | +79161234567 | 203 | NOANSWER   | NULL          | NULL
        """)
    answered = pbx.call("""
        start    | answer   | end      | src          | dst | recordingfile | appname | is_app
        12:00:00 | 12:00:05 | 12:01:05 | +79037654321 | 204 | NULL          | NULL    | NULL
        """)
    pbx.sync()
    expect(record(pbx, busy), status="not_reached", reason="BUSY", missed_by=[], recordings=[])
    expect(record(pbx, missed), status="missed", missed_by=["203"], recordings=[])
    expect(record(pbx, answered), status="answered", answered_by="204", talk_s=60,
           recordings=[])


def test_calls_in_progress_are_not_reported(pbx):
    """Legs still in the PBX's temporary `cdr` table are not finished calls."""
    finished = pbx.call("""
        start    | answer   | end      | src | dst
        10:00:00 | 10:00:05 | 10:01:05 | 201 | 202
        """)
    talking = pbx.build("""
        start    | answer   | end | src          | dst | work_completed
        10:05:00 | 10:05:03 | ''  | +79161234567 | 203 | 0
        """, did=DID)
    pbx.write(talking.rows, table="cdr")
    pbx.sync()
    assert [c["linkedid"] for c in pbx.calls()] == [finished]


def test_without_pbx_config_db_short_numbers_are_internal(make_pbx):
    pbx = make_pbx(config=False)
    internal = pbx.call("""
        start    | answer   | end      | src | dst
        10:00:00 | 10:00:05 | 10:01:05 | 201 | 202
        """)
    outgoing = pbx.call("""
        start    | answer   | end      | src | dst
        11:00:00 | 11:00:05 | 11:01:05 | 201 | 89161234567
        """)
    pbx.sync()
    found = {c["linkedid"]: c for c in pbx.calls()}
    expect(found[internal], direction="internal", status="answered", answered_by="202")
    expect(found[outgoing], direction="outgoing", status="answered",
           external_number="89161234567")


def comparable(rec: dict) -> dict:
    """A record with its legs in a canonical order and without the PBX's row ids."""
    out = dict(rec)
    if isinstance(rec["legs"], list):
        out["legs"] = sorted(json.dumps({k: v for k, v in leg.items() if k != "id"}
                                        if isinstance(leg, dict) else leg, sort_keys=True)
                             for leg in rec["legs"])
    return out


ATTENDED = f"""
    start    | answer   | end      | src          | dst | recordingfile
    10:00:00 | 10:00:05 | 10:01:30 | +79161234567 | 201 | {REC}/a-201.mp3
    10:01:00 | 10:01:04 | 10:01:30 | 201#2        | 202 | {REC}/consult-201-202.mp3
    10:01:30 | 10:01:30 | 10:04:30 | +79161234567 | 202 | {REC}/transfer-202.mp3
    """
# Legs in the order the PBX moves them into cdr_general (so their ids), split into the batches
# the mirror syncs: (indexes of the legs per batch).
PIECES = {
    "queue: answered agent first": (IVR_QUEUE, [[6], [2, 3, 4], [0, 1, 5, 7]]),
    "queue: one leg at a time, reversed": (IVR_QUEUE, [[7], [6], [5], [4], [3], [2], [1], [0]]),
    "attended transfer: consultation first": (ATTENDED, [[1], [0], [2]]),
}


@pytest.mark.parametrize("legs, batches", PIECES.values(), ids=PIECES.keys())
def test_arrival_in_pieces_gives_the_same_call(make_pbx, legs, batches):
    at_once, in_pieces = make_pbx(), make_pbx()
    call = at_once.build(legs, did=DID)
    # The same PBX table (same move order, same ids) read in one go or batch by batch.
    at_once.write([call.rows[i] for batch in batches for i in batch])
    at_once.sync()
    for batch in batches:
        in_pieces.write([call.rows[i] for i in batch])
        in_pieces.sync()
    in_pieces.sync()  # nothing new: changes nothing
    whole = record(at_once, call.linkedid)
    assert whole["direction"] == "incoming" and whole["status"] in ("answered", "transferred")
    assert comparable(record(in_pieces, call.linkedid)) == comparable(whole)


# ---- periods and filters ----------------------------------------------------------------------

def test_period_is_read_in_the_pbx_timezone(pbx):
    late = pbx.call("""
        start    | answer   | end      | src | dst
        23:50:00 | 23:50:05 | 23:51:05 | 201 | 202
        """, day="2024-03-05")
    # 00:30 in Moscow is still the 5th in UTC: it belongs to the 6th all the same.
    early = pbx.call("""
        start    | answer   | end      | src | dst
        00:30:00 | 00:30:05 | 00:31:05 | 203 | 204
        """, day="2024-03-06")
    pbx.sync()

    def period(date_from, date_to):
        return [c["linkedid"] for c in pbx.calls(date_from=date_from, date_to=date_to)]
    assert period("2024-03-05", "2024-03-05") == [late]
    assert period("2024-03-06", "2024-03-06") == [early]
    assert period("2024-03-05", "2024-03-06") == [early, late]
    assert period("2024-03-05T23:00:00", "2024-03-06T00:00:00") == [late]
    expect(record(pbx, early), start="2024-03-06T00:30:00+03:00")


def test_filters_narrow_the_list(pbx):
    queue = pbx.call("""
        start    | answer   | end      | src          | dst  | dialstatus
        09:00:00 | 09:00:10 | 09:00:10 | +79031110000 | 2000 | ANSWER
        09:00:00 |          | 09:00:10 | +79031110000 | 203  | CANCEL
        09:00:00 | 09:00:10 | 09:00:40 | +79031110000 | 201  | ANSWER
        """, did=DID)
    outgoing = pbx.call("""
        start    | answer   | end      | src | dst
        10:00:00 | 10:00:10 | 10:02:10 | 202 | 89162220000
        """)
    missed = pbx.call("""
        start    | end      | src          | dst | dialstatus
        11:00:00 | 11:00:20 | +79033330000 | 203 | CANCEL
        """, did=DID)
    internal = pbx.call("""
        start    | answer   | end      | src | dst
        12:00:00 | 12:00:02 | 12:00:12 | 201 | 202
        """)
    pbx.sync()

    def ids(*filters):
        return [c["linkedid"] for c in pbx.calls(*filters)]
    assert ids() == [internal, missed, outgoing, queue]
    assert ids("--direction", "incoming") == [missed, queue]
    assert ids("--status", "missed") == [missed]
    assert ids("--employee", "203") == [missed, queue]
    assert ids("--min-talk", "60") == [outgoing]
    assert ids("--direction", "internal", "--min-talk", "5") == [internal]
    assert ids("--number", "89162220000") == [outgoing]
    assert ids("--limit", "2") == [internal, missed]


def test_number_search_finds_the_client_in_any_format(pbx):
    missed = pbx.call("""
        start    | end      | src         | dst | dialstatus
        09:00:00 | 09:00:20 | 89161234567 | 201 | CANCEL
        """, did=DID)
    back = pbx.call("""
        start    | answer   | end      | src | dst
        10:00:00 | 10:00:10 | 10:02:10 | 202 | +79161234567
        """)
    again = pbx.call("""
        start    | answer   | end      | src        | dst
        11:00:00 | 11:00:05 | 11:01:05 | 9161234567 | 203
        """, did=DID)
    pbx.call("""
        start    | answer   | end      | src          | dst
        12:00:00 | 12:00:05 | 12:01:05 | +79037654321 | 204
        """, did=DID)
    pbx.sync()
    # Spec silent on search: a supervisor looking up a client's number expects every call of
    # that client, whichever of the formats the match key equates (+7 916…, 8916…, 916…).
    for typed in ("+79161234567", "89161234567"):
        found = [c["linkedid"] for c in pbx.calls("--number", typed)]
        assert found == [again, back, missed], typed


# ---- bad input ----------------------------------------------------------------------------------

def one_readable_line(err: str) -> bool:
    return "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_sync_refuses_a_missing_cdr_db(pbx, tmp_path):
    rc, _, err = pbx.cli("sync", "--cdr-db", tmp_path / "nowhere" / "cdr.db",
                         "--pbx-db", pbx.pbx_db, "--db", pbx.module_db, "--once")
    assert rc != 0 and one_readable_line(err), err


@pytest.mark.parametrize("content", ["not a database at all\n", "sqlite without cdr_general"],
                         ids=["text file", "foreign sqlite file"])
def test_sync_refuses_a_file_that_is_not_a_pbx_cdr_db(pbx, tmp_path, content):
    bogus = tmp_path / "bogus.db"
    if content.startswith("sqlite"):
        conn = sqlite3.connect(bogus)
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        conn.commit()
        conn.close()
    else:
        bogus.write_text(content)
    rc, _, err = pbx.cli("sync", "--cdr-db", bogus, "--pbx-db", pbx.pbx_db,
                         "--db", pbx.module_db, "--once")
    assert rc != 0 and one_readable_line(err), err


@pytest.mark.parametrize("when", ["2024-13-45", "yesterday-ish", "05.03.2024"])
def test_calls_refuses_a_bad_date(pbx, when):
    pbx.call(INTERNAL["answered"][0])
    pbx.sync()
    rc, out, err = pbx.cli("calls", "--db", pbx.module_db, "--format", "jsonl",
                           "--from", when, "--to", "2024-03-05")
    assert rc != 0 and one_readable_line(err), err
    assert out.strip() == ""


def test_calls_refuses_a_missing_module_db(cli, tmp_path):
    rc, _, err = cli("calls", "--db", tmp_path / "missing.db", "--format", "jsonl",
                         "--from", "2024-03-05", "--to", "2024-03-05")
    assert rc != 0 and one_readable_line(err), err
