"""Analytics reports as files (exports.analytics_files), read back: the Excel table holds the
report's figures typed (durations, percents, counts), with a native chart of it and, for
traffic, the heat map; LibreOffice opens every workbook; the CSV parses back to the same
rows; the PDF carries the Russian title, the chart's legend and the table; names from the PBX
are neutralised; a failed write leaves no file."""
import csv
import io
import sqlite3
import subprocess
from datetime import timedelta

import pytest
from openpyxl import load_workbook
from openpyxl.chart import BarChart, LineChart

from exports.analytics_files import (ANALYTICS_FORMATS, TITLE_VALUES, ReportTable, report_about,
                                     report_csv, report_file_name, write_report)
from exports.writers import neutralised
from i18n import RUSSIAN, translated
from mirror.analytics import REPORT_TITLES, REPORTS, Options, build_report
from mirror.database import open_module_db
from mirror.settings import load
from pbx.mirror_context import MirrorContext

PERIOD = {"from": "2024-10-14", "to": "2024-10-28"}      # the demo's calls and empty days


@pytest.fixture(scope="module")
def mirror(demo_mirror):
    db = open_module_db(demo_mirror, readonly=True)
    yield db, MirrorContext(load(None), db)
    db.close()


def made(mirror, name, params=PERIOD, options=Options(), visible_to=None):
    db, context = mirror
    flt = context.call_filter(params, visible_to=visible_to)
    return build_report(name, flt, db, context.clock(), options), flt


def written(tmp_path, report, fmt, language="en", about=(("Exported by", "test"),)):
    out = tmp_path / f"{report.name}-{language}.{fmt}"
    write_report(out, fmt, report, language=language, about=list(about))
    return out


def shown(value, kind, thousands=False):
    """A value as the CSV (and, with thousands, LibreOffice's view of the Excel cell) show it."""
    if value is None:
        return ""
    if kind == "seconds":
        return f"{value // 3600}:{value // 60 % 60:02}:{value % 60:02}"
    if kind == "percent":
        return f"{value:.1f}%"
    if kind == "count":
        return f"{value:,}" if thousands else str(value)
    return neutralised(str(value))


def table_lines(report, language="en", thousands=False):
    """The header, the rows and the totals row, as text."""
    say = lambda text: translated(text, language)  # noqa: E731
    lines = [[say(title) for _, title, _ in report.columns]]
    for row in report.rows:
        lines.append([shown(say(row[key]) if key == "band" else row[key], kind, thousands)
                      for key, _, kind in report.columns])
    keys = [key for key, _, _ in report.columns]
    if any(key in report.totals for key in keys[1:]):
        lines.append([say("Total")] + [shown(report.totals.get(key), kind, thousands)
                                       for key, _, kind in report.columns[1:]])
    return lines


@pytest.mark.parametrize("name", REPORTS)
def test_excel_holds_the_table_typed_and_a_native_chart_of_it(mirror, tmp_path, name):
    report, _ = made(mirror, name)
    assert report.rows, "the demo has figures for every report"
    book = load_workbook(written(tmp_path, report, "xlsx"))
    sheet = book.worksheets[0]
    assert sheet.title == REPORT_TITLES[name][:31]
    values = list(sheet.iter_rows(values_only=True))
    assert list(values[0][:len(report.columns)]) == [title for _, title, _ in report.columns]
    for row, line in zip(report.rows, values[1:]):
        for (key, _, kind), value in zip(report.columns, line):
            expected = row[key]
            if expected is None:
                assert value is None
            elif kind == "seconds":
                assert value == timedelta(seconds=expected)
            elif kind == "percent":
                assert value == pytest.approx(expected / 100)
            else:                                           # an empty text: no cell
                assert value == (expected if expected != "" else None), key
    formats = {kind: sheet.cell(2, i).number_format
               for i, (_, _, kind) in enumerate(report.columns, start=1)}
    assert formats.get("seconds", "[h]:mm:ss") == "[h]:mm:ss"
    assert formats.get("percent", "0.0%") == "0.0%"
    totals = values[len(report.rows) + 1]
    if name != "callbacks":
        assert totals[0] == "Total" and sheet.cell(len(report.rows) + 2, 1).font.b
        for (key, _, kind), value in zip(report.columns[1:], totals[1:]):
            if key in report.totals and kind == "count":
                assert value == report.totals[key]
    [chart] = sheet._charts
    assert isinstance(chart, LineChart if name == "traffic" else BarChart)
    assert chart.grouping == ("stacked" if report.chart.get("stacked") else
                              "standard" if name == "traffic" else "clustered")
    assert len(chart.series) == len(report.chart["series"])
    assert chart.x_axis.title is not None and chart.y_axis.title is not None
    about = book["About"]
    assert [c.value for c in about["A"]] == ["Exported by"] and about["B1"].value == "test"


def test_the_traffic_workbook_has_the_heat_map_with_a_colour_scale(mirror, tmp_path):
    report, _ = made(mirror, "traffic")
    book = load_workbook(written(tmp_path, report, "xlsx", language="ru"))
    assert book.sheetnames[0] == "Нагрузка по часам и дням"
    heat = book.worksheets[1]
    rows = list(heat.iter_rows(values_only=True))
    assert rows[0][1:] == tuple(f"{hour:02}" for hour in range(24))
    assert [r[0] for r in rows[1:]] == ["Пн", "Вт", "Ср", "Чт", "Пт", "Сб", "Вс"]
    assert [list(r[1:]) for r in rows[1:]] == report.extra["heatmap"]["values"]
    assert sum(map(sum, report.extra["heatmap"]["values"])) == report.totals["calls"]
    [scale] = list(heat.conditional_formatting)
    assert str(scale.sqref) == "B2:Y8" and scale.rules[0].type == "colorScale"


def test_libreoffice_opens_every_report_workbook_with_its_figures(mirror, tmp_path):
    from tests.stack import required_binary
    soffice = required_binary("LibreOffice", ("soffice", "libreoffice"),
                              "./bin/test installs it (apt-get install libreoffice-calc-nogui)")
    reports = {name: made(mirror, name)[0] for name in REPORTS}
    files = [str(written(tmp_path, report, "xlsx")) for report in reports.values()]
    subprocess.run([soffice, f"-env:UserInstallation=file://{tmp_path}/profile", "--headless",
                    # every sheet, each cell as shown (its number format applied)
                    "--convert-to", "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,"
                    "true,false,false,-1", "--outdir", str(tmp_path / "csv"), *files],
                   check=True, capture_output=True, timeout=300)
    for name, report in reports.items():
        sheet = tmp_path / "csv" / f"{name}-en-{REPORT_TITLES[name][:31]}.csv"
        about = tmp_path / "csv" / f"{name}-en-About.csv"
        assert sheet.exists() and about.exists(), sorted((tmp_path / "csv").iterdir())
        lines = list(csv.reader(open(sheet, encoding="utf-8")))
        expected = table_lines(report, thousands=True)
        assert [line[:len(report.columns)] for line in lines[:len(expected)]] == expected


@pytest.mark.parametrize("language, delimiter", [("en", ","), ("ru", ";")])
@pytest.mark.parametrize("name", REPORTS)
def test_csv_parses_back_to_the_report_rows(mirror, tmp_path, name, language, delimiter):
    report, _ = made(mirror, name)
    data = written(tmp_path, report, "csv", language).read_bytes()
    assert data.startswith("\ufeff".encode())               # Excel reads it as UTF-8
    lines = list(csv.reader(io.StringIO(data.decode("utf-8-sig")), delimiter=delimiter))
    expected = table_lines(report, language)
    if language == "ru":
        expected = [[text.replace(".", ",") if text.endswith("%") else text for text in line]
                    for line in expected]
    assert lines == expected
    assert report_csv(report, language) == data.decode("utf-8-sig")


@pytest.mark.parametrize("name", REPORTS)
def test_every_title_of_a_report_has_its_russian(mirror, name):
    """What the page, the files and the mails show of a report: no word left in English."""
    report, flt = made(mirror, name)
    table = ReportTable(report, "en")
    db, context = mirror
    about = report_about(report, PERIOD, flt, context.clock(), "en", "test", db=db)
    shown = [table.title, *table.titles, *table.axis_titles(), "Total", "Heat map", "About",
             *(series["title"] for series in table.chart_series()),
             *(row[key] for row in report.rows for key in TITLE_VALUES if key in row),
             *(title for title, _, _ in table.summary()),
             *report.extra.get("heatmap", {}).get("days", ()),
             *(title for title, _ in about)]
    english = [text for text in shown if text not in RUSSIAN and translated(text, "ru") == text]
    assert [text for text in english if not text.isdigit()] == []    # but the digits pressed


@pytest.mark.parametrize("name", REPORTS)
def test_pdf_has_the_russian_title_the_chart_legend_and_the_table(mirror, tmp_path, name):
    from pypdf import PdfReader
    report, flt = made(mirror, name)
    _, context = mirror
    about = report_about(report, PERIOD, flt, context.clock(), "ru", "admin (admin)")
    out = written(tmp_path, report, "pdf", "ru", about)
    assert out.read_bytes().startswith(b"%PDF")
    text = "\n".join(page.extract_text() for page in PdfReader(out).pages)
    assert translated(REPORT_TITLES[name], "ru") in text
    assert "Выгрузил: admin (admin)" in text and "Период: 14.10.2024 – 28.10.2024" in text
    for series in report.chart["series"]:                      # the legend
        assert translated(series["title"], "ru") in text
    assert translated(report.columns[0][1], "ru") in text
    first = report.rows[0][report.columns[0][0]]
    assert translated(first, "ru") in text
    if name == "traffic":
        assert "Пн" in text and "Вс" in text                      # the heat map's rows
    if name == "callbacks":
        median = shown(report.totals["median_callback_s"], "seconds")
        assert f"Медиана времени до перезвона: {median}" in text


def test_empty_reports_are_written_in_every_format(mirror, tmp_path):
    """A period without calls: a table without rows (traffic: days of zeros), no chart where
    there is nothing to draw."""
    for name in REPORTS:
        report, _ = made(mirror, name, {"from": "2025-03-01", "to": "2025-03-02"})
        for fmt in ANALYTICS_FORMATS:
            assert written(tmp_path, report, fmt).stat().st_size > 0
        charts = load_workbook(tmp_path / f"{name}-en.xlsx").worksheets[0]._charts
        assert len(charts) == (1 if report.chart["labels"] else 0)
        assert report.chart["labels"] or name not in ("traffic", "callbacks")   # days, bands


@pytest.fixture
def hostile_mirror(demo_mirror, tmp_path):
    """The demo mirror with an employee, another employee and a line named like formulas."""
    path = tmp_path / "hostile.db"
    with sqlite3.connect(demo_mirror) as source, sqlite3.connect(path) as copy:
        source.backup(copy)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE employee SET name = '=HYPERLINK(\"http://x.test\",\"hi\")' "
                   "WHERE extension = '220'")
        db.execute("UPDATE employee SET name = '+SUM(1;2)<b>bold</b>' WHERE extension = '219'")
        db.execute("UPDATE call SET line = '@cmd|calc' WHERE line = 'MTS SIP'")
    db = open_module_db(path, readonly=True)
    yield db, MirrorContext(load(None), db)
    db.close()


HOSTILE = ('=HYPERLINK("http://x.test","hi")', "+SUM(1;2)<b>bold</b>", "@cmd|calc")


def test_names_like_formulas_are_neutralised_in_excel_and_csv(hostile_mirror, tmp_path):
    employees = made(hostile_mirror, "employees")[0]
    lines = made(hostile_mirror, "lines", options=Options(source="calls"))[0]
    for report, names in ((employees, HOSTILE[:2]), (lines, HOSTILE[2:])):
        texts = set()
        for sheet in load_workbook(written(tmp_path, report, "xlsx")).worksheets:
            for row in sheet.iter_rows():
                for cell in row:
                    assert cell.data_type != "f", (sheet.title, cell.coordinate, cell.value)
                    if isinstance(cell.value, str):
                        texts.add(cell.value)
        assert {"'" + name for name in names} <= texts
        assert not any(text.startswith(("=", "+", "@")) for text in texts)
        rows = list(csv.reader(io.StringIO(report_csv(report, "en"))))
        assert {"'" + name for name in names} <= {text for row in rows for text in row}
        assert not any(text.startswith(("=", "+", "@")) for row in rows for text in row)


def test_the_pdf_shows_names_as_typed(hostile_mirror, tmp_path):
    from pypdf import PdfReader
    report, _ = made(hostile_mirror, "employees")
    text = "".join(page.extract_text() for page in PdfReader(
        written(tmp_path, report, "pdf")).pages)
    assert "+SUM(1;2)<b>bold</b>" in text


def test_a_failed_write_leaves_no_file(mirror, tmp_path):
    report, _ = made(mirror, "employees")
    report.rows[-1]["talk_s"] = "a lot"                  # no number: every writer fails on it
    for fmt in ANALYTICS_FORMATS:
        with pytest.raises(TypeError):
            written(tmp_path, report, fmt)
    assert list(tmp_path.iterdir()) == []
    good, _ = made(mirror, "queues")
    taken = tmp_path / "queues-en.xlsx"
    (taken / "inside").mkdir(parents=True)               # a folder where the file goes
    with pytest.raises(OSError):
        written(tmp_path, good, "xlsx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["queues-en.xlsx"] and taken.is_dir()
    with pytest.raises(ValueError, match="unknown format"):
        write_report(tmp_path / "x.docx", "docx", good, language="en", about=[])


def test_about_and_file_name_say_the_report_period_and_filter(mirror):
    db, context = mirror
    clock = context.clock()
    params = {**PERIOD, "employee": "201", "direction": "incoming"}
    report, flt = made(mirror, "queues", params, Options(service_level_s=30))
    lines = dict(report_about(report, params, flt, clock, "en", "admin (admin)", db))
    assert lines["Report"] == "Queues and ring groups"
    assert lines["Period"] == "14.10.2024 – 28.10.2024" and lines["Direction"] == "incoming"
    assert lines["Employees"].startswith("201 ") and lines["Exported by"] == "admin (admin)"
    assert lines["Service level"] == "Answered within 30 s"
    russian = dict(report_about(report, params, flt, clock, "ru", "admin", None))
    assert russian["Report"] == "Очереди и группы" and russian["Employees"] == "201"
    assert russian["Service level"] == "Отвечено за 30 с"
    name = report_file_name(report, "pdf", flt, clock)
    assert name.startswith("analytics-queues_") and name.endswith(
        "_2024-10-14--2024-10-28_incoming_201.pdf")
    assert name.isascii() and "/" not in name and " " not in name
