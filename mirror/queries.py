"""Read queries of the mirror: the one filter every page, API, CLI and export uses.

Each filter maps onto an index range scan in newest-first order (see `mirror.schema`); paging is
keyset on (start_ms, id), never OFFSET.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from functools import reduce
from typing import Mapping

import orjson
from peewee import SQL, Column, Database, Tuple, fn

from mirror import bulk
from mirror.annotations import AnnotationError, notes_read, tag_ids, with_notes
from mirror.calls import DIRECTIONS, NUMBER_MATCH_DIGITS, STATUSES, qualified
from mirror.contacts import keys_named
from mirror.dialect import (dialect_of, in_one_process, ordered_join, position, run,
                            searched_in_call_columns)
from mirror.models import (Call, CallEmployee, CallGone, CallHandled, CallHangup, CallName,
                           CallNumber, CallTag, Comment, Employee, GroupMember, Leg, LiveCall,
                           SyncState)
from mirror.pbxtime import linkedid_epoch_ms
from mirror.settings import PBX_ID
from mirror.store import state_key, state_value

LIST_FIELDS = ("missed_by", "transferred_to", "employees", "recordings")


class QueryError(ValueError):
    """A filter value users can correct; the message says how."""


# A search while the first sync loads the history in bulk (`mirror.bulk`): it would find only
# some of the calls.
LOADING_SEARCH = "the history is still loading: search by number or name works once it is loaded"


SCOPES = ("involved", "placed", "except")
GROUPS_SCOPE = "groups"     # a supervisor limited to groups: their members' extensions
EVERY_EXTENSION = "all"     # a user limited to some PBXs only: any extension's calls there


@dataclass(frozen=True)
class Visibility:
    """The calls a restricted user may see, by a list of extensions (`201`, or `office:201`
    on that PBX only: a group's member in a history several PBXs write) — ModuleUsersUI's CDR
    filter modes at the level of calls: `involved`, calls any of them took part in (its
    'selected'; our operators); `placed`, calls any of them placed a leg of
    ('outgoing-selected'); `except`, calls none of them took part in ('not-selected') — and,
    in a history several PBXs write, by the PBXs whose calls they may see (`pbxs`; none: all)."""
    extensions: tuple[str, ...]
    scope: str = "involved"
    pbxs: tuple[str, ...] = ()

    def __post_init__(self):
        if self.scope not in SCOPES + (EVERY_EXTENSION,):
            raise ValueError(f"unknown visibility scope {self.scope!r}; use: {', '.join(SCOPES)}")

    def admits(self, employees, callers, pbx: str) -> bool:
        """Whether a call of PBX `pbx` with these employees, of whom `callers` placed legs,
        is visible."""
        if self.pbxs and pbx not in self.pbxs:
            return False
        if self.scope == EVERY_EXTENSION:
            return True
        mine = set(self.extensions)

        def ours(extensions) -> bool:       # `201` on any PBX, `office:201` on that one
            return bool(mine & {*extensions, *(qualified(pbx, e) for e in extensions)})
        if self.scope == "except":
            return not ours(employees)
        return ours(callers if self.scope == "placed" else employees)

    @classmethod
    def of(cls, role: str, extensions, scope: str = "involved",
           pbxs=()) -> "Visibility | None":
        """What a user of `role` may see: admins and supervisors every call (None), anyone
        else only the calls their extensions and scope admit. A supervisor an admin limited
        to some groups (scope GROUPS_SCOPE) sees the calls those groups' members took part in.
        A user given `pbxs` sees only those PBXs' calls of these."""
        if role == "admin" or (role == "supervisor" and scope != GROUPS_SCOPE):
            return cls((), EVERY_EXTENSION, tuple(pbxs)) if pbxs else None
        return cls(tuple(extensions), "involved" if scope == GROUPS_SCOPE else scope,
                   tuple(pbxs))

    def shows_employee(self, extension: str, pbx: str = "") -> bool:
        """Whether the employee's calls may be among those visible (the page's choices): the
        extension of PBX `pbx` ('': of any PBX)."""
        if pbx and not self.shows_pbx(pbx):
            return False
        if self.scope == EVERY_EXTENSION:
            return True
        mine = {member if pbx else member.rpartition(":")[2] for member in self.extensions}
        return bool(mine & {extension, qualified(pbx, extension)}) != (self.scope == "except")

    def shows_pbx(self, pbx: str) -> bool:
        """Whether the PBX's calls may be among those visible (the page's choices)."""
        return not self.pbxs or pbx in self.pbxs


def within_pbxs(pbxs, limited_to) -> bool:
    """Whether what is limited to the PBXs `pbxs` (a token, a report's owner; none: every
    PBX's) is within the PBXs `limited_to` of an admin limited to some (none: not limited):
    what such an admin may see and manage of others'."""
    return not limited_to or bool(pbxs) and set(pbxs) <= set(limited_to)


@dataclass
class CallFilter:
    start_ms: int
    end_ms: int                         # exclusive
    directions: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    number: str | None = None
    employees: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    min_talk: int | None = None
    max_talk: int | None = None
    recording: bool | None = None          # with a recording (True), without (False), any
    queues: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    tag_mode: str = "any"                  # any | all of `tags`
    comment: str | None = None             # a part of a comment's text
    hangup: list[str] = field(default_factory=list)   # who hung up (HANGUP_SIDES)
    pbx: str | None = None                 # one PBX's calls (`pbx.id`) of a central history
    unreturned: bool = False
    tab: str = "all"                       # the page's tab, on top of the other conditions
    limit: int | None = None
    after: tuple[int, int] | None = None   # keyset cursor: (start_ms, id) of the last row seen
    number_match_digits: int = NUMBER_MATCH_DIGITS   # as the mirror was built (sync_state)
    visible_to: Visibility | None = None   # a restricted user's calls only (None: all)
    ext_keys: tuple[str, ...] | None = None   # the calls of these match keys (a contact's)
    # The PBX's phone book (match key -> name) as the filter's reader sees it: a name search
    # also finds its entries' calls (as it finds the module's contacts').
    phonebook: Mapping[str, str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.end_ms <= self.start_ms:
            raise QueryError("the period is empty: 'to' must be after 'from'")
        _check_choice("direction", self.directions, DIRECTIONS)
        _check_choice("status", self.statuses, STATUSES)
        _check_choice("tab", [self.tab], tuple(TABS))
        if self.min_talk is not None and self.min_talk < 0:
            raise QueryError("minimum talk time must be 0 or more seconds")
        if self.max_talk is not None and self.max_talk < (self.min_talk or 0):
            raise QueryError("maximum talk time must not be below the minimum")
        _check_choice("tag_mode", [self.tag_mode], ("any", "all"))
        _check_choice("hangup", self.hangup, HANGUP_SIDES)
        if self.comment is not None and not self.comment.strip():
            self.comment = None
        if self.comment is not None and len(self.comment) > 200:
            raise QueryError("a comment search has at most 200 characters")
        if self.limit is not None and self.limit < 1:
            raise QueryError("limit must be a positive number")
        if self.number is not None:
            parse_number_search(self.number, self.number_match_digits)  # validate early
        if self.pbx is not None and not PBX_ID.fullmatch(self.pbx):
            raise QueryError(f"pbx must be a PBX's id (1-32 of a-z, 0-9 and '-'), "
                             f"not {_shown(self.pbx)!r}")
        for employee in self.employees:
            employee_member(employee)                   # validate early


def employee_member(employee: str) -> tuple[str, str]:
    """(pbx, extension) of an employee filter's value: `office:201`, that PBX's 201 (what the
    choices offer in a history several PBXs write); `201`, extension 201 on every PBX (pbx
    '') — the only PBX's, or each PBX's 201 of a central history."""
    pbx, sep, extension = employee.partition(":")
    if not sep:
        return "", employee
    if not PBX_ID.fullmatch(pbx) or not extension:
        raise QueryError(f"employee must be an extension (201) or a PBX's extension "
                         f"(office:201), not {_shown(employee)!r}")
    return pbx, extension


def _check_choice(name: str, values: list[str], allowed: tuple[str, ...]) -> None:
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise QueryError(f"unknown {name} {unknown[0]!r}; use one of: {', '.join(allowed)}")


_PREFIXES = ("linkedid", "src", "dst", "did")
_MIN_CHARS = 3
# A linkedid as the details panel and the PBX's journal show it: `mikopbx-1700000000.123`, or
# Asterisk's own `1700000000.123` (the call's start in epoch seconds, a dot, a counter).
_LINKEDID = re.compile(r"(?:[A-Za-z][\w.-]*-)?\d{9,11}\.\d+")
_NUMBER_CHARS = re.compile(r"[\d\s+()\-.]*")


@dataclass(frozen=True)
class NumberSearch:
    """A parsed search box: digit substrings (all must match), a name, or a field prefix."""
    substrings: tuple[str, ...] = ()
    prefix: str | None = None      # linkedid | src | dst | did
    value: str = ""
    name: str = ""                 # a part of a caller's, callee's or employee's name


def parse_number_search(text: str, match_digits: int = 9) -> NumberSearch:
    """`916` or `+7 (916) 123-45-67` (a number or a part of it), `201 79161234567` (calls
    between two numbers), `Иван` (a part of a name), a linkedid (`mikopbx-1700000000.123`),
    `linkedid:…`, `src:…`, `dst:…`, `did:…`."""
    text = text.strip()
    prefix, sep, rest = text.partition(":")
    if sep and prefix.lower() in _PREFIXES:
        value = rest.strip()
        if not value:
            raise QueryError(f"nothing after '{prefix}:'")
        if prefix.lower() != "linkedid":
            if not _NUMBER_CHARS.fullmatch(value):
                raise QueryError(f"search {text!r}: {prefix.lower()}: takes digits (a phone "
                                 f"number or a part of it)")
            value = _digits(value, text, match_digits)
        return NumberSearch(prefix=prefix.lower(), value=value)
    if _LINKEDID.fullmatch(text):
        return NumberSearch(prefix="linkedid", value=text)
    if not _NUMBER_CHARS.fullmatch(text):
        if len(text) < _MIN_CHARS:
            raise QueryError(_too_short(text))
        return NumberSearch(name=text)
    parts = text.split()
    if len(parts) == 2 and all(len(re.sub(r"\D", "", p)) >= _MIN_CHARS for p in parts):
        return NumberSearch(substrings=tuple(_digits(p, text, match_digits) for p in parts))
    return NumberSearch(substrings=(_digits(text, text, match_digits),))


def _digits(part: str, whole: str, match_digits: int) -> str:
    """The digits to look for; a whole number is cut to its match key, so `+7916…`, `8916…`
    and `916…` find the same client (as callbacks match them)."""
    digits = re.sub(r"\D", "", part)
    if len(digits) < _MIN_CHARS:
        raise QueryError(_too_short(whole))
    return digits[-match_digits:]


def _too_short(text: str) -> str:
    return (f"search {text!r}: type at least {_MIN_CHARS} digits of a number or "
            f"{_MIN_CHARS} letters of a name")


# The history page's tabs: each narrows the filter by one more condition.
TABS = {
    "all": None,
    "incoming": Call.direction == "incoming",
    "missed": Call.status == "missed",
    "outgoing": Call.direction == "outgoing",
    "internal": Call.direction == "internal",
    # missed, nobody called back, and not marked handled from a CRM (the worklist's calls)
    "unreturned": ((Call.status == "missed") & Call.returned_by.is_null()
                   & ~fn.EXISTS(CallHandled.select(CallHandled.linkedid)
                                .where(CallHandled.linkedid == Call.linkedid))),
}
# Who hung up (mirror.hangups), and `unknown` for calls the daemon did not see end.
HANGUP_SIDES = ("caller", "callee", "pbx", "unknown")
PERIODS = ("today", "yesterday", "this_week", "last_week", "this_month", "last_month")
YEARS = ("this_year", "last_year")      # periods for analytics (the page's list stays short)
FILTER_PARAMETERS = ("period", "from", "to", "direction", "status", "number", "employee",
                     "group", "min_talk", "max_talk", "recording", "queue", "tag", "tag_mode",
                     "comment", "hangup", "pbx", "unreturned", "tab", "limit", "cursor")
DAY_MS = 86_400_000
FIRST_YEAR, LAST_YEAR = 1990, 2200      # dates outside are typing mistakes
SQLITE_MAX = 2**63 - 1                  # the largest integer SQLite stores
MAX_LIMIT = 1_000_000_000               # calls of one list (the CLI's --limit)
MAX_TALK_S = 366 * 86_400               # a minimum talk time longer than a year finds nothing
# ASCII digits (str.isdigit() passes '²', which int() refuses), no more than SQLite holds.
_WHOLE = re.compile(r"[0-9]{1,19}")


def call_filter(params, clock, now_s: float, *, number_match_digits: int = NUMBER_MATCH_DIGITS,
                visible_to: Visibility | None = None) -> CallFilter:
    """The filter of the page, the JSON API and the CLI, from their text parameters
    (FILTER_PARAMETERS; lists comma-separated; dates in the PBX timezone, default today)."""
    unknown = [name for name in params if name not in FILTER_PARAMETERS]
    if unknown:
        raise QueryError(f"unknown parameter {unknown[0]!r}; use: {', '.join(FILTER_PARAMETERS)}")
    if params.get("period"):
        if params.get("from") or params.get("to"):
            raise QueryError("give either a period or from/to, not both")
        start_ms, end_ms = period_bounds(params["period"], clock, now_s)
    else:
        start_ms, end_ms = _period(params.get("from"), params.get("to"), clock, now_s)
    start_ms, end_ms = _linkedid_period(params.get("number")) or (start_ms, end_ms)
    return CallFilter(
        start_ms=start_ms, end_ms=end_ms, directions=_list(params.get("direction")),
        statuses=_list(params.get("status")), number=params.get("number") or None,
        employees=_list(params.get("employee")), groups=_list(params.get("group")),
        min_talk=_whole(params, "min_talk", 0, MAX_TALK_S),
        max_talk=_whole(params, "max_talk", 0, MAX_TALK_S),
        recording=_yes_no(params.get("recording"), "recording"),
        queues=_list(params.get("queue")), tags=_list(params.get("tag")),
        tag_mode=params.get("tag_mode") or "any", comment=params.get("comment") or None,
        hangup=_list(params.get("hangup")), pbx=params.get("pbx") or None,
        unreturned=_flag(params.get("unreturned")),
        tab=params.get("tab") or "all",
        limit=_whole(params, "limit", 1, MAX_LIMIT), after=decode_cursor(params.get("cursor")),
        number_match_digits=number_match_digits, visible_to=visible_to)


def _linkedid_period(number: str | None) -> tuple[int, int] | None:
    """A linkedid names one call, whatever the period: MikoPBX's carries the call's start
    (`mikopbx-<unix>.<n>`), so the period becomes the day either side of it."""
    if not number:
        return None
    try:
        search = parse_number_search(number)
    except QueryError:
        return None                             # CallFilter says what is wrong with it
    at = linkedid_epoch_ms(search.value) if search.prefix == "linkedid" else None
    return (at - DAY_MS, at + DAY_MS) if at is not None else None


def period_bounds(period: str, clock, now_s: float) -> tuple[int, int]:
    """A named period relative to today (the PBX's local calendar; weeks start on Monday)
    as [start, end) epoch ms."""
    today = clock.to_local(now_s).date()
    if period == "today":
        first, last = today, today
    elif period == "yesterday":
        first = last = today - timedelta(days=1)
    elif period in ("this_week", "last_week"):
        first = today - timedelta(days=today.weekday() + (7 if period == "last_week" else 0))
        last = first + timedelta(days=6)
    elif period in ("this_month", "last_month"):
        first = today.replace(day=1)
        if period == "last_month":
            first = (first - timedelta(days=1)).replace(day=1)
        last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    elif period in YEARS:
        first = today.replace(year=today.year - (period == "last_year"), month=1, day=1)
        last = first.replace(month=12, day=31)
    else:
        raise QueryError(f"unknown period {period!r}; use one of: {', '.join(PERIODS + YEARS)}")
    return clock.local_day_bounds(first)[0] * 1000, clock.local_day_bounds(last)[1] * 1000


def _period(start: str | None, end: str | None, clock, now_s: float) -> tuple[int, int]:
    today = clock.to_local(now_s).date()
    day_start, day_end = (s * 1000 for s in clock.local_day_bounds(today))
    start_ms = _moment(start, clock, end=False) if start else None
    end_ms = _moment(end, clock, end=True) if end else None
    if start_ms is None:
        start_ms = end_ms - DAY_MS if end_ms is not None and end_ms <= day_start else day_start
    return start_ms, day_end if end_ms is None else end_ms


def _moment(text: str, clock, *, end: bool) -> int:
    """A from/to value as epoch ms; a bare date is the whole local day."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day)
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(f"bad date {text!r}: use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]") from None
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise QueryError(f"bad date {text!r}: a year from {FIRST_YEAR} to {LAST_YEAR}")
    if len(text) == 10:
        day_start, day_end = clock.local_day_bounds(moment.date())
        return (day_end if end else day_start) * 1000
    if moment.tzinfo is None:
        return clock.local_to_epoch(moment) * 1000
    return int(moment.timestamp() * 1000)


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _whole(params, name: str, low: int, high: int) -> int | None:
    value = params.get(name)
    return None if value in (None, "") else whole_number(value, name, low, high)


def whole_number(value, name: str, low: int = 0, high: int = SQLITE_MAX) -> int:
    """A whole number typed by a user, within [low, high] (at most SQLite's 64-bit range);
    QueryError saying the range otherwise. The digits are checked before int() is called:
    Python refuses more than 4,300 of them and SQLite more than 19."""
    text = str(value).strip()
    number = int(text) if _WHOLE.fullmatch(text) else None
    if number is None or not low <= number <= high:
        raise QueryError(f"{name} must be a whole number from {low:,} to {high:,}, "
                         f"not {_shown(str(value))!r}")
    return number


def _shown(text: str) -> str:
    """At most 24 characters of what was typed, for a message."""
    return text if len(text) <= 24 else text[:21] + "..."


def _flag(value) -> bool:
    return bool(_yes_no(value, "unreturned"))


def _yes_no(value, name: str) -> bool | None:
    """A yes/no parameter; None when not given."""
    if value in (None, ""):
        return None
    if value is True or value is False:
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise QueryError(f"{name} must be yes or no, not {_shown(str(value))!r}")


def encode_cursor(start_ms: int, call_id: int) -> str:
    return f"{start_ms}.{call_id}"


def decode_cursor(value: str | None) -> tuple[int, int] | None:
    """The (start_ms, id) of a `next_cursor`; QueryError for anything else."""
    if not value:
        return None
    start, _, call_id = value.partition(".")
    try:
        return whole_number(start, "cursor"), whole_number(call_id, "cursor")
    except QueryError:
        raise QueryError(f"bad cursor {_shown(value)!r}: pass back the next_cursor of the "
                         f"previous page") from None


def calls_query(f: CallFilter, db: Database, *, counting: bool = False):
    """The filtered calls, newest first (a peewee query bound to `db`). `counting`: the query
    will be aggregated, not paged (see the employee condition)."""
    period = (Call.start_ms >= f.start_ms) & (Call.start_ms < f.end_ms)
    query = Call.select().where(period)
    if f.pbx is not None:                 # PostgreSQL's index call_pbx (pbx, start_ms, id)
        query = query.where(Call.pbx == f.pbx)
    if f.directions:
        query = query.where(Call.direction.in_(f.directions))
    if f.unreturned:                      # the one meaning of unreturned: the tab's
        query = query.where(TABS["unreturned"])
    if f.statuses:
        query = query.where(Call.status.in_(f.statuses))
    if f.min_talk:
        query = query.where(Call.talk_s >= f.min_talk)
    if f.max_talk is not None:
        query = query.where(Call.talk_s <= f.max_talk)
    if f.recording is not None:
        query = query.where(Call.recordings != "[]" if f.recording else Call.recordings == "[]")
    if f.queues:
        query = query.where(Call.queue.in_(f.queues))
    if f.ext_keys is not None:
        query = query.where(Call.ext_key.in_(list(f.ext_keys)))
    query = _annotation_conditions(query, f, db)
    if TABS[f.tab] is not None:
        query = query.where(TABS[f.tab])
    # A page walks the newest-first index and stops after a page of rows: `+id` keeps SQLite
    # from driving the query by the employees' (maybe tens of thousands of) calls and sorting
    # them. A count reads them all anyway, and reads fewer that way round.
    call_id = Call.id if counting else Call.id + 0
    chosen = _employee_condition(f, db, call_id)
    if chosen is not None:
        query = query.where(chosen)
    if f.visible_to is not None:
        visible = f.visible_to
        if visible.pbxs:
            query = query.where(Call.pbx.in_(list(visible.pbxs)))
        if visible.scope == "except":
            query = query.where(call_id.not_in(_calls_of(visible.extensions, f)))
        elif visible.scope != EVERY_EXTENSION:
            query = query.where(_calls_of_members(
                [(pbx, extension) if sep else ("", pbx)
                 for pbx, sep, extension in (e.partition(":") for e in visible.extensions)],
                f, call_id, placed=visible.scope == "placed"))
    if f.number:
        search = parse_number_search(f.number, f.number_match_digits)
        named = _employees_named(search.name, db) if search.name else []
        keys = keys_named(db, search.name, f.phonebook) if search.name else []
        query = _number_condition(query, search, db, period,
                                  _calls_of_members(named, f, Call.id) if named else None,
                                  Call.id.in_(Call.select(Call.id).where(
                                      Call.ext_key.in_(keys), period)) if keys else None)
    if f.after:
        query = query.where(Tuple(Call.start_ms, Call.id) < Tuple(*f.after))
    query = query.order_by(Call.start_ms.desc(), Call.id.desc())
    if f.limit:
        query = query.limit(f.limit)
    return query.bind(db)


def _annotation_conditions(query, f: CallFilter, db: Database):
    """What people and the daemon added to calls: tags, comment text, who hung up. Each is
    looked up per call of the period as it is walked (one key lookup), never gathered from
    all of history: that grows with the years, a page's period does not."""
    if f.tags:
        ids = _tag_ids(f.tags, db)
        tagged = CallTag.select(CallTag.tag_id).where(CallTag.linkedid == Call.linkedid)
        for wanted in ([ids] if f.tag_mode == "any" else [[tag_id] for tag_id in ids]):
            query = query.where(fn.EXISTS(tagged.where(CallTag.tag_id.in_(wanted))))
    if f.comment:
        query = query.where(fn.EXISTS(Comment.select(Comment.id).where(
            Comment.linkedid == Call.linkedid,
            position(db, Comment.folded, f.comment.strip().casefold()) > 0)))
    if f.hangup:
        hangup = CallHangup.select(CallHangup.side).where(CallHangup.linkedid == Call.linkedid)
        sides = [side for side in f.hangup if side != "unknown"]
        seen = fn.EXISTS(hangup.where(CallHangup.side.in_(sides)))
        unseen = ~fn.EXISTS(hangup)
        condition = (seen | unseen if sides else unseen) if "unknown" in f.hangup else seen
        query = query.where(condition)
    return query


def _tag_ids(names: list[str], db: Database) -> list[int]:
    """The ids of the tags a filter names (any case); QueryError for an unknown one."""
    try:
        return sorted(set(tag_ids(db, names)))
    except AnnotationError as exc:
        raise QueryError(str(exc)) from None


def tag_counts(f: CallFilter, db: Database, period_calls: int) -> dict[int, int]:
    """How many calls of the filter carry each tag (tag id -> calls). Read from the smaller
    side: the filter's calls (`period_calls` of them) each looked up in the tags, or every
    tagged call looked up in the filter."""
    calls, params = (calls_query(replace(f, after=None, limit=None), db, counting=True)
                     .select(Call.linkedid).order_by().sql())
    if dialect_of(db).postgresql:          # its planner chooses the side itself
        joined = f"({calls}) AS c JOIN call_tag ct"
    else:                                  # CROSS JOIN: SQLite reads the left side first
        tagged = db.execute_sql("SELECT count(*) FROM call_tag").fetchone()[0]
        joined = (f"({calls}) AS c CROSS JOIN call_tag ct" if period_calls <= tagged
                  else f"call_tag ct CROSS JOIN ({calls}) AS c")
    with in_one_process(db):               # one hash of the tagged calls, not one a worker
        return dict(db.execute_sql(f"SELECT ct.tag_id, count(*) FROM {joined} "
                                   f"ON ct.linkedid = c.linkedid GROUP BY ct.tag_id", params))


def handled_unreturned(f: CallFilter, db: Database) -> dict[tuple[str, str], int]:
    """How many calls of the filter but for `unreturned` are missed, not called back and
    marked handled, per (direction, status): the hourly counters count them as unreturned,
    the Unreturned tab and `unreturned` do not. Read from the handled calls of the period
    (few, by their index) each looked up in the filter, never from the period's calls."""
    return {(direction, status): n
            for direction, status, n in db.execute_sql(*handled_unreturned_sql(f, db))}


def handled_unreturned_sql(f: CallFilter, db: Database) -> tuple[str, tuple]:
    """The query of `handled_unreturned` and its parameters."""
    calls, params = (calls_query(replace(f, tab="all", unreturned=False, after=None,
                                         limit=None), db, counting=True)
                     .select(Call.linkedid, Call.direction, Call.status)
                     .where(Call.status == "missed", Call.returned_by.is_null())
                     .order_by().sql())
    # CROSS JOIN: SQLite reads the handled calls first and looks each up in the filter. A
    # call's start can move a little after it was handled (more legs): the range is wider.
    # Only the hand-written part is house SQL: peewee wrote `calls` for its engine already.
    house = dialect_of(db).sql
    return (f"SELECT c.direction, c.status, count(*) FROM call_handled h {ordered_join(db)} "
            f"({calls}) AS c ON c.linkedid = h.linkedid "
            + house("WHERE h.start_ms >= ? AND h.start_ms < ? GROUP BY c.direction, c.status"),
            (*params, f.start_ms - DAY_MS, f.end_ms + DAY_MS))


def _calls_of(extensions, f: CallFilter, *, placed: bool = False):
    """The ids of the period's calls these employees took part in (`placed`: placed a leg of)."""
    query = CallEmployee.select(CallEmployee.call_id).where(
        CallEmployee.extension.in_(list(extensions)),
        CallEmployee.start_ms >= f.start_ms, CallEmployee.start_ms < f.end_ms)
    return query.where(CallEmployee.placed == 1) if placed else query


def _id_range(period, db: Database) -> tuple[int, int]:
    """The lowest and highest call id of a period (one index range read)."""
    low, high = Call.select(fn.MIN(Call.id), fn.MAX(Call.id)).where(period).bind(db).tuples()[0]
    return (low, high) if low is not None else (0, -1)


def counts_by_direction_and_status(f: CallFilter, db: Database) -> dict[tuple[str, str], int]:
    """How many calls the filter selects, per (direction, status)."""
    query = (calls_query(f, db, counting=True).select(Call.direction, Call.status,
                                                      fn.COUNT(Call.id))
             .order_by().limit(None).group_by(Call.direction, Call.status))
    return {(direction, status): n for direction, status, n in query.tuples()}


def counted_by_the_hour(f: CallFilter) -> bool:
    """Whether counters of calls by time can count the filter's calls: a period with
    directions, statuses or unreturned only, for a user who may see every call
    (mirror.analytics, for the tab counters and the reports)."""
    return (f.visible_to is None and not f.number and not f.employees and not f.groups
            and not f.min_talk and f.max_talk is None and f.recording is None and not f.queues
            and not f.tags and not f.comment and not f.hangup and f.ext_keys is None
            and f.pbx is None)


def _employee_condition(f: CallFilter, db: Database, call_id):
    """The calls the employee and group filters select (None: no such filter): an
    extension's on its PBX (`office:201`) or on every PBX (`201`), a group's members' each on
    the member's PBX."""
    if not f.employees and not f.groups:
        return None
    members = [employee_member(employee) for employee in f.employees]
    if f.groups:
        rows = GroupMember.select(GroupMember.group_name, GroupMember.pbx,
                                  GroupMember.extension).where(
            GroupMember.group_name.in_(f.groups)).bind(db).tuples()
        found = {name for name, _, _ in rows}
        unknown = [g for g in f.groups if g not in found]
        if unknown:
            raise QueryError(f"unknown employee group {unknown[0]!r}")
        members += [(pbx, extension) for _, pbx, extension in rows]
    return _calls_of_members(members, f, call_id)


def _calls_of_members(members, f: CallFilter, call_id, *, placed: bool = False):
    """The period's calls these (pbx, extension) employees took part in (`placed`: placed a
    leg of), each in its own PBX's calls: two PBXs' extension 201 are two people. pbx ''
    (the only PBX, or an extension of no PBX in particular) matches on every PBX."""
    by_pbx: dict[str, set[str]] = {}
    for pbx, extension in members:
        by_pbx.setdefault(pbx, set()).add(extension)
    conditions = [call_id.in_(_calls_of(sorted(extensions), f, placed=placed)) if not pbx else
                  (Call.pbx == pbx) & call_id.in_(_calls_of(sorted(extensions), f, placed=placed))
                  for pbx, extensions in sorted(by_pbx.items())]
    if not conditions:                      # an operator without extensions: no call
        return call_id.in_(_calls_of([], f))
    return reduce(operator.or_, conditions)


def pbx_ids(db: Database, visible_to: Visibility | None = None) -> list[str]:
    """The PBXs whose calls a central history holds, by id, those a user limited to some
    (`visible_to`) sees only: one index seek each (PostgreSQL's call_pbx). A SQLite history
    has one PBX: [] without reading anything."""
    if not dialect_of(db).postgresql:
        return []
    return [pbx for (pbx,) in run(
        db, "WITH RECURSIVE p (pbx) AS (SELECT min(pbx) FROM call UNION ALL "
            "SELECT (SELECT min(pbx) FROM call WHERE pbx > p.pbx) FROM p WHERE p.pbx IS NOT NULL) "
            "SELECT pbx FROM p WHERE pbx IS NOT NULL")
        if visible_to is None or visible_to.shows_pbx(pbx)]


def employee_names(db: Database, pbx: str | None = None) -> dict[str, str]:
    """The employees: extension -> name, of one PBX (`pbx`) or of all of them, where the
    names of an extension several PBXs have are joined with ' / '."""
    query = Employee.select(Employee.extension, Employee.name).order_by(Employee.pbx)
    if pbx is not None:
        query = query.where(Employee.pbx == pbx)
    names: dict[str, str] = {}
    for extension, name in query.bind(db).tuples():
        known = names.get(extension)
        names[extension] = name if known is None or name in known.split(" / ") \
            else f"{known} / {name}"
    return names


def names_by_pbx(db: Database) -> dict[str, dict[str, str]]:
    """The employees of each PBX: pbx -> extension -> name (a call's names are its PBX's)."""
    names: dict[str, dict[str, str]] = {}
    for pbx, extension, name in Employee.select(Employee.pbx, Employee.extension,
                                                Employee.name).bind(db).tuples():
        names.setdefault(pbx, {})[extension] = name
    return names


def employee_choices(db: Database, visible_to: Visibility | None) -> list[tuple[str, str]]:
    """(value, name) of the employees whose calls may be among those a user sees: what a
    filter offers them. The only PBX's by extension (`201`); in a history several PBXs write,
    each PBX's own (`office:201`, by PBX and extension): two PBXs' 201 are two people."""
    names = names_by_pbx(db)
    return [(qualified(pbx, ext) if len(names) > 1 else ext, name)
            for pbx, employees in sorted(names.items())
            for ext, name in sorted(employees.items())
            if visible_to is None or visible_to.shows_employee(ext, pbx if len(names) > 1
                                                               else "")]


def group_names(db: Database) -> list[str]:
    """The employee groups (ModuleUsersGroups), by name."""
    return [name for (name,) in GroupMember.select(GroupMember.group_name).distinct()
            .order_by(GroupMember.group_name).bind(db).tuples()]


def _employees_named(part: str, db: Database) -> list[tuple[str, str]]:
    """(pbx, extension) of the employees whose current name holds `part` (any case; a PBX's
    employees are a few hundred rows, so a renamed employee is found by the new name)."""
    part = part.casefold()
    return [(pbx, extension) for pbx, extension, name in Employee.select(
        Employee.pbx, Employee.extension, Employee.name).bind(db).tuples()
        if part in name.casefold()]


def _linkedid_forms(linkedid: str) -> list[str]:
    """A linkedid as typed and, for a bare `1700000000.123`, as MikoPBX writes it."""
    return [linkedid] + ([f"mikopbx-{linkedid}"] if linkedid[:1].isdigit() else [])


# What PostgreSQL's trigram indexes search (mirror.schema's PG baseline): columns of `call`
# that no model field names, as SQLite's `call` has none (FTS5's `call_number`/`call_name`).
_CALL_NUMBERS, _CALL_NAMES = (Column(Call._meta.table, name) for name in ("numbers", "names"))


def _number_condition(query, search: NumberSearch, db, period, of_employees=None,
                      of_contacts=None):
    """Calls whose numbers (or names) match, by a trigram index: SQLite's FTS5 tables searched
    within the period's id range (a common fragment, an area code, would otherwise fetch every
    match of all time), or PostgreSQL's on the call's own `numbers`/`names` columns (the
    period picks the months' partitions). `of_employees`, `of_contacts`: conditions selecting
    the calls of the employees and of the contacts (numbers named in the phone book or the
    module's contacts) a name search found, also matching."""
    if search.prefix == "linkedid":
        return query.where(Call.linkedid.in_(_linkedid_forms(search.value)))
    terms = (search.value,) if search.prefix else search.substrings
    in_columns = searched_in_call_columns(db)
    if not in_columns and bulk.loading(db):     # its FTS5 rows are built at the end
        raise QueryError(LOADING_SEARCH)
    ids = None if in_columns else _id_range(period, db)
    if search.name:
        if in_columns:
            named = _CALL_NAMES.contains(search.name)
        else:
            phrase = '"' + search.name.replace('"', '""') + '"'
            named = Call.id.in_(CallName.select(CallName.rowid).where(
                SQL("call_name MATCH ?", (phrase,)), CallName.rowid.between(*ids)))
        for also in (of_employees, of_contacts):
            if also is not None:
                named = named | also
        return query.where(named)
    if in_columns:          # digits only: nothing for LIKE to escape, no case to fold
        for digits in terms:
            query = query.where(_CALL_NUMBERS.like(f"%{digits}%"))
    else:
        match = " AND ".join(f'"{digits}"' for digits in terms)
        query = query.where(Call.id.in_(
            CallNumber.select(CallNumber.rowid).where(SQL("call_number MATCH ?", (match,)),
                                                      CallNumber.rowid.between(*ids))))
    if search.prefix:
        column = {"src": Call.src, "dst": Call.dst, "did": Call.did}[search.prefix]
        query = query.where(fn.replace(fn.replace(column, "+", ""), " ", "").contains(search.value))
    return query


def call_rows(query, *, annotate: bool = True):
    """Rows of a calls query as dicts with list fields decoded and, unless told otherwise,
    what was added to the calls (`mirror.annotations.with_notes`: tags, comments, who hung
    up)."""
    if not annotate:
        return map(_decoded, query.dicts().iterator())
    return map(notes_read, map(_decoded, with_notes(query).dicts().iterator()))


def find_call(linkedid: str, db: Database) -> dict | None:
    """One call row (list fields decoded, with its notes) by linkedid."""
    return next(call_rows(Call.select().where(Call.linkedid == linkedid).bind(db)), None)


def _decoded(row: dict) -> dict:
    for name in LIST_FIELDS:
        row[name] = orjson.loads(row[name])
    return row


def calls_in_progress(db: Database, visible_to: Visibility | None = None) -> list[dict]:
    """The calls in progress, newest first; a restricted user's (`visible_to`) only those
    visible to them. A handful at a time: filtered here rather than indexed."""
    rows = []
    for row in LiveCall.select().order_by(LiveCall.start_ms.desc()).bind(db).dicts():
        row["employees"] = orjson.loads(row["employees"])
        row["parties"] = orjson.loads(row["parties"])
        callers = [party["from"] for party in row["parties"]]
        if visible_to is None or visible_to.admits(row["employees"], callers, row["pbx"]):
            rows.append(row)
    return rows


def call_visible(call_id: int, visible_to: Visibility | None, db: Database) -> bool:
    """Whether the (finished) call may be seen under `visible_to`."""
    if visible_to is None:
        return True
    pbx = Call.select(Call.pbx).where(Call.id == call_id).bind(db).scalar()
    rows = CallEmployee.select(CallEmployee.extension, CallEmployee.placed).where(
        CallEmployee.call_id == call_id).bind(db).tuples()
    employees = [extension for extension, _ in rows]
    return visible_to.admits(employees, [extension for extension, placed in rows if placed],
                             pbx)


CHANGES_LIMIT = 500     # calls written since a page's revision that it is told of, at most


def changes_since(f: CallFilter, revision: int,
                  db: Database) -> tuple[list[dict], list[str]] | None:
    """What a page showing filter `f` as of `revision` must change: the calls of the filter
    written since (new or changed) and the linkedids of the calls it may show that have left
    the filter since (changed so they no longer match, or taken back out while in progress).
    Only calls the filter's user may see are named. None when more than CHANGES_LIMIT calls
    were written since (a page back after a long pause): the page starts afresh."""
    written = list(Call.select(Call.id, Call.linkedid, Call.employees)
                   .where(Call.revision > revision).order_by(Call.revision.desc())
                   .limit(CHANGES_LIMIT + 1).bind(db).tuples())
    if len(written) > CHANGES_LIMIT:
        return None
    taken_out = list(CallGone.select(CallGone.linkedid, CallGone.employees)
                     .where(CallGone.revision > revision).bind(db).tuples())
    if not written and not taken_out:
        return [], []
    rows = list(call_rows(calls_query(replace(f, after=None, limit=len(written)), db)
                          .where(Call.id.in_([call_id for call_id, _, _ in written])))
                ) if written else []
    kept = {row["linkedid"] for row in rows}
    # Who placed a call that left is not kept: told by its employees (`involved` for `placed`).
    visible = f.visible_to
    if visible is not None and visible.scope == "placed":
        visible = replace(visible, scope="involved")
    gone = [linkedid for linkedid, employees in
            [(linkedid, employees) for _, linkedid, employees in written] + taken_out
            if linkedid not in kept
            and (visible is None
                 or visible.admits(orjson.loads(employees), (),
                                   pbx_of_linkedid(linkedid)))]
    return rows, gone


def pbx_of_linkedid(linkedid: str) -> str:
    """The PBX a linkedid of the history is of: `<pbx id>:…` as a PBX with an id writes
    them (`mirror.calls.qualified`), '' the only PBX's."""
    pbx, sep, _ = linkedid.partition(":")
    return pbx if sep and PBX_ID.fullmatch(pbx) else ""


def mirror_revision(db: Database) -> int:
    """The revision of the mirror's newest change of what pages show (0: none yet)."""
    return int(state_value(db, "revision") or 0)


def pbx_state_value(db: Database, name: str, pbx: str) -> str | None:
    """A PBX's own sync state `name` (mirror.store.PBX_STATE: its timezone, its number
    matching) as its daemon wrote it; else as a daemon of an older version wrote it for all;
    else, for a reader that names no PBX on a central history, the first PBX's."""
    found = state_value(db, state_key(name, pbx)) if pbx else None
    if found is None:
        found = state_value(db, name)
    if found is None and not pbx:
        row = run(db, "SELECT value FROM sync_state WHERE key LIKE ? ORDER BY key LIMIT 1",
                  (f"{name}:%",)).fetchone()
        found = row[0] if row else None
    return found


def legs_of_call(linkedid: str, db: Database) -> list[dict]:
    return list(Leg.select().where(Leg.linkedid == linkedid)
                .order_by(Leg.start_ms, Leg.source_id).bind(db).dicts())


def sync_state(db: Database) -> dict[str, str]:
    return dict(SyncState.select(SyncState.key, SyncState.value).bind(db).tuples())
