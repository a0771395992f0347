"""Calls in progress: what the PBX is doing now, and which calls are not final yet.

MikoPBX keeps the legs of calls under way in its temporary `cdr` table (the layout of
`cdr_general`) and moves each leg there when it ends; a stock Asterisk only says so on AMI
(its channels are up). A linkedid with any leg in progress is **in progress**: its finished
legs are mirrored, but the call is not classified — never missed, counted, exported or mailed —
until its last leg has moved (`call-semantics.md`).

`live_calls` is pure (legs in, what to show out); `ChannelTable` turns AMI channel events into
legs in progress for a PBX without the `cdr` table.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Mapping

from mirror.calls import Directory, Leg, direction_of

# What a call in progress is doing, most telling first: a call talking to one agent while
# another still rings is "talking".
LIVE_STATES = ("talking", "queue", "ringing", "ivr", "voicemail", "dialing")
_PEER_CHANNEL = re.compile(r"^[A-Za-z0-9]+/([^-/@]+)")


@dataclass
class LiveCall:
    """A call in progress as the page and the CLI show it (times UTC epoch ms)."""
    linkedid: str
    start: int
    direction: str
    state: str                      # one of LIVE_STATES
    since: int                      # when it entered that state
    src: str
    src_name: str
    dst: str
    dst_name: str
    external_number: str | None
    did: str | None
    line: str | None
    employees: list[str]            # everyone who took part so far (role filtering)
    parties: list[dict] = field(default_factory=list)   # each leg under way: who, whom, state


def leg_state(leg: Leg) -> str:
    """What one leg in progress is doing."""
    channel = leg.dst_chan.lower()
    if channel.startswith("queue:"):
        return "queue"
    if channel.startswith("voicemail"):
        return "voicemail"
    if leg.app:
        return "ivr"
    if leg.answer is not None:
        return "talking"
    return "ringing" if leg.dst_chan else "dialing"


def live_calls(live: list[Leg], moved: Mapping[str, list[Leg]],
               directory: Directory) -> list[LiveCall]:
    """The calls these legs in progress belong to, with the legs of theirs that already ended
    (`moved`, by linkedid), newest first."""
    under_way: dict[str, dict[str, Leg]] = {}
    for leg in live:
        under_way.setdefault(leg.linkedid, {})[leg.uniqueid] = leg
    calls = [_live_call(list(legs.values()), moved.get(linkedid, []), directory)
             for linkedid, legs in under_way.items()]
    return sorted(calls, key=lambda call: (-call.start, call.linkedid))


def _live_call(live: list[Leg], moved: list[Leg], directory: Directory) -> LiveCall:
    under_way = {leg.uniqueid for leg in live}
    ended = [leg for leg in moved if leg.uniqueid not in under_way]
    legs = sorted(ended + live, key=lambda leg: (leg.start, leg.source_id))
    first = legs[0]
    direction = direction_of(first, directory)
    states = {leg.uniqueid: leg_state(leg) for leg in live}
    state = min(states.values(), key=LIVE_STATES.index)
    since = min((leg.answer if state == "talking" else leg.start)
                for leg in live if states[leg.uniqueid] == state)
    employee_of, names = directory.employee_of, directory.employees
    employees: dict[str, None] = {}
    for leg in legs:
        for who in (employee_of(leg.src_num, leg.src_chan), employee_of(leg.dst_num, leg.dst_chan)):
            if who:
                employees[who] = None
    external = None if direction == "internal" else (
        first.src_num if direction == "incoming" else first.dst_num)
    parties = [{"state": states[leg.uniqueid],
                "since": leg.answer if states[leg.uniqueid] == "talking" else leg.start,
                "from": leg.src_num, "from_name": leg.src_name or names.get(leg.src_num, ""),
                "to": leg.dst_num, "to_name": leg.dst_name or names.get(leg.dst_num, "")}
               for leg in sorted(live, key=lambda leg: (LIVE_STATES.index(states[leg.uniqueid]),
                                                        leg.start))]
    line = next((found for leg in legs
                 for found in (directory.line_of(leg.src_chan, leg.from_account),
                               directory.line_of(leg.dst_chan, leg.to_account)) if found), None)
    return LiveCall(
        linkedid=first.linkedid, start=first.start, direction=direction, state=state,
        since=since, src=first.src_num, src_name=first.src_name or names.get(first.src_num, ""),
        dst=first.dst_num, dst_name=first.dst_name or names.get(first.dst_num, ""),
        external_number=external, did=first.did or None, line=line,
        employees=list(employees), parties=parties)


# --- stock Asterisk: channels up, from AMI events ---------------------------------------------

@dataclass
class _Channel:
    uniqueid: str
    linkedid: str
    channel: str
    number: str
    name: str
    exten: str
    created_ms: int
    up_ms: int | None = None


class ChannelTable:
    """The channels AMI says are up (`Newchannel`, `Newstate`, `Hangup`, and after a login the
    `CoreShowChannel` list), as legs in progress.

    For a PBX without MikoPBX's `cdr` table: a call is in progress while a channel of its
    linkedid is up. Thread-safe: the AMI thread records events, the sync loop reads legs.
    """

    def __init__(self):
        self._channels: dict[str, _Channel] = {}
        self._lock = threading.Lock()

    def record(self, event: Mapping[str, object]) -> bool:
        """Apply one channel event; True when the set of calls in progress changed."""
        name = str(event.get("Event", ""))
        uniqueid = str(event.get("Uniqueid", "") or "")
        if not uniqueid:
            return False
        at_ms = _event_ms(event)
        with self._lock:
            if name == "Hangup":
                return self._channels.pop(uniqueid, None) is not None
            channel = self._channels.get(uniqueid)
            if channel is None:
                channel = self._channels[uniqueid] = _Channel(
                    uniqueid, str(event.get("Linkedid", "") or uniqueid),
                    str(event.get("Channel", "")), _number(event.get("CallerIDNum")),
                    _number(event.get("CallerIDName")), str(event.get("Exten", "") or ""),
                    at_ms - _seconds(event.get("Duration")) * 1000)
            if str(event.get("ChannelState", "")) == "6" and channel.up_ms is None:
                channel.up_ms = at_ms
            return name in ("Newchannel", "CoreShowChannel") or channel.up_ms == at_ms

    def clear(self) -> None:
        """The AMI link was lost: what was up is unknown until channels report again."""
        with self._lock:
            self._channels.clear()

    def legs(self) -> list[Leg]:
        """A leg from each call's first channel to each other channel of it (one leg to no one
        while nobody else is on the call)."""
        with self._lock:
            channels = sorted(self._channels.values(), key=lambda c: (c.created_ms, c.uniqueid))
        by_call: dict[str, list[_Channel]] = {}
        for channel in channels:
            by_call.setdefault(channel.linkedid, []).append(channel)
        legs = []
        for linkedid, members in by_call.items():
            caller = next((c for c in members if c.uniqueid == linkedid), members[0])
            others = [c for c in members if c is not caller]
            for callee in others or [None]:
                legs.append(_leg(linkedid, caller, callee))
        return legs


def _leg(linkedid: str, caller: _Channel, callee: _Channel | None) -> Leg:
    if callee is None:
        return Leg(f"ami:{caller.uniqueid}", linkedid, 0, caller.created_ms, None, None,
                   src_chan=caller.channel, src_num=caller.number, src_name=caller.name,
                   dst_num=caller.exten)
    # A dialled channel carries the caller's caller id: the callee is the peer in its name
    # (`PJSIP/202-…`), or, through a trunk, the number the caller dialled.
    peer = _PEER_CHANNEL.match(callee.channel)
    number = peer.group(1) if peer and peer.group(1).isdigit() else caller.exten
    answered = callee.up_ms if callee.up_ms is not None and caller.up_ms is not None else None
    if answered is not None:
        answered = max(answered, caller.up_ms)
    return Leg(f"ami:{callee.uniqueid}", linkedid, 0, callee.created_ms, answered, None,
               src_chan=caller.channel, src_num=caller.number, src_name=caller.name,
               dst_chan=callee.channel, dst_num=number)


def _seconds(value) -> int:
    """`CoreShowChannel`'s `Duration` (HH:MM:SS) in seconds; 0 when absent."""
    try:
        hours, minutes, seconds = str(value).split(":")
        return int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    except ValueError:
        return 0


def _number(value) -> str:
    text = str(value or "")
    return "" if text == "<unknown>" else text


def _event_ms(event: Mapping[str, object]) -> int:
    try:
        return int(float(str(event.get("Timestamp", ""))) * 1000)
    except ValueError:
        return int(time.time() * 1000)
