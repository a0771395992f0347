"""The mirror's context, one for every reader (the pages, the daemon, the reports, the command
line): the PBX's clock now, and how many trailing digits identify a number as the mirror was
built. Both follow the PBX: its timezone when it changes, the digits once a sync wrote them —
in a central history, this PBX's own (`pbx.id`): another PBX's daemon never changes them."""
from __future__ import annotations

import time

from mirror.pbxtime import PbxClock
from mirror.queries import CallFilter, Visibility, call_filter, pbx_state_value
from mirror.settings import Settings
from pbx.phonebook import PhoneBook
from pbx.zone import PbxZone


class MirrorContext:
    """One per process and mirror (`db` may be None while module.db cannot be opened)."""

    def __init__(self, settings: Settings, db=None):
        self.db = db
        self.pbx = settings["pbx.id"]
        self.zone = PbxZone.of(settings, self._mirrored_timezone)
        self._digits_setting = settings["calls.number_match_digits"]
        self.phonebook = PhoneBook(settings["pbx.phonebook_db"])

    def clock(self) -> PbxClock:
        """The PBX's clock: the same object until the PBX's timezone changes."""
        return self.zone.clock()

    def clock_of(self, pbx: str) -> PbxClock:
        """The clock of PBX `pbx` of a central history (its timezone as its daemon wrote it);
        this PBX's own for '', itself, or a PBX that has not synced yet."""
        other = pbx_state_value(self.db, "timezone", pbx) \
            if pbx not in ("", self.pbx) and self.db is not None else None
        return PbxClock(other) if other else self.clock()

    def match_digits(self) -> int:
        """As the mirror was built; until the first sync, the `calls.number_match_digits`
        setting."""
        found = pbx_state_value(self.db, "number_match_digits", self.pbx) \
            if self.db is not None else None
        return int(found) if found else self._digits_setting

    def call_filter(self, params, *, visible_to: Visibility | None = None,
                    now_s: float | None = None, clock: PbxClock | None = None) -> CallFilter:
        """The filter of `params` on this mirror, in the PBX's time (`clock`: one a caller
        already uses, so that one request or send sees one clock)."""
        digits = self.match_digits()
        flt = call_filter(params, clock or self.clock(), time.time() if now_s is None else now_s,
                          number_match_digits=digits, visible_to=visible_to)
        flt.phonebook = self.phonebook_names(digits)
        return flt

    def phonebook_names(self, digits: int | None = None) -> dict[str, str]:
        """The PBX's phone book: match key -> name (empty where there is none)."""
        return self.phonebook.names(digits or self.match_digits())

    def _mirrored_timezone(self) -> str | None:
        return pbx_state_value(self.db, "timezone", self.pbx) if self.db is not None else None
