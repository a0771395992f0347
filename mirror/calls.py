"""Legs -> calls: the pure classification of `call-semantics.md`.

No I/O and no clock: `classify` turns the legs of one linkedid into a call record (every field
but the callback ones); `link_callbacks` decides, for the calls of one external number, which
missed call was returned by which later call. Times are UTC epoch milliseconds.
"""
from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass, field, replace
from typing import Iterator

APP_CHANNEL_PREFIXES = ("app:", "queue:", "voicemail")
_PEER_CHANNEL = re.compile(r"^[A-Za-z0-9]+/(\d+)-[0-9a-fA-F]+")
_NON_DIGITS = re.compile(r"\D")

# Trailing digits that identify an external number (+7 916…, 8 916… and 7 916… match): the
# `calls.number_match_digits` setting's default, which the mirror records at each sync.
NUMBER_MATCH_DIGITS = 9

DIRECTIONS = ("incoming", "outgoing", "internal")
STATUSES = ("answered", "transferred", "missed", "not_reached",
            "client_called_back", "we_called_back", "application")


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 5x, on the backfill's hot path
class Leg:
    """One `cdr_general` row, times resolved to UTC epoch ms. Treated as immutable."""
    uniqueid: str
    linkedid: str
    source_id: int
    start: int
    answer: int | None
    end: int | None
    src_chan: str = ""
    src_num: str = ""
    src_name: str = ""
    dst_chan: str = ""
    dst_num: str = ""
    dst_name: str = ""
    did: str = ""
    disposition: str = ""
    dialstatus: str = ""
    recordingfile: str = ""
    from_account: str = ""
    to_account: str = ""
    appname: str = ""
    is_app: bool = False
    transfer: int = 0
    a_transfer: int = 0
    duration: int | None = None
    billsec: int | None = None
    dtmf_digits: str = ""
    # Derived once at construction (classification asks for them many times).
    app: bool = field(init=False, compare=False, repr=False)
    talk_seconds: int = field(init=False, compare=False, repr=False)

    def __post_init__(self):
        # IVR, queue, dialplan application, voicemail: never a human.
        self.app = self.is_app or self.dst_chan.lower().startswith(APP_CHANNEL_PREFIXES)
        self.talk_seconds = self._talk_seconds()

    def _talk_seconds(self) -> int:
        """Seconds talked after the answer: the PBX's billsec unless it is impossible."""
        if self.answer is None:
            return 0
        end = self.end if self.end is not None else self.answer
        measured = max(0, end - self.answer) // 1000
        span = max(0, end - self.start) / 1000
        if self.billsec is None or self.billsec < 0 or self.billsec > span + 1:
            return measured
        return self.billsec

    @property
    def rang(self) -> bool:
        """A busy or unregistered extension gives a leg with an empty dst_chan."""
        return bool(self.dst_chan)

    @property
    def talked(self) -> bool:
        return not self.app and self.talk_seconds >= 1

    @property
    def status_word(self) -> str:
        return self.dialstatus or self.disposition


def qualified(pbx: str, pbx_id: str) -> str:
    """A PBX's linkedid or uniqueid as a central history keeps it: `<pbx id>:<id>`. MikoPBX
    names calls `mikopbx-<epoch>.<n>` on every PBX, so two PBXs can make the same one; the
    only PBX (`pbx` '') keeps its ids as they are."""
    return f"{pbx}:{pbx_id}" if pbx else pbx_id


def qualified_legs(pbx: str, legs: list[Leg]) -> list[Leg]:
    """These legs (of PBX `pbx`, as it names them) with `qualified` ids."""
    if not pbx:
        return legs
    return [replace(leg, uniqueid=qualified(pbx, leg.uniqueid),
                    linkedid=qualified(pbx, leg.linkedid)) for leg in legs]


@dataclass
class Directory:
    """Who is who on this PBX (from its config DB), with a fallback for when it is unknown."""
    employees: dict[str, str] = field(default_factory=dict)   # SIP extension -> name
    pbx_numbers: set[str] = field(default_factory=set)        # queues, IVRs, apps, ...
    mobiles: dict[str, str] = field(default_factory=dict)     # EXTERNAL number -> its employee
    providers: dict[str, str] = field(default_factory=dict)   # trunk uniqid -> provider name
    extension_length: int = 4
    number_match_digits: int = NUMBER_MATCH_DIGITS
    _keys: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def is_employee(self, number: str) -> bool:
        if self.employees:
            return number in self.employees
        return number.isdigit() and len(number) <= self.extension_length

    def is_pbx_number(self, number: str) -> bool:
        return number in self.pbx_numbers or self.is_employee(number)

    def employee_of(self, number: str, channel: str = "") -> str | None:
        """The employee extension a leg end belongs to (a forwarded mobile counts as its owner)."""
        if number and self.is_employee(number):
            return number
        if number in self.mobiles:
            return self.mobiles[number]
        peer = _PEER_CHANNEL.match(channel or "")
        if peer and self.is_employee(peer.group(1)):
            return peer.group(1)
        return None

    def match_key(self, number: str | None) -> str | None:
        """Last `number_match_digits` digits: `+7 916…`, `8916…` and `7916…` match."""
        if not number:
            return None
        key = self._keys.get(number)
        if key is None:
            digits = _NON_DIGITS.sub("", number)
            key = digits[-self.number_match_digits:] if digits else ""
            if len(self._keys) > 50_000:       # a few batches' numbers: bounded memory
                self._keys.clear()
            self._keys[number] = key
        return key or None

    def line_of(self, channel: str, account: str) -> str | None:
        """Provider name of a trunk leg, from its channel `PJSIP/<uniqid>-<seq>` or account id."""
        candidates = []
        if "/" in channel:
            candidates.append(channel.split("/", 1)[1].rsplit("-", 1)[0])
        if account:
            candidates.append(account)
        for uniqid in candidates:
            if uniqid in self.providers:
                return self.providers[uniqid]
        return None


@dataclass
class Call:
    """The call record of `call-semantics.md` (times in UTC epoch ms)."""
    linkedid: str
    start: int
    end: int
    direction: str
    status: str
    reason: str | None
    answered: bool
    src: str
    src_name: str
    dst: str
    dst_name: str
    external_number: str | None
    ext_key: str | None
    did: str | None
    line: str | None
    answered_by: str | None
    missed_by: list[str]
    transferred_to: list[str]
    employees: list[str]
    wait_s: int
    talk_s: int
    duration_s: int
    recordings: list[str]
    leg_count: int
    callback_of: str | None = None
    returned_by: str | None = None
    callback_attempts: int = 0
    callers: list[str] = field(default_factory=list)   # employees who placed a leg of it
    # Its first queue (`Queue:<n>` leg) and the seconds its caller waited there (until an
    # agent answered, or until they gave up); an incoming call's first menu (`App:<n>` leg),
    # the digits pressed there and whether an unanswered caller left in it (no leg after it).
    queue: str | None = None
    queue_wait_s: int | None = None
    ivr: str | None = None
    ivr_digits: str | None = None
    ivr_left: int | None = None


def classify(legs: list[Leg], directory: Directory) -> Call:
    """The call made of these legs (all of one linkedid), callback fields left empty."""
    if len(legs) > 1:
        legs = sorted(legs, key=lambda leg: (leg.start, leg.source_id))
    first = legs[0]
    direction = direction_of(first, directory)
    party = _Party(first, direction, directory)
    employee_of = directory.employee_of

    # One pass over the legs (the backfill's hot path): who took part, who rang, who talked.
    human, talked, party_talks = [], [], []
    employees: dict[str, None] = {}    # ordered sets
    callers: dict[str, None] = {}
    rang: dict[str, None] = {}
    talkers: set[str] = set()
    queue_leg = menu_leg = None
    end = first.start
    for leg in legs:
        leg_end = leg.end if leg.end is not None else (leg.answer or leg.start)
        end = leg_end if leg_end > end else end
        caller = employee_of(leg.src_num, leg.src_chan)
        if caller:
            employees[caller] = None
            callers[caller] = None
        if leg.app:
            kind = leg.dst_chan[:6].lower()
            if kind == "queue:":
                queue_leg = queue_leg or leg
            elif kind[:4] == "app:":
                menu_leg = menu_leg or leg
            continue
        human.append(leg)
        callee = employee_of(leg.dst_num, leg.dst_chan)
        if callee:
            employees[callee] = None
            if leg.rang:
                rang[callee] = None
        if leg.talk_seconds >= 1:
            talked.append(leg)
            talkers.update(who for who in (caller, callee) if who)
            if party.in_leg(leg):
                party_talks.append(leg)
    answered = bool(talked)

    first_talk = party_talks[0] if party_talks else talked[0] if talked else None
    answered_by = party.employee_across(first_talk) if first_talk else None
    transferred_to = _unique(
        who for who in map(party.employee_across, party_talks[1:]) if who != answered_by)
    missed_by = [who for who in rang if who not in talkers]

    start = first.start
    if answered:
        wait_ms = first_talk.answer - start
        talk_legs = talked if direction == "internal" else party_talks
        talk_s = sum(leg.talk_seconds for leg in talk_legs)
    else:
        wait_ms, talk_s = end - start, 0

    status = _base_status(direction, answered, human, transferred_to)
    reason = None
    if status in ("missed", "not_reached"):
        reason = (human or legs)[-1].status_word or None

    external = None if direction == "internal" else (
        first.src_num if direction == "incoming" else first.dst_num)
    return Call(
        linkedid=first.linkedid, start=start, end=end, direction=direction,
        status=status, reason=reason, answered=answered,
        src=first.src_num, src_name=first.src_name or directory.employees.get(first.src_num, ""),
        dst=first.dst_num, dst_name=first.dst_name or directory.employees.get(first.dst_num, ""),
        external_number=external, ext_key=directory.match_key(external),
        did=first.did or None, line=_line(legs, directory),
        answered_by=answered_by, missed_by=missed_by, transferred_to=transferred_to,
        employees=list(employees), callers=list(callers),
        wait_s=max(0, round(wait_ms / 1000)), talk_s=talk_s,
        duration_s=max(0, round((end - start) / 1000)),
        recordings=_unique(leg.recordingfile for leg in talked if leg.recordingfile != "-"),
        leg_count=len(legs),
        **_queue(queue_leg), **_menu(menu_leg if direction == "incoming" else None, legs,
                                     answered),
    )


def _queue(leg: Leg | None) -> dict:
    """The call's queue from its first `Queue:` leg, and the whole seconds waited there."""
    if leg is None:
        return {}
    until = next(t for t in (leg.answer, leg.end, leg.start) if t is not None)
    waited = until - leg.start
    return {"queue": leg.dst_chan[6:], "queue_wait_s": _whole_seconds(waited)}


def _menu(leg: Leg | None, legs: list[Leg], answered: bool) -> dict:
    """An incoming call's first menu from its first `App:` leg (`legs` in start order)."""
    if leg is None:
        return {}
    left = not answered and legs[-1].start <= leg.start
    return {"ivr": leg.dst_chan[4:], "ivr_digits": leg.dtmf_digits, "ivr_left": int(left)}


def _whole_seconds(ms: int) -> int:
    """Milliseconds as whole seconds, truncated toward zero (as SQL's integer division)."""
    return ms // 1000 if ms >= 0 else -(-ms // 1000)


class _Party:
    """The other party of a call — who the employees talk *with*: the external number of
    an incoming or outgoing call, the caller of an internal one. Known by its number (any
    format) or by its channel (queue legs through Local/ channels keep the caller's channel)."""

    def __init__(self, first: Leg, direction: str, directory: Directory):
        self.directory = directory
        number, self.chan = ((first.dst_num, first.dst_chan) if direction == "outgoing"
                             else (first.src_num, first.src_chan))
        self.key = directory.match_key(number)

    def is_src_of(self, leg: Leg) -> bool:
        return bool(self.chan) and leg.src_chan == self.chan or (
            self.key is not None and self.directory.match_key(leg.src_num) == self.key)

    def in_leg(self, leg: Leg) -> bool:
        return self.is_src_of(leg) or bool(self.chan) and leg.dst_chan == self.chan or (
            self.key is not None and self.directory.match_key(leg.dst_num) == self.key)

    def employee_across(self, leg: Leg) -> str | None:
        """The employee at the other end of a leg with the party."""
        if self.is_src_of(leg):
            return self.directory.employee_of(leg.dst_num, leg.dst_chan)
        return self.directory.employee_of(leg.src_num, leg.src_chan)


def calls_of(legs: list[Leg], directory: Directory, window_ms: int) -> list[Call]:
    """A batch's calls: legs grouped by linkedid, classified (a call per linkedid, from these
    legs only), their callbacks linked among them (`link_callbacks` over `window_ms`). The
    writer links them with the calls around them where the batch meets those."""
    by_call: dict[str, list[Leg]] = {}
    for leg in legs:
        by_call.setdefault(leg.linkedid, []).append(leg)
    calls = [classify(call_legs, directory) for call_legs in by_call.values()]
    missed = {call.ext_key for call in calls if call.status == "missed" and call.ext_key}
    by_number: dict[str, list[Call]] = {}
    for call in calls:
        if call.ext_key in missed:
            by_number.setdefault(call.ext_key, []).append(call)
    for group in by_number.values():
        links = link_callbacks([CallbackFacts(c.linkedid, c.start, c.end, c.direction,
                                              c.answered, c.status) for c in group], window_ms)
        for call in group:
            link = links[call.linkedid]
            call.callback_of, call.returned_by = link.callback_of, link.returned_by
            call.callback_attempts, call.status = link.callback_attempts, link.status
    return calls


def direction_of(first: Leg, directory: Directory) -> str:
    """A call's direction, decided by its first leg."""
    if not directory.is_employee(first.src_num):
        return "incoming"
    if first.app or directory.is_pbx_number(first.dst_num):
        return "internal"
    return "outgoing"


def _base_status(direction: str, answered: bool, human: list[Leg],
                 transferred_to: list[str]) -> str:
    if direction == "internal" and not human:
        return "application"
    if not answered:
        return "missed" if direction == "incoming" else "not_reached"
    return "transferred" if transferred_to else "answered"


def _line(legs: list[Leg], directory: Directory) -> str | None:
    for leg in legs:
        line = (directory.line_of(leg.src_chan, leg.from_account)
                or directory.line_of(leg.dst_chan, leg.to_account))
        if line:
            return line
    return None


def _unique(values) -> list[str]:
    """Distinct truthy values in first-seen order."""
    seen: dict[str, None] = {}
    for value in values:
        if value:
            seen.setdefault(value, None)
    return list(seen)


# --- callbacks -------------------------------------------------------------------------------

@dataclass(slots=True)
class CallbackFacts:
    """What callback linking needs of a call (one external match key)."""
    linkedid: str
    start: int
    end: int
    direction: str
    answered: bool
    base_status: str


@dataclass(slots=True)
class CallbackLinks:
    callback_of: str | None
    returned_by: str | None
    callback_attempts: int
    status: str


# What linking reads of a mirrored call (`linking`), its external key first; and the calls
# whose numbers linking can matter for (SQL over the call row `m`): a missed call, a
# callback, or links.
LINKED_COLUMNS = ("ext_key", "linkedid", "start_ms", "end_ms", "direction", "answered",
                  "status", "transferred_to", "callback_of", "returned_by", "callback_attempts")
LINKABLE = ("({m}.status IN ('missed', 'client_called_back', 'we_called_back') "
            "OR {m}.callback_of IS NOT NULL OR {m}.returned_by IS NOT NULL "
            "OR {m}.callback_attempts > 0)")


def linking(row: tuple) -> tuple[str, CallbackFacts, CallbackLinks]:
    """A mirrored call's row of LINKED_COLUMNS: its key, what linking needs of it, its links
    now (its status before callbacks: a callback's status goes back to answered or
    transferred)."""
    (key, linkedid, start, end, direction, answered, status, transferred,
     callback_of, returned_by, attempts) = row
    base = status
    if status in ("client_called_back", "we_called_back"):
        base = "transferred" if transferred != "[]" else "answered"
    return (key, CallbackFacts(linkedid, start, end, direction, bool(answered), base),
            CallbackLinks(callback_of, returned_by, attempts, status))


def changed_links(entries: list[tuple[CallbackFacts, CallbackLinks]], window_ms: int,
                  lo: float = float("-inf"), hi: float = float("inf")
                  ) -> Iterator[tuple[str, tuple[int, CallbackLinks]]]:
    """Link the calls of one number (each with its links now) afresh: (linkedid, (start, new
    links)) of those starting within [lo, hi] whose links change."""
    linked = link_callbacks([facts for facts, _ in entries], window_ms)
    for facts, now in entries:
        new = linked[facts.linkedid]
        if lo <= facts.start <= hi and new != now:
            yield facts.linkedid, (facts.start, new)


def link_callbacks(calls: list[CallbackFacts], window_ms: int) -> dict[str, CallbackLinks]:
    """Which missed call each later answered call returns (calls of one external number).

    A missed call M is returned by the first later answered call C starting within
    `window_ms` after M ended; unanswered outgoing attempts in between count on M.
    """
    calls = sorted(calls, key=lambda c: (c.start, c.linkedid))
    answered = [c for c in calls if c.answered and c.direction != "internal"]
    answered_starts = [c.start for c in answered]
    attempts = [c.start for c in calls if c.direction == "outgoing" and not c.answered]
    returned_by: dict[str, str] = {}
    callback_attempts: dict[str, int] = {}
    latest_returned: dict[str, str] = {}
    for missed in (c for c in calls if c.base_status == "missed"):
        limit = missed.end + window_ms
        returner = None
        for i in range(bisect_left(answered_starts, missed.end), len(answered)):
            c = answered[i]
            if c.start > limit:
                break
            if c.linkedid != missed.linkedid:
                returner = c
                break
        until = returner.start if returner else limit + 1
        callback_attempts[missed.linkedid] = (bisect_left(attempts, until)
                                              - bisect_left(attempts, missed.end))
        if returner:
            returned_by[missed.linkedid] = returner.linkedid
            latest_returned[returner.linkedid] = missed.linkedid   # calls are in start order
    links = {}
    for call in calls:
        callback_of = latest_returned.get(call.linkedid)
        status = call.base_status
        if callback_of:
            status = "client_called_back" if call.direction == "incoming" else "we_called_back"
        links[call.linkedid] = CallbackLinks(
            callback_of=callback_of, returned_by=returned_by.get(call.linkedid),
            callback_attempts=callback_attempts.get(call.linkedid, 0), status=status)
    return links
