"""Who hung up: the caller, the callee or the PBX, decided from a call's AMI events.

Asterisk raises `HangupRequest` on the channel whose party asked to hang up (a SIP BYE or a
CANCEL from that phone), `SoftHangupRequest` on channels the PBX hangs up itself (the peer
left behind, a dial timeout) and `Hangup` for every channel that ends. `HangupTracker` follows
the calls in progress by linkedid and decides when the last channel of a call ends:

* The caller is the originating channel (its Uniqueid is the call's Linkedid; when that is a
  `Local/` channel, as an originate makes, the first other channel created). Any other party
  channel is a callee. `Local/` channels are plumbing, never a party.
* The party of the last `HangupRequest` ended the call: an earlier one (a transferer leaving,
  a phone declining while others ring) left a call that went on. A request on a channel the
  PBX had already asked to hang up does not count (both hung up at once: the first one did).
* No party asked: the PBX ended the call (a timeout, busy, the dialplan), side `pbx`.
* The cause and its text are the deciding channel's `Hangup` ones (else its request's cause).

Only calls seen from their start (the originating channel's `Newchannel`) are decided: a call
the tracker joined half-way stays unknown, never guessed. State is kept for calls in progress
only and is bounded in count and age.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Mapping

SIDES = ("caller", "callee", "pbx")
# The AMI events the tracker reads: a follower subscribes these and feeds them in.
EVENTS = ("Newchannel", "HangupRequest", "SoftHangupRequest", "Hangup")

MAX_CALLS = 10_000             # calls followed at once (the oldest untouched one goes first)
MAX_AGE_MS = 24 * 3600_000     # a call silent for longer is dropped (its end was missed)
MAX_CHANNELS = 500             # a call with more channels is given up (never decided)
_REMEMBERED = 10_000           # calls ended lately, whose late events are ignored


@dataclass(frozen=True)
class CallHangup:
    """Who ended one call (a `call_hangup` row)."""
    linkedid: str
    side: str          # one of SIDES
    channel: str       # the deciding channel
    number: str        # its party's number ('' when Asterisk did not know it)
    cause: int | None  # Q.850 cause of its Hangup
    cause_txt: str     # Asterisk's words for it
    at_ms: int         # when that channel ended (UTC ms)


@dataclass
class _Channel:
    name: str
    number: str = ""
    party: bool = True          # not a Local/ channel
    ended_ms: int | None = None
    cause: int | None = None
    cause_txt: str = ""
    pbx_asked: bool = False     # a SoftHangupRequest came first


@dataclass
class _Call:
    touched_ms: int
    started: bool = False       # the originating channel's Newchannel was seen
    caller: str | None = None   # the caller's uniqueid
    channels: dict[str, _Channel] = field(default_factory=dict)
    asked: list[tuple[str, int | None]] = field(default_factory=list)  # party requests
    pbx_asked: list[str] = field(default_factory=list)                # soft requests, in order


class HangupTracker:
    """Follows calls in progress over AMI; `feed(event)` returns a `CallHangup` when the event
    ended a call seen from its start, else None. Not thread-safe: feed it from one thread."""

    def __init__(self, *, max_calls: int = MAX_CALLS, max_age_ms: int = MAX_AGE_MS,
                 max_channels: int = MAX_CHANNELS):
        self.max_calls = max_calls
        self.max_age_ms = max_age_ms
        self.max_channels = max_channels
        self.calls: OrderedDict[str, _Call] = OrderedDict()
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._on = {"Newchannel": self._created, "HangupRequest": self._party_asked,
                    "SoftHangupRequest": self._pbx_asked, "Hangup": self._hung_up}

    def feed(self, event: Mapping[str, object], now_ms: int | None = None) -> CallHangup | None:
        """Take one AMI event (headers; key case as Asterisk spells it or not)."""
        handler = self._on.get(_header(event, "Event"))
        linkedid, uniqueid = _header(event, "Linkedid"), _header(event, "Uniqueid")
        if handler is None or not linkedid or not uniqueid:
            return None
        now_ms = _event_ms(event, now_ms)
        self._expire(now_ms)
        if linkedid in self._ended:
            return None
        call = self.calls.get(linkedid)
        if call is None:
            call = self.calls[linkedid] = _Call(now_ms)
            if len(self.calls) > self.max_calls:
                self._forget(next(iter(self.calls)))   # the one silent the longest
        call.touched_ms = now_ms
        self.calls.move_to_end(linkedid)
        channel = call.channels.get(uniqueid)
        if channel is None:
            if len(call.channels) >= self.max_channels:
                self._forget(linkedid)
                return None
            channel = call.channels[uniqueid] = _Channel(_header(event, "Channel"))
            channel.party = not channel.name.lower().startswith("local/")
        channel.number = _number(event) or channel.number
        handler(call, uniqueid, channel, event, now_ms)
        if all(c.ended_ms is not None for c in call.channels.values()):
            self._forget(linkedid)
            return _decide(linkedid, call) if call.started else None
        return None

    def forget_all(self) -> None:
        """Events were lost (the AMI link reconnected): the calls under way stay unknown."""
        self._ended.update(dict.fromkeys(self.calls))
        self.calls.clear()
        self._trim_ended()

    # --- events --------------------------------------------------------------------------------

    def _created(self, call: _Call, uniqueid: str, channel: _Channel, event, now_ms: int) -> None:
        if uniqueid == _header(event, "Linkedid"):
            call.started = True
            if channel.party:
                call.caller = uniqueid
        elif call.caller is None and call.started and channel.party:
            call.caller = uniqueid        # an originate's Local/ channel stands for nobody

    def _party_asked(self, call: _Call, uniqueid: str, channel: _Channel, event,
                     now_ms: int) -> None:
        if channel.party and not channel.pbx_asked and uniqueid not in dict(call.asked):
            call.asked.append((uniqueid, _cause(event)))

    def _pbx_asked(self, call: _Call, uniqueid: str, channel: _Channel, event,
                   now_ms: int) -> None:
        if channel.party and uniqueid not in dict(call.asked) and not channel.pbx_asked:
            channel.pbx_asked = True
            call.pbx_asked.append(uniqueid)

    def _hung_up(self, call: _Call, uniqueid: str, channel: _Channel, event, now_ms: int) -> None:
        if channel.ended_ms is None:
            channel.ended_ms = now_ms
            channel.cause = _cause(event)
            channel.cause_txt = _header(event, "Cause-txt")

    # --- bounds --------------------------------------------------------------------------------

    def _expire(self, now_ms: int) -> None:
        while self.calls:
            linkedid, oldest = next(iter(self.calls.items()))
            if now_ms - oldest.touched_ms <= self.max_age_ms:
                return
            self._forget(linkedid)

    def _forget(self, linkedid: str) -> None:
        self.calls.pop(linkedid, None)
        self._ended[linkedid] = None
        self._trim_ended()

    def _trim_ended(self) -> None:
        while len(self._ended) > _REMEMBERED:
            self._ended.popitem(last=False)


def _decide(linkedid: str, call: _Call) -> CallHangup:
    """The decision for a call whose channels all ended (module docstring)."""
    request_cause = None
    if call.asked:
        uniqueid, request_cause = call.asked[-1]
        side = "caller" if uniqueid == call.caller else "callee"
    else:
        side = "pbx"
        parties = [u for u, c in call.channels.items() if c.party]
        uniqueid = next(iter(call.pbx_asked + ([call.caller] if call.caller else []) + parties
                             + list(call.channels)))
    channel = call.channels[uniqueid]
    cause = channel.cause if channel.cause is not None else request_cause
    return CallHangup(linkedid, side, channel.name, channel.number if channel.party else "",
                      cause, channel.cause_txt, channel.ended_ms or 0)


def _header(event: Mapping[str, object], name: str) -> str:
    """A header's value whatever the case of its key ('' when absent)."""
    value = event.get(name)
    if value is None:
        folded = name.lower()
        value = next((v for k, v in event.items() if k.lower() == folded), "")
    return str(value or "").strip()


def _number(event: Mapping[str, object]) -> str:
    number = _header(event, "CallerIDNum")
    return "" if number.lower() in ("", "<unknown>") else number


def _cause(event: Mapping[str, object]) -> int | None:
    cause = _header(event, "Cause")
    return int(cause) if cause.isdigit() else None


def _event_ms(event: Mapping[str, object], now_ms: int | None) -> int:
    """The event's own time (`Timestamp`, with `timestampevents = yes`), else `now_ms`, else
    this machine's clock."""
    try:
        return round(float(_header(event, "Timestamp")) * 1000)
    except ValueError:
        return now_ms if now_ms is not None else int(time.time() * 1000)
