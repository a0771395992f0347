"""`extcdr comment`, `extcdr tag`, `extcdr delete`: the page's rules from the command line —
an operator (`--user`) reaches only their calls and their own comments, never deletes; bad
input is one readable line and a non-zero exit with nothing changed."""
import json
import sqlite3

import pytest

from tests.mirror import mirrored_demo

WRITTEN_AS = "/storage/usbdisk1/mikopbx/astspool/monitor"


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-work-pbx")
    db = mirrored_demo(out, 300, seed=23)
    config = out / "extcdr.toml"
    config.write_text(f'[pbx]\nrecordings_root = "{out / "monitor"}"\n')
    return out, db, config


def calls(cli, db, *args):
    code, out, err = cli("calls", "--db", db, "--from", "2024-10-20", "--to", "2024-10-27",
                         "--format", "jsonl", *args)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def of_201(cli, db):
    return next(c for c in calls(cli, db) if "201" in c["employees"])


def test_comments_from_the_command_line(cli, pbx):
    _, db, _ = pbx
    call = of_201(cli, db)
    code, _, err = cli("comment", "--db", db, call["linkedid"], "Перезвонить завтра",
                       "--user", "operator201")
    assert code == 0 and "added" in err
    code, out, _ = cli("comment", "--db", db, call["linkedid"], "--format", "json")
    (comment,) = [json.loads(line) for line in out.splitlines()]
    assert comment["author"] == "operator201" and comment["text"] == "Перезвонить завтра"

    code, _, err = cli("comment", "--db", db, call["linkedid"], "--edit", comment["id"], "mine",
                       "--user", "supervisor")
    assert code != 0 and "author or an admin" in err and err.count("\n") == 1
    code, _, err = cli("comment", "--db", db, call["linkedid"], "x" * 201)
    assert code == 2 and "at most 200" in err
    code, _, _ = cli("comment", "--db", db, call["linkedid"], "--edit", comment["id"],
                     "Перезвонить в понедельник", "--user", "operator201")
    assert code == 0
    code, out, _ = cli("comment", "--db", db, call["linkedid"], "--history")
    assert "added" in out and "edited" in out and "Перезвонить в понедельник" in out
    assert [c["comments"][0]["text"] for c in calls(cli, db, "--number",
                                                    f"linkedid:{call['linkedid']}")] == [
        "Перезвонить в понедельник"]


def test_an_operator_reaches_only_their_calls(cli, pbx):
    _, db, _ = pbx
    other = next(c for c in calls(cli, db) if "201" not in c["employees"])
    for argv in (("comment", other["linkedid"], "hi"), ("comment", other["linkedid"]),
                 ("tag", other["linkedid"])):
        code, _, err = cli(argv[0], "--db", db, *argv[1:], "--user", "operator201")
        assert code == 2 and "not one this user may see" in err, err


def test_tags_from_the_command_line(cli, pbx):
    _, db, _ = pbx
    code, _, err = cli("tag", "--db", db, "--create", "Sales", "--user", "operator201")
    assert code != 0 and "only an admin" in err
    code, _, err = cli("tag", "--db", db, "--create", "<script>", "--colour", "red")
    assert code == 2 and "plain text" in err
    for name in ("Sales", "Жалоба"):
        assert cli("tag", "--db", db, "--create", name, "--colour", "teal")[0] == 0
    call = of_201(cli, db)
    code, out, _ = cli("tag", "--db", db, call["linkedid"], "--set", "sales,жалоба",
                       "--user", "operator201")
    assert code == 0 and out.split() == ["Sales", "Жалоба"]
    code, _, err = cli("tag", "--db", db, call["linkedid"], "--add", "VIP")
    assert code == 2 and "unknown tag 'VIP'" in err
    code, out, _ = cli("tag", "--db", db, call["linkedid"], "--remove", "Sales")
    assert out.split() == ["Жалоба"]
    assert [c["linkedid"] for c in calls(cli, db, "--number", f"linkedid:{call['linkedid']}")
            if c["tags"] == ["Жалоба"]] == [call["linkedid"]]
    # The page's filters of working with calls, from the command line too.
    assert [c["linkedid"] for c in calls(cli, db, "--tag", "жалоба")] == [call["linkedid"]]
    code, _, err = cli("calls", "--db", db, "--tag", "VIP")
    assert code == 2 and "unknown tag 'VIP'" in err


def test_the_export_says_the_filters_of_working_with_calls(cli, pbx, tmp_path):
    from openpyxl import load_workbook
    _, db, _ = pbx
    out = tmp_path / "calls.xlsx"
    code, _, err = cli("export", "--db", db, "--format", "xlsx", "--out", out, "--from",
                       "2024-10-20", "--to", "2024-10-27", "--recording", "yes", "--max-talk",
                       "600", "--hangup", "caller,unknown", "--comment", "завтра")
    assert code == 0, err
    about = dict(load_workbook(out, read_only=True).worksheets[0].iter_rows(values_only=True))
    assert about["Recording"] == "with a recording" and about["Max. talk"] == "600 s"
    assert about["Hung up"] == "caller hung up, unknown" and about["Comments"] == "завтра"


def test_deleting_from_the_command_line(cli, pbx):
    out_dir, db, config = pbx
    recorded = [c for c in calls(cli, db) if c["recordings"]
                and (out_dir / "monitor" / c["recordings"][0][len(WRITTEN_AS) + 1:]).is_file()]
    call = recorded[0]
    file = out_dir / "monitor" / call["recordings"][0][len(WRITTEN_AS) + 1:]
    code, _, err = cli("delete", "--db", db, call["linkedid"], "--reason", "GDPR", "--config",
                       config, "--user", "supervisor")
    assert code == 2 and "only an admin" in err and file.is_file()
    code, _, err = cli("delete", "--db", db, call["linkedid"], "--reason", " ", "--config",
                       config)
    assert code == 2 and "reason" in err and file.is_file()
    on_disk = [f for f in {out_dir / "monitor" / r[len(WRITTEN_AS) + 1:]
                           for r in call["recordings"]} if f.is_file()]
    code, _, err = cli("delete", "--db", db, call["linkedid"], "--recordings", "--reason",
                       "GDPR", "--config", config)
    assert code == 0 and f"1 call, {len(on_disk)} file" in err and not file.exists()
    code, _, err = cli("delete", "--db", db, call["linkedid"], "--reason", "GDPR erasure",
                       "--config", config)
    assert code == 0 and "1 call" in err
    assert calls(cli, db, "--number", f"linkedid:{call['linkedid']}") == []
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT what, reason FROM deletion WHERE linkedid = ? ORDER BY id",
                            (call["linkedid"],)).fetchall() == [
            ("recordings", "GDPR"), ("call", "GDPR erasure")]


def test_deleting_the_recordings_of_a_filter_needs_the_count_confirmed(cli, pbx):
    out_dir, db, config = pbx
    day = ("--from", "2024-10-26", "--to", "2024-10-26")
    code, out, _ = cli("delete", "--db", db, "--recordings", "--reason", "retention",
                       "--config", config, *day)
    count = int(out.split()[0].replace(",", ""))
    assert code == 0 and count > 1 and f"--yes {count}" in out
    code, _, err = cli("delete", "--db", db, "--recordings", "--reason", "retention",
                       "--config", config, "--yes", count + 1, *day)
    assert code == 2 and "confirm again" in err
    assert len([c for c in calls(cli, db, *day) if c["recordings"]]) == count
    code, _, err = cli("delete", "--db", db, "--reason", "retention", "--config", config, *day)
    assert code == 2 and "--recordings" in err
    code, _, err = cli("delete", "--db", db, "--recordings", "--reason", "retention",
                       "--config", config, "--yes", count, *day)
    assert code == 0 and f"{count:,} calls" in err
    assert [c for c in calls(cli, db, "--from", "2024-10-26", "--to", "2024-10-26")
            if c["recordings"]] == []
