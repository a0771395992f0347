"""Contacts on real SQLite files: CSV and vCard files read into contacts with a message per row,
re-imports that update and never duplicate, hostile files refused or neutralised, the PBX's
phone book (ModulePhoneBook's DB as the demo PBX writes it) read read-only, who a number is
(phone book > contact > the caller id), the name search that finds a contact's calls, and
`extcdr contacts` with its one-line errors."""
from __future__ import annotations

import sqlite3

import pytest

from mirror.contact_files import MAX_FILE_BYTES, MAX_ROWS, ContactFileError, parse_contacts_file
from mirror.contacts import (ContactError, add_contact, apply_import, contact_fields, keys_named,
                             list_contacts, names_of_keys, plan_import, with_contacts)
from mirror.database import open_module_db
from mirror.pbxtime import PbxClock
from mirror.queries import call_filter, call_rows, calls_query
from pbx.phonebook import PhoneBook, read_phonebook
from standin.demo import PHONEBOOK_DB
from tests.mirror import mirrored_demo

DIGITS = 9
CSV = """name,company,phone,email,note,id
Иван Петров,ООО Ромашка,"+7 916 123-45-67, 8 (495) 111-22-33",ivan@example.com,VIP,c1
Anna Smith,,+1 212 555 0100,,,c2
"""
VCARD = """BEGIN:VCARD
VERSION:3.0
UID:urn:uuid:1111
FN:Мария Иванова
ORG:Клиника «Здоровье»;Регистратура
TEL;TYPE=work:+7 (812) 555-01-02
item1.TEL;TYPE=cell:8 921 000 11 22
EMAIL:maria@example.com
NOTE:Звонить после 14:00\\, не раньше
END:VCARD
BEGIN:VCARD
VERSION:4.0
UID:2222
N:Doe;John;;;
TEL;VALUE=uri:tel:+44-20-7946-0000
END:VCARD
"""


@pytest.fixture
def db(tmp_path):
    database = open_module_db(tmp_path / "module.db")
    yield database
    database.close()


def imported(db, data: bytes | str, *, apply: bool = True):
    data = data.encode() if isinstance(data, str) else data
    plan = plan_import(db, parse_contacts_file(data, DIGITS), DIGITS)
    if apply:
        apply_import(db, plan, "admin", 1_700_000_000_000, DIGITS)
    return plan


def by_row(plan) -> dict[int, object]:
    return {row.row: row for row in plan.rows}


# --- files ------------------------------------------------------------------------------------

def test_a_csv_file_with_a_header_becomes_contacts(db):
    plan = imported(db, CSV)
    assert plan.kind == "csv" and plan.counts() == {"add": 2, "update": 0, "same": 0,
                                                     "refused": 0}
    contacts, total = list_contacts(db)
    assert total == 2
    ivan = next(c for c in contacts if c["company"] == "ООО Ромашка")
    assert ivan["numbers"] == ["+7 916 123-45-67", "8 (495) 111-22-33"]
    assert (ivan["name"], ivan["email"], ivan["note"], ivan["source"]) == (
        "Иван Петров", "ivan@example.com", "VIP", "import")
    # Both numbers are its keys: +7 916… and 8 916… are the same client.
    assert names_of_keys(db, ["161234567", "951112233"]).keys() == {"161234567", "951112233"}


def test_semicolons_russian_headers_and_numbers_in_several_columns(db):
    text = "ФИО;Компания;Телефон 1;Телефон 2;Почта\nОлег;Склад;+7 900 000-00-01;+7 900 000-00-02;\n"
    plan = imported(db, text)
    assert plan.count("add") == 1
    assert list_contacts(db)[0][0]["numbers"] == ["+7 900 000-00-01", "+7 900 000-00-02"]


def test_a_vcard_file_becomes_contacts(db):
    plan = imported(db, VCARD)
    assert plan.kind == "vcard" and plan.count("add") == 2
    contacts = {c["name"]: c for c in list_contacts(db)[0]}
    maria = contacts["Мария Иванова"]
    assert maria["company"] == "Клиника «Здоровье»"
    assert maria["numbers"] == ["+7 (812) 555-01-02", "8 921 000 11 22"]
    assert maria["note"] == "Звонить после 14:00, не раньше"
    assert contacts["John Doe"]["numbers"] == ["+44-20-7946-0000"]


def test_utf8_with_a_bom_and_windows_1251_are_read(db):
    assert parse_contacts_file(b"\xef\xbb\xbf" + CSV.encode(), DIGITS).contacts[0].name == \
        "Иван Петров"
    parsed = parse_contacts_file(CSV.encode("cp1251"), DIGITS)
    assert parsed.encoding == "Windows-1251" and parsed.contacts[0].name == "Иван Петров"
    parsed = parse_contacts_file(CSV.encode("utf-16"), DIGITS)
    assert parsed.encoding == "UTF-16" and parsed.contacts[0].company == "ООО Ромашка"


def test_reimport_updates_never_duplicates(db):
    imported(db, CSV)
    again = imported(db, CSV)
    assert again.counts() == {"add": 0, "update": 0, "same": 2, "refused": 0}
    changed = imported(db, CSV.replace("VIP", "VIP who pays late").replace("Anna Smith", "Ann"))
    assert changed.counts() == {"add": 0, "update": 2, "same": 0, "refused": 0}
    contacts, total = list_contacts(db)
    assert total == 2 and {c["name"] for c in contacts} == {"Иван Петров", "Ann"}
    imported(db, VCARD)
    assert imported(db, VCARD).count("same") == 2 and list_contacts(db)[1] == 4


def test_without_an_id_the_first_number_is_the_contact(db):
    """A file without an id column: re-importing it, or a contact typed with the same
    number, updates that contact."""
    typed = contact_fields("Typed", "", "+7 999 111-22-33", "", "", DIGITS)
    contact_id = add_contact(db, typed, "admin", 1, DIGITS)
    plan = imported(db, "name,number\nFrom a file,8 999 111 22 33\n")
    assert plan.rows[0].action == "update" and plan.rows[0].contact_id == contact_id
    assert imported(db, "name,number\nFrom a file,8 999 111 22 33\n").count("same") == 1
    assert list_contacts(db)[1] == 1


def test_bad_rows_are_refused_with_their_row_numbers(db):
    text = ("name,number,email\n"
            "Good,+7 916 000-00-01,\n"
            ",+7 916 000-00-02,\n"                 # no name
            "Short,12,\n"                          # no valid number
            "Letters,call me maybe,\n"
            "Bad mail,+7 916 000-00-03,not-an-address\n"
            "Twice,+7 916 000-00-01,\n")           # the same first number as row 2
    rows = by_row(imported(db, text, apply=False))
    assert rows[2].action == "add" and not rows[2].messages
    assert rows[3].action == "refused" and "no name" in rows[3].messages
    assert rows[4].action == "refused" and "no valid phone number" in rows[4].messages
    assert any("too short" in m for m in rows[4].messages)
    assert rows[5].action == "refused" and any("not a phone number" in m
                                               for m in rows[5].messages)
    assert rows[6].action == "add" and any("not an address" in m for m in rows[6].messages)
    assert rows[7].action == "refused" and "the same contact as row 2: left out" in \
        rows[7].messages


def test_formula_cells_and_markup_are_kept_as_typed_with_a_message(db):
    text = ('name,company,number\n"=HYPERLINK(""http://evil.example"")",'
            '<script>alert(1)</script>,+7 916 000-00-09\n@SUM(1),-1+1,+7 916 000-00-08\n')
    rows = by_row(imported(db, text))
    assert rows[2].action == "add" and any("kept as text" in m for m in rows[2].messages)
    assert any(m.startswith("company starts with '-'") for m in rows[3].messages)
    names = {c["name"]: c["company"] for c in list_contacts(db)[0]}
    assert names == {'=HYPERLINK("http://evil.example")': "<script>alert(1)</script>",
                     "@SUM(1)": "-1+1"}


def test_hostile_vcards_are_refused_or_kept_inert_card_by_card(db):
    cards = ("BEGIN:VCARD\nVERSION:3.0\nFN:=cmd|' /C calc'!A0\nORG:<b>Evil</b>\n"
             "TEL:+7 916 000-00-11\nEND:VCARD\n"
             "BEGIN:VCARD\nVERSION:3.0\nFN:<script>alert(1)</script>\nTEL:javascript:1\n"
             "END:VCARD\n"
             "BEGIN:VCARD\nVERSION:4.0\nFN:No End\nTEL:+7 916 000-00-12\n")
    rows = by_row(imported(db, cards))
    assert rows[1].action == "add" and any("kept as text" in m for m in rows[1].messages)
    assert rows[2].action == "refused" and "no valid phone number" in rows[2].messages
    assert rows[3].action == "refused" and "the card has no END:VCARD" in rows[3].messages
    assert [(c["name"], c["company"]) for c in list_contacts(db)[0]] == [
        ("=cmd|' /C calc'!A0", "<b>Evil</b>")]


def test_a_vcard_21_in_quoted_printable_is_read():
    card = ("BEGIN:VCARD\nVERSION:2.1\nN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:"
            "=D0=9F=D0=B5=D1=82=D1=80=D0=BE=D0=B2;=D0=98=D0=B2=D0=B0=D0=BD\n"
            "TEL;CELL:+7 916 000-00-13\nEND:VCARD\n")
    assert parse_contacts_file(card.encode(), DIGITS).contacts[0].name == "Иван Петров"


def test_control_characters_are_dropped(db):
    imported(db, "name,number\n\"Bell\x07 and\x1b[31m red\",+7 916 000-00-07\n")
    assert list_contacts(db)[0][0]["name"] == "Bell and [31m red"


@pytest.mark.parametrize("data, message", [
    (b"x" * (MAX_FILE_BYTES + 1), "the file is too big"),
    (b"", "the file is empty"),
    (b"\x00\x01\x02PK\x03\x04binary", "the file is not text"),
    ("name,company,number\nBenoît Côté,Crème brûlée SARL,+33 1 23 45 67 89\n"
     .encode("latin-1"), "unknown text encoding"),
    (b"name,number\n\x98\x98,+7 900 000 00 00\n", "unknown text encoding"),
    (b"first,second\n1,2\n", "the header must name a name"),
    (b"hello\nBEGIN:VCARD\nEND:VCARD\n", "the header must name"),
    (b"BEGIN:VCARD\nFN:x\nEND:VCARD\nstray line\n", "line 4: outside a BEGIN:VCARD"),
    (b"\xff\xfe\x00\xd8", "broken UTF-16"),
])
def test_files_that_cannot_be_read_are_refused_whole(data, message):
    with pytest.raises(ContactFileError, match=message):
        parse_contacts_file(data, DIGITS)


def test_too_many_rows_are_refused():
    rows = "".join(f"n{i},+7 900 {i:07d}\n" for i in range(MAX_ROWS + 1))
    with pytest.raises(ContactFileError, match="too many contacts"):
        parse_contacts_file(("name,number\n" + rows).encode(), DIGITS)
    cards = "BEGIN:VCARD\nFN:x\nTEL:+7 900 0000000\nEND:VCARD\n" * (MAX_ROWS + 1)
    with pytest.raises(ContactFileError, match="too many contacts"):
        parse_contacts_file(cards.encode(), DIGITS)


def test_overlong_fields_and_too_many_numbers():
    long_name = "x" * 201
    parsed = parse_contacts_file(
        f"name,number\n{long_name},+7 916 000-00-01\n"
        f"Many,\"{','.join(f'+7 916 000-00-{i:02d}' for i in range(12))}\"\n".encode(), DIGITS)
    first, second = parsed.contacts
    assert first.refused == "name is longer than 200 characters"
    assert len(second.numbers) == 10 and any("more than 10" in m for m in second.messages)


def test_a_typed_contact_says_every_problem():
    with pytest.raises(ContactError, match="no name"):
        contact_fields("", "", "+7 916 000-00-01", "", "", DIGITS)
    with pytest.raises(ContactError, match="not a phone number"):
        contact_fields("Name", "", "+7 916 000-00-01\nabc", "", "", DIGITS)
    contact = contact_fields("=1+2", "", "+7 916 000-00-01, 8 916 000 00 02", "", "", DIGITS)
    assert contact.name == "=1+2" and len(contact.numbers) == 2


# --- the PBX's phone book and who a number is -----------------------------------------------

@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    out = tmp_path_factory.mktemp("contacts-pbx")
    return out, mirrored_demo(out, 400, seed=31)


def test_the_demo_pbx_has_a_phone_book_read_read_only(pbx):
    out, _ = pbx
    path = out / PHONEBOOK_DB
    before = path.read_bytes()
    names = read_phonebook(path, DIGITS)
    assert "Globex Support" in names.values() and len(names) == 8
    assert all(len(key) == DIGITS for key in names)
    assert path.read_bytes() == before


def test_a_missing_locked_or_foreign_phone_book_gives_no_names(tmp_path, caplog):
    assert PhoneBook(tmp_path / "nothing.db").names(DIGITS) == {}
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.commit()
    assert PhoneBook(foreign).names(DIGITS) == {}
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    assert PhoneBook(garbage).names(DIGITS) == {}
    assert "phone book not read" in caplog.text
    assert PhoneBook(None).names(DIGITS) == {}


def test_a_changed_phone_book_is_read_again(tmp_path):
    from pbx.tables import PHONEBOOK_DDL, create
    path = tmp_path / "phonebook.db"
    conn = create(str(path), PHONEBOOK_DDL)
    conn.execute("INSERT INTO m_PhoneBook (number, number_rep, call_id) "
                 "VALUES (1161234567, '+7 916 123-45-67', 'First')")
    conn.commit()
    book = PhoneBook(path)
    assert book.names(DIGITS) == {"161234567": "First"}
    conn.execute("UPDATE m_PhoneBook SET call_id = 'Second'")
    conn.commit()
    conn.close()
    assert book.names(DIGITS) == {"161234567": "Second"}


def _incoming(db) -> list[tuple[str, str]]:
    """(ext_key, caller id name) of the mirror's incoming calls."""
    return db.execute_sql("SELECT ext_key, src_name FROM call WHERE direction = 'incoming' "
                          "AND ext_key IS NOT NULL").fetchall()


def test_the_phone_book_comes_before_a_contact_before_the_caller_id(pbx, tmp_path):
    out, path = pbx
    db = open_module_db(path)
    try:
        phonebook = read_phonebook(out / PHONEBOOK_DB, DIGITS)
        calls = _incoming(db)
        in_book = next(key for key, _ in calls if key in phonebook)
        named_by_pbx = next(key for key, name in calls if name and key not in phonebook)
        nobody = next(key for key, _ in calls if key not in phonebook and key != named_by_pbx)
        for name, key in (("Contact In Book", in_book), ("Contact Only", named_by_pbx)):
            add_contact(db, contact_fields(name, "Firm", "+79" + key, "", "",
                                           DIGITS), "admin", 1, DIGITS)
        rows = [{"ext_key": key} for key in (in_book, named_by_pbx, nobody)]
        first, second, third = with_contacts(rows, db, phonebook)
        assert first["contact"]["name"] == phonebook[in_book]
        assert first["contact"]["source"] == "phonebook" and first["contact"]["id"]
        assert second["contact"] == {"name": "Contact Only", "company": "Firm",
                                     "id": second["contact"]["id"], "source": "contact"}
        assert third["contact"] is None         # the page shows the caller id the PBX recorded
    finally:
        db.close()


def test_a_name_search_finds_the_calls_of_a_contacts_numbers(pbx):
    out, path = pbx
    db = open_module_db(path)
    try:
        clock = PbxClock("Europe/Berlin")
        params = {"from": "2024-10-01", "to": "2024-10-27"}
        key = db.execute_sql("SELECT ext_key FROM call WHERE direction = 'incoming' AND "
                             "ext_key IS NOT NULL GROUP BY ext_key "
                             "ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
        expected = {lid for (lid,) in db.execute_sql(
            "SELECT linkedid FROM call WHERE ext_key = ?", (key,))}
        add_contact(db, contact_fields("Zebulon Quux", "Квазар Плюс", "89" + key,
                                       "", "", DIGITS), "admin", 1, DIGITS)
        for typed in ("zebulon", "КВАЗАР", "quux"):
            flt = call_filter({**params, "number": typed}, clock, 1_730_000_000,
                              number_match_digits=DIGITS)
            found = {row["linkedid"] for row in call_rows(calls_query(flt, db))}
            assert found == expected, typed
        phonebook = read_phonebook(out / PHONEBOOK_DB, DIGITS)
        flt = call_filter({**params, "number": "Globex"}, clock, 1_730_000_000,
                          number_match_digits=DIGITS)
        flt.phonebook = phonebook
        globex = next(k for k, name in phonebook.items() if name == "Globex Support")
        assert {row["ext_key"] for row in call_rows(calls_query(flt, db))} <= {globex}
        assert keys_named(db, "globex", phonebook) == [globex]
    finally:
        db.close()


# --- the command line -------------------------------------------------------------------------

def test_contacts_import_prints_the_preview_and_dry_run_saves_nothing(cli, tmp_path):
    db = tmp_path / "module.db"
    file = tmp_path / "contacts.csv"
    file.write_text(CSV + "Short,12,,,,c3\n", encoding="utf-8")
    code, out, err = cli("contacts", "import", "--db", db, file, "--dry-run")
    assert code == 0, err
    assert out.splitlines()[0] == ("contacts.csv (CSV, UTF-8): 2 to add, 0 to update, "
                                   "0 unchanged, 1 refused")
    assert "row 4: refused: no valid phone number" in out and "dry run: nothing saved" in out
    code, out, _ = cli("contacts", "list", "--db", db)
    assert out.strip() == "0 contacts"
    assert cli("contacts", "import", "--db", db, file)[0] == 0
    code, out, _ = cli("contacts", "import", "--db", db, file)
    assert "0 to add, 0 to update, 2 unchanged, 1 refused" in out
    code, out, _ = cli("contacts", "list", "--db", db, "--search", "ромашка")
    assert "Иван Петров (ООО Ромашка)" in out and out.splitlines()[-1] == \
        "1 contact matching 'ромашка'"


@pytest.mark.parametrize("content, message", [
    (b"\x00\x01binary", "the file is not text"),
    (b"a,b\n1,2\n", "the header must name a name"),
])
def test_contacts_import_of_a_bad_file_is_one_line(cli, tmp_path, content, message):
    file = tmp_path / "bad.csv"
    file.write_bytes(content)
    code, out, err = cli("contacts", "import", "--db", tmp_path / "module.db", file)
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err
    code, _, err = cli("contacts", "import", "--db", tmp_path / "module.db",
                       tmp_path / "missing.csv")
    assert code != 0 and err.strip() == f"extcdr: {tmp_path / 'missing.csv'}: no such file"
    code, _, err = cli("contacts", "frobnicate", "--db", tmp_path / "module.db")
    assert code != 0 and len(err.strip().splitlines()) == 1


def test_files_of_exports_and_mailed_reports_name_callers(pbx, tmp_path):
    """The context every reader uses (pages, the CLI, the reports' sender) hands the phone
    book to the filter, and every file written of it has the Contact column."""
    from openpyxl import load_workbook

    from exports.writers import export_file
    from mirror.settings import load
    from pbx.mirror_context import MirrorContext
    out, path = pbx
    db = open_module_db(path)
    try:
        context = MirrorContext(load(None, {"pbx.phonebook_db": out / PHONEBOOK_DB,
                                            "pbx.timezone": "Europe/Berlin"}), db)
        phonebook = context.phonebook_names()
        booked = {key for key, _ in _incoming(db) if key in phonebook}
        flt = context.call_filter({"from": "2024-10-01", "to": "2024-10-27",
                                   "direction": "incoming"})
        file = tmp_path / "report.xlsx"
        export_file(file, "xlsx", flt, db, context.clock(), "ru", [])
        rows = list(load_workbook(file).worksheets[1].iter_rows(values_only=True))
        column = rows[0].index("Контакт")
        shown = {row[column] for row in rows[1:]} - {None, ""}
        inert = {("'" + name if name.startswith("=") else name)
                 for key, name in phonebook.items() if key in booked}
        typed = {f"{c['name']} ({c['company']})" for c in list_contacts(db)[0]}
        assert inert <= shown and shown - inert <= typed
    finally:
        db.close()
