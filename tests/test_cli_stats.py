"""`extcdr stats` on the demo mirror: every report as a table, JSON (the report's own, with
its period) and CSV (the export's), or written to a file; bad input is one line, exit 2, and
no file."""
import json

import pytest
from openpyxl import load_workbook
from openpyxl.chart import BarChart, LineChart

from exports.analytics_files import report_csv
from mirror.analytics import REPORT_TITLES, REPORTS, Options, build_report
from mirror.database import open_module_db
from mirror.records import iso_time
from mirror.settings import load
from pbx.mirror_context import MirrorContext

PERIOD = ("--from", "2024-10-14", "--to", "2024-10-28")


def expected(demo_mirror, name, params=None, options=Options()):
    db = open_module_db(demo_mirror, readonly=True)
    try:
        context = MirrorContext(load(None), db)
        flt = context.call_filter(params or {"from": "2024-10-14", "to": "2024-10-28"})
        report = build_report(name, flt, db, context.clock(), options)
        return report, flt, context.clock()
    finally:
        db.close()


@pytest.mark.parametrize("name", REPORTS)
def test_json_is_the_report_with_its_period(cli, demo_mirror, name):
    code, out, err = cli("stats", "--db", demo_mirror, "--report", name, *PERIOD,
                         "--format", "json")
    assert code == 0 and err == ""
    report, flt, clock = expected(demo_mirror, name)
    assert json.loads(out) == json.loads(json.dumps({**report.as_json(), "period": {
        "from": iso_time(flt.start_ms, clock.tz), "to": iso_time(flt.end_ms, clock.tz)}}))
    assert json.loads(out)["period"] == {"from": "2024-10-14T00:00:00+02:00",
                                         "to": "2024-10-29T00:00:00+01:00"}


@pytest.mark.parametrize("name", REPORTS)
def test_csv_is_the_exported_table(cli, demo_mirror, name):
    code, out, err = cli("stats", "--db", demo_mirror, "--report", name, *PERIOD,
                         "--format", "csv", "--language", "ru")
    assert code == 0 and err == ""
    assert out == report_csv(expected(demo_mirror, name)[0], "ru")
    assert out.split("\n", 1)[0].count(";") == len(expected(demo_mirror, name)[0].columns) - 1


@pytest.mark.parametrize("name", REPORTS)
def test_table_lines_up_the_columns_with_totals(cli, demo_mirror, name):
    code, out, err = cli("stats", "--db", demo_mirror, "--report", name, *PERIOD)
    assert code == 0 and err == ""
    report = expected(demo_mirror, name)[0]
    lines = out.splitlines()
    assert lines[0] == REPORT_TITLES[name]
    header = lines[1]
    for _, title, _ in report.columns:
        assert title in header
    assert len(lines) >= 2 + len(report.rows)
    first = str(report.rows[0][report.columns[0][0]])
    assert lines[2].startswith(first)
    numbers = [i for i, (_, _, kind) in enumerate(report.columns) if kind == "count"]
    column = report.columns[numbers[0]]          # right-aligned under its title
    end = header.index(column[1]) + len(column[1])
    assert lines[2][:end].endswith(str(report.rows[0][column[0]]))
    if name == "callbacks":
        assert f"Missed calls: {report.totals['missed']}" in lines
        assert f"Callback rate: {report.totals['callback_rate']:.1f}%" in lines
    else:
        assert lines[-1].startswith("Total") and set(lines[-2]) <= {"-", " "}


@pytest.mark.parametrize("fmt", ["xlsx", "pdf", "csv"])
@pytest.mark.parametrize("name", REPORTS)
def test_out_writes_the_file_the_page_exports(cli, demo_mirror, tmp_path, name, fmt):
    out = tmp_path / f"report.{fmt}"
    code, stdout, err = cli("stats", "--db", demo_mirror, "--report", name, *PERIOD,
                            "--format", fmt, "--out", out, "--language", "ru")
    assert code == 0 and stdout == "" and f"written to {out}" in err
    report = expected(demo_mirror, name)[0]
    if fmt == "xlsx":
        book = load_workbook(out)
        [chart] = book.worksheets[0]._charts
        assert isinstance(chart, LineChart if name == "traffic" else BarChart)
        about = dict(book["Об отчёте"].iter_rows(values_only=True))
        assert about["Выгрузил"] == "extcdr stats"
        assert about["Период"] == "14.10.2024 – 28.10.2024"
    elif fmt == "pdf":
        assert out.read_bytes().startswith(b"%PDF")
    else:
        assert out.read_bytes().decode("utf-8-sig") == report_csv(report, "ru")
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_options_reach_the_report(cli, demo_mirror):
    code, out, _ = cli("stats", "--db", demo_mirror, "--report", "traffic", *PERIOD,
                       "--grain", "week", "--format", "json")
    assert code == 0
    assert [row["period"] for row in json.loads(out)["rows"]] == [
        "2024-10-14", "2024-10-21", "2024-10-28"]
    code, out, _ = cli("stats", "--db", demo_mirror, "--report", "queues", *PERIOD,
                       "--service-level", "45", "--format", "json")
    assert code == 0
    assert json.loads(out) | {"period": None} == expected(
        demo_mirror, "queues", options=Options(service_level_s=45))[0].as_json() | {
        "period": None}
    assert json.loads(out)["columns"][4]["title"] == "Answered within 45 s"


def test_filters_and_the_years_reach_the_report(cli, demo_mirror):
    code, out, _ = cli("stats", "--db", demo_mirror, "--report", "employees", *PERIOD,
                       "--employee", "201,202", "--direction", "incoming", "--format", "json")
    assert code == 0
    assert json.loads(out)["rows"] == expected(demo_mirror, "employees", {
        "from": "2024-10-14", "to": "2024-10-28", "employee": "201,202",
        "direction": "incoming"})[0].rows
    code, out, _ = cli("stats", "--db", demo_mirror, "--report", "callbacks",
                       "--period", "last_year", "--format", "json")
    assert code == 0 and json.loads(out)["totals"]["missed"] == 0    # the demo is of 2024


@pytest.mark.parametrize("args, message", [
    (["--report", "nope"], "unknown report 'nope'"),
    (["--report", "traffic", "--grain", "year"], "unknown grain 'year'"),
    (["--report", "queues", "--service-level", "x"], "service level must be 0 to 3600"),
    (["--report", "queues", "--service-level", "4000"], "service level must be 0 to 3600"),
    (["--report", "menus", "--from", "2024-10-28", "--to", "2024-10-01"], "the period is empty"),
    (["--report", "menus", "--from", "yesterday-ish"], "bad date 'yesterday-ish'"),
    (["--report", "menus", "--period", "forever"], "invalid choice: 'forever'"),
    (["--report", "menus", "--status", "lost"], "unknown status"),
    (["--report", "menus", "--format", "xlsx"], "xlsx and pdf with --out FILE"),
    (["--report", "menus", "--format", "json", "--out", "{tmp}/x.json"], "with --out"),
    (["--report", "menus", "--format", "pdf", "--out", "{tmp}/no/x.pdf"], "no such directory"),
    (["--format", "json"], "the following arguments are required: --report"),
])
def test_bad_input_is_one_line_exit_2_and_no_file(cli, demo_mirror, tmp_path, args, message):
    code, out, err = cli("stats", "--db", demo_mirror,
                         *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert err.startswith("extcdr: ") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_missing_mirror_is_one_line(cli, tmp_path):
    code, out, err = cli("stats", "--db", tmp_path / "none.db", "--report", "lines")
    assert code != 0 and out == "" and len(err.strip().splitlines()) == 1
