"""The extcdr CLI contract: subcommands, filters, and one readable line for every bad input."""
import json
import re
import sqlite3
import subprocess
import sys

import pytest

from i18n import STATUS_LABELS
from tests.conftest import ROOT, run_extcdr, write_cdr_rows

ANSWERED = dict(start="2024-03-05 10:00:00.100", answer="2024-03-05 10:00:05.000",
                endtime="2024-03-05 10:01:05.000", src_chan="PJSIP/SIP-TRUNK-1-00000001",
                src_num="79161234567", dst_chan="PJSIP/201-00000002", dst_num="201",
                UNIQUEID="1709622000.1_a1b2c3", linkedid="mikopbx-1709622000.1",
                disposition="ANSWERED", dialstatus="ANSWER", billsec=60, duration=65, is_app="")


@pytest.fixture
def mirror(tmp_path, cli):
    cdr = tmp_path / "cdr.db"
    write_cdr_rows(cdr, [ANSWERED])
    db = tmp_path / "module.db"
    assert cli("sync", "--cdr-db", cdr, "--db", db, "--once", "--timezone", "Europe/Moscow")[0] == 0
    return db


def one_line_error(code, out, err):
    assert code != 0
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert err.startswith("extcdr")
    return err


@pytest.mark.parametrize("command", ["sync", "calls", "status", "demo-data"])
def test_every_subcommand_has_help(command):
    done = run_extcdr(command, "--help")
    assert done.returncode == 0
    assert "usage: extcdr" in done.stdout and "--" in done.stdout


def test_missing_cdr_db(tmp_path, cli):
    err = one_line_error(*cli("sync", "--cdr-db", tmp_path / "nope.db", "--db",
                              tmp_path / "m.db", "--once"))
    assert "nope.db" in err and "no such file" in err
    assert not (tmp_path / "m.db").exists()


def test_file_that_is_not_a_pbx_db(tmp_path, cli):
    text = tmp_path / "notes.db"
    text.write_text("this is not sqlite at all\n" * 100)
    err = one_line_error(*cli("sync", "--cdr-db", text, "--db", tmp_path / "m.db", "--once"))
    assert "notes.db" in err
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    err = one_line_error(*cli("sync", "--cdr-db", other, "--db", tmp_path / "m.db", "--once"))
    assert "not a PBX history database" in err


def test_config_db_that_is_not_a_pbx_config(tmp_path, cli):
    cdr = tmp_path / "cdr.db"
    write_cdr_rows(cdr, [ANSWERED])
    err = one_line_error(*cli("sync", "--cdr-db", cdr, "--pbx-db", cdr, "--db",
                              tmp_path / "m.db", "--once"))
    assert "not a PBX configuration database" in err


@pytest.mark.parametrize("args, words", [
    (["--from", "2024-13-45"], "bad date"),
    (["--from", "yesterday"], "bad date"),
    (["--from", "2024-03-06", "--to", "2024-03-05"], "period is empty"),
    (["--status", "lost"], "unknown status"),
    (["--direction", "sideways"], "unknown direction"),
    (["--number", "12"], "at least 3 digits"),
    (["--number", "ab"], "3 letters of a name"),
    (["--number", "src:abc"], "src: takes digits"),
    (["--number", "src:"], "nothing after"),
    (["--min-talk", "-5"], "min_talk must be a whole number from 0"),
    (["--min-talk", "five"], "invalid int"),
    (["--limit", "0"], "limit"),
    (["--group", "Nobody"], "unknown employee group"),
    (["--format", "xml"], "invalid choice"),
])
def test_bad_filters_are_one_line(mirror, cli, args, words):
    err = one_line_error(*cli("calls", "--db", mirror, *args))
    assert words in err


def test_calls_on_a_missing_mirror(tmp_path, cli):
    err = one_line_error(*cli("calls", "--db", tmp_path / "none.db"))
    assert "none.db" in err


def test_a_bad_input_is_one_line_from_a_real_process(tmp_path):
    done = run_extcdr("calls", "--db", tmp_path / "none.db", "--from", "x")
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_jsonl_and_table_formats(mirror, cli):
    code, out, _ = cli("calls", "--db", mirror, "--from", "2024-03-05", "--to", "2024-03-05",
                       "--format", "jsonl")
    assert code == 0
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record["start"] == "2024-03-05T10:00:00+03:00"
    assert record["status"] == "answered" and record["answered_by"] == "201"
    code, out, _ = cli("calls", "--db", mirror, "--from", "2024-03-05", "--to", "2024-03-05")
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:3] == ["start", "direction", "status"]
    assert "incoming" in row and "79161234567" in row


def test_default_period_is_today(mirror, cli):
    code, out, _ = cli("calls", "--db", mirror, "--format", "jsonl")
    assert code == 0 and out == ""  # the only call is from 2024


def test_iso_datetimes_narrow_the_period(mirror, cli):
    _, out, _ = cli("calls", "--db", mirror, "--format", "jsonl",
                    "--from", "2024-03-05T09:59", "--to", "2024-03-05T10:00:30")
    assert len(out.splitlines()) == 1
    _, out, _ = cli("calls", "--db", mirror, "--format", "jsonl",
                    "--from", "2024-03-05T10:00:01+03:00", "--to", "2024-03-05T12:00")
    assert out == ""


def test_sync_twice_changes_nothing(mirror, tmp_path, cli):
    before = sqlite3.connect(mirror).execute("SELECT * FROM call").fetchall()
    assert cli("sync", "--cdr-db", tmp_path / "cdr.db", "--db", mirror, "--once")[0] == 0
    assert sqlite3.connect(mirror).execute("SELECT * FROM call").fetchall() == before


def test_status_reports_size_cursor_and_lag(mirror, tmp_path, cli):
    write_cdr_rows(tmp_path / "cdr.db", [dict(ANSWERED, UNIQUEID="x2", linkedid="l2")])
    code, out, _ = cli("status", "--db", mirror, "--cdr-db", tmp_path / "cdr.db",
                       "--format", "json")
    info = json.loads(out)
    assert code == 0
    assert info["calls"] == 1 and info["legs"] == 1 and info["cursor"] == 1
    assert info["pbx_max_id"] == 2 and info["lag_rows"] == 1
    assert info["timezone"] == "Europe/Moscow" and info["size_bytes"] > 0


def test_older_pbx_schema_without_name_columns(tmp_path, cli):
    cdr = tmp_path / "cdr.db"
    write_cdr_rows(cdr, [ANSWERED], older=True)
    db = tmp_path / "m.db"
    assert cli("sync", "--cdr-db", cdr, "--db", db, "--once", "--timezone", "Europe/Moscow")[0] == 0
    _, out, _ = cli("calls", "--db", db, "--from", "2024-03-05", "--format", "jsonl")
    record = json.loads(out)
    assert record["src_name"] == "" and record["answered_by"] == "201"


def test_progress_bar_only_on_a_terminal(tmp_path):
    cdr = tmp_path / "cdr.db"
    write_cdr_rows(cdr, [ANSWERED])
    done = run_extcdr("sync", "--cdr-db", cdr, "--db", tmp_path / "m.db", "--once",
                      "--timezone", "Europe/Moscow")   # no timezone at all would be said
    assert done.returncode == 0 and done.stderr == "" and done.stdout == ""


def test_progress_bar_with_rate_and_eta_on_a_terminal(demo_pbx, tmp_path):
    import os
    import pty
    import subprocess
    import sys

    from tests.conftest import ROOT
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "sync", "--cdr-db", demo_pbx / "cdr.db",
         "--pbx-db", demo_pbx / "mikopbx.db", "--db", tmp_path / "m.db", "--once",
         "--batch-rows", "500"], cwd=ROOT, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    assert proc.wait(timeout=120) == 0
    text = screen.decode(errors="replace")
    assert "legs/s" in text and "100%" in text, text[-500:]
    assert "<" in text  # tqdm's "elapsed<remaining" ETA


def test_status_finds_the_pbx_db_it_was_synced_from(mirror, cli):
    code, out, _ = cli("status", "--db", mirror, "--format", "json")
    info = json.loads(out)
    assert code == 0 and info["lag_rows"] == 0 and info["cdr_db"].endswith("cdr.db")


def test_demo_data_refuses_to_overwrite_silently(tmp_path, cli):
    out = tmp_path / "pbx"
    code, text, _ = cli("demo-data", "--out", out, "--calls", 200, "--seed", 5)
    assert code == 0 and "200 calls" in text
    first = (out / "cdr.db").read_bytes()
    err = one_line_error(*cli("demo-data", "--out", out, "--calls", 300, "--seed", 6))
    assert "already exists" in err and (out / "cdr.db").read_bytes() == first
    assert cli("demo-data", "--out", out, "--calls", 300, "--seed", 6, "--overwrite")[0] == 0
    with sqlite3.connect(out / "cdr.db") as conn:
        assert conn.execute("SELECT count(DISTINCT linkedid) FROM cdr_general").fetchone()[0] == 300
    err = one_line_error(*cli("demo-data", "--out", out / "cdr.db", "--calls", 5))
    assert "cdr.db" in err


def test_web_refuses_to_start_without_a_proxy_token(mirror, cli):
    err = one_line_error(*cli("web", "--db", mirror, "--listen", "127.0.0.1:0"))
    assert "web.proxy_token" in err


def test_table_shows_names_and_says_when_limit_cut_the_list(demo_mirror):
    period = ("--from", "2024-10-01", "--to", "2024-10-28")
    done = run_extcdr("calls", "--db", demo_mirror, *period, "--limit", "50")
    assert done.returncode == 0, done.stderr
    header, *rows, last = done.stdout.splitlines()
    assert header.split() == ["start", "direction", "status", "src", "src_name", "dst",
                              "dst_name", "answered_by", "wait_s", "talk_s", "contact"]
    assert len(rows) == 50
    total = len(run_extcdr("calls", "--db", demo_mirror, *period, "--format",
                           "jsonl").stdout.splitlines())
    assert total > 50
    assert last == f"… 50 of {total:,} calls shown; use --limit to see more"
    records = [json.loads(line) for line in run_extcdr(
        "calls", "--db", demo_mirror, *period, "--limit", "50", "--format", "jsonl"
    ).stdout.splitlines()]
    for row, record in zip(rows, records):      # names as the page shows them
        for side in ("src_name", "dst_name"):
            if record[side] and record[side] != record[side[:3]]:
                assert record[side][:20].strip() in row, (row, record)
    # a limit that cut nothing, and no limit: no note
    whole = run_extcdr("calls", "--db", demo_mirror, *period, "--limit", str(total + 1))
    assert len(whole.stdout.splitlines()) == total + 1 and "shown" not in whole.stdout
    exact = run_extcdr("calls", "--db", demo_mirror, *period, "--limit", str(total))
    assert "use --limit" not in exact.stdout


def test_summary_uses_the_words_of_the_page(demo_mirror):
    done = run_extcdr("calls", "--db", demo_mirror, "--from", "2024-10-01", "--to", "2024-10-28",
                      "--format", "summary")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert [row.split()[0] for row in rows] == ["Incoming", "Outgoing", "Internal", "All"]
    for words in (*STATUS_LABELS["en"].values(), "All"):
        assert words in header
    assert "not_reached" not in header and "client_called_back" not in header


def test_syncs_flags_are_the_settings_with_the_settings_defaults(tmp_path):
    """`sync` is the daemon's writer: its flags set settings, default to the settings table,
    and a value the table refuses is one line naming the setting."""
    shown = run_extcdr("sync", "--help")
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    assert "(default 86400)" in text and "(default 40000)" in text and "(default 30)" in text
    cdr = tmp_path / "cdr.db"
    write_cdr_rows(cdr, [ANSWERED])
    refused = run_extcdr("sync", "--cdr-db", cdr, "--db", tmp_path / "m.db", "--once",
                         "--number-match-digits", "2")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        "extcdr: setting 'calls.number_match_digits' must be at least 3, not 2"]
    assert not (tmp_path / "m.db").exists()


def test_on_a_pbx_the_command_line_has_no_stand_in(tmp_path):
    """What ships (`python -m cli`) knows nothing of the stand-in PBX: its commands and its
    in-process login are not there, and say so in one line."""
    production = subprocess.run([sys.executable, "-m", "cli", "--help"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
    assert production.returncode == 0
    commands = set(re.search(r"\{([a-z,-]+)\}", production.stdout).group(1).split(","))
    assert commands == {"sync", "calls", "export", "stats", "status", "migrate", "comment", "tag",
                        "delete", "contacts", "token", "webhooks", "retention", "daemon", "web",
                        "package", "install", "upgrade", "enable", "disable", "uninstall",
                        "licence", "prepare"}
    refused = subprocess.run([sys.executable, "-m", "cli", "web", "--standin"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "unrecognized arguments: --standin" in refused.stderr
    export = subprocess.run([sys.executable, "-m", "cli", "export", "--db", tmp_path / "m.db",
                             "--format", "csv", "--out", tmp_path / "x.csv", "--user", "admin"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert export.returncode == 2 and "no users are known here" in export.stderr
    assert not (tmp_path / "x.csv").exists()


def test_the_daemon_finds_the_employee_groups_beside_the_pbx_config_db_as_sync_does(tmp_path):
    """`extcdr daemon --pbx-db` reads ModuleUsersGroups' DB beside it, as `extcdr sync`
    does (a daemon without it would empty the mirror's groups at its first sync); `--set`
    still chooses another."""
    from cli.base import Parser
    from cli.serve import add_commands, daemon_settings
    groups = tmp_path / "custom_modules/ModuleUsersGroups/db/module.db"
    groups.parent.mkdir(parents=True)
    groups.touch()
    parser = Parser(prog="extcdr")
    add_commands(parser.add_subparsers(dest="command"))
    given = parser.parse_args(["daemon", "--pbx-db", str(tmp_path / "mikopbx.db")])
    assert daemon_settings(given)["pbx.groups_db"] == groups
    chosen = parser.parse_args(["daemon", "--pbx-db", str(tmp_path / "mikopbx.db"),
                                "--set", f"pbx.groups_db={tmp_path / 'other.db'}"])
    assert daemon_settings(chosen)["pbx.groups_db"] == tmp_path / "other.db"
    groups.unlink()
    assert daemon_settings(given)["pbx.groups_db"] != groups
