"""A deterministic demo PBX: MikoPBX's config DB, users-groups and phone book DBs, call history
and recordings.

Two parts:

* `DemoPbx` is pure (no I/O, no clock): a directory of employees, providers, queues and external
  callers built from a seed, and `call(kind, start_utc)`, which returns the `cdr_general` rows one
  call of a named scenario leaves, shaped as MikoPBX writes them (mikopbx-reference.md, "Shapes
  worth knowing"). The AMI emulator can replay calls live with it.
* `generate()` writes a whole demo PBX into a folder, for `extcdr demo-data`, tests and benchmarks.

Same (calls, seed, end_day, timezone) -> identical rows: every random choice comes from
`random.Random` streams derived from the seed.
"""
from __future__ import annotations

import bisect
import hashlib
import heapq
import os
import pathlib
import random
import shutil
import sqlite3
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import accumulate
from operator import itemgetter
from typing import Callable, Iterable, Iterator, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import peewee

from mirror import webhooks
from mirror.annotations import Actor, create_tag, tag_list
from mirror.database import ModuleDbError, open_module_db
from mirror.pbxtime import PbxClock
from mirror.queries import sync_state
from mirror.report_rows import reports_of
from mirror.store import state_key
from mirror.userdata import save_filter
from pbx.cdr import CdrSource
from pbx.tables import (PBX_CONFIG_DDL, PHONEBOOK_DDL, USERS_GROUPS_DDL, cdr_column_names, cdr_ddl,
                        create)
from pbxmodule.prepare import update_settings
from reports.definitions import Owner, report_form, save_report

# The scenario kinds `DemoPbx.call` knows, with their relative weights in generated traffic.
SCENARIO_WEIGHTS: dict[str, float] = {
    "internal_answered": 8,
    "internal_busy": 1.5,
    "internal_no_answer": 2,
    "service_number": 1,
    "outgoing_answered": 20,
    "outgoing_busy": 2.5,
    "outgoing_no_answer": 4,
    "outgoing_unavailable": 1,
    "click_to_call": 1,
    "click_to_call_failed": 0.5,
    "incoming_answered": 13,
    "incoming_missed": 3,
    "ring_group": 4,
    "two_devices": 1.5,
    "ivr_queue_answered": 10,
    "queue_missed": 3,
    "ivr_abandon": 2,
    "voicemail": 1.5,
    "blind_transfer": 3,
    "attended_transfer": 2,
    "attended_transfer_cancelled": 0.7,
    "pickup": 1,
    "client_called_back": 2.5,
    "we_called_back": 2.5,
    "callback_attempt": 1,
    "long_call": 0.3,
}

# Where a real PBX keeps recordings; rows point here unless `monitor_dir` says otherwise.
PBX_MONITOR_DIR = "/storage/usbdisk1/mikopbx/astspool/monitor"

CDR_DB = "cdr.db"
CONFIG_DB = "mikopbx.db"
GROUPS_DB = "custom_modules/ModuleUsersGroups/db/module.db"
PHONEBOOK_DB = "custom_modules/ModulePhoneBook/db/module.db"
MONITOR = "monitor"

IVR_NUMBER = "2020"
SERVICE_NUMBER = "2200"
SALES_QUEUE, SUPPORT_QUEUE = "2000", "2001"

_EMPLOYEE_NAMES = (
    "Иванов Иван", "Петрова Мария", "Сидоров Алексей", 'Смирнова Анна "Аня"', "Кузнецов Дмитрий",
    "Попова Екатерина", "Васильев Сергей", "Соколова Ольга", "Михайлов Андрей", "Новикова Татьяна",
    "Фёдоров Пётр", "Морозова Юлия", "Волков Николай", "Алексеева Ирина", "Лебедев Артём",
    "Семёнова Дарья", "Егоров Максим", "Павлова Наталья", "Козлов Виктор", "Степанова Елена",
    "Николаев Игорь", "Орлова Светлана", "Андреев Роман", "Макарова Ксения", 'Захаров Олег "Шеф"',
    "Ковалёв Степан", "Белова Алиса", "John Smith", "Emily O'Brien", "Michael Brown",
    "Sarah Johnson", 'David "Dave" Wilson', "Laura Martínez", "Jörg Müller", "Zoë Ångström",
    "Chris Taylor", "Anna-Lena Weiß", "James O'Connor", "Olivia Davis", "Mateus Conceição",
    "Sophie Dubois", "Liam Nguyễn", "Tom Clarke", "Émilie Côté",
)
_CALLER_NAMES = (
    "ООО «Ромашка»", "ИП Сергеев", "Анна Владимировна", "Acme Corp", "Delivery Service",
    "Клиника «Здоровье»", "Mr. Wang", "Банк Восток", "Олег (склад)", "Logistics & Co",
    "Petrov A.", "Ёлкина Ж.", "Müller GmbH", "Такси 24/7",
)
# Caller-id names an attacker can send: must be shown and exported as inert text.
HOSTILE_NAMES = (
    "<script>alert(1)</script>", '=HYPERLINK("http://evil.example","click")', "=1+2",
    "+7(916)=SUM(A1)", "-1+1", "@SUM(1,2)", "\tTab Name", "Robert'); DROP TABLE cdr_general;--",
    "<img src=x onerror=alert(2)>", '"quoted" & <b>bold</b>', "../../etc/passwd",
)
_PROVIDERS = (
    ("Mango Office", "sip.mango.example"), ("Beeline Business", "sip.beeline.example"),
    ("MTS SIP", "sip.mts.example"), ("Zadarma", "sip.zadarma.example"),
)
# How providers write callers' numbers, and how employees dial them (with weights).
_NUMBER_PREFIXES = ("+7", "8", "7")
_DIAL_PREFIX_CUM = (50, 75, 100)
_GROUP_NAMES = ("Sales", "Support", "Бухгалтерия", "Management", "Logistics")
_APPLICATIONS = (
    (SALES_QUEUE, "QUEUE", "Отдел продаж"), (SUPPORT_QUEUE, "QUEUE", "Support line"),
    (IVR_NUMBER, "IVR MENU", "Главное меню"), (SERVICE_NUMBER, "DIALPLAN APPLICATION", "Echo test"),
    ("2300", "CONFERENCE", "Planning room"), ("hangup", "SYSTEM", "Hangup"),
    ("busy", "SYSTEM", "Busy"), ("voicemail", "SYSTEM", "Voicemail"),
)
_CALLER_POOL = 4000

# Local hours of weekday calls with weights: business hours, a few early and evening calls.
_HOURS = (8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21)
_HOUR_CUM = tuple(accumulate((0.6, 6, 10, 11, 10, 7, 9, 10, 10, 8, 5, 1.5, 0.8, 0.4)))

_MINUTE_MS = 60_000
_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000
# How long the PBX keeps ringing before each failed dial status, in seconds.
_FAILED_RING_S = {"BUSY": (1, 4), "NOANSWER": (20, 45), "CANCEL": (3, 20),
                  "CHANUNAVAIL": (0.05, 0.5), "CONGESTION": (0.5, 3)}
_KEPT_DISPOSITIONS = {"BUSY": "BUSY", "CHANUNAVAIL": "CHANUNAVAIL", "CONGESTION": "CONGESTION"}
# UNIQUEID shapes: the PBX's `<id>_<6 chars>`, a second device's `<id>_<channel>`, and
# phone-side (SIP REFER) transfer rows' bare `<id>`.
_UID_PBX, _UID_DEVICE, _UID_BARE = range(3)

_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_B36_PAIRS = [a + b for a in _B36 for b in _B36]
_MASK64 = (1 << 64) - 1
_EPOCH = datetime(1970, 1, 1)
# "SS.mmm" for every millisecond of a minute, and "SS" for every second.
_SECOND_MS = [f"{s:02d}.{ms:03d}" for s in range(60) for ms in range(1000)]
_SECOND = [f"{s:02d}" for s in range(60)]


@dataclass(frozen=True)
class Employee:
    user_id: int
    number: str
    name: str
    email: str
    language: str
    mobile: str  # an EXTERNAL extension (their mobile), '' when none
    sip_uniqid: str


@dataclass(frozen=True)
class Provider:
    uniqid: str  # SIP-TRUNK-XXXXXXXX, part of its channel names
    name: str
    host: str
    number_prefix: str  # how this trunk writes callers' numbers: "+7", "8" or "7"
    dids: tuple[str, ...]


@dataclass(frozen=True)
class Caller:
    digits: str  # ten national digits, e.g. 9161234567
    name: str  # caller-id name; '' when the PBX shows the number


@dataclass(frozen=True)
class Group:
    id: int
    name: str
    members: tuple[int, ...]  # m_Users.id


@dataclass(frozen=True)
class Application:
    number: str
    type: str  # m_Extensions.type
    name: str


@dataclass(frozen=True)
class Directory:
    """Who and what the demo PBX has: built once from the seed."""
    employees: tuple[Employee, ...]
    providers: tuple[Provider, ...]
    groups: tuple[Group, ...]
    queues: dict[str, tuple[Employee, ...]]
    applications: tuple[Application, ...]
    callers: tuple[Caller, ...]  # repeat callers, the most frequent first

    def application(self, number: str) -> Application:
        return next(app for app in self.applications if app.number == number)


def build_directory(rng: random.Random) -> Directory:
    """Employees, trunks, groups, queues and a pool of repeat callers."""
    employees = _employees(rng)
    groups = _groups(rng, employees)
    by_user = {e.user_id: e for e in employees}
    queues = {SALES_QUEUE: tuple(by_user[u] for u in groups[0].members),
              SUPPORT_QUEUE: tuple(by_user[u] for u in groups[1].members)}
    return Directory(employees=employees, providers=_providers(rng), groups=groups,
                     queues=queues, applications=tuple(Application(*a) for a in _APPLICATIONS),
                     callers=_callers(rng))


def _employees(rng: random.Random) -> tuple[Employee, ...]:
    names = rng.sample(_EMPLOYEE_NAMES, rng.randint(20, 40))
    employees = []
    for i, name in enumerate(names):
        number = str(201 + i)
        mobile = f"79{rng.randrange(10 ** 9):09d}" if rng.random() < 0.4 else ""
        language = "en-en" if name[0] < "А" else "ru-ru"
        employees.append(Employee(
            user_id=i + 1, number=number, name=name, email=f"{number}@demo-pbx.example",
            language=language, mobile=mobile, sip_uniqid=f"SIP-PHONE-{rng.getrandbits(64):016X}"))
    return tuple(employees)


def _groups(rng: random.Random, employees: tuple[Employee, ...]) -> tuple[Group, ...]:
    """Sales and Support first (they staff the queues), then a few more; some have no group."""
    names = _GROUP_NAMES[:rng.randint(3, 5)]
    users = [e.user_id for e in employees]
    rng.shuffle(users)
    sales, support = round(len(users) * 0.35), round(len(users) * 0.3)
    rest = users[sales + support:len(users) - 2]
    cuts = [sales, sales + support] + [sales + support + len(rest) * k // (len(names) - 2)
                                       for k in range(1, len(names) - 1)]
    bounds = list(zip([0] + cuts[:-1], cuts))
    return tuple(Group(id=i + 1, name=name, members=tuple(sorted(users[lo:hi])))
                 for i, (name, (lo, hi)) in enumerate(zip(names, bounds)))


def _providers(rng: random.Random) -> tuple[Provider, ...]:
    chosen = rng.sample(_PROVIDERS, rng.randint(2, 3))
    prefixes = rng.sample(_NUMBER_PREFIXES, len(chosen))
    return tuple(
        Provider(uniqid=f"SIP-TRUNK-{rng.getrandbits(32):08X}", name=name, host=host,
                 number_prefix=prefix,
                 dids=tuple(_did(rng) for _ in range(rng.randint(1, 3))))
        for (name, host), prefix in zip(chosen, prefixes))


def _did(rng: random.Random) -> str:
    return f"7{rng.choice(('495', '499', '812', '800'))}{rng.randrange(10 ** 7):07d}"


def _callers(rng: random.Random) -> tuple[Caller, ...]:
    callers = [Caller(_random_digits(rng), rng.choice(_CALLER_NAMES) if rng.random() < 0.3 else "")
               for _ in range(_CALLER_POOL)]
    # Hostile names among frequent callers, so that even a small demo shows them.
    for name, i in zip(HOSTILE_NAMES, rng.sample(range(1, 40), len(HOSTILE_NAMES))):
        callers[i] = Caller(callers[i].digits, name)
    return tuple(callers)


def _random_digits(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return f"9{rng.randrange(10 ** 9):09d}"
    return f"{rng.choice(('495', '499', '812', '343'))}{rng.randrange(10 ** 7):07d}"


class _WallClock:
    """UTC epoch ms -> local wall-clock ms -> PBX time strings, DST-correct and cached.

    Offsets are cached per UTC quarter hour (every zone changes offset on one) and the
    "YYYY-MM-DD HH:MM:" prefix per local minute, so a string costs two dict lookups.
    """

    _CACHE_LIMIT = 50_000

    def __init__(self, tz: ZoneInfo):
        self._tz = tz
        self._offsets: dict[int, int] = {}
        self._minutes: dict[int, str] = {}

    def wall(self, utc_ms: int) -> int:
        slot = utc_ms // 900_000
        offset = self._offsets.get(slot)
        if offset is None:
            if len(self._offsets) > self._CACHE_LIMIT:
                self._offsets.clear()
            moment = datetime.fromtimestamp(slot * 900, self._tz)
            offset = self._offsets[slot] = int(moment.utcoffset().total_seconds() * 1000)
        return utc_ms + offset

    def format(self, wall_ms: int) -> str:
        """`YYYY-MM-DD HH:MM:SS.mmm`."""
        minute, within = divmod(wall_ms, _MINUTE_MS)
        return (self._minutes.get(minute) or self._minute(minute)) + _SECOND_MS[within]

    def format_seconds(self, wall_ms: int) -> str:
        """`YYYY-MM-DD HH:MM:SS`, as phone-side transfer rows are written."""
        minute, within = divmod(wall_ms, _MINUTE_MS)
        return (self._minutes.get(minute) or self._minute(minute)) + _SECOND[within // 1000]

    def _minute(self, minute: int) -> str:
        """Format a local minute's "YYYY-MM-DD HH:MM:" and cache it."""
        if len(self._minutes) > self._CACHE_LIMIT:
            self._minutes.clear()
        text = self._minutes[minute] = (_EPOCH + timedelta(minutes=minute)).strftime(
            "%Y-%m-%d %H:%M:")
        return text


class _Party(NamedTuple):
    """One side of a leg: channel, number, caller-id name, account, SIP Call-ID."""
    chan: str
    num: str
    name: str
    account: str = ""
    call_id: str = ""


class MovedLeg(NamedTuple):
    """A finished leg: when the PBX moves it to cdr_general (UTC ms), and its row."""
    moved_ms: int
    row: dict


class _Call:
    """The call being built: its ids and the legs so far."""
    __slots__ = ("seq", "linkedid", "verbose_id", "did", "recorded", "legs", "starts")

    def __init__(self, seq: int, origin_ms: int, recorded: bool):
        self.seq = seq
        self.linkedid = f"mikopbx-{origin_ms // 1000}.{seq}"
        self.verbose_id = f"C-{seq:08x}"
        self.did = ""
        self.recorded = recorded
        self.legs: list[MovedLeg] = []
        self.starts: set[int] = set()

    def originated_at(self, origin_ms: int) -> None:
        """A click-to-call's linkedid is stamped when the PBX rang the employee first."""
        self.linkedid = f"mikopbx-{origin_ms // 1000}.{self.seq}"


class DemoPbx:
    """A simulated MikoPBX: `call(kind, start_utc)` gives the rows one call leaves.

    Stateful only in what a PBX keeps between calls: its channel and uniqueid counters and the
    recently missed callers that later calls return. Calls must be asked for in start order.
    """

    def __init__(self, seed: int, timezone: str = "Europe/Moscow", *,
                 monitor_dir: str = PBX_MONITOR_DIR):
        self.timezone = timezone
        self.directory = build_directory(random.Random(f"extcdr-demo:{seed}:directory"))
        self._rng = random.Random(f"extcdr-demo:{seed}:calls")
        self._clock = _WallClock(ZoneInfo(timezone))
        self._monitor_dir = monitor_dir.rstrip("/")
        self._mix = self._rng.getrandbits(64)
        self._seq = 0
        self._channels = 0
        self._missed: list[tuple[int, Caller]] = []  # (call end ms, caller), by end
        self._scenarios = {kind: getattr(self, f"_{kind}") for kind in SCENARIO_WEIGHTS}

    def call(self, kind: str, start_utc: float) -> list[dict]:
        """cdr_general rows (column -> value, no `id`) of one call, in the order they are moved."""
        return [leg.row for leg in self.call_legs(kind, start_utc)]

    def call_legs(self, kind: str, start_utc: float) -> list[MovedLeg]:
        """Like `call`, with the UTC moment (ms) each leg completes and is moved."""
        scenario = self._scenarios.get(kind)
        if scenario is None:
            raise ValueError(f"unknown call kind {kind!r}; known: {', '.join(SCENARIO_WEIGHTS)}")
        start_ms = round(start_utc * 1000)
        call = _Call(self._next_seq(), start_ms, self._rng.random() < 0.85)
        scenario(call, start_ms)
        return sorted(call.legs, key=itemgetter(0))

    # -- scenarios: each builds the legs of one call starting at `t` (UTC ms) --------------------

    def _internal_answered(self, call: _Call, t: int) -> None:
        caller, callee = self._two_employees()
        answer = t + self._ms(2, 15)
        self._leg(call, self._phone(caller), self._phone(callee), t, answer,
                  answer + self._talk(), "ANSWER")

    def _internal_busy(self, call: _Call, t: int) -> None:
        caller, callee = self._two_employees()
        self._leg(call, self._phone(caller), _Party("", callee.number, callee.name), t, None,
                  t + self._ms(*_FAILED_RING_S["BUSY"]), "BUSY")

    def _internal_no_answer(self, call: _Call, t: int) -> None:
        caller, callee = self._two_employees()
        status = "NOANSWER" if self._rng.random() < 0.6 else "CANCEL"
        self._leg(call, self._phone(caller), self._phone(callee), t, None,
                  t + self._ms(*_FAILED_RING_S[status]), status)

    def _service_number(self, call: _Call, t: int) -> None:
        answer = t + self._ms(0.05, 0.3)
        self._leg(call, self._phone(self._employee()), self._app(SERVICE_NUMBER), t, answer,
                  answer + self._ms(5, 40), "ANSWER", app=True, recorded=False)

    def _outgoing_answered(self, call: _Call, t: int) -> None:
        self._dial_out(call, t, "ANSWER")

    def _outgoing_busy(self, call: _Call, t: int) -> None:
        self._dial_out(call, t, "BUSY")

    def _outgoing_no_answer(self, call: _Call, t: int) -> None:
        self._dial_out(call, t, "NOANSWER" if self._rng.random() < 0.7 else "CANCEL")

    def _outgoing_unavailable(self, call: _Call, t: int) -> None:
        self._dial_out(call, t, "CHANUNAVAIL" if self._rng.random() < 0.5 else "CONGESTION")

    def _click_to_call(self, call: _Call, t: int) -> None:
        """Answered click-to-call: a plain outgoing leg; the linkedid is from the originate."""
        call.originated_at(t - self._ms(2, 6))
        self._dial_out(call, t, "ANSWER")

    def _click_to_call_failed(self, call: _Call, t: int) -> None:
        """The employee's phone did not pick up the originate: only this row is moved."""
        employee = self._employee()
        status = "NOANSWER" if self._rng.random() < 0.8 else "BUSY"
        self._leg(call, _Party("", employee.number, employee.name),
                  _Party("", self._dialled(self._caller().digits), ""), t, None,
                  t + self._ms(*_FAILED_RING_S[status]), status, appname="originate")

    def _incoming_answered(self, call: _Call, t: int) -> None:
        self._answer_in(call, t, self._inbound(call, self._caller()))

    def _incoming_missed(self, call: _Call, t: int) -> None:
        caller = self._caller()
        status = "NOANSWER" if self._rng.random() < 0.6 else "CANCEL"
        end = t + self._ms(*_FAILED_RING_S[status])
        self._leg(call, self._inbound(call, caller), self._phone(self._employee()), t, None,
                  end, status)
        self._remember_missed(caller, end)

    def _ring_group(self, call: _Call, t: int) -> None:
        """Several phones ring in parallel; one answers, the others are cancelled."""
        src = self._inbound(call, self._caller())
        members = self._rng.sample(self.directory.employees, self._rng.randint(2, 4))
        self._ring(call, src, members, t, t + self._ms(3, 15), "CANCEL", answered=True)

    def _two_devices(self, call: _Call, t: int) -> None:
        """One extension registered on two devices: the second gives a `<id>_PJSIP/…` row."""
        src = self._inbound(call, self._caller())
        employee = self._employee()
        answer = t + self._ms(3, 15)
        first_answers = self._rng.random() < 0.5
        for device, style in ((0, _UID_PBX), (1, _UID_DEVICE)):
            start = t + device * self._ms(0.005, 0.02)
            if (device == 0) == first_answers:
                self._leg(call, src, self._phone(employee), start, answer,
                          answer + self._talk(), "ANSWER", uid=style)
            else:
                self._leg(call, src, self._phone(employee), start, None, answer + 15, "CANCEL",
                          uid=style)

    def _ivr_queue_answered(self, call: _Call, t: int) -> None:
        src = self._inbound(call, self._caller())
        queue_start = self._ivr(call, src, t, digit=self._rng.choice("12")) + self._ms(0.01, 0.1)
        self._queue(call, src, queue_start, answered=True)

    def _queue_missed(self, call: _Call, t: int) -> None:
        """Everybody in the queue missed it (straight from a DID, or after the IVR)."""
        caller = self._caller()
        src = self._inbound(call, caller)
        if self._rng.random() < 0.5:
            t = self._ivr(call, src, t, digit=self._rng.choice("12")) + self._ms(0.01, 0.1)
        self._remember_missed(caller, self._queue(call, src, t, answered=False))

    def _ivr_abandon(self, call: _Call, t: int) -> None:
        caller = self._caller()
        self._remember_missed(caller, self._ivr(call, self._inbound(call, caller), t, digit=""))

    def _voicemail(self, call: _Call, t: int) -> None:
        """Nobody answered; the caller left a message (answered, billsec > 0, not an app)."""
        caller = self._caller()
        src = self._inbound(call, caller)
        employee = self._employee()
        rang = t + self._ms(20, 30)
        self._leg(call, src, self._phone(employee), t, None, rang, "NOANSWER")
        start = rang + self._ms(0.05, 0.2)
        answer = start + self._ms(0.05, 0.3)
        end = answer + self._ms(8, 60)
        self._leg(call, src, _Party("VOICEMAIL", employee.number, employee.name), start, answer,
                  end, "ANSWER", recorded=True)
        self._remember_missed(caller, end)

    def _blind_transfer(self, call: _Call, t: int) -> None:
        """B talks, then transfers blind to C: by DTMF, or from the phone (SIP REFER)."""
        src = self._inbound(call, self._caller())
        first, second = self._two_employees()
        answer = t + self._ms(3, 12)
        transferred = answer + self._ms(15, 120)
        self._leg(call, src, self._phone(first), t, answer, transferred, "ANSWER")
        start = transferred + self._ms(0.02, 0.2)
        answer = start + self._ms(3, 15)
        by_phone = self._rng.random() < 0.5
        self._leg(call, src, self._phone(second), start, answer, answer + self._talk(), "ANSWER",
                  uid=_UID_BARE if by_phone else _UID_PBX, whole_seconds=by_phone,
                  record_prefix="transfer_")

    def _attended_transfer(self, call: _Call, t: int) -> None:
        """caller→B, B→C consultation, B hangs up: caller→C from then (a REFER-style row)."""
        src = self._inbound(call, self._caller())
        first, second = self._two_employees()
        b_chan, c_chan = self._phone(first), self._phone(second)
        answer = t + self._ms(3, 12)
        consult_start = answer + self._ms(10, 90)
        consult_answer = consult_start + self._ms(3, 12)
        handed_over = consult_answer + self._ms(5, 40)
        self._leg(call, src, b_chan, t, answer, handed_over, "ANSWER")
        consultation = self._leg(call, b_chan, c_chan, consult_start, consult_answer,
                                 handed_over, "ANSWER")
        start = handed_over + self._ms(0.01, 0.1)
        shared = consultation["recordingfile"]
        self._leg(call, src, c_chan, start, start, start + self._talk(), "ANSWER", uid=_UID_BARE,
                  whole_seconds=True, recording=shared if shared != "-" else None)

    def _attended_transfer_cancelled(self, call: _Call, t: int) -> None:
        """B consults C (who may not answer), then returns to the caller: still B's call."""
        src = self._inbound(call, self._caller())
        first, second = self._two_employees()
        b_chan = self._phone(first)
        answer = t + self._ms(3, 12)
        consult_start = answer + self._ms(10, 90)
        if self._rng.random() < 0.7:
            consult_answer = consult_start + self._ms(3, 12)
            consult_end = consult_answer + self._ms(5, 30)
            status = "ANSWER"
        else:
            consult_answer, consult_end, status = None, consult_start + self._ms(8, 20), "CANCEL"
        self._leg(call, b_chan, self._phone(second), consult_start, consult_answer, consult_end,
                  status)
        self._leg(call, src, b_chan, t, answer, consult_end + self._ms(10, 120), "ANSWER")

    def _pickup(self, call: _Call, t: int) -> None:
        """B's phone rings, C picks the call up; sometimes the caller drops in that second."""
        caller = self._caller()
        src = self._inbound(call, caller)
        rung, picker = self._two_employees()
        picked = t + self._ms(3, 12)
        self._leg(call, src, self._phone(rung), t, None, picked, "NOANSWER")
        start = picked + self._ms(0.01, 0.1)
        if self._rng.random() < 0.1:
            end = start + (999 - start % 1000) // 2
            self._leg(call, src, self._phone(picker), start, start, end, "ANSWER",
                      record_prefix="pickup_")
            self._remember_missed(caller, end)
        else:
            answer = start + self._ms(0.2, 1)
            self._leg(call, src, self._phone(picker), start, answer, answer + self._talk(),
                      "ANSWER", record_prefix="pickup_")

    def _client_called_back(self, call: _Call, t: int) -> None:
        """A recently missed caller calls again and gets through."""
        caller = self._take_missed(t, keep=False) or self._caller()
        self._answer_in(call, t, self._inbound(call, caller))

    def _we_called_back(self, call: _Call, t: int) -> None:
        self._dial_out(call, t, "ANSWER", self._take_missed(t, keep=False))

    def _callback_attempt(self, call: _Call, t: int) -> None:
        """An unanswered try to return a missed call; the caller stays unreturned."""
        status = "NOANSWER" if self._rng.random() < 0.7 else "BUSY"
        self._dial_out(call, t, status, self._take_missed(t, keep=True))

    def _long_call(self, call: _Call, t: int) -> None:
        """35-55 minutes of talk (the generator also puts one across each DST fall-back)."""
        self._dial_out(call, t, "ANSWER", talk=self._ms(35 * 60, 55 * 60))

    # -- building blocks ------------------------------------------------------------------------

    def _dial_out(self, call: _Call, t: int, status: str, callee: Caller | None = None, *,
                  talk: int | None = None) -> None:
        """An employee dials an external number through a trunk."""
        src = self._phone(self._employee())
        callee = callee or self._caller()
        trunk = self._trunk(self._outgoing_provider(), self._dialled(callee.digits), "")
        if status == "CHANUNAVAIL":
            trunk = trunk._replace(chan="", call_id="")
        if status == "ANSWER":
            answer = t + self._ms(4, 25)
            end = answer + (talk or self._talk())
        else:
            answer, end = None, t + self._ms(*_FAILED_RING_S[status])
        self._leg(call, src, trunk, t, answer, end, status)

    def _answer_in(self, call: _Call, t: int, src: _Party) -> None:
        """An incoming call straight to an employee who answers."""
        answer = t + self._ms(3, 18)
        self._leg(call, src, self._phone(self._employee()), t, answer, answer + self._talk(),
                  "ANSWER")

    def _ivr(self, call: _Call, src: _Party, t: int, digit: str) -> int:
        """The IVR app leg (with its prompt recording); returns when the caller left it."""
        answer = t + self._ms(0.05, 0.4)
        end = answer + self._ms(6, 25)
        self._leg(call, src, self._app(IVR_NUMBER), t, answer, end, "ANSWER", app=True,
                  dtmf=digit)
        return end

    def _queue(self, call: _Call, src: _Party, t: int, *, answered: bool) -> int:
        """A queue app leg and its ring rounds; returns when the caller left the queue.

        Members are dialled through Local channels, so their legs keep the caller's channel.
        """
        number = self._rng.choice((SALES_QUEUE, SUPPORT_QUEUE))
        members = self.directory.queues[number]
        round_start = t + self._ms(0.5, 2)
        for _ in range(self._rng.randint(0, 2)):  # rounds nobody answers: 15 s, 5 s pause
            self._ring(call, src, self._some(members), round_start, round_start + 15_000,
                       "NOANSWER")
            round_start += 20_000
        left = round_start + self._ms(2, 12)
        self._ring(call, src, self._some(members), round_start, left, "CANCEL", answered=answered)
        self._leg(call, src, self._app(number), t, left if answered else None, left,
                  "ANSWER" if answered else "NOANSWER", app=True, recorded=False)
        return left

    def _ring(self, call: _Call, src: _Party, members: list[Employee], start: int, until: int,
              status: str, *, answered: bool = False) -> None:
        """Ring phones in parallel until `until`: the first answers then if `answered`."""
        for i, member in enumerate(members):
            leg_start = start + i * self._ms(0.005, 0.03)
            if answered and i == 0:
                self._leg(call, src, self._phone(member), leg_start, until,
                          until + self._talk(), "ANSWER")
            else:
                self._leg(call, src, self._phone(member), leg_start, None, until + 7 + i, status)

    def _leg(self, call: _Call, src: _Party, dst: _Party, start: int, answer: int | None,
             end: int, status: str, *, app: bool = False, recorded: bool | None = None,
             recording: str | None = None, record_prefix: str = "", uid: int = _UID_PBX,
             whole_seconds: bool = False, appname: str = "", dtmf: str = "") -> dict:
        """Add one leg (times in UTC ms) to the call, computing what the PBX would write."""
        step = 1000 if whole_seconds else 1
        if whole_seconds:
            start -= start % 1000
        while start in call.starts:  # channels are created one after another
            start += step
        call.starts.add(start)
        seq = self._next_seq()
        base = f"{start // 1000}.{seq}"
        uniqueid = (base + "_" + self._uid_suffix(seq) if uid == _UID_PBX
                    else base + "_" + dst.chan if uid == _UID_DEVICE else base)
        clock = self._clock
        fmt = clock.format_seconds if whole_seconds else clock.format
        start_wall, end_wall = clock.wall(start), clock.wall(end)
        start_text = fmt(start_wall)
        if answer is None:
            answer_text, billsec = "", 0
            recording = ""
        else:
            answer_wall = clock.wall(answer)
            answer_text = fmt(answer_wall)
            # The PBX subtracts whole-second wall-clock times: negative across a DST fall-back.
            billsec = end_wall // 1000 - answer_wall // 1000
            if recording is None:
                keep = call.recorded if recorded is None else recorded
                recording = (self._recording_path(start_text, record_prefix + uniqueid)
                             if keep else "-")
        row = {
            "start": start_text, "endtime": fmt(end_wall), "answer": answer_text,
            "src_chan": src.chan, "src_num": src.num, "dst_chan": dst.chan, "dst_num": dst.num,
            "UNIQUEID": uniqueid, "linkedid": call.linkedid, "did": call.did,
            "disposition": ("ANSWERED" if billsec > 0
                            else _KEPT_DISPOSITIONS.get(status, "NOANSWER")),
            "recordingfile": recording, "from_account": src.account, "to_account": dst.account,
            "dialstatus": status, "appname": appname, "transfer": 0, "is_app": "1" if app else "",
            "duration": max(0, end_wall // 1000 - start_wall // 1000), "billsec": billsec,
            "work_completed": "1", "src_call_id": src.call_id, "dst_call_id": dst.call_id,
            "verbose_call_id": call.verbose_id, "a_transfer": 0,
            "rec_src_channel": src.chan if len(recording) > 1 else "", "dtmf_digits": dtmf,
            "src_name": src.name, "dst_name": dst.name,
        }
        call.legs.append(MovedLeg(end, row))
        return row

    def _recording_path(self, start_text: str, name: str) -> str:
        """`<monitor>/YYYY/MM/DD/HH/<name>.mp3` by the leg's local start."""
        t = start_text
        return (f"{self._monitor_dir}/{t[:4]}/{t[5:7]}/{t[8:10]}/{t[11:13]}/"
                f"{name.replace('/', '-')}.mp3")

    def _phone(self, employee: Employee) -> _Party:
        """A new channel on the employee's phone."""
        n = self._new_channel()
        return _Party(f"PJSIP/{employee.number}-{n:08x}", employee.number, employee.name, "",
                      self._sip_call_id(n))

    def _trunk(self, provider: Provider, number: str, name: str) -> _Party:
        n = self._new_channel()
        return _Party(f"PJSIP/{provider.uniqid}-{n:08x}", number, name, provider.uniqid,
                      f"{self._sip_call_id(n)}@{provider.host}")

    def _app(self, number: str) -> _Party:
        app = self.directory.application(number)
        pseudo = "Queue:" if app.type == "QUEUE" else "App:"
        return _Party(pseudo + number, number, app.name)

    def _inbound(self, call: _Call, caller: Caller) -> _Party:
        """The caller's trunk channel; sets the call's DID."""
        provider = self._rng.choice(self.directory.providers)
        call.did = self._rng.choice(provider.dids)
        number = provider.number_prefix + caller.digits
        return self._trunk(provider, number, caller.name or number)

    def _outgoing_provider(self) -> Provider:
        providers = self.directory.providers
        return providers[0] if self._rng.random() < 0.6 else self._rng.choice(providers[1:])

    def _dialled(self, digits: str) -> str:
        """The number as an employee types it: 8…, +7… or 7…."""
        prefix = self._rng.choices(_NUMBER_PREFIXES, cum_weights=_DIAL_PREFIX_CUM)[0]
        return prefix + digits

    def _caller(self) -> Caller:
        """A repeat caller (the first ones call most) or a new number."""
        callers = self.directory.callers
        if self._rng.random() < 0.6:
            return callers[int(len(callers) * self._rng.random() ** 2.5)]
        return Caller(_random_digits(self._rng), "")

    def _employee(self) -> Employee:
        return self._rng.choice(self.directory.employees)

    def _some(self, members: tuple[Employee, ...]) -> list[Employee]:
        """One to three of a queue's members, as a ring round reaches them."""
        return self._rng.sample(members, min(len(members), self._rng.randint(1, 3)))

    def _two_employees(self) -> list[Employee]:
        return self._rng.sample(self.directory.employees, 2)

    def _remember_missed(self, caller: Caller, end_ms: int) -> None:
        bisect.insort(self._missed, (end_ms, caller), key=itemgetter(0))

    def _take_missed(self, now_ms: int, *, keep: bool) -> Caller | None:
        """A caller missed before `now_ms`: mostly within the last day, sometimes older.

        Missed calls nobody returns within four days are forgotten (never returned).
        """
        missed = self._missed
        del missed[:bisect.bisect_left(missed, now_ms - 4 * _DAY_MS, key=itemgetter(0))]
        ended = bisect.bisect_left(missed, now_ms - _MINUTE_MS, key=itemgetter(0))
        day_old = bisect.bisect_left(missed, now_ms - _DAY_MS, key=itemgetter(0))
        if ended == 0:
            return None
        if day_old and (day_old == ended or self._rng.random() < 0.15):
            i = self._rng.randrange(day_old)
        else:
            i = self._rng.randrange(day_old, ended)
        return missed[i][1] if keep else missed.pop(i)[1]

    def _ms(self, low_s: float, high_s: float) -> int:
        """A random duration in [low_s, high_s) seconds, as ms."""
        return int((low_s + (high_s - low_s) * self._rng.random()) * 1000)

    def _talk(self) -> int:
        """Talk time: mostly a minute or two, some long."""
        return int(min(3000.0, 4 + self._rng.expovariate(1 / 110)) * 1000)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _new_channel(self) -> int:
        self._channels += 1
        return self._channels

    def _uid_suffix(self, n: int) -> str:
        """Six base-36 characters that look random but are a function of `n` and the seed."""
        h = ((n * 0x9E3779B97F4A7C15) ^ self._mix) % 2_176_782_336  # 36 ** 6
        return _B36_PAIRS[h // 1_679_616] + _B36_PAIRS[h // 1296 % 1296] + _B36_PAIRS[h % 1296]

    def _sip_call_id(self, n: int) -> str:
        return f"{((n * 0xD6E8FEB86659FD93) ^ self._mix) & _MASK64:016x}"


# -- the traffic plan --------------------------------------------------------------------------

def plan_calls(calls: int, end_day: date, tz: ZoneInfo,
               rng: random.Random) -> Iterator[tuple[int, str]]:
    """(start UTC ms, kind) of `calls` calls on the days ending on `end_day`, in start order.

    About 500-1300 calls per weekday, a few at weekends; the oldest day gets what is left.
    On a day the clocks go back, one long call crosses the change.
    """
    volumes = []
    day, left = end_day, calls
    while left > 0:
        n = min(left, _day_volume(day, rng))
        volumes.append((day, n))
        left -= n
        day -= timedelta(days=1)
    kinds = list(SCENARIO_WEIGHTS)
    cum_weights = list(accumulate(SCENARIO_WEIGHTS.values()))
    for day, n in reversed(volumes):
        day_calls = list(zip(_day_starts(day, n, tz, rng),
                             rng.choices(kinds, cum_weights=cum_weights, k=n)))
        fall_back = _fall_back(day, tz)
        if fall_back is not None:
            day_calls[-1] = (fall_back - 25 * _MINUTE_MS - rng.randrange(180_000), "long_call")
            day_calls.sort()
        yield from day_calls


def _day_volume(day: date, rng: random.Random) -> int:
    weekday_volume = rng.randint(500, 1300)
    if day.weekday() == 5:
        return max(1, weekday_volume // 20)
    if day.weekday() == 6:
        return max(1, weekday_volume // 60)
    return weekday_volume


def _day_starts(day: date, n: int, tz: ZoneInfo, rng: random.Random) -> list[int]:
    """Sorted UTC ms of `n` call starts on a local day: weekdays by the hour profile."""
    if day.weekday() >= 5:
        local = [10 * _HOUR_MS + int(rng.random() * 8 * _HOUR_MS) for _ in range(n)]
    else:
        local = [h * _HOUR_MS + int(rng.random() * _HOUR_MS)
                 for h in rng.choices(_HOURS, cum_weights=_HOUR_CUM, k=n)]
    local.sort()
    midnight = datetime(day.year, day.month, day.day)
    first, last = _utc_ms(midnight, tz), _utc_ms(midnight + timedelta(days=1), tz)
    if last - first == _DAY_MS:  # no DST change today
        return [first + ms for ms in local]
    return sorted(_utc_ms(midnight + timedelta(milliseconds=ms), tz) for ms in local)


def _utc_ms(naive_local: datetime, tz: ZoneInfo) -> int:
    return round(naive_local.replace(tzinfo=tz).timestamp() * 1000)


def _fall_back(day: date, tz: ZoneInfo) -> int | None:
    """The UTC ms at which the clocks go back on this local day, if they do."""
    midnight = datetime(day.year, day.month, day.day)
    start, end = _utc_ms(midnight, tz), _utc_ms(midnight + timedelta(days=1), tz)
    if end - start <= _DAY_MS:
        return None
    moment = start
    offset = datetime.fromtimestamp(start / 1000, tz).utcoffset()
    while datetime.fromtimestamp(moment / 1000, tz).utcoffset() == offset:
        moment += 900_000
    return moment


# -- writing a demo PBX ------------------------------------------------------------------------

@dataclass
class DemoStats:
    """What `generate` wrote."""
    calls_by_kind: dict[str, int]
    legs: int
    recordings_written: int
    first_start: datetime | None  # local, aware; None when no calls
    last_end: datetime | None
    paths: list[pathlib.Path] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(self.calls_by_kind.values())


def generate(out: pathlib.Path, calls: int, seed: int, *, end_day: date | None = None,
             timezone: str = "Europe/Moscow", recordings_limit: int = 2000,
             progress: Callable[[int], None] | None = None, overwrite: bool = False,
             monitor_dir: str = PBX_MONITOR_DIR) -> DemoStats:
    """Write a demo PBX into `out`: cdr.db, mikopbx.db, the users-groups and phone book DBs
    and recordings.

    `calls` calls end on `end_day` (default: today in `timezone`). Only the newest
    `recordings_limit` recordings get files under `out/monitor/` (older rows keep their path,
    as on a PBX that deleted old files). Rows name recordings under `monitor_dir` (the PBX's
    path by default; pass `str(out / "monitor")` to make them point at the written files).
    Raises ValueError when `out` already holds a demo PBX, unless `overwrite` (which removes
    the databases and the monitor folder this function writes, and nothing else).
    `progress(n)` is called with the number of calls written so far, now and then and at the end.
    """
    if calls < 0 or recordings_limit < 0:
        raise ValueError("calls and recordings_limit must not be negative")
    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {timezone!r}") from None
    out = pathlib.Path(out)
    _prepare(out, overwrite)
    end_day = end_day or datetime.now(tz).date()
    pbx = DemoPbx(seed, timezone, monitor_dir=monitor_dir)
    write_config_db(out / CONFIG_DB, pbx.directory, timezone)
    write_groups_db(out / GROUPS_DB, pbx.directory)
    write_phonebook_db(out / PHONEBOOK_DB, pbx.directory)
    plan = plan_calls(calls, end_day, tz, random.Random(f"extcdr-demo:{seed}:plan"))
    writer = _CdrWriter(out / CDR_DB, recordings_limit)
    try:
        kinds = _replay(pbx, plan, writer, progress)
    finally:
        writer.close()
    written = _write_recordings(out / MONITOR, monitor_dir, writer.recordings)
    span = [datetime.fromtimestamp(ms / 1000, tz) for ms in (writer.first_ms, writer.last_ms)
            if ms is not None]
    return DemoStats(calls_by_kind=dict(sorted(kinds.items())), legs=writer.legs,
                     recordings_written=written,
                     first_start=span[0] if span else None, last_end=span[-1] if span else None,
                     paths=[out / CDR_DB, out / CONFIG_DB, out / GROUPS_DB, out / PHONEBOOK_DB,
                            out / MONITOR])


def _prepare(out: pathlib.Path, overwrite: bool) -> None:
    databases = [out / CDR_DB, out / CONFIG_DB, out / GROUPS_DB, out / PHONEBOOK_DB]
    existing = [p for p in databases if p.exists()]
    if existing and not overwrite:
        raise ValueError(f"{existing[0]} already exists; choose an empty folder or overwrite")
    if overwrite:
        _remove_demo(out, databases)
    (out / GROUPS_DB).parent.mkdir(parents=True, exist_ok=True)
    (out / PHONEBOOK_DB).parent.mkdir(parents=True, exist_ok=True)


def _remove_demo(out: pathlib.Path, databases: list[pathlib.Path]) -> None:
    for db in databases:
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            path.unlink(missing_ok=True)
    shutil.rmtree(out / MONITOR, ignore_errors=True)


def _replay(pbx: DemoPbx, plan: Iterable[tuple[int, str]], writer: _CdrWriter,
            progress: Callable[[int], None] | None) -> Counter:
    """Run the planned calls through the PBX into the writer; count them by kind."""
    kinds: Counter = Counter()
    done = 0
    for start_ms, kind in plan:
        writer.move_until(start_ms)
        writer.add(pbx.call_legs(kind, start_ms / 1000), start_ms)
        kinds[kind] += 1
        done += 1
        if progress and done % 10_000 == 0:
            progress(done)
    writer.move_until(None)
    if progress and done % 10_000:
        progress(done)
    return kinds


class _CdrWriter:
    """Inserts legs into cdr_general in the order the PBX moves them, in big batches.

    Legs wait in a heap until no later call can finish before them (calls arrive in start
    order, so a leg ending before the next call's start is final). Indexes are built at the
    end, and the file is left in WAL mode like the PBX's.
    """

    _BATCH = 50_000

    def __init__(self, path: pathlib.Path, recordings_limit: int):
        self._ddl = cdr_ddl("cdr_general")
        self._conn = create(str(path), self._ddl[:1] + cdr_ddl("cdr"))
        self._conn.execute("PRAGMA journal_mode=OFF")
        self._conn.execute("PRAGMA synchronous=OFF")
        columns = [c for c in cdr_column_names() if c != "id"]
        self._insert = (f"INSERT INTO cdr_general ({', '.join(columns)}) "
                        f"VALUES ({', '.join('?' * len(columns))})")
        self._as_tuple = itemgetter(*columns)
        self._recording_at = columns.index("recordingfile")
        self._billsec_at = columns.index("billsec")
        self._pending: list[tuple[int, int, tuple]] = []
        self._batch: list[tuple] = []
        self._queued = 0
        self._recordings_limit = recordings_limit
        self.recordings: OrderedDict[str, int] = OrderedDict()  # path -> seconds of talk
        self.legs = 0
        self.first_ms: int | None = None
        self.last_ms: int | None = None

    def add(self, legs: list[MovedLeg], start_ms: int) -> None:
        if self.first_ms is None:
            self.first_ms = start_ms
        for moved_ms, row in legs:
            self._queued += 1
            heapq.heappush(self._pending, (moved_ms, self._queued, self._as_tuple(row)))

    def move_until(self, ms: int | None) -> None:
        """Move every waiting leg that ends by `ms` (all of them when None)."""
        pending, batch = self._pending, self._batch
        while pending and (ms is None or pending[0][0] <= ms):
            moved_ms, _, row = heapq.heappop(pending)
            batch.append(row)
            self._note_recording(row[self._recording_at], row[self._billsec_at])
            self.last_ms = moved_ms
        if len(batch) >= self._BATCH or (ms is None and batch):
            self._conn.executemany(self._insert, batch)
            self.legs += len(batch)
            batch.clear()

    def _note_recording(self, path: str, billsec: int) -> None:
        """Keep the newest `recordings_limit` distinct recordings, by the order rows arrive,
        with the longest talk of the legs naming each (a consultation's shares its file)."""
        if len(path) > 1 and self._recordings_limit:
            self.recordings[path] = max(billsec, self.recordings.pop(path, 0))
            if len(self.recordings) > self._recordings_limit:
                self.recordings.popitem(last=False)

    def close(self) -> None:
        conn = self._conn
        conn.commit()
        for statement in self._ddl[1:]:
            conn.execute(statement)
        conn.commit()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.close()


_INSERT_SIP = ("INSERT INTO m_Sip (uniqid, disabled, extension, type, host, port, username, "
               "secret, description) VALUES (?, '0', ?, ?, ?, 5060, ?, ?, ?)")


def write_config_db(path: pathlib.Path, directory: Directory, timezone: str) -> None:
    """The PBX config DB: users, extensions, SIP peers and trunks, providers, settings."""
    conn = create(str(path), PBX_CONFIG_DDL)
    with conn:
        for e in directory.employees:
            conn.execute("INSERT INTO m_Users (id, email, username, language, avatar) "
                         "VALUES (?, ?, ?, ?, '')", (e.user_id, e.email, e.name, e.language))
            _insert_extension(conn, e.number, "SIP", e.name, e.user_id, general=True)
            conn.execute(_INSERT_SIP, (e.sip_uniqid, e.number, "peer", "", e.number,
                                       _fake_secret(e.sip_uniqid), e.name))
            if e.mobile:
                _insert_extension(conn, e.mobile, "EXTERNAL", e.name, e.user_id, general=False)
        for app in directory.applications:
            _insert_extension(conn, app.number, app.type, app.name, None, general=False)
        for p in directory.providers:
            conn.execute(_INSERT_SIP, (p.uniqid, "", "friend", p.host, p.dids[0],
                                       _fake_secret(p.uniqid), p.name))
            conn.execute("INSERT INTO m_Providers (uniqid, type, sipuid, iaxuid, note) "
                         "VALUES (?, 'SIP', ?, '', ?)", (p.uniqid, p.uniqid, p.name))
        conn.executemany("INSERT INTO m_PbxSettings (key, value) VALUES (?, ?)", (
            ("Name", "Demo PBX"), ("PBXTimezone", timezone), ("PBXLanguage", "ru-ru"),
            ("PBXInternalExtensionLength", "3"), ("PBXRecordCalls", "1"),
            ("PBXVersion", DEMO_PBX_VERSION), ("AMIPort", "5038")))
    conn.close()


DEMO_PBX_VERSION = "2024.2.20"


def _insert_extension(conn: sqlite3.Connection, number: str, kind: str, callerid: str,
                      userid: int | None, *, general: bool) -> None:
    conn.execute("INSERT INTO m_Extensions (number, type, callerid, userid, show_in_phonebook, "
                 "public_access, is_general_user_number) VALUES (?, ?, ?, ?, '1', '0', ?)",
                 (number, kind, callerid, userid, "1" if general else "0"))


def _fake_secret(uniqid: str) -> str:
    return hashlib.sha256(f"demo-secret:{uniqid}".encode()).hexdigest()[:16]


def write_groups_db(path: pathlib.Path, directory: Directory) -> None:
    """ModuleUsersGroups' DB: the groups and their members."""
    conn = create(str(path), USERS_GROUPS_DDL)
    with conn:
        for group in directory.groups:
            conn.execute("INSERT INTO m_ModuleUsersGroups_UsersGroups (id, name, description, "
                         "defaultGroup) VALUES (?, ?, '', '0')", (group.id, group.name))
            conn.executemany("INSERT INTO m_ModuleUsersGroups_GroupMembers (user_id, group_id) "
                             "VALUES (?, ?)", [(user, group.id) for user in group.members])
    conn.close()


# The PBX's phone book (ModulePhoneBook): names for some of the frequent callers, one of them
# markup (shown as text), one a formula (exported as text).
_PHONEBOOK_NAMES = (
    "MIKO - Nikolay Beketov", "ООО «Вектор» — Ирина", "Globex Support", "Склад на Лесной",
    "Dr. Hoffmann", "<i>VIP</i> Кузнецов", "=Partner Ltd", "Бюро переводов",
)


def write_phonebook_db(path: pathlib.Path, directory: Directory) -> None:
    """ModulePhoneBook's DB: every other of the most frequent callers, named."""
    conn = create(str(path), PHONEBOOK_DDL)
    with conn:
        for name, caller in zip(_PHONEBOOK_NAMES, directory.callers[::2]):
            d = caller.digits
            shown = f"+7 ({d[:3]}) {d[3:6]}-{d[6:8]}-{d[8:]}"
            conn.execute("INSERT INTO m_PhoneBook (number, number_rep, call_id, search_index) "
                         "VALUES (?, ?, ?, ?)",
                         (int("1" + d[-9:]), shown, name, name.lower() + d + shown))
    conn.close()


# One MPEG-2 Layer III frame of silence: 8 kbit/s (the lowest), 16 kHz, mono; 576 samples
# (36 ms) in 36 bytes — header, zeroed side information (no audio data), zero bytes.
_MP3_FRAME = b"\xff\xf3\x18\xc0" + bytes(32)
_MP3_FRAMES_PER_9_S = 250


def silent_mp3(seconds: int) -> bytes:
    """A constant-bitrate MP3 of silence lasting `seconds` (rounded up to a frame), 1 KB/s."""
    return _MP3_FRAME * max(1, -(-max(0, seconds) * _MP3_FRAMES_PER_9_S // 9))


class RecordingFiles:
    """Recording files as long as their legs' talk, under `folder`, for paths the rows name
    under `written_as` (the PBX's monitor dir). Cheap: one file per distinct length is
    written; the others of that length are hard links to it."""

    def __init__(self, folder: pathlib.Path, written_as: str = PBX_MONITOR_DIR):
        self.folder = pathlib.Path(folder)
        self.prefix = written_as.rstrip("/") + "/"
        self._by_length: dict[int, pathlib.Path] = {}

    def write(self, path: str, seconds: int) -> bool:
        """The file of one recording path; False when the path is not under `written_as`."""
        if not path.startswith(self.prefix):
            return False
        target = self.folder / path[len(self.prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)      # never write through a link into another file
        seconds = max(0, seconds)
        same = self._by_length.get(seconds)
        if same is not None:
            try:
                os.link(same, target)
                return True
            except OSError:                  # gone meanwhile, or no hard links here
                pass
        target.write_bytes(silent_mp3(seconds))
        self._by_length[seconds] = target
        return True


def _write_recordings(monitor: pathlib.Path, monitor_dir: str, recordings: dict[str, int]) -> int:
    """Silent MP3 files, as long as the talk, for the recordings the rows name under
    `monitor_dir`."""
    files = RecordingFiles(monitor, monitor_dir)
    return sum(files.write(path, seconds) for path, seconds in recordings.items())


# The demo's tags, as an admin lists them on the settings page (made once; kept when changed).
DEMO_TAGS = (("Sales lead", "green"), ("Complaint", "red"), ("Call back", "orange"),
             ("Жалоба", "purple"))


def add_demo_report(module_db: pathlib.Path, link_base: str) -> None:
    """The demo's admin mails "Missed calls" every morning, and has listed a few tags (each
    made once; kept when changed)."""
    db = open_module_db(module_db)
    try:
        if not tag_list(db):
            for name, colour in DEMO_TAGS:
                create_tag(db, Actor("admin", admin=True), name, colour)
        if reports_of(db, "admin"):
            return
        filter_id = save_filter(db, "admin", "Missed calls", {"period": "today", "tab": "missed"},
                                default=False)
        form = report_form({"name": "Missed calls every morning", "filter": str(filter_id),
                            "period": "yesterday", "frequency": "daily", "at": "08:00",
                            "format": "xlsx", "delivery": "attach", "link_hours": "72",
                            "recipients": "manager@demo.example"}, "en")
        clock = PbxClock(sync_state(db).get("timezone") or "UTC")
        save_report(db, Owner("admin", "admin", ()), form, link_base=link_base, clock=clock)
    finally:
        db.close()


DEMO_HOOK = "Demo CRM"


DEMO_CRM_HOST = "127.0.0.1"      # the demo's CRM receiver runs on this machine


def allow_demo_crm(module_dir: pathlib.Path) -> None:
    """Let the module's webhooks reach the demo's CRM on this machine (an admin lists such a
    host in webhooks.allowed_hosts: by default a hook is never sent to the PBX itself)."""
    update_settings(module_dir, "webhooks", {"allowed_hosts": DEMO_CRM_HOST})


def join_central_history(module_dir: pathlib.Path, url: str, pbx_id: str) -> None:
    """The module writes and shows the central history at `url` as PBX `pbx_id`, as an admin
    sets `module.db` and `pbx.id` in its settings file (README: Many PBXs)."""
    update_settings(module_dir, "module", {"db": url})
    update_settings(module_dir, "pbx", {"id": pbx_id})


def wait_for_central_history(url: str, *pbxs: str, timeout_s: float = 300) -> str:
    """Wait until the central history at `url` holds the calls of each PBX (`ID=CDR_DB`: its
    id and call history) up to a few legs of its newest, as its daemon writes them; the ids
    of the PBXs still behind after `timeout_s`, space-separated."""
    behind = dict(pbx.split("=", 1) for pbx in pbxs)
    deadline = time.monotonic() + timeout_s
    while behind and time.monotonic() < deadline:
        try:
            db = open_module_db(url, readonly=True)
        except (ModuleDbError, peewee.DatabaseError):   # no tables yet: no daemon has begun
            db = None
        if db is not None:
            try:
                state = sync_state(db)
            finally:
                db.close()
            for pbx, cdr_db in list(behind.items()):
                with CdrSource(cdr_db).reading() as reader:
                    newest = reader.max_id()
                if newest - int(state.get(state_key("cursor", pbx), 0)) < 50:
                    del behind[pbx]
        time.sleep(0.5 if behind else 0)
    return " ".join(behind)


def add_demo_webhook(module_db: pathlib.Path, url: str) -> str:
    """The demo's webhook to its CRM receiver at `url` (events missed, answered, callback and
    unreturned after 2 minutes), as an admin saves it in Settings -> Webhooks; made once, its
    URL moved to `url` on later runs. Returns the hook's secret, which the receiver checks."""
    values = webhooks.hook_values({"name": DEMO_HOOK, "url": url, "events": webhooks.EVENTS,
                                   "unreturned_after_min": "2", "enabled": "on"},
                                  [DEMO_CRM_HOST])
    db = open_module_db(module_db)
    try:
        found = [hook for hook in webhooks.hooks(db) if hook["name"] == DEMO_HOOK]
        if found:
            webhooks.change_hook(db, found[0]["id"], values)
            return found[0]["secret"]
        return webhooks.hook_of(db, webhooks.create_hook(db, values, "admin"))["secret"]
    finally:
        db.close()
