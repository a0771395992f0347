"""Mailed reports as users define them: a saved filter and/or the report's own filters
(employees, groups, directions, statuses, tags) mailed once, daily, weekly or monthly
over a relative period, as Excel, CSV or PDF, attached or as a signed download link, to at most
ten addresses, with a message template. What goes is the list of those calls or one of the
analytics reports of them (`mirror.analytics`), kept among the report's own filters. Pure:
validation, the schedule's next run (PBX local time, right across DST changes), the signed
links. Their rows are kept by `mirror.report_rows`; the web's form writes them, the daemon's
scheduler (`reports.scheduler`) sends them."""
from __future__ import annotations

import calendar
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from exports.analytics_files import ANALYTICS_FORMATS
from mirror import report_rows
from mirror.analytics import REPORT_OPTIONS, REPORTS, report_options
from mirror.queries import PERIODS, QueryError, whole_number
from mirror.report_rows import Owner, ReportError
from reports import templates as message_templates
from reports.templates import TemplateRefused

__all__ = ["Owner", "ReportError"]     # what a report is for, and its readable error

FREQUENCIES = ("once", "daily", "weekly", "monthly")
# The page's filters a report may carry itself (lists comma-separated), over its saved filter.
REPORT_FILTERS = ("employee", "group", "direction", "status", "tag", "tag_mode")
REPORT_FORMATS = ("xlsx", "csv", "pdf")
# An analytics report instead of the call list: its name under `analytics` among the report's
# own filters, with the option of the reports that have one (`REPORT_OPTIONS`, as the page).
ANALYTICS = "analytics"
DELIVERIES = ("attach", "link")
LINK_HOURS = (24, 120)           # a download link lives this long, from-to
MAX_RECIPIENTS = 10
NAME_LIMIT = 60
TEMPLATE_LIMIT = 5_000
SUBJECT_LIMIT = 200
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@"
                      r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
                      r"[A-Za-z][A-Za-z0-9-]*[A-Za-z0-9]")
_TIME = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")

DEFAULT_SUBJECT = {
    "en": "{{ report }}: {{ calls }} calls, {{ period }}",
    "ru": "{{ report }}: звонков {{ calls }}, {{ period }}",
}
DEFAULT_BODY = {
    "en": ("Hello,\n\nthe report \"{{ report }}\" for {{ period }} holds {{ calls }} calls.\n"
           "{% if link %}Download it until {{ link_expires }}:\n{{ link }}\n"
           "{% else %}The file {{ file_name }} is attached.\n{% endif %}\n"
           "-- \nExtended call history of {{ pbx }}, on behalf of {{ owner }}\n"),
    "ru": ("Здравствуйте!\n\nВ отчёте «{{ report }}» за {{ period }} звонков: {{ calls }}.\n"
           "{% if link %}Скачать до {{ link_expires }}:\n{{ link }}\n"
           "{% else %}Файл {{ file_name }} во вложении.\n{% endif %}\n"
           "-- \nРасширенная история звонков {{ pbx }}, по поручению {{ owner }}\n"),
}
# What message templates may use (the scheduler fills them; the form shows them).
TEMPLATE_VALUES = {
    "report": "Missed calls", "period": "2026-11-23 — 2026-11-23", "period_start": "2026-11-23",
    "period_end": "2026-11-23", "calls": 42, "file_name": "missed_calls_2026-11-23.xlsx",
    "format": "xlsx", "link": "https://pbx.example.com/…", "link_expires": "2026-11-26 08:00",
    "owner": "admin", "pbx": "MikoPBX", "sent_at": "2026-11-24 08:00",
}

@dataclass(frozen=True)
class Timing:
    """When a report goes: `at` (HH:MM local) once on `on_date`, daily, weekly on `on_day`
    (0 = Monday) or monthly on day `on_day` (the month's last day when it has fewer)."""
    frequency: str
    at: str
    on_day: int | None = None
    on_date: str | None = None

    def next_after(self, after_s: float, clock) -> float | None:
        """Epoch seconds of the first run strictly after `after_s`; None when there is none
        (a single report whose time has passed). Wall-clock times that a DST change skips run
        at the same offset after it (02:30 on a spring-forward night runs at 03:30); repeated
        ones run at their first occurrence."""
        hour, minute = map(int, self.at.split(":"))
        if self.frequency == "once":
            moment = _local(clock, date.fromisoformat(self.on_date), hour, minute)
            return moment if moment > after_s else None
        day = clock.to_local(after_s).date() - timedelta(days=1)
        for _ in range(800):          # at most about two years ahead (monthly on the 31st)
            if self._runs_on(day):
                moment = _local(clock, day, hour, minute)
                if moment > after_s:
                    return moment
            day += timedelta(days=1)
        raise AssertionError("no run within two years")  # unreachable for valid timings

    def _runs_on(self, day: date) -> bool:
        if self.frequency == "daily":
            return True
        if self.frequency == "weekly":
            return day.weekday() == self.on_day
        last = calendar.monthrange(day.year, day.month)[1]
        return day.day == min(self.on_day, last)


def _local(clock, day: date, hour: int, minute: int) -> float:
    return clock.local_to_epoch(datetime(day.year, day.month, day.day, hour, minute))


def timing(frequency: str, at: str, on_day: str | int | None = None,
           on_date: str | None = None) -> Timing:
    """A checked Timing from form values."""
    if frequency not in FREQUENCIES:
        raise ReportError(f"choose how often: {', '.join(FREQUENCIES)}")
    if not _TIME.fullmatch(at or ""):
        raise ReportError(f"the time must be HH:MM (00:00 to 23:59), not {at!r}")
    if frequency == "once":
        try:
            day = date.fromisoformat(on_date or "")
        except ValueError:
            raise ReportError(f"the date must be YYYY-MM-DD, not {on_date!r}") from None
        return Timing(frequency, at, None, day.isoformat())
    if frequency == "daily":
        return Timing(frequency, at)
    low, high = (0, 6) if frequency == "weekly" else (1, 31)
    try:
        number = int(on_day)
    except (TypeError, ValueError):
        number = None
    if number is None or not low <= number <= high:
        what = "the weekday (0 = Monday … 6 = Sunday)" if frequency == "weekly" else \
            "the day of the month (1 … 31)"
        raise ReportError(f"choose {what}")
    return Timing(frequency, at, number)


def recipients(text: str) -> list[str]:
    """Addresses separated by `;`, `,`, spaces or new lines: each checked, duplicates dropped,
    at most ten."""
    found: list[str] = []
    for address in re.split(r"[;,\s]+", text or ""):
        if not address:
            continue
        if len(address) > 254 or not _ADDRESS.fullmatch(address):
            raise ReportError(f"{address!r} is not an e-mail address")
        if address.lower() not in (a.lower() for a in found):
            found.append(address)
    if not found:
        raise ReportError("give at least one e-mail address")
    if len(found) > MAX_RECIPIENTS:
        raise ReportError(f"at most {MAX_RECIPIENTS} addresses; {len(found)} given")
    return found


def check_template(what: str, template: str, limit: int) -> str:
    """A template that renders with the report's values within its bounds (see
    `reports.templates`); else a readable error."""
    if len(template) > limit:
        raise ReportError(f"the {what} has at most {limit:,} characters")
    try:
        message_templates.render([template], TEMPLATE_VALUES)
    except TemplateRefused as exc:
        raise ReportError(f"the {what} template is refused: {exc}; values: "
                          f"{', '.join(TEMPLATE_VALUES)}") from None
    return template



# --- links -------------------------------------------------------------------------------------

def link_signature(secret: bytes, send_id: int, expires_s: int) -> str:
    """The signature of a download link: only this module (its secret) can make one, and
    changing the send or the expiry breaks it."""
    message = f"report-send:{send_id}:{expires_s}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


def link_valid(secret: bytes, send_id: int, expires_s: int, signature: str) -> bool:
    return hmac.compare_digest(link_signature(secret, send_id, expires_s).encode(),
                               signature.encode())



# --- the form ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReportForm:
    """A report as the form gives it, checked."""
    name: str
    filter_id: int                 # 0: no saved filter (its own filters, or every call)
    filters: dict[str, str]        # its own filters (REPORT_FILTERS), over the saved filter
    analytics: dict[str, str]      # {} for the call list, else `analytics_choice`
    period: str
    timing: Timing
    format: str
    delivery: str
    link_hours: int
    recipients: list[str]
    subject: str
    body: str
    language: str
    enabled: bool


def report_form(form, language: str) -> ReportForm:
    """Check every field of the form (a mapping of text values)."""
    name = " ".join((form.get("name") or "").split())
    if not name:
        raise ReportError("give the report a name")
    if len(name) > NAME_LIMIT:
        raise ReportError(f"a report name has at most {NAME_LIMIT} characters")
    period = form.get("period", "")
    if period not in PERIODS:
        raise ReportError(f"choose the period: {', '.join(PERIODS)}")
    analytics = analytics_choice(form)
    fmt, delivery = form.get("format", ""), form.get("delivery", "")
    formats = ANALYTICS_FORMATS if analytics else REPORT_FORMATS
    if fmt not in formats:
        raise ReportError(f"choose the format: {', '.join(formats)}")
    if delivery not in DELIVERIES:
        raise ReportError("choose to attach the file or to send a download link")
    try:
        hours = int(form.get("link_hours", ""))
    except ValueError:
        hours = 0
    if not LINK_HOURS[0] <= hours <= LINK_HOURS[1]:
        raise ReportError(f"a download link is valid for {LINK_HOURS[0]} to {LINK_HOURS[1]} "
                          f"hours")
    try:
        filter_id = whole_number(form.get("filter") or "0", "filter")
    except QueryError:
        raise ReportError("choose one of your saved filters") from None
    filters = {name: " ".join(str(form.get(name) or "").split()) for name in REPORT_FILTERS}
    filters = {name: value for name, value in filters.items()
               if value and not (name == "tag_mode" and value == "any")}
    subject = " ".join((form.get("subject") or DEFAULT_SUBJECT[language]).split())
    body = (form.get("body") or DEFAULT_BODY[language]).replace("\r\n", "\n")
    return ReportForm(
        name=name, filter_id=filter_id, filters=filters, analytics=analytics, period=period,
        timing=timing(form.get("frequency", ""), form.get("at", ""), form.get("on_day"),
                      form.get("on_date")),
        format=fmt, delivery=delivery, link_hours=hours,
        recipients=recipients(form.get("recipients", "")),
        subject=check_template("subject", subject, SUBJECT_LIMIT),
        body=check_template("message", body, TEMPLATE_LIMIT),
        language=language, enabled=form.get("enabled", "on") == "on")


def analytics_choice(form) -> dict[str, str]:
    """What to send, from the form's `analytics` (empty: the call list) and the option fields:
    {} for the call list, else {"analytics": report} with the report's own option (traffic: the
    grain; queues: the service level in seconds), checked as the Analytics page checks them."""
    chosen = (form.get(ANALYTICS) or "").strip()
    if not chosen:
        return {}
    if chosen not in REPORTS:
        raise ReportError(f"choose what to send: the call list or one of the analytics reports "
                          f"({', '.join(REPORTS)})")
    option = REPORT_OPTIONS.get(chosen)
    given = {option: str(form.get(option) or "").strip()} if option else {}
    try:
        _, options = report_options({"report": chosen, **given})
    except QueryError as exc:
        raise ReportError(str(exc)) from None
    stored = {"grain": options.grain, "service_level": str(options.service_level_s)}
    return {ANALYTICS: chosen, **({option: stored[option]} if option else {})}


def split_filters(stored: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """A report's own filters as kept (`report.filters`): the call filters, and what to send
    ({} for the call list, else the analytics report and its option)."""
    kept = (ANALYTICS, *REPORT_OPTIONS.values())
    return ({k: v for k, v in stored.items() if k not in kept},
            {k: v for k, v in stored.items() if k in kept})


def save_report(db, owner: Owner, form: ReportForm, *, link_base: str,
                clock, report_id: int | None = None, now_s: float | None = None,
                pbx: str = "") -> int:
    """Create the owner's report, or change their report `report_id`; returns its id. `pbx`:
    the PBX of a central history whose time `clock` keeps (its page's)."""
    now_s = time.time() if now_s is None else now_s
    next_run = form.timing.next_after(now_s, clock) if form.enabled else None
    if form.timing.frequency == "once" and next_run is None and form.enabled:
        raise ReportError("that date and time have passed; choose a time in the future")
    values = {
        **owner.kept(), "name": form.name, "filter_id": form.filter_id, "period": form.period,
        "filters": json.dumps({**form.filters, **form.analytics}, ensure_ascii=False,
                              sort_keys=True),
        "frequency": form.timing.frequency, "at_time": form.timing.at,
        "on_day": form.timing.on_day, "on_date": form.timing.on_date,
        "format": form.format, "delivery": form.delivery, "link_hours": form.link_hours,
        "recipients": json.dumps(form.recipients, ensure_ascii=False),
        "subject": form.subject, "body": form.body, "language": form.language,
        "link_base": link_base, "enabled": int(form.enabled), "pbx": pbx,
        "next_run_ms": None if next_run is None else int(next_run * 1000),
    }
    return report_rows.store_report(db, owner, values, form.filter_id, form.name, report_id)


def report_params(saved: dict | None, own: dict[str, str], period: str) -> dict[str, str]:
    """What a report sends: its saved filter (without its own period) with the report's own
    filters over it, for the report's period."""
    params = {k: v for k, v in (saved or {}).items() if k not in ("period", "from", "to")}
    return {**params, **own, "period": period}
