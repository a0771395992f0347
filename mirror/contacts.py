"""The module's contacts: names for outside numbers that an admin imports (`mirror.contact_files`)
or types, matched to calls by the calls' `ext_key` (the number's last N digits, as callbacks are
matched). Who a number is: the PBX's phone book first (read by `pbx.phonebook`, handed in here
as a key -> name map), then a contact, then the caller id the PBX recorded.

The contacts are the users' own data in module.db (kept across upgrades), written by the web
process and the CLI in short transactions; who may change them (admins) is the caller's check.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping

from peewee import Database

from mirror.contact_files import ContactFileError, ParsedContact, ParsedFile, checked, number_key
from mirror.dialect import json_element, json_list_rows, run, write_transaction

__all__ = ["ContactFileError", "ContactError", "ImportPlan", "plan_import", "apply_import"]

SEARCH_KEYS_LIMIT = 2_000     # numbers a name search looks for, at most
_LOOKUP_CHUNK = 500


class ContactError(ValueError):
    """A contact users can correct; the message says how."""


@dataclass
class PlannedRow:
    row: int
    action: str                   # add | update | same | refused
    name: str
    numbers: list[str]
    messages: list[str] = field(default_factory=list)
    contact: ParsedContact | None = None
    contact_id: int | None = None
    source_key: str | None = None


@dataclass
class ImportPlan:
    """What importing a file would do, row by row (the preview), and then did."""
    kind: str
    encoding: str
    rows: list[PlannedRow]

    def count(self, action: str) -> int:
        return sum(row.action == action for row in self.rows)

    def counts(self) -> dict[str, int]:
        return {action: self.count(action) for action in ("add", "update", "same", "refused")}


def plan_import(db: Database, parsed: ParsedFile, match_digits: int) -> ImportPlan:
    """What importing the file would add, update (a contact of the same id — vCard UID or CSV
    id column — or, without one, of the same first number) and refuse; nothing is written."""
    rows, seen = [], {}
    for contact in parsed.contacts:
        planned = PlannedRow(contact.row, "refused", contact.name, contact.numbers,
                             list(contact.messages), contact)
        rows.append(planned)
        if contact.refused:
            planned.messages.append(contact.refused)
            continue
        key = source_key(contact, match_digits)
        if key in seen:
            planned.messages.append(f"the same contact as row {seen[key]}: left out")
            continue
        seen[key] = contact.row
        planned.source_key = key
        found = _existing(db, key, contact, match_digits)
        if found is None:
            planned.action = "add"
            continue
        planned.contact_id = found["id"]
        planned.action = "same" if _same(found, contact) else "update"
    return ImportPlan(parsed.kind, parsed.encoding, rows)


def apply_import(db: Database, plan: ImportPlan, actor: str, now_ms: int,
                 match_digits: int) -> dict[str, int]:
    """Write the plan's additions and updates in one transaction; returns its counts."""
    with write_transaction(db):
        for row in plan.rows:
            if row.action == "add":
                row.contact_id = _insert(db, row.contact, "import", row.source_key, actor,
                                         now_ms, match_digits)
            elif row.action == "update":
                _update(db, row.contact_id, row.contact, actor, now_ms, match_digits,
                        source_key=row.source_key)
    return plan.counts()


def source_key(contact: ParsedContact, match_digits: int) -> str:
    """What a re-import matches: the file's own id, else the first number's key."""
    if contact.uid:
        return "uid:" + contact.uid
    return "number:" + number_key(contact.numbers[0], match_digits)


def _existing(db, key: str, contact: ParsedContact, match_digits: int) -> dict | None:
    row = run(db, "SELECT id FROM contact WHERE source_key = ?", (key,)).fetchone()
    if row is None and not contact.uid:
        # Typed by hand, or imported under another id: the same number is the same person.
        row = run(
            db, "SELECT contact_id FROM contact_number WHERE ext_key = ? ORDER BY contact_id "
            "LIMIT 1", (number_key(contact.numbers[0], match_digits),)).fetchone()
    return find_contact(db, row[0]) if row else None


def _same(found: dict, contact: ParsedContact) -> bool:
    return all(found[name] == getattr(contact, name)
               for name in ("name", "company", "numbers", "email", "note"))


# --- one contact --------------------------------------------------------------------------------

def contact_fields(name: str, company: str, numbers: str, email: str, note: str,
                   match_digits: int) -> ParsedContact:
    """A contact typed in a form (numbers one a line or comma-separated); ContactError with
    every problem when it cannot be kept."""
    contact = checked(ParsedContact(row=0, name=name, company=company,
                                    numbers=numbers.replace(";", "\n").replace(",", "\n")
                                    .splitlines(), email=email, note=note), match_digits)
    problems = ([contact.refused] if contact.refused else []) + contact.messages
    problems = [p for p in problems if "kept as text" not in p]
    if problems:
        raise ContactError("; ".join(problems))
    return contact


def add_contact(db: Database, contact: ParsedContact, actor: str, now_ms: int,
                match_digits: int) -> int:
    with write_transaction(db):
        return _insert(db, contact, "manual", None, actor, now_ms, match_digits)


def edit_contact(db: Database, contact_id: int, contact: ParsedContact, actor: str,
                 now_ms: int, match_digits: int) -> None:
    """LookupError when there is no such contact."""
    with write_transaction(db):
        if find_contact(db, contact_id) is None:
            raise LookupError(contact_id)
        _update(db, contact_id, contact, actor, now_ms, match_digits)


def delete_contact(db: Database, contact_id: int) -> None:
    """LookupError when there is no such contact."""
    with write_transaction(db):
        if run(db, "DELETE FROM contact WHERE id = ?", (contact_id,)).rowcount == 0:
            raise LookupError(contact_id)
        run(db, "DELETE FROM contact_number WHERE contact_id = ?", (contact_id,))


def _insert(db, contact: ParsedContact, source: str, key: str | None, actor: str, now_ms: int,
            match_digits: int) -> int:
    contact_id = run(
        db, "INSERT INTO contact (name, company, numbers, email, note, source, source_key, "
        "updated_ms, updated_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (contact.name, contact.company, json.dumps(contact.numbers, ensure_ascii=False),
         contact.email, contact.note, source, key, now_ms, actor)).fetchone()[0]
    _set_numbers(db, contact_id, contact.numbers, match_digits)
    return contact_id


def _update(db, contact_id: int, contact: ParsedContact, actor: str, now_ms: int,
            match_digits: int, *, source_key: str | None = None) -> None:
    run(
        db, "UPDATE contact SET name = ?, company = ?, numbers = ?, email = ?, note = ?, "
        "source_key = coalesce(source_key, ?), updated_ms = ?, updated_by = ? WHERE id = ?",
        (contact.name, contact.company, json.dumps(contact.numbers, ensure_ascii=False),
         contact.email, contact.note, source_key, now_ms, actor, contact_id))
    _set_numbers(db, contact_id, contact.numbers, match_digits)


def _set_numbers(db, contact_id: int, numbers: list[str], match_digits: int) -> None:
    run(db, "DELETE FROM contact_number WHERE contact_id = ?", (contact_id,))
    run(db, f"INSERT INTO contact_number (ext_key, contact_id, number) "
        f"SELECT key, ?, number FROM (SELECT {json_element(db, 'value', 0)} AS key, "
        f"{json_element(db, 'value', 1)} AS number FROM {json_list_rows(db, '?')}) AS n "
        f"WHERE true ON CONFLICT DO NOTHING",
        (contact_id, json.dumps([[number_key(n, match_digits), n] for n in numbers])))


def find_contact(db: Database, contact_id: int) -> dict | None:
    row = run(
        db, "SELECT id, name, company, numbers, email, note, source, updated_ms, updated_by "
        "FROM contact WHERE id = ?", (contact_id,)).fetchone()
    return _contact(row) if row else None


def _contact(row) -> dict:
    keys = ("id", "name", "company", "numbers", "email", "note", "source", "updated_ms",
            "updated_by")
    contact = dict(zip(keys, row))
    contact["numbers"] = json.loads(contact["numbers"])
    return contact


def contact_keys(db: Database, contact_id: int) -> list[str]:
    """The match keys of a contact's numbers (its calls are the calls with these keys)."""
    return [key for (key,) in run(
        db, "SELECT ext_key FROM contact_number WHERE contact_id = ? ORDER BY ext_key",
        (contact_id,))]


def list_contacts(db: Database, search: str = "", *, limit: int = 50,
                  offset: int = 0) -> tuple[list[dict], int]:
    """Contacts by name whose name, company, e-mail or number holds `search` (any case), a
    page of them and how many there are."""
    rows = run(
        db, "SELECT id, name, company, numbers, email, note, source, updated_ms, updated_by "
        "FROM contact ORDER BY lower(name), id").fetchall()
    folded = search.strip().casefold()
    digits = "".join(ch for ch in folded if ch.isdigit())
    if folded:
        rows = [row for row in rows if folded in (row[1] + "\n" + row[2] + "\n" + row[4])
                .casefold() or (len(digits) >= 3 and digits in "".join(
                    ch for ch in row[3] if ch.isdigit() or ch == ","))]
    return [_contact(row) for row in rows[offset:offset + limit]], len(rows)


# --- names of calls' numbers --------------------------------------------------------------------

def names_of_keys(db: Database, keys: Iterable[str],
                  phonebook: Mapping[str, str] | None = None) -> dict[str, dict]:
    """Match key -> {name, company, id (a contact's, else None), source: phonebook|contact}
    for the keys that have a name; the phone book's name wins over a contact's."""
    keys = {key for key in keys if key}
    found: dict[str, dict] = {}
    wanted = sorted(keys)
    for start in range(0, len(wanted), _LOOKUP_CHUNK):
        chunk = wanted[start:start + _LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        for key, contact_id, name, company in run(
                db, f"SELECT n.ext_key, c.id, c.name, c.company FROM contact_number n "
                f"JOIN contact c ON c.id = n.contact_id WHERE n.ext_key IN ({marks}) "
                f"ORDER BY n.ext_key, c.id DESC", chunk):
            found[key] = {"name": name, "company": company, "id": contact_id,
                          "source": "contact"}
    for key in keys & (phonebook or {}).keys():
        # The phone book's entry whole (it has no company); the page still links the contact.
        found[key] = {"name": phonebook[key], "company": "",
                      "id": found[key]["id"] if key in found else None, "source": "phonebook"}
    return found


def with_contacts(rows: Iterable[dict], db: Database,
                  phonebook: Mapping[str, str] | None = None) -> Iterator[dict]:
    """Call rows with `contact` (see `names_of_keys`; None: no name but the caller id's),
    looked up a few hundred rows at a time, so exports stay flat in memory."""
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == _LOOKUP_CHUNK:
            yield from _named(batch, db, phonebook)
            batch = []
    yield from _named(batch, db, phonebook)


def _named(batch: list[dict], db, phonebook) -> list[dict]:
    names = names_of_keys(db, (row.get("ext_key") for row in batch), phonebook)
    for row in batch:
        row["contact"] = names.get(row.get("ext_key"))
    return batch


def contact_label(contact: dict | None) -> str:
    """`Name (Company)` of a row's contact, for exports and mail ("" without one)."""
    if not contact:
        return ""
    company = contact.get("company") or ""
    return contact["name"] + (f" ({company})" if company and company != contact["name"] else "")


def outside_name(row: dict) -> str:
    """The outside party's name in one: the phone book's or a contact's (`with_contacts`),
    else the caller id name the PBX recorded for the outside number ("": none, or only the
    number again; an internal call has no outside party)."""
    contact = row.get("contact")
    if contact:
        return contact["name"]
    side = {"incoming": "src", "outgoing": "dst"}.get(row["direction"])
    name = (row.get(f"{side}_name") or "") if side else ""
    return "" if name == row.get(side) else name


def keys_named(db: Database, part: str,
               phonebook: Mapping[str, str] | None = None) -> list[str]:
    """The match keys of the contacts and phone book entries whose name or company holds
    `part` (any case): a name search finds their calls through the calls' `ext_key` index."""
    part = part.strip().casefold()
    if not part:
        return []
    keys = {key for key, name, company in run(
        db, "SELECT n.ext_key, c.name, c.company FROM contact c JOIN contact_number n "
        "ON n.contact_id = c.id") if part in name.casefold() or part in company.casefold()}
    keys |= {key for key, name in (phonebook or {}).items() if part in name.casefold()}
    return sorted(keys)[:SEARCH_KEYS_LIMIT]
