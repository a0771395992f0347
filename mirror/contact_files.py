"""Contacts files as people bring them: CSV (columns named in a header, English or Russian) and
vCard 3.0/4.0 — read into contacts with a message per row for what was refused or changed.

Pure: bytes in, `ParsedFile` out; what the file would add or update is `mirror.contacts`'.
Everything in a file is untrusted: a file too big, in an unknown encoding, or without the
columns it needs is refused whole (ContactFileError); a bad row is refused with its number.
Text is kept as typed (a name starting with `=` is a name; exports neutralise it), bar control
characters; pages escape markup.
"""
from __future__ import annotations

import csv
import io
import quopri
import re
import unicodedata
from dataclasses import dataclass, field

MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_ROWS = 20_000
MAX_NUMBERS = 10                  # numbers of one contact
FIELD_LIMITS = {"name": 200, "company": 200, "email": 254, "note": 2000, "uid": 200}
NUMBER_LIMIT = 40                 # characters of a number as typed
MIN_NUMBER_DIGITS = 5             # fewer is an extension or a typo, not an outside number
FORMULA_STARTS = ("=", "+", "-", "@")

# Header names (folded: lower case, no spaces, dashes or underscores) of each field.
HEADERS = {
    "name": ("name", "fullname", "fn", "contact", "displayname", "имя", "фио", "контакт",
             "название", "клиент"),
    "company": ("company", "organization", "organisation", "org", "компания", "организация",
                "фирма"),
    "numbers": ("number", "numbers", "phone", "phones", "tel", "telephone", "mobile",
                "phonenumber", "телефон", "телефоны", "номер", "номера", "мобильный"),
    "email": ("email", "mail", "почта", "электроннаяпочта"),
    "note": ("note", "notes", "comment", "comments", "примечание", "комментарий", "заметка"),
    "uid": ("id", "uid", "externalid", "key", "код", "ид"),
}
_NUMBER_SPLIT = re.compile(r"[,;/|\n]+")
_NUMBER_CHARS = re.compile(r"\+?[\d\s().\-]+")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_WORDS = re.compile(r"[^\W\d_]+")


class ContactFileError(ValueError):
    """A file that cannot be read at all; the message says why (one line)."""


@dataclass
class ParsedContact:
    row: int                      # the CSV line or the vCard's number in the file
    name: str = ""
    company: str = ""
    numbers: list[str] = field(default_factory=list)
    email: str = ""
    note: str = ""
    uid: str = ""
    messages: list[str] = field(default_factory=list)   # what was changed or dropped
    refused: str | None = None                          # why the row is not imported


@dataclass
class ParsedFile:
    kind: str                     # csv | vcard
    encoding: str
    contacts: list[ParsedContact]


def parse_contacts_file(data: bytes, match_digits: int) -> ParsedFile:
    """A CSV or vCard file's contacts, each checked (`refused` and `messages` say why)."""
    if len(data) > MAX_FILE_BYTES:
        raise ContactFileError(f"the file is too big: at most {MAX_FILE_BYTES // 1024 // 1024} "
                               f"MB of contacts at once")
    text, encoding = decode(data)
    if not text.strip():
        raise ContactFileError("the file is empty")
    if text.lstrip().upper().startswith("BEGIN:VCARD"):
        kind, contacts = "vcard", _vcards(text)
    else:
        kind, contacts = "csv", _csv_rows(text)
    if len(contacts) > MAX_ROWS:
        raise ContactFileError(f"too many contacts: at most {MAX_ROWS:,} in one file; "
                               f"split it")
    for contact in contacts:
        checked(contact, match_digits)
    return ParsedFile(kind, encoding, contacts)


def decode(data: bytes) -> tuple[str, str]:
    """The file's text: UTF-8 (with or without a BOM), UTF-16 with a BOM, or Windows-1251
    (Russian Excel's CSV); anything else is refused rather than guessed."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), "UTF-16"
        except UnicodeDecodeError:
            raise ContactFileError("the file is not readable text (broken UTF-16)") from None
    if b"\x00" in data:
        raise ContactFileError("the file is not text (it holds binary data); save it as CSV "
                               "(UTF-8) or vCard")
    try:
        return data.decode("utf-8-sig"), "UTF-8"
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("cp1251")
    except UnicodeDecodeError:
        text = ""
    # Text of another 8-bit code page decodes too, but to control characters, or to words
    # that mix Latin and Cyrillic letters (`café` read as `cafй`): refused.
    controls = any(unicodedata.category(ch) == "Cc" and ch not in "\r\n\t" for ch in text)
    words = [word for word in _WORDS.findall(text) if not word.isascii()]
    mixed = sum(any(ch.isascii() for ch in word) for word in words)
    if text and not controls and mixed * 4 < max(1, len(words)):
        return text, "Windows-1251"
    raise ContactFileError("unknown text encoding: save the file as UTF-8 (or Windows-1251)")


def checked(contact: ParsedContact, match_digits: int) -> ParsedContact:
    """The contact as it would be kept: text cleaned, numbers checked; `refused` set when it
    has no name or no number it can be matched by."""
    for name, limit in FIELD_LIMITS.items():
        value = _plain(getattr(contact, name), keep_lines=name == "note")
        if len(value) > limit:
            contact.refused = f"{name} is longer than {limit} characters"
            return contact
        setattr(contact, name, value)
    if contact.email and not _EMAIL.fullmatch(contact.email):
        contact.messages.append(f"e-mail {contact.email!r} is not an address: left out")
        contact.email = ""
    if not contact.name:
        contact.name = contact.company
    if not contact.name:
        contact.refused = "no name"
        return contact
    for name in ("name", "company"):
        if getattr(contact, name).startswith(FORMULA_STARTS):
            contact.messages.append(f"{name} starts with {getattr(contact, name)[0]!r}: kept "
                                    f"as text (exports show it as text, never a formula)")
    contact.numbers = _numbers(contact, match_digits)
    if not contact.numbers and contact.refused is None:
        contact.refused = "no valid phone number"
    return contact


def number_problem(number: str) -> str | None:
    """Why a typed number cannot identify a caller (None: it can)."""
    if len(number) > NUMBER_LIMIT:
        return f"number {number[:NUMBER_LIMIT]!r}… is longer than {NUMBER_LIMIT} characters"
    if not _NUMBER_CHARS.fullmatch(number):
        return f"{number!r} is not a phone number (digits, spaces, + ( ) - . only)"
    if sum(ch.isdigit() for ch in number) < MIN_NUMBER_DIGITS:
        return f"{number!r} is too short for an outside number (at least " \
               f"{MIN_NUMBER_DIGITS} digits)"
    return None


def number_key(number: str, match_digits: int) -> str:
    """The number's match key: its last `match_digits` digits, as calls are matched."""
    return re.sub(r"\D", "", number)[-match_digits:]


def _numbers(contact: ParsedContact, match_digits: int) -> list[str]:
    kept, keys = [], set()
    for number in contact.numbers:
        number = " ".join(number.split())
        if not number:
            continue
        problem = number_problem(number)
        if problem:
            contact.messages.append(problem + ": left out")
            continue
        key = number_key(number, match_digits)
        if key in keys:
            continue
        if len(kept) == MAX_NUMBERS:
            contact.messages.append(f"more than {MAX_NUMBERS} numbers: the rest left out")
            break
        keys.add(key)
        kept.append(number)
    return kept


def _plain(text: str, *, keep_lines: bool = False) -> str:
    """Text without control characters (a line break kept in notes), trimmed."""
    text = str(text or "").replace("\r\n", "\n")
    kept = "".join(ch if (ch == "\n" and keep_lines) or unicodedata.category(ch)[0] != "C"
                   else " " for ch in text)
    return kept.strip() if keep_lines else " ".join(kept.split())


# --- CSV --------------------------------------------------------------------------------------

def _csv_rows(text: str) -> list[ParsedContact]:
    first = text.lstrip("\ufeff").split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count)
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise ContactFileError(f"no CSV header line ({exc})") from None
    columns = _header_columns(header)
    contacts = []
    try:
        for values in reader:
            if len(contacts) > MAX_ROWS:
                break
            if not any(v.strip() for v in values):
                continue
            contacts.append(_csv_contact(reader.line_num, values, columns))
    except csv.Error as exc:
        raise ContactFileError(f"line {reader.line_num}: not CSV ({exc})") from None
    return contacts


def _header_columns(header: list[str]) -> dict[str, list[int]]:
    """Field -> the columns holding it (numbers may be in several: Phone 1, Phone 2)."""
    columns: dict[str, list[int]] = {}
    for index, title in enumerate(header):
        folded = re.sub(r"[\s_\-.]+|\d+$", "", title.strip().casefold())
        folded = re.sub(r"\d+$", "", folded)
        for name, aliases in HEADERS.items():
            if folded in aliases:
                columns.setdefault(name, []).append(index)
                break
    if "numbers" not in columns or not ({"name", "company"} & columns.keys()):
        raise ContactFileError("the header must name a name (or company) column and a number "
                               "column, e.g. name,company,number,email,note,id")
    return columns


def _csv_contact(line: int, values: list[str], columns: dict[str, list[int]]) -> ParsedContact:
    def cell(name: str) -> str:
        return next((values[i] for i in columns.get(name, ()) if i < len(values)
                     and values[i].strip()), "")
    numbers = [part for i in columns["numbers"] if i < len(values)
               for part in _NUMBER_SPLIT.split(values[i])]
    return ParsedContact(row=line, name=cell("name"), company=cell("company"), numbers=numbers,
                         email=cell("email"), note=cell("note"), uid=cell("uid"))


# --- vCard ------------------------------------------------------------------------------------

def _vcards(text: str) -> list[ParsedContact]:
    """The cards of a vCard file (3.0 and 4.0; 2.1's quoted-printable is read too)."""
    contacts: list[ParsedContact] = []
    card: ParsedContact | None = None
    for line_no, line in _unfolded(text):
        name, params, value = _property(line)
        if name == "BEGIN" and value.upper() == "VCARD":
            card = ParsedContact(row=len(contacts) + 1)
            if len(contacts) > MAX_ROWS:
                break
        elif name == "END" and value.upper() == "VCARD" and card is not None:
            contacts.append(card)
            card = None
        elif card is not None:
            _vcard_property(card, name, params, value)
        elif line.strip():
            raise ContactFileError(f"line {line_no}: outside a BEGIN:VCARD … END:VCARD card")
    if card is not None:
        card.refused = "the card has no END:VCARD"
        contacts.append(card)
    return contacts


def _unfolded(text: str):
    """(line number, logical line): a line starting with a space or tab continues the last."""
    current, start = None, 0
    for number, line in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        if line[:1] in (" ", "\t") and current is not None:
            current += line[1:]
            continue
        if current is not None:
            yield start, current
        current, start = line, number
    if current is not None:
        yield start, current


def _property(line: str) -> tuple[str, dict[str, str], str]:
    """`item1.TEL;TYPE=cell:+7 916…` -> ("TEL", {"TYPE": "cell"}, "+7 916…")."""
    head, _, value = line.partition(":")
    name, *params = head.split(";")
    parsed = {}
    for param in params:
        key, _, val = param.partition("=")
        parsed[key.upper()] = val if _ else key
    return name.rsplit(".", 1)[-1].upper(), parsed, value


def _vcard_property(card: ParsedContact, name: str, params: dict[str, str], value: str) -> None:
    if params.get("ENCODING", "").upper() == "QUOTED-PRINTABLE":
        raw = quopri.decodestring(value.encode("latin-1", "replace"))
        value = raw.decode(params.get("CHARSET", "utf-8"), "replace")
    if name == "FN":
        card.name = _unescaped(value)
    elif name == "N" and not card.name:
        parts = [p for p in _components(value)[:3] if p]
        card.name = " ".join(parts[1:2] + parts[:1] + parts[2:3])
    elif name == "ORG":
        card.company = next((p for p in _components(value) if p), "")
    elif name == "TEL":
        card.numbers.append(re.sub(r"^tel:", "", _unescaped(value), flags=re.I))
    elif name == "EMAIL" and not card.email:
        card.email = _unescaped(value)
    elif name == "NOTE":
        card.note = _unescaped(value)
    elif name == "UID":
        card.uid = _unescaped(value)


def _components(value: str) -> list[str]:
    """A structured value's parts (split on unescaped `;`)."""
    return [_unescaped(part) for part in re.split(r"(?<!\\);", value)]


def _unescaped(value: str) -> str:
    return re.sub(r"\\([nN,;\\])", lambda m: "\n" if m.group(1) in "nN" else m.group(1), value)
