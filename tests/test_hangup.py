"""Who hung up: the rule over one call's AMI events, the rows the daemon keeps for the calls it
saw end live (and none for history it only read), their words, and the emulator's hang-ups."""
import itertools
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from daemon.resident import Daemon
from i18n.hangup_words import cause_words, hangup_words, side_words
from mirror.database import open_module_db
from mirror.hangups import CallHangup, HangupTracker
from mirror.settings import load
from mirror.store import Store
from standin import demo
from standin.amiemu import AmiEmulator, call_script, caller_hangs_up, parse_transcript
from tests.conftest import ROOT, wait_for
from tests.mirror import append_rows, call_count, pbx_rows, sync_once

L = "1730113200.1"      # the call's linkedid: the caller's channel has it as its uniqueid
A = ("PJSIP/201-00000001", L, "201")                    # the caller
B = ("PJSIP/202-00000002", "1730113200.2", "202")       # a callee
C = ("PJSIP/203-00000003", "1730113200.3", "203")       # another callee
D = ("PJSIP/204-00000004", "1730113200.4", "204")
LOCAL1 = ("Local/202@internal-00000001;1", "1730113200.5", "202")
LOCAL2 = ("Local/202@internal-00000001;2", "1730113200.6", "202")
ORIGINATE = ("Local/201@internal-originate-00000002;1", L, "")   # an originate's first channel
PHONE = ("PJSIP/201-00000007", "1730113200.7", "201")            # ... rings the employee first
CAUSE_TXT = {16: "Normal Clearing", 17: "User busy", 19: "User alerting, no answer",
             21: "Call Rejected"}


def ev(name: str, party: tuple, cause: int | None = None, linkedid: str = L) -> dict:
    channel, uniqueid, number = party
    event = {"Event": name, "Privilege": "call,all", "Channel": channel,
             "CallerIDNum": number, "Uniqueid": uniqueid, "Linkedid": linkedid}
    if cause is not None:
        event["Cause"] = str(cause)
        if name == "Hangup":
            event["Cause-txt"] = CAUSE_TXT[cause]
    return event


def new(*parties) -> list[dict]:
    return [ev("Newchannel", party) for party in parties]


def asks(party, cause=16):
    return ev("HangupRequest", party, cause)


def pbx_asks(party, cause=16):
    return ev("SoftHangupRequest", party, cause)


def ends(party, cause=16):
    return ev("Hangup", party, cause)


def decisions(events: list[dict], tracker: HangupTracker | None = None) -> list[CallHangup]:
    tracker = tracker or HangupTracker()
    return [d for i, e in enumerate(events) if (d := tracker.feed(e, 1_000 + i)) is not None]


RULES = {
    "caller hangs up": (
        new(A, B) + [asks(A), pbx_asks(B), ends(A), ends(B)], ("caller", A, 16)),
    "callee hangs up": (
        new(A, B) + [asks(B), pbx_asks(A), ends(B), ends(A)], ("callee", B, 16)),
    "Local/ channels are plumbing, not a party": (
        new(A, LOCAL1, LOCAL2, B) + [asks(LOCAL2), asks(B), pbx_asks(LOCAL1), pbx_asks(A),
                                     ends(B), ends(LOCAL2), ends(LOCAL1), ends(A)],
        ("callee", B, 16)),
    "only Local/ channels asked: the PBX": (
        new(A, LOCAL1, LOCAL2, B) + [asks(LOCAL1), ends(LOCAL2), ends(B, 19), ends(LOCAL1),
                                     ends(A, 19)], ("pbx", A, 19)),
    "no answer: the PBX times out": (
        new(A, B) + [pbx_asks(B, 19), pbx_asks(A, 19), ends(B, 19), ends(A, 19)],
        ("pbx", B, 19)),
    "busy: Hangup only": (new(A) + [ends(A, 17)], ("pbx", A, 17)),
    "caller gives up while it rings": (
        new(A, B) + [asks(A), pbx_asks(B), ends(B), ends(A)], ("caller", A, 16)),
    "a phone declines, another answers, the caller hangs up": (
        new(A, B, C) + [asks(B, 21), ends(B, 21), pbx_asks(C), asks(A), ends(C), ends(A)],
        ("caller", A, 16)),
    "attended transfer: B consults C and leaves, C hangs up": (
        new(A, B, C) + [asks(B), ends(B), asks(C), pbx_asks(A), ends(C), ends(A)],
        ("callee", C, 16)),
    "attended transfer: B consults C and leaves, the caller hangs up": (
        new(A, B, C) + [asks(B), ends(B), asks(A), pbx_asks(C), ends(A), ends(C)],
        ("caller", A, 16)),
    "transfer chain: B to C, C to D, D hangs up": (
        new(A, B, C) + [asks(B), ends(B)] + new(D) + [asks(C), ends(C), asks(D), pbx_asks(A),
                                                      ends(D), ends(A)], ("callee", D, 16)),
    "out of order: the consequence arrives before its cause": (
        new(A, B) + [pbx_asks(B), asks(A), ends(B), ends(A)], ("caller", A, 16)),
    "out of order: the peer's Hangup before the request": (
        new(A, B) + [ends(B), asks(A), ends(A)], ("caller", A, 16)),
    "both hang up at once: the PBX was already ending the second": (
        new(A, B) + [asks(A), pbx_asks(B), asks(B), ends(A), ends(B)], ("caller", A, 16)),
    "repeated events count once": (
        new(A, A, B) + [asks(B), asks(B), pbx_asks(A), pbx_asks(A), ends(B), ends(B), ends(A),
                        ends(A), asks(A)], ("callee", B, 16)),
    "an originate: its Local/ channel stands for the employee's phone": (
        [ev("Newchannel", ORIGINATE), ev("Newchannel", LOCAL2)]
        + new(PHONE, B) + [asks(PHONE), pbx_asks(B), ends(PHONE), ends(B), ends(LOCAL2),
                           ends(ORIGINATE)], ("caller", PHONE, 16)),
    "joined half-way (no Newchannel of the caller): unknown": (
        new(B) + [asks(A), ends(A), ends(B)], None),
}


@pytest.mark.parametrize("name", RULES)
def test_who_hung_up(name):
    events, expected = RULES[name]
    found = decisions(events)
    if expected is None:
        assert found == []
        return
    side, (channel, _, number), cause = expected
    assert len(found) == 1
    (decided,) = found
    assert (decided.linkedid, decided.side, decided.channel, decided.number, decided.cause,
            decided.cause_txt) == (L, side, channel, number, cause, CAUSE_TXT[cause])


def test_the_decision_comes_with_the_last_channel_and_its_time():
    tracker = HangupTracker()
    events = new(A, B) + [asks(B), {**ends(B), "Timestamp": "1730113262.250000"}]
    assert [tracker.feed(e, 1730113262000) for e in events] == [None] * 4   # A is still up
    decided = tracker.feed(ends(A), 1730113263000)
    assert (decided.side, decided.at_ms) == ("callee", 1730113262250)   # when B ended
    assert tracker.calls == {}
    assert tracker.feed(ends(A)) is None                      # a late repeat is ignored


def test_calls_are_kept_apart_by_linkedid():
    other = "1730113300.9"
    x = ("PJSIP/205-00000009", other, "205")
    events = (new(A) + [ev("Newchannel", x, linkedid=other), asks(A),
                        ev("HangupRequest", x, 16, other), ends(A),
                        ev("Hangup", x, 16, other)])
    assert [(d.linkedid, d.side) for d in decisions(events)] == [(L, "caller"), (other, "caller")]


def test_a_reconnect_leaves_the_calls_under_way_unknown():
    tracker = HangupTracker()
    decisions(new(A, B), tracker)
    tracker.forget_all()
    assert decisions([asks(A), ends(A), ends(B)], tracker) == []


def test_memory_is_bounded_in_calls_age_and_channels():
    tracker = HangupTracker(max_calls=3, max_age_ms=10_000, max_channels=4)
    for i in range(10):
        tracker.feed(ev("Newchannel", (f"PJSIP/2{i:02}-1", f"17.{i}", "2"), linkedid=f"17.{i}"),
                     now_ms=1_000)
    assert list(tracker.calls) == ["17.7", "17.8", "17.9"]
    tracker.feed(new(A)[0], now_ms=20_000)                 # the others fell silent too long
    assert list(tracker.calls) == [L]
    for i in range(10):
        tracker.feed(ev("Newchannel", (f"Local/x-{i};1", f"1730113200.{50 + i}", "")),
                     now_ms=20_000)
    assert L not in tracker.calls                            # given up: never decided
    assert tracker.feed(ends(A), now_ms=20_001) is None


def test_events_with_other_key_case_and_unknown_events():
    spelled = [{key.lower() if key != "Event" else key: value for key, value in e.items()}
               for e in new(A) + [asks(A), ends(A)]]
    assert [d.side for d in decisions([{"Event": "VarSet", "Linkedid": L, "Uniqueid": L}]
                                      + spelled)] == ["caller"]


# --- the mirror's rows ---------------------------------------------------------------------------

def test_rows_first_word_stays_and_mirrored_calls_are_stamped(demo_mirror, tmp_path):
    db_path = tmp_path / "module.db"
    db_path.write_bytes(demo_mirror.read_bytes())
    db = open_module_db(db_path)
    store = Store(db)
    (linkedid,) = db.execute_sql("SELECT linkedid FROM call ORDER BY id LIMIT 1").fetchone()
    revision = int(store.state().get("revision", 0))
    first = CallHangup(linkedid, "callee", "PJSIP/202-1", "202", 16, "Normal Clearing", 5)
    unseen = CallHangup("not-mirrored-yet", "pbx", "PJSIP/203-2", "203", 19, "", 6)
    with store.batch():
        assert store.record_hangups([first, unseen]) == 2
    assert db.execute_sql("SELECT revision FROM call WHERE linkedid = ?",
                          (linkedid,)).fetchone()[0] == revision + 1
    with store.batch():
        assert store.record_hangups([replace(first, side="caller", at_ms=7)]) == 0
    assert int(store.state()["revision"]) == revision + 1     # nothing new: no new revision
    found = hangups_of(db, [linkedid, "not-mirrored-yet", "never-seen"])
    assert found == {
        linkedid: {"side": "callee", "channel": "PJSIP/202-1", "number": "202", "cause": 16,
                   "cause_txt": "Normal Clearing", "at_ms": 5},
        "not-mirrored-yet": {"side": "pbx", "channel": "PJSIP/203-2", "number": "203",
                             "cause": 19, "cause_txt": "", "at_ms": 6}}
    db.close()


def test_the_daemon_writes_them_on_its_loop_and_survives_a_failed_write(demo_pbx, tmp_path,
                                                                       caplog):
    append_rows(tmp_path / "cdr.db", pbx_rows(demo_pbx / "cdr.db")[0], [])
    daemon = Daemon(load(None, {"pbx.cdr_db": tmp_path / "cdr.db",
                                "pbx.config_db": demo_pbx / "mikopbx.db",
                                "module.db": tmp_path / "module.db", "ami.enabled": "false"}))
    daemon.step(0.0)
    seen = CallHangup("mikopbx-1.1", "caller", "PJSIP/201-1", "201", 16, "Normal Clearing", 1)
    daemon.db.execute_sql("PRAGMA query_only = ON")        # module.db cannot be written
    daemon.hung_up(seen)
    daemon.step(1.0)
    assert daemon.hangups == [seen]
    assert any("module DB not written" in r.message for r in caplog.records)
    daemon.db.execute_sql("PRAGMA query_only = OFF")
    daemon.step(7.0)                                       # the retry
    assert daemon.hangups == []
    assert hangups_of(daemon.db, ["mikopbx-1.1"])["mikopbx-1.1"]["side"] == "caller"
    daemon.db.close()


def hangups_of(db, linkedids) -> dict[str, dict]:
    """The call_hangup rows of these calls, by linkedid."""
    names = ("side", "channel", "number", "cause", "cause_txt", "at_ms")
    return {linkedid: dict(zip(names, values)) for linkedid, *values in db.execute_sql(
        f"SELECT linkedid, {', '.join(names)} FROM call_hangup WHERE linkedid IN "
        f"({','.join('?' * len(linkedids))})", list(linkedids))}


# --- in words -------------------------------------------------------------------------------------

def test_words_in_english_and_russian():
    assert hangup_words("caller", 16, "Normal Clearing", "en") == \
        "caller hung up (Normal clearing)"
    assert hangup_words("callee", 17, "User busy", "ru") == "положил вызываемый (Абонент занят)"
    assert hangup_words("pbx", 19, "User alerting, no answer", "ru") == \
        "завершила АТС (Нет ответа)"
    assert hangup_words(None, None, "", "ru") == "неизвестно"
    assert hangup_words(None, 16, "", "en") == "unknown"
    assert cause_words(99, "Some new cause", "ru") == "Some new cause"   # Asterisk's words
    assert cause_words(99, "", "en") == "99"
    assert cause_words(127, "", "en") == "Interworking, unspecified"
    assert side_words("who knows", "de") == "unknown"
    assert hangup_words("pbx", None, "", "en") == "ended by the PBX"


# --- the emulator's calls ------------------------------------------------------------------------

def emulated_decisions(legs) -> list[CallHangup]:
    names = itertools.count(100)
    steps = call_script(legs, lambda start_s: f"mikopbx-{start_s}.{next(names)}")
    return decisions([dict(e) for step in steps for e in step.before + step.after])


def expected_side(leg: demo.MovedLeg) -> str:
    """A one-leg call's hang-up as the emulator plays it (amiemu.hangup_requests)."""
    row = leg.row
    if row["dialstatus"] == "ANSWER":
        return "caller" if caller_hangs_up(row) or "/" not in row["dst_chan"] else "callee"
    return "caller" if row["dialstatus"] == "CANCEL" else "pbx"


ONE_LEG = ("internal_answered", "outgoing_answered", "incoming_answered", "internal_busy",
           "internal_no_answer", "outgoing_busy", "outgoing_no_answer", "outgoing_unavailable",
           "incoming_missed", "service_number")


def test_the_emulator_plays_who_hangs_up_and_every_side_occurs():
    pbx = demo.DemoPbx(5)
    start = 1730102400
    sides = Counter()
    for i, kind in enumerate(kind for kind in demo.SCENARIO_WEIGHTS for _ in range(4)):
        legs = pbx.call_legs(kind, start + 600 * i)
        found = emulated_decisions(legs)
        if kind == "click_to_call_failed":                   # no channel: nothing on AMI
            assert found == []
            continue
        assert len(found) == 1, kind
        sides[found[0].side] += 1
        if kind in ONE_LEG:
            (leg,) = legs
            assert found[0].side == expected_side(leg), (kind, leg.row)
    assert sides.keys() == {"caller", "callee", "pbx"} and min(sides.values()) > 10


def test_the_emulator_asks_before_each_hangup():
    (leg,) = demo.DemoPbx(5).call_legs("incoming_answered", 1730102400)
    finish = call_script([leg], "mikopbx-{}.9".format)[-1]
    names = [(dict(e)["Event"], dict(e)["Channel"]) for e in finish.before]
    hanger, other = ((leg.row["src_chan"], leg.row["dst_chan"]) if caller_hangs_up(leg.row)
                     else (leg.row["dst_chan"], leg.row["src_chan"]))
    assert names[:2] == [("HangupRequest", hanger), ("SoftHangupRequest", other)]
    assert [name for name, _ in names[2:]] == ["Hangup", "Hangup"]
    assert dict(finish.before[0])["Cause"] == "16"


# --- end to end: a daemon following the emulator over TCP ------------------------------------

SEED = 13


def daemon_process(config: Path, cdr: Path, db: Path, *extra: str, stderr=subprocess.PIPE):
    """`extcdr daemon` as a process; its log to `stderr` (a pipe, or a file for a long run)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "daemon", "--config", str(config), "--cdr-db", str(cdr),
         "--db", str(db), *extra], cwd=ROOT, stderr=stderr, text=True)


def hangup_rows(db: Path) -> dict[str, tuple]:
    with sqlite3.connect(db) as conn:
        return {linkedid: tuple(rest) for linkedid, *rest in conn.execute(
            "SELECT linkedid, side, channel, number, cause, cause_txt, at_ms FROM call_hangup")}


def test_calls_seen_live_have_who_hung_up_history_has_none_and_a_resync_keeps_them(tmp_path):
    demo.generate(tmp_path, 40, SEED, recordings_limit=0)          # history before the daemon
    cdr, db, config_db = tmp_path / "cdr.db", tmp_path / "module.db", tmp_path / "mikopbx.db"
    with sqlite3.connect(cdr) as conn:
        history = {linkedid for (linkedid,) in conn.execute(
            "SELECT DISTINCT linkedid FROM cdr_general")}
    with AmiEmulator(cdr_db=cdr) as emulator:
        host, port = emulator.address
        config = tmp_path / "extcdr.toml"
        config.write_text(f'[ami]\nhost = "{host}"\nport = {port}\nsecret = "extcdr-demo"\n')
        daemon = daemon_process(config, cdr, db, "--pbx-db", str(config_db),
                                "--set", "sync.poll_interval=600")
        try:
            assert wait_for(lambda: call_count(db) == len(history), 30), "no backfill"
            emulator.wait_for_listeners(1, timeout=15)
            pbx = demo.DemoPbx(SEED + 1, "Europe/Moscow")
            live = {}
            kinds = [*ONE_LEG, *ONE_LEG, "blind_transfer", "attended_transfer",
                     "ivr_queue_answered", "queue_missed", "ivr_abandon", "voicemail"]
            for kind in kinds:
                legs = pbx.call_legs(kind, time.time() - 600)
                emulator.play_call(legs, speed=0).result(10)
                live[legs[0].row["linkedid"]] = (kind, legs)
            assert wait_for(lambda: call_count(db) == len(history) + len(live), 20)
            assert wait_for(lambda: len(hangup_rows(db)) == len(live), 10)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(10)
    assert "Traceback" not in daemon.stderr.read()
    rows = hangup_rows(db)
    assert rows.keys() == live.keys()                                  # none for the history
    for linkedid, (kind, legs) in live.items():
        side, channel, number, cause, cause_txt, at_ms = rows[linkedid]
        if kind in ONE_LEG:
            assert side == expected_side(legs[0]), (kind, legs[0].row)
            row = legs[0].row
            assert channel in (row["src_chan"], row["dst_chan"])
        assert side in ("caller", "callee", "pbx") and cause and cause_txt
    assert {kind for kind, _ in live.values()} >= {"ivr_abandon"}
    assert rows[next(lid for lid, (k, _) in live.items() if k == "ivr_abandon")][0] == "caller"
    assert set(Counter(side for side, *_ in rows.values())) == {"caller", "callee", "pbx"}
    with sqlite3.connect(db) as conn:                      # a resync rewrites every call row
        revisions = dict(conn.execute("SELECT linkedid, revision FROM call"))
        conn.execute("UPDATE sync_state SET value = '0' WHERE key = 'cursor'")
    sync_once(cdr, config_db, db)
    with sqlite3.connect(db) as conn:
        rewritten = dict(conn.execute("SELECT linkedid, revision FROM call"))
    assert rewritten.keys() == revisions.keys()
    assert all(rewritten[lid] > revisions[lid] for lid in revisions)
    assert hangup_rows(db) == rows


def test_stock_asterisk_cdr_events_mode_tells_who_hung_up_too(tmp_path):
    """No cdr.db: legs from `Cdr` events; the callee of the first call hangs up, the second
    call is not answered (the PBX ends it)."""
    transcript = (ROOT / "tests" / "transcripts" / "asterisk-cdr-manager.txt").read_text()
    hangup = "Event: Hangup\nPrivilege: call,all\nChannel: PJSIP/mango-00000007\n"
    assert transcript.count(hangup) == 1
    transcript = transcript.replace(hangup, (
        "Event: HangupRequest\nPrivilege: call,all\nChannel: PJSIP/mango-00000007\n"
        "Uniqueid: 1730113200.16\nLinkedid: 1730113200.15\nCause: 16\n\n") + hangup)
    db = tmp_path / "module.db"
    with AmiEmulator() as emulator:
        host, port = emulator.address
        config = tmp_path / "extcdr.toml"
        config.write_text(f'[ami]\nhost = "{host}"\nport = {port}\nsecret = "extcdr-demo"\n'
                          f'cdr_events = true\n[pbx]\ntimezone = "Europe/Berlin"\n')
        daemon = daemon_process(config, tmp_path / "no-cdr.db", db)
        try:
            emulator.wait_for_listeners(1, timeout=15)
            emulator.replay(parse_transcript(transcript), speed=0).result(10)
            assert wait_for(lambda: call_count(db) == 2 and len(hangup_rows(db)) == 2, 10)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(10)
    rows = hangup_rows(db)
    assert rows["1730113200.15"][:5] == ("callee", "PJSIP/mango-00000007", "89161234567", 16,
                                         "Normal Clearing")
    assert rows["1730113300.17"][0] == "pbx"
    with sqlite3.connect(db) as conn:
        assert {lid for (lid,) in conn.execute("SELECT linkedid FROM call")} == rows.keys()
