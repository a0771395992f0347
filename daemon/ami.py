"""The AMI link: follow Asterisk's manager interface on pyst2, so that nothing on the wire can
stop the daemon.

`AmiLink` keeps one AMI session alive forever. Each connection is a fresh pyst2 `Manager` (one
cannot reconnect); the link logs in, sends `Ping` after `ping_interval` seconds of silence and
starts over with a jittered backoff (1 s doubling to 30 s) after a refusal, a drop, a Ping left
unanswered or a failed login (that one is retried at the slowest pace). Each problem is logged
once, when it starts; the recovery is logged once too.

Events reach their handler through one table `{event name: handler}`: an event nobody handles
is counted and dropped without being parsed. A handler gets the event's headers (`Headers`, a
dict whose lookups ignore key case); one that raises is logged once per kind and the next event
is dispatched as if nothing happened.

`_Manager` is pyst2's `Manager` with what `toolchain.md` lists as broken replaced (pyst2 keeps
the threads and queues, the ActionID sequence, `ping()`, the message class and exceptions):

* `connect` opens the socket with a timeout and reads the banner within it (a peer that stays
  silent or resets before the banner fails the attempt instead of blocking it);
* `message_loop`, pyst2's reader, reads 64 KiB per `recv` (pyst2 reads one byte per call) and
  cuts messages on CRLF CRLF only, so bare LFs inside values stay in them; a message longer than
  `max_message` is skipped up to its end; events go to the dispatcher in one batch per read;
* `ManagerMsg.parse` (`_Message`) collects repeated `*ChanVariable: name=value` headers into a
  dict instead of dying on `dict.has_key`;
* `send_action` waits, bounded, for the response carrying its own ActionID (pyst2 takes the next
  response, whatever it answers); `login` adds `Events: on`;
* `event_dispatch` calls handlers from the table and contains their exceptions;
* `close` never waits for the peer: a Logoff sent only if it fits in the socket buffer, then the
  socket shut down under the reader, then the threads joined within a timeout.
"""
from __future__ import annotations

import base64
import json
import logging
import queue
import random
import re
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from asterisk.manager import (Manager, ManagerAuthException, ManagerException, ManagerMsg,
                              ManagerSocketException)

from pbx.tables import cdr_column_names

Handler = Callable[["Headers"], None]

DEFAULT_MAX_MESSAGE = 256 * 1024   # bytes; real events are < 4 KiB, a CdrConnector < 1 KiB
_READ_SIZE = 64 * 1024
_END = b"\r\n\r\n"
_BANNER_MAX = 4096
_JITTER = 0.2                      # each delay is shortened by up to this fraction
_EVENT_PREFIX = b"Event:"

log = logging.getLogger("extcdr.ami")


# --- messages ----------------------------------------------------------------------------------

def _lookup_folded(mapping: Mapping[str, object], key: str, default=None):
    """`mapping[key]` with the key's case ignored (exact spelling first)."""
    if key in mapping:
        return mapping[key]
    folded = key.lower()
    for name, value in mapping.items():
        if name.lower() == folded:
            return value
    return default


_MISSING = object()


class Headers(dict):
    """The headers of one AMI message. Lookups (`[]`, `get`) ignore key case: Asterisk spells
    `Uniqueid` or `UniqueID`, `Linkedid` or `LinkedID` depending on the event. `in` is exact."""

    __slots__ = ()

    def __missing__(self, key):
        value = _lookup_folded(self, key, _MISSING) if isinstance(key, str) else _MISSING
        if value is _MISSING:
            raise KeyError(key)
        return value

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default


def parse_message(text: str) -> tuple[Headers, str]:
    """The headers and free text of one AMI message (the text between two blank lines).

    Lines end with CRLF only: a bare LF stays inside its value. `Key:` alone is an empty header.
    Repeated `*ChanVariable: name=value` headers (`ChanVariable`, `DestChanVariable`,
    `LocalOneChanVariable`, ...) collect into a dict under their key; other repeated keys keep
    every value, joined by LF (a Command's `Output:` lines). Lines without a colon are free text.
    """
    fields: dict = {}
    free_text = []
    for line in text.split("\r\n"):
        key, colon, value = line.partition(":")
        if not colon:
            if line:
                free_text.append(line)
            continue
        key = key.strip()
        value = value.strip()
        if key.endswith("ChanVariable"):
            variables = fields.get(key)
            if not isinstance(variables, dict):
                variables = fields[key] = {}
            name, _, variable = value.partition("=")
            variables[name] = variable
        elif key in fields:
            fields[key] = f"{fields[key]}\n{value}"
        else:
            fields[key] = value
    return Headers(fields), "\n".join(free_text)


class _Message(ManagerMsg):
    """pyst2's message, parsed by `parse_message` (pyst2's `parse` dies on `ChanVariable`)."""

    def parse(self, response: str) -> None:
        self.headers, self.data = parse_message(response)


def _leading_event_name(frame: bytes) -> str | None:
    """The event name of a frame that starts with `Event:` (nearly all do), without parsing it."""
    if not frame.startswith(_EVENT_PREFIX):
        return None
    end = frame.find(b"\r\n")
    return frame[len(_EVENT_PREFIX):end if end >= 0 else None].strip().decode("utf-8", "replace")


def _decode(frame: bytes) -> str:
    return frame.decode("utf-8", "replace")


def encode_action(action: Mapping[str, object]) -> bytes:
    """An action on the wire: `Key: value` lines (a list value repeats its key), a blank line."""
    lines = []
    for key, value in action.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{key}: {item}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8")


class FrameReader:
    """Cuts a byte stream into AMI messages: each ends with a blank line (CRLF CRLF).

    A message longer than `max_bytes` is dropped, whether it arrives whole or grows without an
    end: bytes are then skipped up to its end, so memory stays bounded by `max_bytes` plus one
    read. `on_oversize` is called once per dropped message.
    """

    def __init__(self, max_bytes: int, on_oversize: Callable[[], None]):
        self.max_bytes = max_bytes
        self.on_oversize = on_oversize
        self.pending = b""
        self.skipping = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """The messages completed by `chunk`, in order (without their blank line)."""
        data = self.pending + chunk if self.pending else chunk
        if self.skipping:
            end = data.find(_END)
            if end < 0:
                self.pending = data[-(len(_END) - 1):]  # the end may straddle two reads
                return []
            data = data[end + len(_END):]
            self.skipping = False
        frames = data.split(_END)
        self.pending = frames.pop()
        if len(self.pending) > self.max_bytes:
            self.pending = self.pending[-(len(_END) - 1):]
            self.skipping = True
            self.on_oversize()
        if any(len(frame) > self.max_bytes for frame in frames):
            frames = self._without_oversize(frames)
        return frames

    def _without_oversize(self, frames: list[bytes]) -> list[bytes]:
        kept = []
        for frame in frames:
            if len(frame) > self.max_bytes:
                self.on_oversize()
            else:
                kept.append(frame)
        return kept


# --- one connection: pyst2's Manager, hardened -------------------------------------------------

@dataclass
class LinkStats:
    """What the link has seen since it started (all connections together)."""
    events: int = 0            # event messages received, handled or not
    reconnects: int = 0        # sessions established after the first one
    oversize_dropped: int = 0  # messages dropped for being longer than max_message
    handler_errors: int = 0    # handler calls that raised


class _Manager(Manager):
    """pyst2's `Manager` for one connection, with the overrides listed in the module docstring."""

    def __init__(self, handlers: Mapping[str, Handler], stats: LinkStats, *,
                 connect_timeout: float, answer_timeout: float, max_message: int,
                 warn_once: Callable[..., None], on_end: Callable[[], None]):
        super().__init__()
        self.message_thread.name = "ami-reader"
        self.event_dispatch_thread.name = "ami-dispatch"
        self.handlers = handlers
        self.stats = stats
        self.connect_timeout = connect_timeout
        self.answer_timeout = answer_timeout
        self.last_heard = time.monotonic()
        self._warn_once = warn_once
        self._on_end = on_end
        self._frames = FrameReader(max_message, self._dropped_oversize)
        self._answers: dict[str, queue.SimpleQueue] = {}   # ActionID -> its response, or None
        self._send_lock = threading.Lock()
        self._closed = False
        self.logged_in = False

    def connected(self) -> bool:
        return self._connected.is_set()

    # --- connecting and closing ----------------------------------------------------------------

    def connect(self, host: str, port: int = 5038) -> str:
        """Connect, read the banner, start the reader and dispatcher; returns the banner.

        Raises ManagerSocketException when the peer refuses, stays silent for
        `connect_timeout`, closes or resets before the banner, or sends something else.
        """
        try:
            sock = self._sock = socket.create_connection((host, int(port)), self.connect_timeout)
            self._fail_if_closed()
            banner = self._read_banner(sock)
            self._fail_if_closed()
            sock.settimeout(self.answer_timeout)  # bounds sends; the reader just reads again
        except OSError as exc:  # also a socket closed under us by close()
            raise ManagerSocketException(f"cannot connect: {exc.strerror or exc}") from None
        self.title, _, self.version = banner.partition("/")
        self._connected.set()
        self._running.set()
        self.message_thread.start()
        self.event_dispatch_thread.start()
        return banner

    def _fail_if_closed(self) -> None:
        """close() may come from another thread at any moment of connect()."""
        if self._closed:
            raise ManagerSocketException("closed while connecting")

    def _read_banner(self, sock: socket.socket) -> str:
        """`Asterisk Call Manager/x.y.z` (the first line); what follows goes to the reader."""
        deadline = time.monotonic() + self.connect_timeout
        received = b""
        while b"\r\n" not in received:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or len(received) > _BANNER_MAX:
                raise ManagerSocketException(f"no AMI banner within {self.connect_timeout:g} s")
            try:
                sock.settimeout(remaining)
                chunk = sock.recv(_BANNER_MAX)
            except TimeoutError:
                continue
            except OSError as exc:
                raise ManagerSocketException(
                    f"connection lost before the banner: {exc.strerror or exc}") from None
            if not chunk:
                raise ManagerSocketException("connection closed before the banner")
            received += chunk
        line, _, rest = received.partition(b"\r\n")
        banner = _decode(line).strip()
        if "/" not in banner:
            raise ManagerSocketException(f"not an AMI banner: {banner[:60]!r}")
        self._route(self._frames.feed(rest))
        return banner

    def close(self, timeout: float = 1.0) -> None:
        """End this connection within `timeout`, whatever the peer does (idempotent)."""
        deadline = time.monotonic() + timeout
        self._closed = True
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.settimeout(0)  # a send must not wait for a peer that does not read
                if self._connected.is_set():
                    sock.send(encode_action({"Action": "Logoff"}))  # polite, if it fits now
            except OSError:
                pass
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in recv()
            except OSError:
                pass
            sock.close()
        self._running.clear()
        for thread in (self.message_thread, self.event_dispatch_thread):
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    # --- actions -------------------------------------------------------------------------------

    def send_action(self, cdict: Mapping[str, object] = {}, **kwargs) -> ManagerMsg:
        """Send an action and return the response carrying its ActionID.

        Raises ManagerSocketException when the connection is down or ends, the action cannot
        be written, or no answer comes within `answer_timeout`.
        """
        if not self._connected.is_set():
            raise ManagerSocketException("not connected")
        action = {**cdict, **kwargs}
        action_id = action.setdefault("ActionID", f"{self.hostname}-{self.next_seq():08x}")
        answer = self._answers[action_id] = queue.SimpleQueue()
        try:
            self._write(encode_action(action))
            response = answer.get(timeout=self.answer_timeout)
        except queue.Empty:
            raise ManagerSocketException(f"no answer to {action.get('Action')} within "
                                         f"{self.answer_timeout:g} s") from None
        finally:
            del self._answers[action_id]
        if response is None:
            raise ManagerSocketException("connection lost")
        return response

    def login(self, username: str, secret: str) -> ManagerMsg:
        """Log in with events on; raises ManagerAuthException when refused."""
        response = self.send_action({"Action": "Login", "Username": username, "Secret": secret,
                                     "Events": "on"})
        if response.get_header("Response") != "Success":
            raise ManagerAuthException(response.get_header("Message") or "login refused")
        self.logged_in = True
        return response

    def _write(self, data: bytes) -> None:
        sock = self._sock
        try:
            if sock is None:
                raise OSError("closed")
            with self._send_lock:
                sock.sendall(data)
        except OSError as exc:
            raise ManagerSocketException(f"cannot write: {exc.strerror or exc}") from None

    # --- reading and dispatching (pyst2's two threads) -----------------------------------------

    def message_loop(self) -> None:
        """The reader thread: buffered reads until the connection ends, then wake everyone."""
        try:
            self._read_until_closed()
        except Exception as exc:  # a bug here must end this connection, not the link
            self._warn_once(("reader", type(exc)), "AMI reader failed (%s: %s); reconnecting",
                            type(exc).__name__, exc, exc_info=exc)
        finally:
            self._connected.clear()
            self._event_queue.put(None)
            for answer in list(self._answers.values()):
                answer.put(None)
            self._on_end()

    def _read_until_closed(self) -> None:
        while self._running.is_set():
            sock = self._sock
            if sock is None:
                return
            try:
                chunk = sock.recv(_READ_SIZE)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            self.last_heard = time.monotonic()
            self._route(self._frames.feed(chunk))

    def _route(self, frames: Iterable[bytes]) -> None:
        """Events with a handler to the dispatcher (one batch), responses to their waiter."""
        batch = []
        handlers = self.handlers
        for frame in frames:
            name = _leading_event_name(frame)
            if name is None:
                message = _Message(_decode(frame))
                name = message.headers.get("Event")
                if name is None:
                    self._answer(message)
                    continue
                headers = message.headers
            else:
                headers = None
            self.stats.events += 1
            handler = handlers.get(name)
            if handler is not None:
                if headers is None:
                    headers = parse_message(_decode(frame))[0]
                batch.append((handler, headers))
        if batch:
            self._event_queue.put(batch)

    def _answer(self, response: ManagerMsg) -> None:
        answer = self._answers.get(response.get_header("ActionID"))
        if answer is not None:
            answer.put(response)

    def event_dispatch(self) -> None:
        """The dispatcher thread: run handlers in arrival order until the connection ends."""
        while True:
            batch = self._event_queue.get()
            if batch is None:
                return
            for handler, event in batch:
                try:
                    handler(event)
                except Exception as exc:
                    self._handler_failed(event, exc)

    def _handler_failed(self, event: Headers, exc: Exception) -> None:
        self.stats.handler_errors += 1
        name = event.get("Event")
        self._warn_once(("handler", name, type(exc)),
                        "AMI %s handler failed (%s: %s); event skipped, further %s errors of "
                        "this kind only counted", name, type(exc).__name__, exc, name,
                        exc_info=exc)

    def _dropped_oversize(self) -> None:
        self.stats.oversize_dropped += 1
        self._warn_once(("oversize",),
                        "AMI message longer than %d bytes dropped (skipped to its end); further "
                        "ones only counted", self._frames.max_bytes)


# --- the link: sessions forever ----------------------------------------------------------------

class Backoff:
    """Delays between attempts: from `first` doubling to `most`, each shortened by up to 20% at
    random so that clients restarted together do not reconnect in step."""

    def __init__(self, first: float, most: float, rand: Callable[[], float] = random.random):
        self.first, self.most = first, most
        self.rand = rand
        self.delay = first

    def next(self) -> float:
        """The next delay of a run of failures."""
        delay, self.delay = self.delay, min(self.most, self.delay * 2)
        return self._jittered(delay)

    def slowest(self) -> float:
        """The longest delay (for failures that waiting does not fix soon: a refused login)."""
        return self._jittered(self.most)

    def reset(self) -> None:
        self.delay = self.first

    def _jittered(self, delay: float) -> float:
        return delay * (1 - _JITTER * self.rand())


class AmiLink:
    """Follows one Asterisk manager interface until `stop()`; see the module docstring.

    `handlers` is the dispatch table `{event name: handler(headers)}`, called on one
    dispatcher thread in arrival order. `connect_timeout` bounds the TCP connect and the wait
    for the banner; `ping_timeout` bounds the answer to any action (Login, Ping); `ping_interval`
    is the silence after which the link pings; `backoff` is (first, longest) delay between
    attempts; `max_message` the longest message kept (bytes). `connected` is True while logged
    in; `stats` counts events, reconnects, dropped oversize messages and handler errors.
    `on_login(send_action)` runs after each login (e.g. to ask what is under way); what it
    raises is logged and the session goes on. The secret is never logged.
    """

    def __init__(self, host: str, port: int, username: str, secret: str,
                 handlers: Mapping[str, Handler], *, connect_timeout: float = 5.0,
                 ping_interval: float = 10.0, ping_timeout: float = 5.0,
                 backoff: tuple[float, float] = (1.0, 30.0),
                 max_message: int = DEFAULT_MAX_MESSAGE, log: logging.Logger = log,
                 on_login: Callable[[Callable[..., ManagerMsg]], None] | None = None):
        self.host, self.port = host, int(port)
        self.on_login = on_login
        self.username, self._secret = username, secret
        self.handlers = dict(handlers)
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_message = max_message
        self.stats = LinkStats()
        self._log = log
        self._backoff = Backoff(*backoff)
        self._stopping = threading.Event()
        self._wake = threading.Event()        # the session ended, or stop() was called
        self._manager: _Manager | None = None
        self._thread: threading.Thread | None = None
        self._sessions = 0
        self._complaint: str | None = None    # the kind of problem logged last, until recovery
        self._warned: set = set()

    @property
    def connected(self) -> bool:
        """Logged in, on a connection that is still up."""
        manager = self._manager
        return manager is not None and manager.logged_in and manager.connected()

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        """Start following the PBX in a background thread; never raises for network problems."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ami-link", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop and disconnect; returns within `timeout` whatever the peer does."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        manager = self._manager
        if manager is not None:
            manager.close(timeout / 2)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.monotonic()))

    # --- the supervisor thread -----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                delay = self._session()
            except Exception as exc:  # a bug must not end the link
                self._warn_once(("link", type(exc)), "AMI link failed (%s: %s); starting over",
                                type(exc).__name__, exc, exc_info=exc)
                delay = self._backoff.next()
            self._stopping.wait(delay)

    def _session(self) -> float:
        """One connection from connect to its end; returns the seconds to wait before the next."""
        manager = self._manager = _Manager(
            self.handlers, self.stats, connect_timeout=self.connect_timeout,
            answer_timeout=self.ping_timeout, max_message=self.max_message,
            warn_once=self._warn_once, on_end=self._wake.set)
        try:
            if self._stopping.is_set():
                return 0.0
            try:
                banner = manager.connect(self.host, self.port)
                manager.login(self.username, self._secret)
            except ManagerAuthException as exc:
                self._complain("refused", f"AMI login as {self.username!r} refused by "
                               f"{self.where} ({exc}); retrying every {self._backoff.most:g} s")
                return self._backoff.slowest()
            except ManagerException as exc:
                self._complain("unavailable", f"AMI {self.where} unavailable ({exc}); retrying, "
                               f"backing off up to {self._backoff.most:g} s")
                return self._backoff.next()
            started = time.monotonic()
            self._logged_in(banner)
            if self.on_login is not None:
                try:
                    self.on_login(manager.send_action)
                except ManagerException as exc:
                    self._log.info("AMI %s: after login: %s", self.where, exc)
            reason = self._keepalive(manager)
            if reason is None:
                return 0.0
            if time.monotonic() - started >= self._backoff.most:
                self._backoff.reset()  # a healthy session; a flapping peer keeps backing off
            self._complain("lost", f"AMI link to {self.where} lost ({reason}); reconnecting")
            return self._backoff.next()
        finally:
            manager.close()
            self._manager = None

    def _logged_in(self, banner: str) -> None:
        self._sessions += 1
        if self._sessions > 1:
            self.stats.reconnects += 1
        if self._sessions == 1 or self._complaint is not None:
            self._log.info("AMI connected to %s (%s) as %r", self.where, banner, self.username)
        self._complaint = None

    def _keepalive(self, manager: _Manager) -> str | None:
        """Watch a live session: Ping after silence. Returns why it ended (None: stopped)."""
        while True:
            self._wake.clear()
            if self._stopping.is_set():
                return None
            if not manager.connected():
                return "closed by the peer"
            silence = time.monotonic() - manager.last_heard
            if silence < self.ping_interval:
                self._wake.wait(self.ping_interval - silence)
                continue
            try:
                manager.ping()
            except ManagerException as exc:
                return str(exc)

    # --- logging each problem once -------------------------------------------------------------

    def _complain(self, kind: str, message: str) -> None:
        """Log a connection problem when it starts; repeats of its kind go to debug (the cause
        of one outage may vary from attempt to attempt: refused, reset, no banner...)."""
        if self._stopping.is_set():
            return
        if kind != self._complaint:
            self._log.warning(message)
            self._complaint = kind
        else:
            self._log.debug(message)

    def _warn_once(self, kind: tuple, message: str, *args, exc_info=None) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            self._log.warning(message, *args, exc_info=exc_info)


# --- what the daemon needs from events -------------------------------------------------------

# MikoPBX's CdrConnector actions after which cdr_general holds new legs of the payload's
# linkedid: UpdateDataInDB announces each leg moved there (work_completed = 1).
LEGS_FINISHED_ACTIONS = frozenset({"hangup_update_cdr"})
_MAX_PAYLOAD = 1024 * 1024   # decompressed CdrConnector payload


def cdr_connector_payload(event: Mapping[str, object]) -> dict | None:
    """The JSON payload of MikoPBX's `UserEvent: CdrConnector` (header `AgiData`), or None.

    MikoPBX sends base64 of a JSON object (`AsteriskManager::encodeCdrData`); payloads whose
    base64 exceeds 900 bytes are gzip-compressed and prefixed `GZ:`. Anything undecodable: None.
    """
    if str(_lookup_folded(event, "Event", "")).lower() != "userevent" or \
            str(_lookup_folded(event, "UserEvent", "")).lower() != "cdrconnector":
        return None
    encoded = _lookup_folded(event, "AgiData")
    if not isinstance(encoded, str) or not encoded:
        return None
    try:
        if encoded.startswith("GZ:"):
            inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)  # gzip framing
            data = inflater.decompress(_b64decode(encoded[3:]), _MAX_PAYLOAD)
        else:
            data = _b64decode(encoded)
        payload = json.loads(data)
    except (ValueError, zlib.error):  # binascii, JSON and UTF-8 errors are ValueErrors
        return None
    return payload if isinstance(payload, dict) else None


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def linkedid_of_event(event: Mapping[str, object]) -> str | None:
    """The linkedid of the call whose legs this event says changed, or None.

    * `Hangup`: its `Linkedid` header (any case).
    * `UserEvent` `CdrConnector` whose action is in LEGS_FINISHED_ACTIONS (`hangup_update_cdr`):
      the payload's `linkedid`, else the event's own `Linkedid` header (present when the
      dialplan raised it). Other actions (dial, answer, transfers...) only touch the PBX's
      in-progress table: None.
    """
    name = str(_lookup_folded(event, "Event", ""))
    if name == "Hangup":
        return _lookup_folded(event, "Linkedid") or None
    payload = cdr_connector_payload(event)
    if payload is None or payload.get("action") not in LEGS_FINISHED_ACTIONS:
        return None
    linkedid = payload.get("linkedid") or _lookup_folded(event, "Linkedid")
    return str(linkedid) if linkedid else None


# Stock Asterisk's cdr_manager: Disposition -> (cdr_general disposition, dialstatus).
_DISPOSITIONS = {
    "ANSWERED": ("ANSWERED", "ANSWER"),
    "NO ANSWER": ("NOANSWER", "NOANSWER"),
    "BUSY": ("BUSY", "BUSY"),
    "FAILED": ("CHANUNAVAIL", "CHANUNAVAIL"),
    "CONGESTION": ("CONGESTION", "CONGESTION"),
}
# Dialplan applications after which a leg without a destination channel talked to a machine
# (MikoPBX marks such legs is_app = '1'); a failed Dial has no destination either, but rang no one.
_MACHINE_APPS = frozenset(app.lower() for app in (
    "Answer", "BackGround", "ConfBridge", "Echo", "MeetMe", "MusicOnHold", "Playback", "Read",
    "Record", "SayDigits", "SayNumber", "VoiceMail", "VoiceMailMain", "Wait", "WaitExten"))
_CALLERID = re.compile(r'^\s*"?(?P<name>[^"<]*?)"?\s*<(?P<number>[^>]*)>\s*$')
_CDR_COLUMNS = tuple(name for name in cdr_column_names() if name != "id")


def cdr_event_to_row(event: Mapping[str, object]) -> dict:
    """A stock Asterisk `Cdr` event (cdr_manager) as a `cdr_general` row (every column but id).

    Times stay the PBX's local `YYYY-MM-DD HH:MM:SS` strings, as MikoPBX writes them. Without a
    `LinkedID` (cdr_manager sends it only when mapped in `[mappings]`), each leg is its own
    call. Columns Asterisk does not know (DID, recordings, SIP Call-IDs, transfers) are empty.
    """
    def field(name: str) -> str:
        return str(_lookup_folded(event, name, "") or "").strip()

    uniqueid = field("UniqueID")
    disposition, dialstatus = _DISPOSITIONS.get(field("Disposition").upper(),
                                                (field("Disposition"), ""))
    dst_chan = field("DestinationChannel")
    machine = not dst_chan and field("LastApplication").lower() in _MACHINE_APPS
    row = dict.fromkeys(_CDR_COLUMNS, "")
    row.update(
        start=field("StartTime"), answer=field("AnswerTime"), endtime=field("EndTime"),
        src_chan=field("Channel"), src_num=field("Source"),
        src_name=_caller_name(field("CallerID"), field("Source")),
        dst_chan=dst_chan, dst_num=field("Destination"),
        UNIQUEID=uniqueid, linkedid=field("LinkedID") or uniqueid,
        disposition=disposition, dialstatus=dialstatus, from_account=field("AccountCode"),
        is_app="1" if machine else "", transfer=0, a_transfer=0,
        duration=_seconds(field("Duration")), billsec=_seconds(field("BillableSeconds")),
        work_completed="1")
    return row


def _caller_name(callerid: str, number: str) -> str:
    """The name in Asterisk's `"Name" <number>`; a bare value is a name unless it is the number."""
    match = _CALLERID.match(callerid)
    if match:
        return match["name"].strip()
    return "" if callerid in (number, "<unknown>") else callerid


def _seconds(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
