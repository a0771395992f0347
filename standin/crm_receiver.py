"""`extcdr crm-receiver`: a stand-in CRM for the demo (and development) that takes the module's
webhooks over real HTTP. Each POST is checked as the README's Webhooks section tells a receiver
to (`mirror.webhooks.verify`: the hook's secret, the signature over `<timestamp>.<body>`, a
timestamp within 5 minutes): 200 when it verifies, 401 when not. Every delivery, good or bad,
is kept as a line of `deliveries.jsonl` in the folder; `GET /` lists them, newest first."""
from __future__ import annotations

import argparse
import html
import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mirror import webhooks

LOG_NAME = "deliveries.jsonl"
MAX_BODY = 1 << 20            # a call with its legs is a few KB; more is not a delivery
SHOWN = 200                   # deliveries on the page
_COLUMNS = ("received", "event", "linkedid", "caller", "callee", "verified", "idempotency_key")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="127.0.0.1:8070", metavar="HOST:PORT",
                        help="where to take deliveries (loopback; port 0: any free port)")
    parser.add_argument("--secret", required=True, help="the hook's secret (its settings page)")
    parser.add_argument("--out", required=True, type=Path,
                        help=f"folder for {LOG_NAME} (one line per delivery)")


class DeliveryLog:
    """The deliveries kept, one JSON object a line; appended from the server's threads."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / LOG_NAME
        self.lock = threading.Lock()
        self.verified_keys = {entry["idempotency_key"] for entry in self.newest(None)
                              if entry["verified"]}

    def add(self, entry: dict) -> dict:
        with self.lock:
            entry["repeat"] = entry["verified"] and entry["idempotency_key"] in self.verified_keys
            if entry["verified"]:
                self.verified_keys.add(entry["idempotency_key"])
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(entry, ensure_ascii=False) + "\n")
        return entry

    def newest(self, limit: int | None = SHOWN) -> list[dict]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in reversed(lines)][:limit]


def delivery_entry(secret: str, headers, body: bytes, now_s: float) -> dict:
    """What the CRM keeps of one POST: whether it verifies, and the call it names. The event
    and the idempotency key are read from the signed body, never from the headers (they are
    not signed: a replay could change them)."""
    verified = webhooks.verify(secret, headers.get(webhooks.TIMESTAMP_HEADER, ""), body,
                               headers.get(webhooks.SIGNATURE_HEADER, ""), now_s)
    try:
        payload = json.loads(body)
    except ValueError:
        payload = {}
    payload = payload if isinstance(payload, dict) else {}
    call = payload.get("call") if isinstance(payload.get("call"), dict) else {}
    return {"received": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now_s)),
            "event": payload.get("event"),
            "linkedid": call.get("linkedid"),
            "caller": _party(call.get("src"), call.get("src_name")),
            "callee": _party(call.get("dst"), call.get("dst_name")),
            "verified": verified,
            "idempotency_key": payload.get("idempotency_key")}


def _party(number, name) -> str:
    return " ".join(str(part) for part in (number, f"({name})" if name else None) if part)


def page(entries: list[dict]) -> str:
    """The deliveries as an HTML table, every value escaped (names come from callers)."""
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(entry, column))}</td>" for column in _COLUMNS)
        + "</tr>\n" for entry in entries)
    head = "".join(f"<th>{html.escape(column.replace('_', ' '))}</th>" for column in _COLUMNS)
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"refresh\" content=\"5\"><title>Demo CRM: webhooks</title>"
            "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}"
            "tr:nth-child(even){background:#f3f3f3}</style></head><body>"
            f"<h1>Demo CRM: webhooks received</h1><p>{len(entries)} shown, newest first; "
            "the page reloads every 5 seconds.</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>\n{rows}</tbody></table>"
            "</body></html>\n")


def _cell(entry: dict, column: str) -> str:
    value = entry.get(column)
    if column == "verified":
        return ("yes" + (" (repeat)" if entry.get("repeat") else "")) if value else "NO"
    return "" if value is None else str(value)


def make_server(host: str, port: int, secret: str, log: DeliveryLog) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = self.headers.get("Content-Length", "")
            if not length.isdigit() or int(length) > MAX_BODY:
                return self._answer(400 if not length.isdigit() else 413, {"error": "length"})
            body = self.rfile.read(int(length))
            entry = log.add(delivery_entry(secret, self.headers, body, time.time()))
            print(f"{entry['event']} {entry['linkedid']} "
                  f"{'verified' if entry['verified'] else 'REFUSED: bad signature'}", flush=True)
            if entry["verified"]:
                return self._answer(200, {"ok": True, "repeat": entry["repeat"]})
            return self._answer(401, {"error": "bad signature or timestamp"})

        def do_GET(self):
            if self.path.split("?")[0] != "/":
                return self._answer(404, {"error": "not found"})
            self._send(200, "text/html; charset=utf-8", page(log.newest()).encode())

        def _answer(self, status: int, data: dict) -> None:
            self._send(status, "application/json", json.dumps(data).encode())

        def _send(self, status: int, kind: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def run(args: argparse.Namespace) -> int:
    host, _, port = args.listen.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"--listen must be HOST:PORT, not {args.listen!r}")
    log = DeliveryLog(args.out)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())   # before anyone may know it runs
    server = make_server(host, int(port), args.secret, log)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"CRM receiver listening on http://{host}:{server.server_address[1]}/, keeping "
          f"deliveries in {log.path}", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.shutdown()
    server.server_close()
    return 0
