"""Mirror rows -> the call record contract of `call-semantics.md` (JSON/JSONL, API, exports)."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import orjson

from mirror.contacts import outside_name

RECORD_FIELDS = ("linkedid", "start", "end", "direction", "status", "reason", "src", "src_name",
                 "dst", "dst_name", "external_number", "did", "line", "answered_by", "missed_by",
                 "transferred_to", "employees", "wait_s", "talk_s", "duration_s", "recordings",
                 "callback_of", "returned_by", "callback_attempts", "legs", "queue",
                 "queue_wait_s", "tags", "comments", "hangup", "contact", "external_name", "pbx")


def iso_time(epoch_ms: int, tz: ZoneInfo) -> str:
    """ISO 8601 with the PBX timezone's offset at that instant."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz).isoformat(timespec="seconds")


LIVE_FIELDS = ("linkedid", "start", "direction", "state", "since", "src", "src_name", "dst",
               "dst_name", "external_number", "did", "line", "employees", "parties")


def json_line(record: dict) -> str:
    """A record as one line of JSON Lines (UTF-8 as it is; orjson: six times the standard
    library's encoder on call records, the bulk of a JSON Lines export)."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE).decode()


def live_record(row: dict, tz: ZoneInfo) -> dict:
    """A call in progress (see `queries.calls_in_progress`) as a public record."""
    record = {name: row.get(name) for name in LIVE_FIELDS}
    record["start"] = iso_time(row["start_ms"], tz)
    record["since"] = iso_time(row["since_ms"], tz)
    record["parties"] = [{**party, "since": iso_time(party["since"], tz)}
                         for party in row["parties"]]
    return record


def call_record(row: dict, tz: ZoneInfo) -> dict:
    """A call row (list fields decoded, see `queries.call_rows`; named by
    `contacts.with_contacts`) as the public record."""
    record = {name: row.get(name) for name in RECORD_FIELDS}
    record["start"] = iso_time(row["start_ms"], tz)
    record["end"] = iso_time(row["end_ms"], tz)
    record["legs"] = row["leg_count"]
    record["tags"] = [tag["name"] for tag in row.get("tags", ())]
    record["comments"] = [comment_record(c, tz) for c in row.get("comments", ())]
    hangup = row.get("hangup")
    record["hangup"] = None if hangup is None else {
        "side": hangup["side"], "number": hangup["number"], "cause": hangup["cause"],
        "cause_txt": hangup["cause_txt"]}
    contact = row.get("contact")
    record["contact"] = None if contact is None else {
        name: contact[name] for name in ("name", "company", "source", "id")}
    record["external_name"] = outside_name(row)
    return record


def leg_records(legs: list[dict], tz: ZoneInfo) -> list[dict]:
    """A call's legs (`queries.legs_of_call`) as public records: times ISO 8601, no row id."""
    for leg in legs:
        leg.pop("id")
        for name in ("start", "answer", "end"):
            value = leg.pop(f"{name}_ms")
            leg[name] = iso_time(value, tz) if value is not None else None
    return legs


def comment_record(comment: dict, tz: ZoneInfo) -> dict:
    """A comment (`mirror.annotations.comments_of`) as a public record."""
    return {"id": comment["id"], "author": comment["author"], "text": comment["text"],
            "created": iso_time(comment["created_ms"], tz),
            "edited": iso_time(comment["edited_ms"], tz) if comment["edited_ms"] else None}
