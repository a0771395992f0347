"""The search box accepts what the page shows: numbers, a linkedid as the details panel and the
PBX's journal show it, and names (the caller's, the callee's, the employees'). One filter for
the page, the API, the CLI and the exports (`mirror.queries`)."""
import json
import shutil
import sqlite3
from contextlib import closing

import pytest

from mirror.queries import NumberSearch, QueryError, parse_number_search

PERIOD = ("--from", "2024-09-01", "--to", "2024-10-28")


def found(cli, db, number: str, *more) -> list[dict]:
    code, out, err = cli("calls", "--db", db, *PERIOD, "--number", number, "--format", "jsonl",
                         *more)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def one_employee(db) -> tuple[str, str]:
    """An employee with a two-word name (extension, name) who took part in calls."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT e.extension, e.name FROM employee e WHERE e.name LIKE '% %' AND EXISTS "
            "(SELECT 1 FROM call_employee ce WHERE ce.extension = e.extension) "
            "ORDER BY e.extension LIMIT 1").fetchone()
    finally:
        conn.close()


@pytest.mark.parametrize("text, parsed", [
    ("mikopbx-1700000000.123", NumberSearch(prefix="linkedid", value="mikopbx-1700000000.123")),
    ("1700000000.123", NumberSearch(prefix="linkedid", value="1700000000.123")),
    (" Иван ", NumberSearch(name="Иван")),
    ("Petrova", NumberSearch(name="Petrova")),
    ("916", NumberSearch(substrings=("916",))),
    ("+7 (916) 123-45-67", NumberSearch(substrings=("161234567",))),
])
def test_the_search_box_reads_linkedids_names_and_numbers(text, parsed):
    assert parse_number_search(text) == parsed


@pytest.mark.parametrize("text, words", [
    ("ab", "at least 3 digits of a number or 3 letters of a name"),
    ("12", "at least 3 digits of a number or 3 letters of a name"),
    ("src:abc", "src: takes digits"),
])
def test_too_short_or_letters_after_a_number_prefix_are_readable_errors(text, words):
    with pytest.raises(QueryError, match=words):
        parse_number_search(text)


def test_a_bare_linkedid_finds_its_call_as_the_prefix_does(cli, demo_mirror):
    (some,) = found(cli, demo_mirror, "linkedid:" + _a_linkedid(demo_mirror))
    assert some["linkedid"].startswith("mikopbx-")
    assert found(cli, demo_mirror, some["linkedid"]) == [some]
    # as Asterisk writes it, without MikoPBX's prefix (older PBXs, the journal)
    assert found(cli, demo_mirror, some["linkedid"].removeprefix("mikopbx-")) == [some]


def test_a_linkedid_finds_its_call_whatever_the_period(cli, demo_mirror):
    """Pasted from the PBX's journal while the page shows another day: still that call."""
    linkedid = _a_linkedid(demo_mirror)
    for number in (linkedid, "linkedid:" + linkedid, linkedid.removeprefix("mikopbx-")):
        code, out, err = cli("calls", "--db", demo_mirror, "--from", "2020-01-01", "--to",
                             "2020-01-01", "--number", number, "--format", "jsonl")
        assert code == 0, err
        assert [json.loads(line)["linkedid"] for line in out.splitlines()] == [linkedid]


def _a_linkedid(db) -> str:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT linkedid FROM call ORDER BY start_ms DESC LIMIT 1").fetchone()[0]
    finally:
        conn.close()


def test_a_name_finds_calls_by_caller_callee_and_employee_names_in_any_case(cli, demo_mirror):
    extension, name = one_employee(demo_mirror)
    surname = name.split()[0]
    calls = found(cli, demo_mirror, surname.upper())
    assert calls and found(cli, demo_mirror, surname.lower()) == calls
    for call in calls:       # each holds the name: as caller, callee, or an employee in it
        assert (surname.casefold() in (call["src_name"] + call["dst_name"]).casefold()
                or extension in call["employees"]), call
    # any 3-letter part of a name finds at least the calls the whole name finds
    assert {c["linkedid"] for c in calls} <= {
        c["linkedid"] for c in found(cli, demo_mirror, surname[1:4])}
    # every call of that employee is found by their name
    code, out, _ = cli("calls", "--db", demo_mirror, *PERIOD, "--employee", extension,
                       "--format", "jsonl")
    theirs = {json.loads(line)["linkedid"] for line in out.splitlines()}
    assert theirs and theirs <= {c["linkedid"] for c in calls}


def test_an_external_callers_name_is_found(cli, demo_mirror):
    conn = sqlite3.connect(demo_mirror)
    linkedid, name = conn.execute(
        "SELECT linkedid, src_name FROM call WHERE direction = 'incoming' AND src_name <> '' "
        "AND src_name GLOB '*[A-Za-zА-Яа-я][A-Za-zА-Яа-я][A-Za-zА-Яа-я]*' AND src_name NOT IN "
        "(SELECT name FROM employee) AND start_ms >= ? ORDER BY start_ms DESC LIMIT 1",
        (1_725_141_600_000,)).fetchone()
    conn.close()
    assert linkedid in {c["linkedid"] for c in found(cli, demo_mirror, name)}


def test_letters_that_match_no_name_are_an_empty_list_not_an_error(cli, demo_mirror):
    assert found(cli, demo_mirror, "Nobody-by-that-name") == []
    assert found(cli, demo_mirror, "1' OR 1=1 --") == []
    assert found(cli, demo_mirror, 'say "hello"') == []


def test_a_renamed_employee_is_found_under_the_new_name_after_the_next_sync(
        cli, demo_pbx, tmp_path):
    pbx = tmp_path / "pbx"
    shutil.copytree(demo_pbx, pbx)
    db = tmp_path / "module.db"
    sync = ("sync", "--cdr-db", pbx / "cdr.db", "--pbx-db", pbx / "mikopbx.db", "--db", db,
            "--once")
    assert cli(*sync)[0] == 0
    extension, _ = one_employee(db)
    assert found(cli, db, "Quetzalcoatl") == []
    conn = sqlite3.connect(pbx / "mikopbx.db")
    with conn:
        conn.execute("UPDATE m_Extensions SET callerid = 'Quetzalcoatl Renamed' WHERE number = ?",
                     (extension,))
    conn.close()
    assert cli(*sync)[0] == 0
    renamed = found(cli, db, "quetzalcoatl")
    assert renamed and all(extension in call["employees"] for call in renamed)


def test_migration_6_indexes_the_names_of_calls_already_mirrored(demo_mirror, tmp_path):
    from mirror.database import open_module_db
    from tests.test_schema import downgraded
    old = tmp_path / "module.db"
    with closing(sqlite3.connect(demo_mirror)) as conn:
        expected = conn.execute("SELECT rowid, names FROM call_name ORDER BY rowid").fetchall()
    downgraded(demo_mirror, old, 5)
    open_module_db(old).close()
    conn = sqlite3.connect(old)
    assert conn.execute("SELECT rowid, names FROM call_name ORDER BY rowid").fetchall() == expected
    assert expected and all(names for _, names in expected)
    conn.close()
