"""The daemon's scheduler of mailed reports. `ReportScheduler.step(now)` sends what is due —
reports whose time came, "send now" requests and retries — and says when to look again;
`run()` calls it from its own thread. Every send is a row of `report_send` (the log users see):
the file is built with the exports' own writers from the owner's saved filter over the report's
period, limited to what the owner may see — the calls, or an analytics report of them — then
mailed attached or as a signed link. A failure to mail is retried with growing delays; a
report that cannot be built fails at once."""
from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from exports.analytics_files import report_about, write_report
from exports.writers import MEDIA_TYPES, about, chosen_columns, export_file
from mirror import report_rows
from mirror.analytics import build_report, report_options
from mirror.pbxtime import PbxClock
from mirror.queries import QueryError
from mirror.report_rows import Owner, link_secret
from mirror.settings import reports_dir
from mirror.userdata import user_settings
from reports import templates as message_templates
from reports.definitions import ANALYTICS, Timing, link_signature, report_params, split_filters
from reports.mailer import MailError, mail_settings, message, pbx_settings, send
from reports.worker import Worker

log = logging.getLogger("extcdr.reports")
# The total an analytics report's mail gives as its {{ calls }}; other reports: their rows.
CALLS_TOTAL = {"traffic": "calls", "menus": "calls", "queues": "offered", "callbacks": "missed"}

class SendFailed(Exception):
    """A send that cannot succeed by retrying (the report itself must change)."""


@dataclass
class _Due:
    report: dict
    send: dict


class ReportScheduler(Worker):
    """Sends due reports; owns its own connection to module.db (report and report_send rows)."""
    what = "mailed reports"
    log = log
    check_interval = "reports.check_interval"

    # --- the loop ------------------------------------------------------------------------------

    def step(self, now_s: float) -> float:
        """Send whatever is due at `now_s`; returns seconds until the next look. Without a
        valid licence nothing is sent: due reports wait and go once it is back."""
        if self.licence.problem() is not None:
            return self.settings["reports.check_interval"]
        now_ms = int(now_s * 1000)
        self._sweep(now_ms)
        self._attempt_all(self._claim_due(now_s), now_s)
        self._attempt_all(self._retries_due(now_ms), now_s)    # after: not those just claimed
        return self._next_look(now_ms)

    def _attempt_all(self, held: list[_Due], now_s: float) -> None:
        """Attempt each send, letting go of each as it is over (or the step failed)."""
        try:
            while held:
                self._attempt(held[0], now_s)
                report_rows.let_go_of(self.db, held.pop(0).send["id"])
        finally:
            for due in held:
                report_rows.let_go_of(self.db, due.send["id"])

    # --- what is due ---------------------------------------------------------------------------

    def _claim_due(self, now_s: float) -> list[_Due]:
        """Due reports become `sending` rows of the log (`report_rows.claim_due`)."""
        def following_run(report: dict) -> int | None:
            timing = Timing(report["frequency"], report["at_time"], report["on_day"],
                            report["on_date"])
            following = timing.next_after(now_s, self._clock(report))
            return None if following is None else int(following * 1000)
        return [_Due(*due) for due in report_rows.claim_due(self.db, int(now_s * 1000),
                                                           following_run)]

    def _retries_due(self, now_ms: int) -> list[_Due]:
        """Sends to try again: retries whose time came, and sends a crash interrupted."""
        return [_Due(*due) for due in report_rows.retries_due(self.db, now_ms)]

    def _next_look(self, now_ms: int) -> float:
        times = report_rows.next_due_ms(self.db)
        # Users add and change reports at any time: look at least every check_interval.
        wait = self.settings["reports.check_interval"]
        return max(0.0, min([wait] + [(t - now_ms) / 1000 for t in times]))

    # --- one send ------------------------------------------------------------------------------

    def _attempt(self, due: _Due, now_s: float) -> None:
        report, send_row = due.report, due.send
        attempts = send_row["attempts"] + 1
        try:
            outcome = self._send(report, send_row, now_s)
        except SendFailed as exc:
            self._finish(send_row["id"], now_s, attempts, "failed", str(exc))
            log.warning("report %r of %s not sent: %s", report["name"], report["owner"], exc)
        except (MailError, OSError) as exc:
            retries = self.settings["reports.retries"]
            if attempts <= retries:
                delay = self.settings["reports.retry_delay"] * 2 ** (attempts - 1)
                self._finish(send_row["id"], now_s, attempts, "retrying", str(exc),
                             next_attempt_ms=int((now_s + delay) * 1000))
                log.warning("report %r of %s not sent (attempt %d of %d), retrying in %.0f s: "
                            "%s", report["name"], report["owner"], attempts, retries + 1,
                            delay, exc)
            else:
                self._finish(send_row["id"], now_s, attempts, "failed", str(exc))
                log.error("report %r of %s not sent after %d attempts: %s", report["name"],
                          report["owner"], attempts, exc)
        except Exception as exc:        # a bug must not stop the other reports
            log.exception("report %r of %s not sent", report["name"], report["owner"])
            self._finish(send_row["id"], now_s, attempts, "failed", f"internal error: {exc}")
        else:
            self._finish(send_row["id"], now_s, attempts, "sent", outcome)
            log.info("report %r of %s sent to %s", report["name"], report["owner"],
                     ", ".join(json.loads(report["recipients"])))

    def _send(self, report: dict, send_row: dict, now_s: float) -> str | None:
        """Build (or reuse) the file and mail it; returns a note for the log (refusals)."""
        clock = self._clock(report)
        owner = Owner.of_report(report)
        own, analytics = split_filters(json.loads(report["filters"]))
        params = self._filter_params(report, own)
        try:
            flt = self.context.call_filter(params, clock=clock, now_s=send_row["due_ms"] / 1000,
                                           visible_to=owner.visible_to)
        except QueryError as exc:
            raise SendFailed(f"the saved filter no longer works: {exc}") from None
        file_name = _file_name(report["name"], clock, flt.start_ms, flt.end_ms, report["format"])
        path = reports_dir(self.settings) / str(send_row["id"]) / file_name
        if not path.is_file():        # a retry mails the file built the first time
            path.parent.mkdir(parents=True, exist_ok=True)
            exported_by = f"{owner.name} ({owner.role}), {report['name']}"
            try:
                if analytics:
                    calls = self._write_analytics(path, report, analytics, params, flt, clock,
                                                  exported_by)
                else:
                    calls = export_file(
                        path, report["format"], flt, self.db, clock, report["language"],
                        about(exported_by, params, flt, clock, report["language"], self.db),
                        chosen_columns(user_settings(self.db, owner.name).get("columns")))
            except QueryError as exc:       # a PDF too long to print, an option now refused
                shutil.rmtree(path.parent, ignore_errors=True)
                raise SendFailed(str(exc)) from None
            self._record(send_row["id"], period_start_ms=flt.start_ms,
                         period_end_ms=flt.end_ms, calls=calls,
                         file=f"{send_row['id']}/{file_name}",
                         expires_ms=int((now_s + report["link_hours"] * 3600) * 1000))
        recorded = report_rows.send_row(self.db, send_row["id"])
        calls, expires_ms = recorded["calls"], recorded["expires_ms"]
        too_big = path.stat().st_size > self.settings["reports.attach_limit_mb"] * 1_000_000
        delivery = "link" if report["delivery"] == "link" or too_big else "attach"
        link = self._link(report, send_row["id"], expires_ms // 1000, file_name) \
            if delivery == "link" else ""
        values = self._template_values(report, owner, clock, flt, calls, file_name, link,
                                       expires_ms, now_s)
        try:
            subject, body = message_templates.render([report["subject"], report["body"]], values)
        except message_templates.TemplateRefused as exc:
            raise SendFailed(f"the message template is refused: {exc}") from None
        mail = mail_settings(self.settings)
        msg = message(mail, json.loads(report["recipients"]), subject, body,
                      (path, file_name, MEDIA_TYPES[report["format"]])
                      if delivery == "attach" else None)
        self._record(send_row["id"], delivery=delivery)
        refused = send(mail, msg)
        return f"refused by the server: {', '.join(refused)}" if refused else None

    def _filter_params(self, report: dict, own: dict[str, str]) -> dict:
        """The owner's saved filter, if any, with the report's own filters `own` over it and
        the report's period instead of its own."""
        saved = None
        if report["filter_id"]:
            saved = report_rows.saved_filter_params(self.db, report)
            if saved is None:
                raise SendFailed("its saved filter was deleted; choose another one")
        return report_params(json.loads(saved) if saved else None, own, report["period"])

    def _write_analytics(self, path: Path, report: dict, analytics: dict[str, str],
                         params: dict, flt, clock, exported_by: str) -> int:
        """The analytics report chosen, of the calls of `flt` (the owner's), written to `path`;
        returns what the mail calls its number of calls (`CALLS_TOTAL`)."""
        name, options = report_options({**analytics, "report": analytics[ANALYTICS]})
        built = build_report(name, flt, self.db, clock, options)
        language = report["language"]
        write_report(path, report["format"], built, language=language,
                     about=report_about(built, params, flt, clock, language, exported_by,
                                        self.db))
        total = CALLS_TOTAL.get(name)
        return built.totals[total] if total else len(built.rows)

    def _link(self, report: dict, send_id: int, expires_s: int, file_name: str) -> str:
        base = (self.settings["reports.link_base"] or report["link_base"]).rstrip("/")
        prefix = "/" + self.settings["web.prefix"].strip("/")
        signature = link_signature(link_secret(self.db), send_id, expires_s)
        return (f"{base}{prefix}/reports/file/{send_id}/{expires_s}/{signature}/"
                f"{quote(file_name)}")

    def _template_values(self, report, owner, clock, flt, calls, file_name, link, expires_ms,
                         now_s) -> dict:
        def day(epoch_ms: int) -> str:
            return clock.to_local(epoch_ms / 1000).strftime("%Y-%m-%d")
        first, last = day(flt.start_ms), day(flt.end_ms - 1000)
        return {
            "report": report["name"], "period": first if first == last else f"{first} — {last}",
            "period_start": first, "period_end": last, "calls": calls, "file_name": file_name,
            "format": report["format"], "link": link,
            "link_expires": clock.to_local(expires_ms / 1000).strftime("%Y-%m-%d %H:%M")
            if link else "",
            "owner": owner.name, "pbx": self._pbx_name(),
            "sent_at": clock.to_local(now_s).strftime("%Y-%m-%d %H:%M"),
        }

    def _pbx_name(self) -> str:
        config_db = self.settings["pbx.config_db"]
        try:
            name = pbx_settings(config_db).get("Name") if config_db.is_file() else None
        except MailError:
            name = None
        return name or "MikoPBX"

    # --- bookkeeping ---------------------------------------------------------------------------

    def _record(self, send_id: int, **values) -> None:
        report_rows.record_send(self.db, send_id, **values)

    def _finish(self, send_id: int, now_s: float, attempts: int, status: str,
                note: str | None, next_attempt_ms: int | None = None) -> None:
        self._record(send_id, status=status, attempts=attempts, error=note,
                     next_attempt_ms=next_attempt_ms,
                     finished_ms=None if status == "retrying" else int(now_s * 1000))

    def _sweep(self, now_ms: int) -> None:
        """Files whose links expired go, and folders of sends that no longer exist."""
        folder: Path = reports_dir(self.settings)
        expired = report_rows.expired_files(self.db, now_ms)
        for send_id in expired:
            shutil.rmtree(folder / str(send_id), ignore_errors=True)
        if expired:
            report_rows.forget_files(self.db, expired)
        if folder.is_dir():
            known = {str(i) for i in report_rows.sends_with_files(self.db)}
            for entry in folder.iterdir():
                if entry.is_dir() and entry.name.isdigit() and entry.name not in known \
                        and not report_rows.sending(self.db, int(entry.name)):
                    shutil.rmtree(entry, ignore_errors=True)

    def _clock(self, report: dict) -> PbxClock:
        """The time of the PBX whose page made the report (a central history's reports are
        sent by whichever PBX's daemon claims them)."""
        return self.context.clock_of(report["pbx"])


def _file_name(report: str, clock, start_ms: int, end_ms: int, fmt: str) -> str:
    """`<report name>_<first day>[_<last day>].<fmt>`: readable, safe as a file name."""
    first = clock.to_local(start_ms / 1000).strftime("%Y-%m-%d")
    last = clock.to_local((end_ms - 1000) / 1000).strftime("%Y-%m-%d")
    stem = re.sub(r"[^\w-]+", "_", report).strip("_")[:60] or "report"
    return f"{stem}_{first}{'' if first == last else '_' + last}.{fmt}"
