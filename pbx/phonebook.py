"""Read-only reader of the PBX's phone book: MikoPBX's `ModulePhoneBook` keeps it in its own
module DB (`custom_modules/ModulePhoneBook/db/module.db`), table `m_PhoneBook`:

* `number` — digits to search by (its AGI looks up `1` + the last 9 digits of a caller),
* `number_rep` — the number as the admin typed it (`+7(926)991-12-12`),
* `call_id` — the name it sets as the caller id (`MIKO - Nikolay Beketov`).

Names are read whole (a phone book is thousands of rows, not millions) and kept until the file
changes. A missing, locked or foreign file gives no names: the pages show the other names.
"""
from __future__ import annotations

import logging
import re
import sqlite3
import threading
from pathlib import Path

from pbx.cdr import SourceError, pbx_errors, read_only

log = logging.getLogger("extcdr.phonebook")

PHONEBOOK_TABLE = "m_PhoneBook"
# Where ModulePhoneBook keeps its DB among the PBX's modules (next to ModuleUsersGroups').
PHONEBOOK_DB_BESIDE_CONFIG = Path("custom_modules/ModulePhoneBook/db/module.db")
MAX_ENTRIES = 500_000       # a bigger table is not a phone book: only this many are read
_NON_DIGITS = re.compile(r"\D")


def phonebook_db_beside(config_db: Path) -> Path | None:
    """ModulePhoneBook's DB next to a PBX config DB (a copied PBX folder, as the demo's)."""
    guess = config_db.parent / PHONEBOOK_DB_BESIDE_CONFIG
    return guess if guess.is_file() else None


def read_phonebook(path: Path, match_digits: int) -> dict[str, str]:
    """Match key (the last `match_digits` digits) -> name of each phone book entry; the first
    entry of a key wins. SourceError when the file is missing, locked or not a phone book."""
    with read_only(path, 1_000) as conn, pbx_errors(path):
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({PHONEBOOK_TABLE})")}
        if not {"number", "call_id"} <= columns:
            raise SourceError(f"{path}: not ModulePhoneBook's database (no {PHONEBOOK_TABLE})")
        shown = "number_rep" if "number_rep" in columns else "''"
        rows = conn.execute(f"SELECT number, {shown}, call_id FROM {PHONEBOOK_TABLE} "
                            f"ORDER BY id LIMIT {MAX_ENTRIES}").fetchall()
    names: dict[str, str] = {}
    for number, typed, name in rows:
        name = str(name or "").strip()
        key = _key(typed, number, match_digits)
        if name and key:
            names.setdefault(key, name)
    return names


def _key(typed, number, match_digits: int) -> str:
    """The match key of an entry: from the number as typed when it has digits (the `number`
    column may carry ModulePhoneBook's `1` + 9 digits form), else from `number`."""
    digits = _NON_DIGITS.sub("", str(typed or "")) or _NON_DIGITS.sub("", str(number or ""))
    return digits[-match_digits:]


class PhoneBook:
    """The phone book of one PBX as the pages and reports see it: read again when its file
    changes (size or time), empty while it cannot be read (logged once per problem)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple | None = None
        self._names: dict[str, str] = {}
        self._problem: str | None = None

    def names(self, match_digits: int) -> dict[str, str]:
        """Match key -> name (empty without a readable phone book)."""
        if self.path is None:
            return {}
        try:
            stat = self.path.stat()
            wal = self.path.with_name(self.path.name + "-wal")
            stamp = (stat.st_mtime_ns, stat.st_size, match_digits,
                     wal.stat().st_mtime_ns if wal.exists() else 0)
        except OSError:
            return self._failed(f"{self.path}: no such file", quiet=True)
        with self._lock:
            if stamp != self._seen:
                try:
                    self._names = read_phonebook(self.path, match_digits)
                except (SourceError, sqlite3.Error) as exc:
                    return self._failed(str(exc))
                self._seen, self._problem = stamp, None
            return self._names

    def _failed(self, problem: str, *, quiet: bool = False) -> dict[str, str]:
        """No names while the phone book cannot be read; read again at the next ask."""
        if problem != self._problem and not quiet:
            log.warning("phone book not read: %s", problem)
        self._problem, self._seen, self._names = problem, None, {}
        return {}
