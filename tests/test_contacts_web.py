"""The contacts' pages over real HTTP (waitress, the admin shell's headers): import with a
preview then apply, hostile files refused or shown inert, adding, editing and deleting for
admins only (CSRF-checked), a contact's page with its calls as the user may see them, and the
names of outside numbers in the history's rows, details, search and exports — the PBX's phone
book before a contact before the caller id."""
from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from mirror.contacts import list_contacts
from mirror.database import open_module_db
from mirror.settings import load
from pbx.phonebook import read_phonebook
from standin.demo import PHONEBOOK_DB
from tests.mirror import mirrored_demo
from tests.stack import serving
from web import create_app

TOKEN = "proxy-secret"
PREFIX = "/admin-cabinet/module-extended-c-d-r/calls"
PERIOD = {"from": "2024-10-01", "to": "2024-10-28"}
DIGITS = 9


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    out = tmp_path_factory.mktemp("contacts-web-pbx")
    return out, mirrored_demo(out, 500, seed=37)


@pytest.fixture(scope="module")
def server(pbx, tmp_path_factory):
    out, db = pbx
    config = tmp_path_factory.mktemp("web") / "extcdr.toml"
    config.write_text(f'[web]\nproxy_token = "{TOKEN}"\n')
    app = create_app(load(config, {"module.db": db, "pbx.recordings_root": out / "monitor",
                                   "pbx.phonebook_db": out / PHONEBOOK_DB}))
    with serving(app, threads=4) as http:
        yield f"http://127.0.0.1:{http.effective_port}{PREFIX}"


def csrf(user: str) -> str:
    key = hashlib.sha256(f"extcdr:{TOKEN}".encode()).digest()
    return hmac.new(key, f"csrf:{user}".encode(), hashlib.sha256).hexdigest()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(NoRedirect)


def fetch(base, path, *, method="GET", params=None, form=None, files=None, user="anna",
          role="admin", extensions="", language="en", token=True):
    """(status, body text, headers) of a request as the admin shell's nginx passes it."""
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    headers = {"X-Extcdr-User": user, "X-Extcdr-Role": role, "X-Extcdr-Extensions": extensions,
               "X-Extcdr-Proxy-Token": TOKEN, "X-Extcdr-Language": language}
    data = None
    if form is not None or files is not None:
        fields = dict(form or {})
        if token:
            fields.setdefault("csrf_token", csrf(user))
        if files:
            data, headers["Content-Type"] = _multipart(fields, files)
        else:
            data = urllib.parse.urlencode(fields).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        method = "POST"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with _opener.open(request) as reply:
            return reply.status, reply.read().decode(), reply.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers


def _multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     f'{value}\r\n'.encode())
    for name, (filename, content) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                     f'filename="{filename}"\r\nContent-Type: text/csv\r\n\r\n'.encode()
                     + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def contacts_in(db_path) -> list[dict]:
    db = open_module_db(db_path, readonly=True)
    try:
        return list_contacts(db)[0]
    finally:
        db.close()


def preview(server, content: bytes, name="contacts.csv", **kwargs):
    return fetch(server, "/contacts/import", form={}, files={"file": (name, content)}, **kwargs)


def apply_token(page: str) -> str:
    return re.search(r'action="[^"]*/contacts/import/([\w-]+)"', page).group(1)


def busiest_caller(db_path, phonebook: dict, *, in_book: bool) -> str:
    """The match key of the incoming caller with the most calls, in the phone book or not."""
    db = open_module_db(db_path, readonly=True)
    try:
        keys = [key for (key,) in db.execute_sql(
            "SELECT ext_key FROM call WHERE direction = 'incoming' AND ext_key IS NOT NULL "
            "GROUP BY ext_key ORDER BY count(*) DESC, ext_key")]
    finally:
        db.close()
    return next(key for key in keys if (key in phonebook) == in_book)


# --- import ------------------------------------------------------------------------------------

HOSTILE = ("name,company,number,email,id\n"
           "<script>alert(1)</script>,<b>Bold Ltd</b>,+7 916 700-00-01,,h1\n"
           "\"=HYPERLINK(\"\"http://evil.example\"\")\",Formula Inc,+7 916 700-00-02,,h2\n"
           "No number,,12,,h3\n"
           ",,+7 916 700-00-04,,h4\n").encode()


def test_import_previews_then_applies_and_markup_stays_text(server, pbx):
    _, db = pbx
    status, page, _ = preview(server, HOSTILE)
    assert status == 200, page
    assert contacts_in(db) == []                              # nothing saved by a preview
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    rows = dict(re.findall(r'data-row="(\d+)">\s*<td class="collapsing">\d+</td>\s*'
                           r'<td class="collapsing action">(\w+)</td>', page))
    assert rows == {"2": "add", "3": "add", "4": "refused", "5": "refused"}
    assert "no valid phone number" in page and "no name" in page
    assert "kept as text" in page
    status, _, headers = fetch(server, f"/contacts/import/{apply_token(page)}", form={})
    assert status == 302 and "added=2" in headers["Location"]
    names = {c["name"]: c for c in contacts_in(db)}
    assert set(names) == {"<script>alert(1)</script>", '=HYPERLINK("http://evil.example")'}
    status, page, _ = fetch(server, "/contacts")
    assert status == 200 and "&lt;b&gt;Bold Ltd&lt;/b&gt;" in page and "<b>Bold" not in page
    # The same file again changes nothing; a preview is applied once.
    status, page, _ = preview(server, HOSTILE)
    counts = dict(re.findall(r'count-(\w+)">[^<]*<span class="value">(\d+)<', page))
    assert counts == {"add": "0", "update": "0", "same": "2", "refused": "2"}
    token = apply_token(page)
    assert fetch(server, f"/contacts/import/{token}", form={})[0] == 302
    assert fetch(server, f"/contacts/import/{token}", form={})[0] == 410
    assert len(contacts_in(db)) == 2


@pytest.mark.parametrize("content, status, message", [
    (b"x" * (5 * 1024 * 1024 + 100_000), 413, "the file is too big"),
    (b"\x00\x01\x02\x03", 400, "the file is not text"),
    ("name,number\nBenoît Côté,+33 1 23 45 67 89\n".encode("latin-1"), 400,
     "unknown text encoding"),
    (b"just,columns\n1,2\n", 400, "the header must name"),
])
def test_files_that_cannot_be_read_are_refused_with_a_message(server, content, status,
                                                               message):
    got, page, _ = preview(server, content)
    assert got == status and message in page


def test_the_refusal_is_in_russian_for_a_russian_admin(server):
    status, page, _ = preview(server, b"\x00\x01", language="ru")
    assert status == 400 and "это не текстовый файл" in page


def test_changes_need_an_admin_and_the_csrf_token(server, pbx):
    _, db = pbx
    before = contacts_in(db)
    for role in ("operator", "supervisor"):
        assert preview(server, b"name,number\nX,+7 916 700-00-05\n", role=role,
                       user="olga")[0] == 403
        assert fetch(server, "/contacts", form={"name": "X", "numbers": "+7 916 700-00-05"},
                     role=role, user="olga")[0] == 403
        assert fetch(server, "/contacts/new", role=role, user="olga")[0] == 403
    assert preview(server, b"name,number\nX,+7 916 700-00-05\n", token=False)[0] == 403
    assert fetch(server, "/contacts", form={"name": "X", "numbers": "+7 916 700-00-05"},
                 token=False)[0] == 403
    assert fetch(server, "/contacts", form={"name": "X", "numbers": "+7 916 700-00-05",
                                            "csrf_token": "forged"})[0] == 403
    assert contacts_in(db) == before
    # Everyone who sees calls sees the names; the list offers no changes to them.
    status, page, _ = fetch(server, "/contacts", role="operator", user="olga",
                            extensions="201")
    assert status == 200 and "import-contacts" not in page and "new-contact" not in page


def test_an_admin_adds_edits_and_deletes_a_contact(server, pbx):
    _, db = pbx
    status, page, _ = fetch(server, "/contacts", form={"name": "", "numbers": "abc"})
    assert status == 400 and "no name" in page
    status, page, _ = fetch(server, "/contacts", form={"name": "Typed", "numbers": "12",
                                                        "company": "Co"}, language="ru")
    assert status == 400 and "слишком короткий" in page
    status, _, headers = fetch(server, "/contacts", form={
        "name": "Typed Person", "company": "Typed Co", "numbers": "+7 916 700-00-06\n"
        "8 916 700 00 07", "email": "t@example.com", "note": "a note"})
    assert status == 302
    contact_id = int(headers["Location"].rstrip("/").rsplit("/", 1)[1])
    status, page, _ = fetch(server, f"/contacts/{contact_id}")
    assert status == 200 and "Typed Person" in page and "8 916 700 00 07" in page
    assert fetch(server, f"/contacts/{contact_id}", form={
        "name": "Renamed", "numbers": "+7 916 700-00-06"})[0] == 302
    typed = next(c for c in contacts_in(db) if c["id"] == contact_id)
    assert (typed["name"], typed["numbers"], typed["source"]) == (
        "Renamed", ["+7 916 700-00-06"], "manual")
    assert fetch(server, f"/contacts/{contact_id}/delete", form={})[0] == 302
    assert fetch(server, f"/contacts/{contact_id}")[0] == 404
    assert fetch(server, f"/contacts/{contact_id}/delete", form={})[0] == 404
    assert fetch(server, "/contacts/99999999999999999999999")[0] == 404


# --- names of calls ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def named_callers(server, pbx):
    """A contact for the busiest caller the phone book does not name, and one for a caller it
    names (whose name stays the phone book's)."""
    out, db = pbx
    phonebook = read_phonebook(out / PHONEBOOK_DB, DIGITS)
    plain = busiest_caller(db, phonebook, in_book=False)
    booked = busiest_caller(db, phonebook, in_book=True)
    content = (f"name,company,number,id\n\"=Zed Quimby\",Квазар Плюс,+79{plain},z1\n"
               f"Shadowed Name,Shadow Co,8 9{booked},z2\n").encode()
    page = preview(server, content)[1]
    assert fetch(server, f"/contacts/import/{apply_token(page)}", form={})[0] == 302
    ids = {c["name"]: c["id"] for c in contacts_in(db)}
    return {"plain": plain, "booked": booked, "phonebook_name": phonebook[booked],
            "plain_id": ids["=Zed Quimby"], "booked_id": ids["Shadowed Name"]}


def api_calls(server, **params):
    status, body, _ = fetch(server, "/api/v1/calls", params={**PERIOD, "limit": 500, **params})
    assert status == 200, body
    return json.loads(body)["calls"]


def keys_of(server, db, linkedids) -> set[str]:
    conn = open_module_db(db, readonly=True)
    try:
        marks = ",".join("?" * len(linkedids))
        return {key for (key,) in conn.execute_sql(
            f"SELECT ext_key FROM call WHERE linkedid IN ({marks})", list(linkedids))}
    finally:
        conn.close()


def test_a_search_by_a_contacts_name_or_company_finds_its_calls(server, pbx, named_callers):
    _, db = pbx
    for typed in ("zed quimby", "квазар"):
        found = api_calls(server, number=typed)
        assert found and keys_of(server, db, [c["linkedid"] for c in found]) == {
            named_callers["plain"]}
    found = api_calls(server, number=named_callers["phonebook_name"][:12])
    assert named_callers["booked"] in keys_of(server, db, [c["linkedid"] for c in found])


def test_rows_and_details_show_the_phone_book_then_the_contact(server, named_callers):
    status, page, _ = fetch(server, "/", params={**PERIOD, "number": "Zed Quimby"})
    assert status == 200
    assert page.count('class="contact-link"') >= 1 and "=Zed Quimby</a>" in page
    status, page, _ = fetch(server, "/", params={**PERIOD, "number": "Shadow Co"})
    name = named_callers["phonebook_name"]
    shown = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert status == 200 and shown in page and "Shadowed Name" not in page
    linkedid = re.search(r'data-linkedid="([^"]+)"', page).group(1)
    status, details, _ = fetch(server, f"/calls/{linkedid}/details")
    assert status == 200 and "Contact" in details and shown in details


def test_exports_carry_the_contact_neutralised(server, named_callers):
    status, body, _ = fetch(server, "/export", params={**PERIOD, "format": "csv",
                                                        "number": "Zed Quimby"})
    assert status == 200
    rows = list(csv.reader(io.StringIO(body)))
    column = rows[0].index("Contact")
    assert {row[column] for row in rows[1:]} == {"'=Zed Quimby (Квазар Плюс)"}


def test_a_contacts_page_lists_its_calls_as_the_user_may_see_them(server, pbx, named_callers):
    _, db = pbx
    contact = f"/contacts/{named_callers['plain_id']}"
    status, page, _ = fetch(server, contact)
    everyone = set(re.findall(r'<tr class="call[^"]*" data-linkedid="([^"]+)"', page))
    expected = {c["linkedid"] for c in api_calls(server, number="Zed Quimby",
                                                 **{"from": "2024-01-01"})}
    assert status == 200 and everyone and everyone == expected
    conn = open_module_db(db, readonly=True)
    try:
        marks = ",".join("?" * len(everyone))
        employees = {lid: json.loads(e) for lid, e in conn.execute_sql(
            f"SELECT linkedid, employees FROM call WHERE linkedid IN ({marks})", list(everyone))}
    finally:
        conn.close()
    extension = max({e for names in employees.values() for e in names},
                    key=lambda e: sum(e in names for names in employees.values()))
    status, page, _ = fetch(server, contact, role="operator", user="op",
                            extensions=extension)
    own = set(re.findall(r'<tr class="call[^"]*" data-linkedid="([^"]+)"', page))
    assert status == 200 and own == {lid for lid, names in employees.items()
                                     if extension in names}
    status, page, _ = fetch(server, contact, role="operator", user="op", extensions="9999")
    assert status == 200 and 'data-linkedid' not in page and "No calls with these numbers" in page


def test_the_pages_are_in_russian(server, named_callers):
    status, page, _ = fetch(server, "/contacts", language="ru")
    assert status == 200 and "Контакты" in page and "Импорт контактов" in page
    status, page, _ = fetch(server, f"/contacts/{named_callers['plain_id']}", language="ru")
    assert status == 200 and "Номера" in page and "Изменить" in page


def test_the_api_and_the_cli_name_the_outside_number_as_the_page(server, pbx, named_callers,
                                                                 cli):
    """api/v1 records (a list, one call, the worklist) and `extcdr calls` carry the page's
    names as added fields: `contact` (phone book, then a contact) and `external_name` (that,
    else the caller id name); every field of the contract before them stays as it was."""
    out, db = pbx
    plain = api_calls(server, number="Zed Quimby")
    assert plain and {c["contact"]["name"] for c in plain} == {"=Zed Quimby"}
    assert {c["contact"]["source"] for c in plain} == {"contact"}
    assert {c["contact"]["company"] for c in plain} == {"Квазар Плюс"}
    assert {c["external_name"] for c in plain} == {"=Zed Quimby"}
    booked = api_calls(server, number="Shadow Co")
    assert booked and {c["external_name"] for c in booked} == {named_callers["phonebook_name"]}
    assert {c["contact"]["source"] for c in booked} == {"phonebook"}
    everyone = api_calls(server)
    assert set(everyone[0]) == {
        "linkedid", "start", "end", "direction", "status", "reason", "src", "src_name", "dst",
        "dst_name", "external_number", "did", "line", "answered_by", "missed_by",
        "transferred_to", "employees", "wait_s", "talk_s", "duration_s", "recordings",
        "callback_of", "returned_by", "callback_attempts", "legs", "queue", "queue_wait_s",
        "tags", "comments", "hangup", "contact", "external_name", "pbx"}
    unnamed = next(c for c in everyone if c["contact"] is None and c["direction"] == "incoming"
                   and c["src_name"] and c["src_name"] != c["src"])
    assert unnamed["external_name"] == unnamed["src_name"]          # the caller id, last
    assert all(c["external_name"] == "" for c in everyone if c["direction"] == "internal")
    status, body, _ = fetch(server, f"/api/v1/calls/{plain[0]['linkedid']}")
    assert status == 200 and json.loads(body)["call"] == plain[0]
    status, body, _ = fetch(server, "/api/v1/worklist/unreturned",
                            params={**PERIOD, "limit": 500})
    work = json.loads(body)["calls"]
    assert status == 200 and work
    listed = {c["linkedid"]: c for c in everyone}
    assert all(c["contact"] == listed[c["linkedid"]]["contact"] for c in work)
    code, text, _ = cli("calls", "--db", db, "--pbx-db", out / "mikopbx.db", "--format",
                        "jsonl", "--from", PERIOD["from"], "--to", PERIOD["to"], "--number",
                        "Zed Quimby")
    assert code == 0 and [json.loads(line) for line in text.splitlines()] == plain
    code, text, _ = cli("calls", "--db", db, "--pbx-db", out / "mikopbx.db", "--from",
                        PERIOD["from"], "--to", PERIOD["to"], "--number", "Zed Quimby")
    header, *rows = text.splitlines()
    assert code == 0 and header.split()[-1] == "contact" and header.split()[:3] == [
        "start", "direction", "status"]
    assert rows and all(row.endswith("=Zed Quimby (Квазар Плюс)") for row in rows)
