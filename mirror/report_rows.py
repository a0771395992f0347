"""The mailed reports' rows in module.db: definitions (each function takes the owner), their
sends, the links' secret. What a report is and how it is checked: `reports.definitions`."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from peewee import Database

from mirror.dialect import claim_rows, hold, inserted_id, let_go, write_transaction
from mirror.models import ModuleSecret, Report, ReportSend, SavedFilter
from mirror.queries import Visibility, within_pbxs


class ReportError(ValueError):
    """A report definition users can correct; the message says how."""


def link_secret(db: Database) -> bytes:
    return bytes(ModuleSecret.select(ModuleSecret.value)
                 .where(ModuleSecret.name == "report_links").bind(db).scalar())



@dataclass(frozen=True)
class Owner:
    """Who a report belongs to and what they may see: the role, extensions and PBXs of their
    last visit (the admin shell's word), applied to every send."""
    name: str
    role: str
    extensions: tuple[str, ...]
    scope: str = "involved"
    pbxs: tuple[str, ...] = ()      # a user limited to some PBXs of a central history

    @property
    def visible_to(self) -> Visibility | None:
        return Visibility.of(self.role, self.extensions, self.scope, self.pbxs)

    def kept(self) -> dict:
        """The report's owner columns for this owner."""
        return {"owner_role": self.role, "owner_extensions": json.dumps(self.extensions),
                "owner_scope": self.scope, "owner_pbxs": json.dumps(self.pbxs)}

    @classmethod
    def of_report(cls, report: dict) -> "Owner":
        """The owner a report's row keeps: what each of its sends may show."""
        return cls(report["owner"], report["owner_role"],
                   tuple(json.loads(report["owner_extensions"])), report["owner_scope"],
                   tuple(json.loads(report["owner_pbxs"])))


def store_report(db: Database, owner: Owner, values: dict, filter_id: int, name: str,
                 report_id: int | None = None) -> int:
    """Create the owner's report with the columns `values`, or change their report
    `report_id`; returns its id. The saved filter must be theirs, the name not yet taken."""
    with write_transaction(db):
        if filter_id and not SavedFilter.select().where(
                SavedFilter.id == filter_id, SavedFilter.user == owner.name).bind(db).exists():
            raise ReportError("choose one of your saved filters")
        taken = Report.select(Report.id).where(Report.owner == owner.name,
                                               Report.name == name).bind(db).scalar()
        if taken is not None and taken != report_id:
            raise ReportError(f"you already have a report named {name!r}")
        if report_id is None:
            return inserted_id(db, Report.insert({Report.owner: owner.name, **values}))
        _owned(db, owner.name, report_id)
        Report.update(values).where(Report.id == report_id).bind(db).execute()
        return report_id


def reports_of(db: Database, owner: str | None, limited_to=()) -> list[dict]:
    """The owner's reports (everyone's for None; for an admin limited to the PBXs
    `limited_to`, those of owners limited to some of them) by owner and name, each with its
    last send."""
    query = Report.select().order_by(Report.owner, Report.name)
    if owner is not None:
        query = query.where(Report.owner == owner)
    rows = [row for row in query.bind(db).dicts()
            if within_pbxs(json.loads(row["owner_pbxs"]), limited_to)]
    for row in rows:
        row["recipients"] = json.loads(row["recipients"])
        row["last_send"] = (ReportSend.select().where(ReportSend.report_id == row["id"])
                            .order_by(ReportSend.id.desc()).limit(1).bind(db).dicts().first())
    return rows


def report_of(db: Database, owner: str, report_id: int) -> dict:
    """One of the owner's reports; LookupError for anyone else's."""
    found = next((r for r in reports_of(db, owner) if r["id"] == report_id), None)
    if found is None:
        raise LookupError(report_id)
    return found


def sends_of(db: Database, owner: str, report_id: int, limit: int = 50) -> list[dict]:
    """The send log of the owner's report, newest first."""
    _owned(db, owner, report_id)
    return list(ReportSend.select().where(ReportSend.report_id == report_id)
                .order_by(ReportSend.id.desc()).limit(limit).bind(db).dicts())


def send_of(db: Database, owner: str, send_id: int) -> dict:
    """A send of one of the owner's reports; LookupError for anyone else's."""
    row = ReportSend.select().where(ReportSend.id == send_id).bind(db).dicts().first()
    if row is None:
        raise LookupError(send_id)
    _owned(db, owner, row["report_id"])
    return row


def request_send(db: Database, owner: str, report_id: int, now_s: float) -> None:
    """"Send now": the scheduler sends the report at its next look, period relative to now."""
    with write_transaction(db):
        _owned(db, owner, report_id)
        Report.update(requested_ms=int(now_s * 1000)).where(Report.id == report_id) \
            .bind(db).execute()


def delete_report(db: Database, owner: str | None, report_id: int, limited_to=()) -> None:
    """The report and its log go; the scheduler removes files no send refers to. `owner`
    None: any user's (an admin stopping the reports of someone who left; one limited to the
    PBXs `limited_to`: of someone limited to some of them)."""
    with write_transaction(db):
        _owned(db, owner, report_id, limited_to)
        ReportSend.delete().where(ReportSend.report_id == report_id).bind(db).execute()
        Report.delete().where(Report.id == report_id).bind(db).execute()


def reports_using(db: Database, owner: str, filter_id: int) -> list[str]:
    """Names of the owner's reports that mail the saved filter `filter_id`."""
    return [name for (name,) in Report.select(Report.name).where(
        Report.owner == owner, Report.filter_id == filter_id).bind(db).tuples()]


def remember_owner(db: Database, owner: Owner) -> None:
    """The owner's role, extensions, scope and PBXs as the admin shell says now: their reports
    follow."""
    kept = owner.kept()
    with write_transaction(db):
        Report.update(kept).where(
            (Report.owner == owner.name)
            & ((Report.owner_role != kept["owner_role"])
               | (Report.owner_extensions != kept["owner_extensions"])
               | (Report.owner_scope != kept["owner_scope"])
               | (Report.owner_pbxs != kept["owner_pbxs"]))
        ).bind(db).execute()


def _owned(db: Database, owner: str | None, report_id: int, limited_to=()) -> None:
    query = Report.select(Report.owner_pbxs).where(Report.id == report_id)
    if owner is not None:
        query = query.where(Report.owner == owner)
    pbxs = query.bind(db).scalar()
    if pbxs is None or not within_pbxs(json.loads(pbxs), limited_to):
        raise LookupError(report_id)


# --- the scheduler's side: sends -------------------------------------------------------------

SEND_COLUMNS = ("id", "report_id", "due_ms", "attempts", "file")
# A send being mailed (`dialect.hold`): the scheduler's that claimed it or took up its retry,
# until `let_go_of`. With several daemons on a central history another's send, under way,
# is theirs; one whose daemon died (its locks went with its connection) anyone's.
SEND = "report send"


def claim_due(db: Database, now_ms: int,
              following_run: Callable[[dict], int | None]) -> list[tuple[dict, dict]]:
    """Due reports become `sending` rows of the log, and their next run moves on (to
    `following_run(report)`, epoch ms), in one transaction: a crash afterwards resumes the
    send, never repeats it. Returns (report, send) rows, each held until `let_go_of`."""
    claimed = []
    with write_transaction(db):
        reports = list(claim_rows(db, Report.select().where(
            ((Report.enabled == 1) & (Report.next_run_ms <= now_ms))
            | Report.requested_ms.is_null(False))).bind(db).dicts())
        for report in reports:
            scheduled = bool(report["enabled"]) and report["next_run_ms"] is not None \
                and report["next_run_ms"] <= now_ms
            due_ms = report["next_run_ms"] if scheduled else report["requested_ms"]
            changes = {Report.requested_ms: None}
            if scheduled:           # "send now" alone leaves the schedule as it is
                changes[Report.next_run_ms] = following_run(report)
            Report.update(changes).where(Report.id == report["id"]).bind(db).execute()
            send_id = inserted_id(db, ReportSend.insert(
                report_id=report["id"], due_ms=due_ms, period_start_ms=0, period_end_ms=0,
                status="sending", recipients=report["recipients"],
                delivery=report["delivery"]))
            hold(db, SEND, send_id)          # before the commit shows the row to others
            claimed.append((report, {"id": send_id, "report_id": report["id"],
                                     "due_ms": due_ms, "attempts": 0, "file": None}))
    return claimed


def retries_due(db: Database, now_ms: int) -> list[tuple[dict, dict]]:
    """Sends to try again, with their report: retries whose time came, and sends a crash
    interrupted (not another daemon's, under way), each held until `let_go_of`."""
    def due():
        return ReportSend.select(*(getattr(ReportSend, c) for c in SEND_COLUMNS)).where(
            ((ReportSend.status == "retrying") & (ReportSend.next_attempt_ms <= now_ms))
            | (ReportSend.status == "sending"))
    found = []
    for send_id in [send["id"] for send in due().bind(db).dicts()]:
        if not hold(db, SEND, send_id):
            continue
        # read again once held: the daemon that held it may have finished it meanwhile
        send = due().where(ReportSend.id == send_id).bind(db).dicts().first()
        report = None if send is None else Report.select().where(
            Report.id == send["report_id"]).bind(db).dicts().first()
        if report is None:
            let_go(db, SEND, send_id)
        else:
            found.append((report, send))
    return found


def let_go_of(db: Database, send_id: int) -> None:
    """A send claimed or taken up for a retry is over (its outcome recorded)."""
    let_go(db, SEND, send_id)


def next_due_ms(db: Database) -> list[int]:
    """When the next report is due and the next retry, as far as there are any."""
    return [t for t in (
        Report.select(Report.next_run_ms).where(Report.enabled == 1)
        .order_by(Report.next_run_ms).limit(1).bind(db).scalar(),
        ReportSend.select(ReportSend.next_attempt_ms)
        .where(ReportSend.status == "retrying")
        .order_by(ReportSend.next_attempt_ms).limit(1).bind(db).scalar()) if t]


def saved_filter_params(db: Database, report: dict) -> str | None:
    """The JSON parameters of the report's saved filter, if its owner still has it."""
    return SavedFilter.select(SavedFilter.params).where(
        SavedFilter.id == report["filter_id"], SavedFilter.user == report["owner"]) \
        .bind(db).scalar()


def send_row(db: Database, send_id: int) -> dict | None:
    """A send of any report (the scheduler's, and a download link's, own check)."""
    return ReportSend.select().where(ReportSend.id == send_id).bind(db).dicts().first()


def record_send(db: Database, send_id: int, **values) -> None:
    """Columns of one send."""
    with write_transaction(db):
        ReportSend.update(values).where(ReportSend.id == send_id).bind(db).execute()


def expired_files(db: Database, now_ms: int) -> list[int]:
    """Sends finished whose file's link expired."""
    return [i for (i,) in ReportSend.select(ReportSend.id).where(
        ReportSend.file.is_null(False) & (ReportSend.expires_ms <= now_ms)
        & ReportSend.status.in_(("sent", "failed"))).bind(db).tuples()]


def forget_files(db: Database, send_ids: list[int]) -> None:
    with write_transaction(db):
        ReportSend.update(file=None).where(ReportSend.id.in_(send_ids)).bind(db).execute()


def sends_with_files(db: Database) -> set[int]:
    return {i for (i,) in ReportSend.select(ReportSend.id)
            .where(ReportSend.file.is_null(False)).bind(db).tuples()}


def sending(db: Database, send_id: int) -> bool:
    """Whether a send is under way or waits to be tried again."""
    return ReportSend.select().where(ReportSend.id == send_id,
                                     ReportSend.status.in_(("sending", "retrying"))) \
        .bind(db).exists()
