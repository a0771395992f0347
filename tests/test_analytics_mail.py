"""Mailed analytics reports end to end: chosen in the report form (real HTTP), sent by the
daemon's scheduler through a real SMTP server (aiosmtpd), the attachment opened (openpyxl,
pypdf, csv) and its figures compared with `build_report` for the same period and owner, and
with what the owner's own Analytics API gives; an operator's report counts only their calls;
a bad option is refused with a readable message and the form kept."""
import csv
import io
import json
import re
from datetime import datetime, time, timedelta

from openpyxl import load_workbook
from pypdf import PdfReader

from mirror.analytics import PERCENT, SECONDS, Options, build_report
from mirror.database import open_module_db
from mirror.pbxtime import PbxClock
from mirror.queries import call_filter
from mirror.report_rows import Owner
from tests import test_reports
from tests.test_reports import (DUE, LAST_WEEK, PREFIX, USERS, attachment, due_at, new_report,
                                post_report, report_row, sends)

# The call-list mail tests' fixtures: a PBX copy mailing to a real SMTP server, its users.
smtp, site, quiet, boss, olga = (test_reports.smtp, test_reports.site, test_reports.quiet,
                                 test_reports.boss, test_reports.olga)


def expected_report(site, owner: str, name: str, options: Options = Options()):
    """The report as Analytics builds it for the owner over the mailed period (last week as
    of the report's due time), from the mirror directly."""
    user = next(u for u in USERS if u["name"] == owner)
    visible_to = Owner(owner, user["role"], tuple(user["extensions"])).visible_to
    clock = PbxClock("Europe/Berlin")
    db = open_module_db(site["db"])
    try:
        flt = call_filter({"period": "last_week"}, clock, DUE, visible_to=visible_to)
        return build_report(name, flt, db, clock, options)
    finally:
        db.close()


def cell_figure(value, kind: str):
    """An Excel cell back as the report's figure: durations in seconds, percents 0-100."""
    if value is None:
        return None
    if kind == SECONDS:
        if isinstance(value, time):
            value = datetime.combine(datetime.min, value) - datetime.min
        return round(value.total_seconds()) if isinstance(value, timedelta) else value
    if kind == PERCENT:
        return round(value * 100, 1)
    return value


def mailed(site, smtp, report_id: int):
    due_at(site, report_id, DUE)
    site["scheduler"].step(DUE)
    [mail] = smtp.take()
    [logged] = sends(site, report_id)
    assert logged["status"] == "sent", logged["error"]
    return mail, logged


def test_a_scheduled_queues_report_mails_excel_with_its_chart_and_figures(site, smtp, boss):
    report_id = new_report(boss, name="Queues weekly", analytics="queues",
                           service_level="30", grain="month", format="xlsx")
    stored = json.loads(report_row(site, report_id)["filters"])
    assert stored == {"analytics": "queues", "service_level": "30"}     # no grain: not traffic
    mail, logged = mailed(site, smtp, report_id)

    expected = expected_report(site, "boss", "queues", Options(service_level_s=30))
    assert expected.rows and expected.totals["offered"] > 0
    assert logged["calls"] == expected.totals["offered"]
    assert f"Queues weekly: {expected.totals['offered']} calls" in mail["Subject"]
    name, content = attachment(mail)
    assert name == "Queues_weekly_2024-10-21_2024-10-27.xlsx"
    book = load_workbook(io.BytesIO(content))
    table = book.worksheets[0]
    assert table._charts, "the table's sheet has its chart"
    rows = list(table.iter_rows(values_only=True))
    assert list(rows[0][:len(expected.columns)]) == [title for _, title, _ in expected.columns]
    assert "Answered within 30 s" in rows[0]
    for row, want in zip(rows[1:], expected.rows, strict=False):
        assert [cell_figure(v, kind) for v, (_, _, kind) in zip(row, expected.columns)] == [
            want[key] for key, _, _ in expected.columns]
    totals = rows[1 + len(expected.rows)]
    assert totals[0] == "Total"
    assert [cell_figure(v, kind) for v, (key, _, kind) in zip(totals, expected.columns)
            if key in expected.totals] == [
        expected.totals[key] for key, _, _ in expected.columns if key in expected.totals]

    _, _, listing = boss.request(PREFIX + "reports")
    cell = re.search(r'<td class="report-content" data-analytics="queues">([^<]*)</td>', listing)
    assert cell and "Queues and ring groups" in cell.group(1) and "30" in cell.group(1)
    _, _, form = boss.request(PREFIX + f"reports/{report_id}")
    assert '<option value="queues" selected>' in form and 'value="30"' in form


def test_a_callbacks_report_goes_as_pdf_with_the_missed_calls_as_its_count(site, smtp, boss):
    report_id = new_report(boss, name="Callbacks", analytics="callbacks", format="pdf",
                           body="{{ calls }} missed; {{ file_name }}")
    mail, logged = mailed(site, smtp, report_id)
    expected = expected_report(site, "boss", "callbacks")
    missed = expected.totals["missed"]
    assert missed > 0 and logged["calls"] == missed
    assert mail.get_body(("plain",)).get_content().startswith(
        f"{missed} missed; Callbacks_2024-10-21_2024-10-27.pdf")
    name, content = attachment(mail)
    assert name.endswith(".pdf") and content.startswith(b"%PDF")
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)
    assert "Missed calls and callbacks" in text and "Not called back" in text
    for band in expected.rows:
        assert band["band"] in text


def test_an_operators_mailed_analytics_count_only_their_calls(site, smtp, olga, boss):
    report_id = new_report(olga, name="Моя нагрузка", analytics="traffic", grain="week",
                           format="csv")
    mail, logged = mailed(site, smtp, report_id)
    theirs = olga.calls(PREFIX, **LAST_WEEK)
    everyone = boss.calls(PREFIX, **LAST_WEEK)
    assert 0 < len(theirs) < len(everyone)
    expected = expected_report(site, "olga", "traffic", Options(grain="week"))
    assert expected.totals["calls"] == len(theirs) == logged["calls"]
    assert f"звонков {len(theirs)}" in mail["Subject"]
    status, _, body = olga.request(PREFIX + "api/v1/stats/traffic?from=2024-10-21&to=2024-10-27"
                                   "&grain=week")
    assert status == 200 and json.loads(body)["totals"]["calls"] == len(theirs)
    [part] = mail.iter_attachments()
    assert part.get_content_type() == "text/csv" and part.get_content_charset() == "utf-8"
    rows = list(csv.reader(io.StringIO(part.get_content().lstrip("\ufeff")), delimiter=";"))
    assert rows[0][:2] == ["Период", "Звонки"]                  # her language, its delimiter
    assert [r[0] for r in rows[1:-1]] == ["2024-10-21"]          # one week
    assert rows[1][1] == str(len(theirs)) and rows[-1][1] == str(len(theirs))


def test_a_bad_choice_or_option_is_refused_with_a_message_and_the_form_kept(site, boss, olga):
    cases = [
        ({"analytics": "queues", "service_level": "5000"},
         "service level must be 0 to 3600 seconds"),
        ({"analytics": "queues", "service_level": "-5"}, "service level must be 0 to 3600"),
        ({"analytics": "traffic", "grain": "year"}, "unknown grain &#39;year&#39;"),
        ({"analytics": "salaries"}, "choose what to send"),
        ({"analytics": "lines", "format": "jsonl"}, "choose the format: xlsx, csv, pdf"),
    ]
    for fields, message in cases:
        status, _, body = post_report(boss, name="Refused analytics", **fields)
        assert status == 400, fields
        assert message in body, (fields, body[:2000])
        assert 'value="Refused analytics"' in body
    status, _, body = post_report(olga, name="Отказ", analytics="queues", service_level="x")
    assert status == 400 and "уровень сервиса — от 0 до 3600 секунд" in body
    assert '<option value="queues" selected>' in body
    status, _, body = post_report(olga, name="Отказ", analytics="salaries")
    assert status == 400 and "выберите, что отправлять: список звонков или один из отчётов " \
        "аналитики (employees, traffic, lines, menus, queues, callbacks)" in body
    _, _, listing = boss.request(PREFIX + "reports")
    assert "Refused analytics" not in listing
