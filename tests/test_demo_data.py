"""The demo PBX generator: deterministic, shaped like MikoPBX's files, every scenario present."""
from __future__ import annotations

import datetime
import re
import sqlite3
from collections import defaultdict

import pytest

from pbx.tables import PBX_CONFIG_DDL, USERS_GROUPS_DDL, cdr_column_names, cdr_ddl, create
from standin import demo

END_DAY = datetime.date(2024, 3, 18)  # a Monday: the run includes a weekend
RECORDINGS = 300


def dump(path, table: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()


def legs(out) -> list[dict]:
    conn = sqlite3.connect(out / demo.CDR_DB)
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM cdr_general ORDER BY id")]
    conn.close()
    return rows


def local_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    """A 4000-call demo PBX (about five days) and what `generate` reported."""
    out = tmp_path_factory.mktemp("demo")
    seen = []
    stats = demo.generate(out, 4000, 11, end_day=END_DAY, recordings_limit=RECORDINGS,
                          progress=seen.append)
    return out, stats, legs(out), seen


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    def run(name, seed):
        out = tmp_path / name
        demo.generate(out, 1500, seed, end_day=END_DAY, recordings_limit=10)
        return [dump(out / demo.CDR_DB, "cdr_general"),
                dump(out / demo.CONFIG_DB, "m_Extensions"), dump(out / demo.CONFIG_DB, "m_Sip"),
                dump(out / demo.GROUPS_DB, "m_ModuleUsersGroups_GroupMembers")]

    first, again, other = run("a", 5), run("b", 5), run("c", 6)
    assert first == again
    assert first[0] != other[0] and first[1] != other[1]


def test_stats_count_every_kind_and_leg(pbx):
    out, stats, rows, seen = pbx
    assert set(stats.calls_by_kind) == set(demo.SCENARIO_WEIGHTS)
    assert stats.calls == 4000 and stats.legs == len(rows)
    assert stats.recordings_written == RECORDINGS
    assert stats.first_start.date() < stats.last_end.date() == END_DAY
    assert all(p.exists() for p in stats.paths)
    assert seen == [4000]


def test_every_scenario_leaves_its_shape(pbx):
    _, _, rows, _ = pbx
    dst_chans = {r["dst_chan"].split("-")[0] for r in rows}
    assert {"App:2020", "App:2200", "Queue:2000", "Queue:2001", "VOICEMAIL", ""} <= dst_chans
    assert {r["dialstatus"] for r in rows} == {"ANSWER", "BUSY", "NOANSWER", "CANCEL",
                                               "CHANUNAVAIL", "CONGESTION"}
    assert any("_PJSIP/" in r["UNIQUEID"] for r in rows)  # a second device
    bare = [r for r in rows if "_" not in r["UNIQUEID"]]  # phone-side transfers
    assert bare and all(len(r["start"]) == 19 and len(r["endtime"]) == 19 for r in bare)
    originate = [r for r in rows if r["appname"] == "originate"]
    assert originate and all(r["src_chan"] == "" for r in originate)
    files = [r["recordingfile"] for r in rows]
    assert any("/pickup_" in f for f in files) and any("/transfer_" in f for f in files)
    recorded = [f for f in files if len(f) > 1]
    assert len(set(recorded)) < len(recorded)  # two rows sharing one file
    assert any(r["src_chan"].startswith("PJSIP/SIP-TRUNK-") and r["dst_chan"].startswith("PJSIP/")
               and r["transfer"] == 0 for r in rows)
    hostile = {r["src_name"] for r in rows} & set(demo.HOSTILE_NAMES)
    assert len(hostile) >= 5 and any(n.startswith("=") for n in hostile)


def test_app_voicemail_and_queue_legs_look_like_the_pbx_writes_them(pbx):
    _, _, rows, _ = pbx
    for r in rows:
        if r["dst_chan"].startswith(("App:", "Queue:")):
            assert r["is_app"] == "1"
        else:
            assert r["is_app"] == ""
        if r["dst_chan"].startswith("Queue:") and r["answer"]:
            assert r["answer"] == r["endtime"] and r["billsec"] == 0
        if r["dst_chan"] == "VOICEMAIL":
            assert r["answer"] and r["billsec"] > 0 and r["disposition"] == "ANSWERED"
        assert r["disposition"] == ("ANSWERED" if r["billsec"] > 0 else
                                    r["dialstatus"] if r["dialstatus"] in
                                    ("BUSY", "CHANUNAVAIL", "CONGESTION") else "NOANSWER")
        assert r["work_completed"] == "1"


def test_trunk_legs_name_their_provider(pbx):
    out, _, rows, _ = pbx
    with sqlite3.connect(out / demo.CONFIG_DB) as conn:
        trunks = {u for (u,) in conn.execute("SELECT uniqid FROM m_Sip WHERE type = 'friend'")}
    for r in rows:
        if r["src_chan"].startswith("PJSIP/SIP-TRUNK-"):
            assert r["src_chan"].rsplit("-", 1)[0][6:] == r["from_account"] in trunks
            assert r["did"]
        if r["dst_chan"].startswith("PJSIP/SIP-TRUNK-"):
            assert r["dst_chan"].rsplit("-", 1)[0][6:] == r["to_account"] in trunks


def test_ids_are_unique_and_linkedids_carry_the_call_start(pbx):
    _, _, rows, _ = pbx
    assert len({r["UNIQUEID"] for r in rows}) == len(rows)
    calls = defaultdict(list)
    for r in rows:
        assert re.fullmatch(r"mikopbx-\d{10}\.\d+", r["linkedid"])
        calls[r["linkedid"]].append(r)
    older = 0
    for linkedid, call in calls.items():
        starts = [local_time(r["start"]) for r in call]
        assert len(set(starts)) == len(starts), linkedid  # channels are created one by one
        call_start = int(linkedid[8:].split(".")[0])
        first_leg = int(call[0]["UNIQUEID"].split(".")[0])
        older += call_start <= min(int(r["UNIQUEID"].split(".")[0]) for r in call) - 2
        assert call_start <= first_leg
    assert older  # answered click-to-call


def test_legs_arrive_by_completion_interleaved_with_other_calls(pbx):
    _, _, rows, _ = pbx
    latest = local_time(rows[0]["endtime"])
    for r in rows:  # Moscow has no DST: wall-clock order is time order
        end = local_time(r["endtime"])
        assert end >= latest - datetime.timedelta(seconds=1)  # whole-second rows drop the ms
        latest = max(latest, end)
    ids = defaultdict(list)
    for i, r in enumerate(rows):
        ids[r["linkedid"]].append(i)
    assert any(max(i) - min(i) + 1 > len(i) for i in ids.values())


def test_times_are_pbx_strings_mostly_in_business_hours(pbx):
    _, _, rows, _ = pbx
    pattern = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{3})?")
    business = 0
    for r in rows:
        for column in ("start", "answer", "endtime"):
            assert r[column] == "" and column == "answer" or pattern.fullmatch(r[column])
        start = local_time(r["start"])
        business += start.weekday() < 5 and 9 <= start.hour < 19
        assert r["duration"] >= r["billsec"] >= 0
    assert business / len(rows) > 0.9
    assert any(local_time(r["start"]).weekday() >= 5 for r in rows)
    assert any(local_time(r["start"]).hour >= 19 for r in rows)


def test_only_the_newest_recordings_have_files(pbx):
    out, _, rows, _ = pbx
    newest_first = list(dict.fromkeys(
        r["recordingfile"] for r in reversed(rows) if len(r["recordingfile"]) > 1))
    assert len(newest_first) > RECORDINGS

    def file_of(path):
        assert path.startswith(demo.PBX_MONITOR_DIR + "/")
        assert re.search(r"/\d{4}/\d\d/\d\d/\d\d/[^/]+\.mp3$", path)
        return out / demo.MONITOR / path[len(demo.PBX_MONITOR_DIR) + 1:]

    assert all(mp3_seconds(file_of(p).read_bytes()) > 0 for p in newest_first[:RECORDINGS])
    assert not any(file_of(p).exists() for p in newest_first[RECORDINGS:])


# MPEG audio Layer III: kbit/s by bitrate index, Hz by sample-rate index, per MPEG version
# (3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5), as in ISO 11172-3 / 13818-3.
_KBITS = {3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
          2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}
_HZ = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mp3_seconds(data: bytes) -> float:
    """The playing time of an MP3 file, frame by frame (every byte must be a frame)."""
    seconds, at = 0.0, 0
    while at < len(data):
        assert data[at] == 0xFF and data[at + 1] & 0xE0 == 0xE0, f"no frame at byte {at}"
        version, layer = data[at + 1] >> 3 & 3, data[at + 1] >> 1 & 3
        assert layer == 1, "not Layer III"
        kbits = _KBITS[3 if version == 3 else 2][data[at + 2] >> 4]
        hz = _HZ[version][data[at + 2] >> 2 & 3]
        samples = 1152 if version == 3 else 576
        at += samples // 8 * kbits * 1000 // hz + (data[at + 2] >> 1 & 1)
        seconds += samples / hz
    assert at == len(data), "a cut frame at the end"
    return seconds


def test_recordings_last_as_long_as_their_talk_and_cost_one_file_per_length(pbx):
    out, _, rows, _ = pbx
    talk: dict[str, int] = defaultdict(int)
    for row in rows:                                  # a consultation's legs share a file
        if len(row["recordingfile"]) > 1:
            talk[row["recordingfile"]] = max(talk[row["recordingfile"]], row["billsec"])
    files = {path: out / demo.MONITOR / path[len(demo.PBX_MONITOR_DIR) + 1:] for path in talk}
    present = {path: file for path, file in files.items() if file.exists()}
    assert len(present) == RECORDINGS
    for path, file in present.items():
        assert path.endswith(".mp3")
        assert abs(mp3_seconds(file.read_bytes()) - talk[path]) <= 1, path
    assert max(talk[path] for path in present) > 300  # long calls have long recordings
    inodes = {file.stat().st_ino for file in present.values()}
    assert len(inodes) == len({talk[path] for path in present}) < RECORDINGS


def test_external_numbers_come_in_mixed_formats_and_come_back(pbx):
    _, _, rows, _ = pbx
    formats, directions = defaultdict(set), defaultdict(set)
    for r in rows:
        if r["src_chan"].startswith("PJSIP/SIP-TRUNK-"):
            number, direction = r["src_num"], "in"
        elif r["dst_chan"].startswith("PJSIP/SIP-TRUNK-"):
            number, direction = r["dst_num"], "out"
        else:
            continue
        key = re.sub(r"\D", "", number)[-9:]
        formats[key].add(number[:2] if number.startswith("+") else number[0])
        directions[key].add(direction)
    assert any(len(f) == 3 for f in formats.values())
    assert sum(d == {"in", "out"} for d in directions.values()) > 20


def test_cdr_schema_is_the_pbx_schema_and_cdr_is_empty(pbx, tmp_path):
    out, _, _, _ = pbx

    def schema(path):
        with sqlite3.connect(path) as conn:
            return sorted(conn.execute("SELECT type, name, sql FROM sqlite_master"))

    create(str(tmp_path / "ref.db"), cdr_ddl("cdr_general") + cdr_ddl("cdr")).close()
    assert schema(out / demo.CDR_DB) == schema(tmp_path / "ref.db")
    create(str(tmp_path / "conf.db"), PBX_CONFIG_DDL).close()
    assert schema(out / demo.CONFIG_DB) == schema(tmp_path / "conf.db")
    create(str(tmp_path / "groups.db"), USERS_GROUPS_DDL).close()
    assert schema(out / demo.GROUPS_DB) == schema(tmp_path / "groups.db")
    with sqlite3.connect(out / demo.CDR_DB) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT count(*) FROM cdr").fetchone() == (0,)


def test_config_db_has_employees_trunks_and_services(pbx):
    out, _, _, _ = pbx
    conn = sqlite3.connect(out / demo.CONFIG_DB)
    extensions = conn.execute("SELECT number, type, userid FROM m_Extensions").fetchall()
    sip = [(n, u) for n, t, u in extensions if t == "SIP"]
    assert 20 <= len(sip) <= 40 and all(re.fullmatch(r"2\d\d", n) for n, _ in sip)
    assert {t for _, t, _ in extensions} >= {"SIP", "QUEUE", "IVR MENU", "DIALPLAN APPLICATION",
                                             "CONFERENCE", "EXTERNAL"}
    assert {u for _, t, u in extensions if t == "EXTERNAL"} <= {u for _, u in sip}
    users = {u for (u,) in conn.execute("SELECT id FROM m_Users")}
    assert users == {u for _, u in sip}
    peers = conn.execute("SELECT extension FROM m_Sip WHERE type = 'peer'").fetchall()
    assert sorted(n for (n,) in peers) == sorted(n for n, _ in sip)
    trunks = conn.execute("SELECT s.uniqid, s.description, p.note FROM m_Sip s JOIN m_Providers p "
                          "ON p.sipuid = s.uniqid WHERE s.type = 'friend'").fetchall()
    assert 2 <= len(trunks) <= 3
    assert all(re.fullmatch(r"SIP-TRUNK-[0-9A-F]{8}", u) and d == n for u, d, n in trunks)
    settings = dict(conn.execute("SELECT key, value FROM m_PbxSettings"))
    assert settings["PBXTimezone"] == "Europe/Moscow" and settings["PBXLanguage"]
    conn.close()
    with sqlite3.connect(out / demo.GROUPS_DB) as groups:
        assert 3 <= groups.execute("SELECT count(*) FROM m_ModuleUsersGroups_UsersGroups"
                                   ).fetchone()[0] <= 5
        members = {u for (u,) in groups.execute(
            "SELECT user_id FROM m_ModuleUsersGroups_GroupMembers")}
    assert members and members <= users


def test_a_leg_across_the_dst_fall_back_gets_a_negative_billsec(tmp_path):
    stats = demo.generate(tmp_path, 2500, 3, end_day=datetime.date(2023, 10, 30),
                          timezone="Europe/Berlin", recordings_limit=0)
    crossing = [r for r in legs(tmp_path) if r["billsec"] < 0]
    assert crossing and all(r["duration"] == 0 and r["start"].startswith("2023-10-29 02:")
                            for r in crossing)
    assert stats.recordings_written == 0


def test_refuses_an_existing_demo_unless_overwrite(tmp_path):
    demo.generate(tmp_path, 10, 1, end_day=END_DAY)
    with pytest.raises(ValueError, match="already exists"):
        demo.generate(tmp_path, 10, 1, end_day=END_DAY)
    stats = demo.generate(tmp_path, 20, 1, end_day=END_DAY, overwrite=True)
    assert stats.legs == len(legs(tmp_path))


def test_bad_arguments_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="timezone"):
        demo.generate(tmp_path / "a", 10, 1, timezone="Mars/Olympus")
    with pytest.raises(ValueError):
        demo.generate(tmp_path / "b", -1, 1)
    with pytest.raises(ValueError, match="unknown call kind"):
        demo.DemoPbx(1).call("fax", 1_700_000_000)


def test_demo_pbx_call_returns_full_rows_in_move_order():
    pbx = demo.DemoPbx(2, "Europe/Moscow")
    rows = pbx.call("ivr_queue_answered", 1_700_000_000.25)
    assert all(list(r) == cdr_column_names()[1:] for r in rows)
    assert rows[0]["dst_chan"] == "App:2020" and rows[0]["start"] == "2023-11-15 01:13:20.250"
    assert len({r["linkedid"] for r in rows}) == 1
    assert any(r["dst_chan"].startswith("Queue:") for r in rows)
