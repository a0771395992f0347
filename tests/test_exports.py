"""Exports: exactly the calls of the page's filter and the user's role, read back from the
files (openpyxl, csv, json), with local times, durations, numbers kept as text and formula
starts neutralised; the CLI writes whole files or none."""
import csv
import io
import json
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from openpyxl import load_workbook

from exports.writers import export_columns, neutralised
from i18n import STATUS_LABELS, translator
from mirror.settings import load
from standin.shell import StandinLogin
from tests.conftest import ROOT, wait_for
from tests.stack import serving
from tests.webclient import Browser
from web import create_app

PREFIX = "/admin-cabinet/module-extended-c-d-r/calls/"
PERIOD = {"from": "2024-10-20", "to": "2024-10-28"}


@pytest.fixture(scope="module")
def base(demo_mirror, tmp_path_factory):
    app = create_app(load(None, {"module.db": demo_mirror}), login=StandinLogin.from_file(None))
    with serving(app, threads=4) as server:
        yield f"http://127.0.0.1:{server.effective_port}"


def user(base, name):
    browser = Browser(base)
    assert browser.login(name, name)[0] == 302
    return browser


def api_calls(browser, **params) -> list[dict]:
    return browser.calls(PREFIX, **params)


def download(browser, fmt, **params) -> bytes:
    url = browser.base + PREFIX + "export?" + urllib.parse.urlencode({"format": fmt, **params})
    with browser.opener.open(urllib.request.Request(url)) as reply:
        assert reply.status == 200
        assert "attachment" in reply.headers["Content-Disposition"]
        return reply.read()


def local(iso: str) -> datetime:
    return datetime.fromisoformat(iso).replace(tzinfo=None)


@pytest.mark.parametrize("name, extra", [("admin", {}), ("operator201", {}),
                                         ("admin", {"tab": "missed", "number": "201"})])
def test_excel_holds_every_call_of_the_filter_the_user_may_see(base, name, extra):
    browser = user(base, name)
    expected = api_calls(browser, **PERIOD, **extra)
    book = load_workbook(io.BytesIO(download(browser, "xlsx", **PERIOD, **extra)))
    language = "ru" if name == "operator201" else "en"          # the operator reads Russian
    say = translator(language)
    about, calls = book.worksheets
    assert about.title == say("Filter") and calls.title == say("Calls")
    assert dict(about.iter_rows(values_only=True))[say("Exported by")].startswith(name)
    rows = list(calls.iter_rows(values_only=True))
    header, rows = rows[0], rows[1:]
    assert calls.freeze_panes == "A2" and calls.auto_filter.ref.startswith("A1:")
    assert len(rows) == len(expected) > 0
    at = {title: i for i, title in enumerate(header)}
    for row, call in zip(rows, expected):
        assert row[at[say("Call ID")]] == call["linkedid"]
        assert row[at[say("Date")]] == local(call["start"])      # a real datetime, local
        assert row[at[say("Talk")]] == timedelta(seconds=call["talk_s"])
        assert row[at[say("Who")]] == neutralised(call["src"])    # text, leading + kept
        assert row[at[say("Status")]] == STATUS_LABELS[language][call["status"]]
    shown = {calls.cell(2, at[say(title)] + 1).number_format: title
             for title in ("Date", "Talk", "Wait")}
    assert set(shown) == {"yyyy-mm-dd hh:mm:ss", "[h]:mm:ss"}      # as Excel shows them
    assert {calls.cell(len(rows) + 1, at[say("Date")] + 1).number_format} <= set(shown)
    if name == "operator201":
        assert all("201" in c["employees"] for c in expected)


def test_csv_streams_the_same_calls_with_a_bom_and_the_locale_delimiter(base):
    browser = user(base, "admin")
    expected = api_calls(browser, **PERIOD)
    text = download(browser, "csv", **PERIOD).decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text[1:])))
    assert len(rows) - 1 == len(expected)
    at = {title: i for i, title in enumerate(rows[0])}
    assert [r[at["Call ID"]] for r in rows[1:]] == [c["linkedid"] for c in expected]
    assert rows[1][at["Date"]] == local(expected[0]["start"]).strftime("%Y-%m-%d %H:%M:%S")
    russian = user(base, "operator201")                          # a Russian-speaking user
    text = download(russian, "csv", **PERIOD).decode("utf-8")
    assert text.splitlines()[0].count(";") >= 5 and "Дата звонка" in text


def test_jsonl_is_the_call_record_contract(base):
    browser = user(base, "admin")
    lines = download(browser, "jsonl", **PERIOD).decode().splitlines()
    assert [json.loads(line) for line in lines] == api_calls(browser, **PERIOD)


def test_calls_on_both_sides_of_the_dst_change_export_their_own_local_time(base):
    browser = user(base, "admin")
    day = {"from": "2024-10-27", "to": "2024-10-27"}         # Berlin falls back at 03:00
    calls = api_calls(browser, **day)
    offsets = {c["start"][-6:] for c in calls}
    assert offsets == {"+02:00", "+01:00"}, "the demo has calls before and after the change"
    book = load_workbook(io.BytesIO(download(browser, "xlsx", **day)))
    rows = list(book.worksheets[1].iter_rows(values_only=True))[1:]
    assert [r[0] for r in rows] == [local(c["start"]) for c in calls]


def test_formula_starts_are_neutralised_and_phone_numbers_survive():
    assert neutralised("=HYPERLINK(\"http://evil\")") == "'=HYPERLINK(\"http://evil\")"
    for payload in ("+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx", "=1+2"):
        assert neutralised(payload).startswith("'"), payload
    for fine in ("+79161234567", "201", "Ivan", "", "79161234567"):
        assert neutralised(fine) == fine


def test_hostile_names_reach_the_files_as_text(base):
    browser = user(base, "admin")
    hostile = [c for c in api_calls(browser, **PERIOD) if c["src_name"].startswith(("=", "+"))]
    assert hostile, "the demo has caller names that look like formulas"
    call = hostile[0]
    params = {**PERIOD, "number": f"linkedid:{call['linkedid']}"}
    book = load_workbook(io.BytesIO(download(browser, "xlsx", **params)))
    header, row = list(book.worksheets[1].iter_rows(values_only=True))
    assert row[header.index("Who (name)")] == "'" + call["src_name"]
    text = download(browser, "csv", **params).decode("utf-8-sig")
    assert list(csv.reader(io.StringIO(text)))[1][header.index("Who (name)")] == \
        "'" + call["src_name"]


def test_bad_export_requests_are_refused_readably(base):
    browser = user(base, "admin")
    for query, message in (("format=docx", "unknown format"),
                           ("format=xlsx&from=2024-99-01", "bad date"),
                           ("format=csv&status=lost", "unknown status")):
        status, _, body = browser.request(PREFIX + "export?" + query)
        assert status == 400 and message in body and "Traceback" not in body
    status, _, _ = Browser(base).request(PREFIX + "export?format=csv")
    assert status == 401


def test_a_client_that_leaves_mid_download_leaves_no_temp_file(base, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    browser = user(base, "admin")
    url = base + PREFIX + "export?" + urllib.parse.urlencode({"format": "xlsx", **PERIOD})
    reply = browser.opener.open(urllib.request.Request(url))
    reply.read(1000)
    reply.close()
    assert wait_for(lambda: not list(tmp_path.iterdir()), 10), list(tmp_path.iterdir())


# --- the command line ------------------------------------------------------------------------

def test_cli_export_writes_the_same_calls_and_applies_a_users_role(cli, demo_mirror, tmp_path,
                                                                   base):
    out = tmp_path / "calls.xlsx"
    code, _, err = cli("export", "--db", str(demo_mirror), "--format", "xlsx", "--out", str(out),
                       "--from", "2024-10-20", "--to", "2024-10-28", "--user", "operator201")
    assert code == 0 and re.search(r"[\d,]+ calls written", err)
    rows = list(load_workbook(out).worksheets[1].iter_rows(values_only=True))[1:]
    expected = api_calls(user(base, "operator201"), **PERIOD)
    assert [r[-1] for r in rows] == [c["linkedid"] for c in expected]
    code, _, _ = cli("export", "--db", str(demo_mirror), "--format", "jsonl",
                     "--out", str(tmp_path / "all.jsonl"), "--from", "2024-10-20",
                     "--to", "2024-10-28")
    assert code == 0
    assert len((tmp_path / "all.jsonl").read_text().splitlines()) == len(
        api_calls(user(base, "admin"), **PERIOD))


@pytest.mark.parametrize("args, message", [
    (["--format", "docx"], "unknown format"),
    (["--format", "csv", "--status", "lost"], "unknown status"),
    (["--format", "csv", "--user", "nobody"], "unknown user"),
])
def test_cli_export_errors_are_one_line_and_leave_no_file(cli, demo_mirror, tmp_path, args,
                                                          message):
    out = tmp_path / "out.file"
    code, _, err = cli("export", "--db", str(demo_mirror), "--out", str(out), *args)
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["admin", "operator201"])
def test_pdf_lists_the_calls_with_totals(base, name):
    from pypdf import PdfReader
    browser = user(base, name)
    day = {"from": "2024-10-27", "to": "2024-10-27"}
    expected = api_calls(browser, **day)
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(
        download(browser, "pdf", **day))).pages)
    say = translator("ru" if name == "operator201" else "en")
    assert f"{say('Calls')}: {len(expected):,}" in text
    for call in expected:
        assert local(call["start"]).strftime("%Y-%m-%d %H:%M:%S") in text
    talk = sum(c["talk_s"] for c in expected)
    assert f"{say('Talk')}: {talk // 3600}:{talk // 60 % 60:02}:{talk % 60:02}" in text


def test_a_pdf_too_long_to_print_is_refused_before_anything_is_sent(base, monkeypatch):
    import sys
    monkeypatch.setattr(sys.modules["exports.writers"], "PDF_LIMIT", 10)
    status, _, body = user(base, "admin").request(
        PREFIX + "export?" + urllib.parse.urlencode({"format": "pdf", **PERIOD}))
    assert status == 400 and "at most 10 calls" in body


def test_libreoffice_opens_the_excel_file_with_every_call(base, tmp_path):
    """An Excel-compatible file: LibreOffice reads every sheet and every call of it."""
    import subprocess

    from tests.stack import required_binary
    soffice = required_binary("LibreOffice", ("soffice", "libreoffice"),
                              "./bin/test installs it (apt-get install libreoffice-calc-nogui)")
    browser = user(base, "admin")
    expected = api_calls(browser, **PERIOD)
    (tmp_path / "calls.xlsx").write_bytes(download(browser, "xlsx", **PERIOD))
    subprocess.run([soffice, f"-env:UserInstallation=file://{tmp_path}/profile", "--headless",
                    "--convert-to", "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,"
                    "false,false,false,-1", "--outdir", str(tmp_path), str(tmp_path / "calls.xlsx")],
                   check=True, capture_output=True, timeout=120)
    sheets = {path.stem.rsplit("-", 1)[-1]: path for path in tmp_path.glob("calls*.csv")}
    assert set(sheets) == {"Filter", "Calls"}, sheets
    rows = list(csv.reader(open(sheets["Calls"], encoding="utf-8")))
    assert rows[0][-1] == "Call ID"
    assert [r[-1] for r in rows[1:]] == [c["linkedid"] for c in expected]
    assert rows[1][0] == local(expected[0]["start"]).strftime("%Y-%m-%d %H:%M:%S")


def test_a_big_export_runs_as_a_job_with_progress_for_its_owner_only(base):
    admin, operator = user(base, "admin"), user(base, "operator201")
    _, _, page = admin.request(PREFIX + "?" + urllib.parse.urlencode(PERIOD))
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)
    query = urllib.parse.urlencode({**PERIOD, "tab": "incoming"})
    status, _, _ = admin.request(PREFIX + "export/jobs", {"format": "xlsx", "query": query})
    assert status == 403                                     # no CSRF token
    status, _, body = admin.request(PREFIX + "export/jobs", {"format": "xlsx", "query": query,
                                                             "csrf_token": token})
    job = json.loads(body)
    expected = api_calls(admin, **PERIOD, tab="incoming")
    assert status == 200 and job["total"] == len(expected)
    states = []

    def ready():
        states.append(json.loads(admin.request(job["status"])[2]))
        return states[-1]["ready"]

    assert wait_for(ready, 30), states[-1]
    assert states[-1]["done"] == states[-1]["total"] == len(expected)
    for path in (job["status"], job["status"] + "/file"):
        assert operator.request(path)[0] == 404              # another user's job
    status, headers, _ = admin.request(job["status"] + "/file")
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    with admin.opener.open(urllib.request.Request(base + job["status"] + "/file")) as reply:
        rows = list(load_workbook(io.BytesIO(reply.read())).worksheets[1].iter_rows(
            values_only=True))[1:]
    assert [r[-1] for r in rows] == [c["linkedid"] for c in expected]


def test_finished_jobs_and_their_files_go_after_an_hour(tmp_path):
    import time

    from web.jobs import KEEP_SECONDS, ExportJobs
    jobs = ExportJobs(tmp_path)
    job_id = jobs.start("anna", "csv", 1, lambda path, progress: path.write_text("x"))
    assert wait_for(lambda: jobs.get("anna", job_id).path is not None, 5)
    assert jobs.get("boris", job_id) is None
    failing = jobs.start("anna", "csv", 1, lambda path, progress: 1 / 0)
    assert wait_for(lambda: jobs.get("anna", failing).error is not None, 5)
    assert not (tmp_path / failing).exists()                 # a failed job leaves nothing
    jobs.sweep(time.time() + KEEP_SECONDS + 1)
    assert jobs.get("anna", job_id) is None and list(tmp_path.iterdir()) == []


def test_exports_in_the_background_are_capped_per_user_and_per_process(tmp_path):
    from web.jobs import RUNNING, USER_KEPT, USER_RUNNING, ExportJobs, JobRefused
    jobs, release = ExportJobs(tmp_path), threading.Event()

    def slow(path, progress):
        release.wait(10)
        path.write_text("x")

    started = [jobs.start("anna", "csv", 1, slow) for _ in range(USER_RUNNING)]
    with pytest.raises(JobRefused, match="being built"):
        jobs.start("anna", "csv", 1, slow)
    others = [jobs.start(f"user{i}", "csv", 1, slow) for i in range(RUNNING - USER_RUNNING)]
    with pytest.raises(JobRefused, match="other exports"):
        jobs.start("boris", "csv", 1, slow)
    release.set()
    assert wait_for(lambda: all(job.finished_at for job in jobs.jobs.values()), 5)
    assert all(jobs.get("anna", job_id).path for job_id in started)
    kept = list(started)
    while len(kept) < USER_KEPT:
        kept.append(jobs.start("anna", "csv", 1, slow))
        assert wait_for(lambda: jobs.get("anna", kept[-1]).finished_at, 5)
    with pytest.raises(JobRefused, match="waiting to be downloaded"):
        jobs.start("anna", "csv", 1, slow)
    assert len(kept) == USER_KEPT and len(others) == RUNNING - USER_RUNNING


def test_export_files_of_a_killed_web_process_are_swept_at_the_next_start():
    from web.jobs import ExportJobs
    code = ("import os, sys; from web.jobs import ExportJobs; jobs = ExportJobs(); "
            "print(jobs.directory, flush=True); (jobs.directory / 'calls.xlsx').write_text('x'); "
            "os.kill(os.getpid(), 9)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    left = Path(done.stdout.strip())
    assert done.returncode == -9 and left.is_dir() and left.parent == Path(tempfile.gettempdir())
    ExportJobs()                                             # the next web process starts
    assert not left.exists()


def download_reply(browser, path: str, **params):
    url = browser.base + PREFIX + path + "?" + urllib.parse.urlencode(params)
    with browser.opener.open(urllib.request.Request(url)) as reply:
        return reply.headers, reply.read()


def pbx_now() -> datetime:
    """Now in the demo PBX's timezone (the mirror's; not the machine's UTC)."""
    from zoneinfo import ZoneInfo
    return datetime.now(ZoneInfo("Europe/Berlin")).replace(tzinfo=None)


def test_file_names_carry_the_filter_and_the_pbx_local_time(base):
    browser = user(base, "admin")
    before = pbx_now()
    headers, _ = download_reply(browser, "export", format="xlsx", **PERIOD, tab="missed",
                                status="missed", employee="201")
    name = re.fullmatch(r'attachment; filename="([^"]+)"', headers["Content-Disposition"])[1]
    made = re.fullmatch(r"calls_(\d{4}-\d\d-\d\d_\d{4})_2024-10-20--2024-10-28_missed_missed_201"
                        r"\.xlsx", name)
    assert made, name
    stamp = datetime.strptime(made[1], "%Y-%m-%d_%H%M")
    assert before.replace(second=0, microsecond=0) <= stamp <= pbx_now()
    headers, _ = download_reply(browser, "export", format="csv", period="yesterday",
                                group="Бухгалтерия", number="+7 (916) 123")
    value = headers["Content-Disposition"]
    assert "_yesterday_" in value and "_+7-916-123" in value
    assert "filename*=UTF-8''" in value and urllib.parse.quote("Бухгалтерия") in value


def test_filter_sheet_and_pdf_header_say_the_filter_in_words(base):
    from zoneinfo import ZoneInfo

    from pypdf import PdfReader
    yesterday = (datetime.now(ZoneInfo("Europe/Berlin")).date() - timedelta(days=1))
    day = yesterday.strftime("%d.%m.%Y")
    english, russian = user(base, "admin"), user(base, "operator201")
    params = {"period": "yesterday", "status": "missed", "employee": "201", "tab": "incoming"}
    _, data = download_reply(english, "export", format="xlsx", **params)
    about = dict(load_workbook(io.BytesIO(data)).worksheets[0].iter_rows(values_only=True))
    assert about["Period"] == f"yesterday ({day} – {day})"
    assert about["Status"] == "missed" and about["Tab"] == "Incoming"
    assert re.fullmatch(r"201 \S.*", about["Employees"]), about
    _, data = download_reply(russian, "export", format="xlsx", **params)
    about = dict(load_workbook(io.BytesIO(data)).worksheets[0].iter_rows(values_only=True))
    assert about["Период"] == f"вчера ({day} – {day})"
    assert about["Статус"] == "пропущен" and about["Вкладка"] == "Входящие"
    _, data = download_reply(english, "export", format="pdf", **PERIOD, status="missed,answered",
                             min_talk="5")
    text = PdfReader(io.BytesIO(data)).pages[0].extract_text()
    assert "Period: 20.10.2024 – 28.10.2024" in text
    assert "Status: missed, answered" in text and "Min. talk: 5 s" in text
    assert "period:" not in text and "status:" not in text     # no raw keys


@pytest.mark.parametrize("language, headings", [
    ("en", "Date Direction Who Who (name) Whom Whom (name) Contact Line DID Status Answered by "
           "Missed by Wait Talk Records"),
    ("ru", "Дата звонка Направление Кто Кто (имя) Кому Кому (имя) Контакт Линия DID Статус Ответил "
           "Пропустили Ожидание Разговор Записи"),
])
def test_pdf_headings_do_not_wrap(cli, demo_mirror, tmp_path, language, headings):
    from pypdf import PdfReader
    out = tmp_path / "calls.pdf"          # the CLI exports every column: the widest table
    code, _, err = cli("export", "--db", demo_mirror, "--format", "pdf", "--out", out,
                       "--language", language, "--from", "2024-10-27", "--to", "2024-10-27")
    assert code == 0, err
    text = PdfReader(out).pages[0].extract_text()
    assert headings in text, text[:600]


def test_every_row_and_column_of_a_pdf_is_ruled(cli, demo_mirror, tmp_path):
    """On every page a line under each row and the headings (a shaded rectangle), the column
    edges from the headings down to the last row: every cell boxed."""
    from pypdf import PdfReader
    from pypdf.generic import ContentStream
    out = tmp_path / "calls.pdf"
    code, _, err = cli("export", "--db", demo_mirror, "--format", "pdf", "--out", out,
                       "--from", "2024-10-21", "--to", "2024-10-23")
    assert code == 0, err
    reader = PdfReader(out)
    assert len(reader.pages) > 1

    def near(a: float, b: float) -> bool:               # PDF points, written to 2 decimals
        return abs(a - b) < 0.1

    for page in reader.pages:
        rows = len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", page.extract_text()))
        segments, start, left = [], None, None
        for operands, operator in ContentStream(page.get_contents(), reader).operations:
            if operator == b"re":                        # the headings' shaded row
                x, y, width, height = map(float, operands)
                left, right = x, x + width
                top, heading_bottom = max(y, y + height), min(y, y + height)
            elif operator == b"m":
                start = tuple(map(float, operands))
            elif operator == b"l":
                segments.append((start, tuple(map(float, operands))))
        if left is None:                                 # the totals alone
            assert rows == 0 and not segments
            continue
        across = [a[1] for a, b in segments
                  if a[1] == b[1] and near(a[0], left) and near(b[0], right)]
        assert rows > 0 and len(set(across)) == rows, (rows, across)  # a line under each row
        assert all(y < heading_bottom for y in across)
        bottom = min(across)
        down = [(a, b) for a, b in segments if a[0] == b[0]]
        assert all(near(max(a[1], b[1]), top) and near(min(a[1], b[1]), bottom)
                   for a, b in down), down        # from the headings to the last row
        edges = sorted(a[0] for a, _ in down)
        columns = len(export_columns(None)) - 1                       # the call id is left out
        assert near(edges[0], left) and near(edges[-1], right) and len(edges) == columns + 1


@pytest.mark.parametrize("language", ["en", "ru"])
def test_pdf_times_durations_and_numbers_are_never_broken(cli, demo_mirror, tmp_path, language):
    """Every column (the widest table): a call's time, its numbers and its talk stay on one
    line of their cells; only free text wraps."""
    from pypdf import PdfReader
    out = tmp_path / "calls.pdf"
    period = ("--from", "2024-10-21", "--to", "2024-10-23")
    code, _, err = cli("export", "--db", demo_mirror, "--format", "pdf", "--out", out,
                       "--language", language, *period)
    assert code == 0, err
    lines = {line for page in PdfReader(out).pages for line in page.extract_text().split("\n")}
    text = "\n".join(lines)
    code, calls, _ = cli("calls", "--db", demo_mirror, *period, "--format", "jsonl",
                         "--limit", "100000")
    assert code == 0
    calls = [json.loads(line) for line in calls.splitlines()]
    numbers = {n for c in calls for n in (c["src"], c["dst"], c["did"]) if n and len(n) > 6}
    assert len(numbers) > 20 and [n for n in numbers if n not in text] == []
    times = {datetime.fromisoformat(c["start"]).strftime("%Y-%m-%d %H:%M:%S") for c in calls}
    assert [t for t in times if t not in text] == []
    talks = {str(timedelta(seconds=c["talk_s"])) for c in calls}
    assert len(talks) > 20 and [t for t in talks if t not in text] == []


@pytest.mark.parametrize("language", ["en", "ru"])
def test_a_pdf_of_every_column_keeps_long_numbers_and_times_whole(language):
    """The widest table (every column, two PBXs): a German mobile number, the longest time and
    duration fit their cells on one line, in type still readable (4.7 points with Russian
    headings and the PBX's column)."""
    from fpdf import FPDF

    from exports.pdf_table import RuledTable
    from exports.writers import FONTS, _pdf_widths
    pdf = FPDF(orientation="L", format="A4")
    pdf.add_font("DejaVu", "", FONTS / "DejaVuSansCondensed.ttf")
    pdf.add_font("DejaVu", "B", FONTS / "DejaVuSansCondensed-Bold.ttf")
    pdf.add_page()
    columns = [c for c in export_columns(None, several_pbxs=True) if c.key != "linkedid"]
    titles = [translator(language)(c.title) for c in columns]
    widths, size = _pdf_widths(pdf, columns, titles)
    assert 4.7 <= size <= 7 and abs(sum(widths) - pdf.epw) < 0.01
    table = RuledTable(pdf, widths, titles, size, size * 3.8 / 7, "DejaVu")
    pdf.set_font("DejaVu", "", size)
    whole = {"number": "+4915123456789", "time": "2026-12-31 23:59:59",
             "duration": "99:59:59", "count": "100"}
    for column, room in zip(columns, table._rooms):
        if column.kind in whole:
            assert table._wrapped(whole[column.kind], room, "") == [whole[column.kind]], column


def test_a_cell_longer_than_a_page_is_cut_at_the_page(cli, demo_mirror, tmp_path):
    """A call with comment after comment: its row ends on its page, the cell cut with "…"."""
    from pypdf import PdfReader
    from pypdf.generic import ContentStream
    mirror = tmp_path / "module.db"
    with closing(sqlite3.connect(demo_mirror)) as source, \
            closing(sqlite3.connect(mirror)) as copy:
        source.backup(copy)                  # with what is still in its WAL
    code, calls, err = cli("calls", "--db", mirror, "--from", "2024-10-21", "--to", "2024-10-27",
                           "--format", "jsonl", "--limit", "3")
    assert code == 0 and len(calls.splitlines()) == 3, (calls, err)
    call = json.loads(calls.splitlines()[1])
    linkedid, day = call["linkedid"], call["start"][:10]
    period = ("--from", day, "--to", day)
    for n in range(12):
        assert cli("comment", "--db", mirror, linkedid, f"{n} " + "word " * 39)[0] == 0
    out = tmp_path / "calls.pdf"
    code, _, err = cli("export", "--db", mirror, "--format", "pdf", "--out", out, *period)
    assert code == 0, err
    reader = PdfReader(out)
    text = "".join(page.extract_text() for page in reader.pages)
    assert "…" in text and "0 word" in text and "11 word" not in text
    for page in reader.pages:
        height = float(page.mediabox.height)
        lows = [float(operands[1]) for operands, operator
                in ContentStream(page.get_contents(), reader).operations if operator == b"Td"]
        assert lows and min(lows) > 0 and max(lows) < height       # every line on its page


def test_every_pdf_page_starts_with_the_headings_and_long_cells_wrap_whole(
        cli, demo_mirror, tmp_path):
    """Many pages of calls: each page repeats the headings; a cell's text is wrapped onto
    more lines of its row, never cut."""
    from pypdf import PdfReader
    out = tmp_path / "calls.pdf"
    code, _, err = cli("export", "--db", demo_mirror, "--format", "pdf", "--out", out,
                       "--from", "2024-10-21", "--to", "2024-10-27")
    assert code == 0, err
    pages = [page.extract_text() for page in PdfReader(out).pages]
    assert len(pages) > 3
    headings = "Date Direction Who Who (name) Whom Whom (name) Contact"
    assert all(headings in text for text in pages)
    words = " ".join(" ".join(pages).split())
    code, calls, err = cli("calls", "--db", demo_mirror, "--from", "2024-10-21", "--to",
                           "2024-10-27", "--format", "jsonl", "--limit", "100000")
    names = {json.loads(line)["src_name"] for line in calls.splitlines()} - {None, ""}
    long = [name for name in names if len(name) > 20 and " " in name]
    assert long and all(" ".join(name.split()) in words for name in long)
