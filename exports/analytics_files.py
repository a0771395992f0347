"""Analytics reports (`mirror.analytics`) as files: Excel with a native chart of the table (and
the traffic heat map), CSV of the table, and a printable PDF with the chart drawn. A report is
small (a row per employee, day, line or queue), so the files are written whole, to a temp file
renamed into place. Titles are translated for the file's language; every text cell is
neutralised against formulas. Nothing here imports Flask."""
from __future__ import annotations

import csv
import io
import math
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Iterator

from exports.writers import FONTS, _csv_value, about, file_name, neutralised
from i18n import translated
from mirror.analytics import COUNT, PERCENT, REPORT_TITLES, SECONDS, TEXT, Report
from mirror.queries import CallFilter

ANALYTICS_FORMATS = ("xlsx", "csv", "pdf")
# The reports that take an option, and its parameter (of mirror.analytics.OPTION_PARAMETERS):
# the Analytics page's field, what a mailed report keeps among its filters.
# Totals that are no column's sum (the callbacks report's): English title and kind.
TOTAL_TITLES = {"missed": ("Missed calls", COUNT), "called_back": ("Called back", COUNT),
                "unreturned": ("Not called back", COUNT),
                "callback_rate": ("Callback rate", PERCENT),
                "median_callback_s": ("Median time to callback", SECONDS),
                "attempts_unreturned": ("Unanswered attempts to call back", COUNT)}
# What a chart's labels are, per report (its x axis).
CATEGORY_TITLES = {"employees": "Employee", "traffic": "Period", "lines": "Line", "menus": "Menu",
                   "queues": "Queue", "callbacks": "Called back"}
TITLE_VALUES = ("band",)        # columns whose values are titles (the callbacks' bands)
NUMBER_FORMATS = {COUNT: "#,##0", SECONDS: "[h]:mm:ss", PERCENT: "0.0%"}
# The page's chart colours (Chart.js's), then more for menus with many digits.
PALETTE = ((54, 162, 235), (255, 99, 132), (75, 192, 192), (255, 159, 64), (153, 102, 255),
           (201, 203, 207), (255, 205, 86), (46, 125, 50), (121, 85, 72), (0, 96, 100),
           (173, 20, 87), (96, 125, 139))


def report_about(report: Report, params: dict, flt: CallFilter, clock, language: str,
                 exported_by: str, db=None) -> list[tuple[str, str]]:
    """What heads a report's file: its name, then what heads a call export (who, when, the
    period and filter in words) and the report's own option. Names are English (translated
    where written), values in `language`. Without `db` employees are named by extension."""
    lines = about(exported_by, params, flt if db is not None else replace(flt, employees=[]),
                  clock, language, db)
    if db is None and flt.employees:
        lines.append(("Employees", ", ".join(flt.employees)))
    lines.insert(0, ("Report", translated(REPORT_TITLES[report.name], language)))
    if "service_level_s" in report.extra:
        lines.append(("Service level", translated(
            f"Answered within {report.extra['service_level_s']} s", language)))
    return lines


def report_file_name(report: Report, fmt: str, flt: CallFilter, clock) -> str:
    """`analytics-queues_2026-12-04_1530_2026-11-01--2026-11-30.xlsx`: the report, made when
    (PBX time), its period and filter, safe as a file name."""
    return file_name(f"analytics-{report.name}", fmt, {}, flt, clock)


def write_report(out: Path, fmt: str, report: Report, *, language: str,
                 about: list[tuple[str, str]]) -> None:
    """Write `report` to `out` in `fmt`; the file appears whole or not at all."""
    if fmt not in ANALYTICS_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of: {', '.join(ANALYTICS_FORMATS)}")
    with _whole(out) as partial:
        if fmt == "xlsx":
            _write_xlsx(partial, ReportTable(report, language), about)
        elif fmt == "pdf":
            _write_pdf(partial, ReportTable(report, language), about)
        else:
            partial.write_text("\ufeff" + report_csv(report, language), encoding="utf-8",
                               newline="")


@contextmanager
def _whole(out: Path) -> Iterator[Path]:
    """A temp file beside `out`, renamed to it when the block ends well, removed otherwise."""
    partial = out.with_name(f".{out.name}.partial")
    try:
        yield partial
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)


class ReportTable:
    """A report's table as files show it: titles and title-like values in `language`, the
    values of every column, its totals row and the totals that are no column's."""

    def __init__(self, report: Report, language: str):
        self.report = report
        self.language = language
        self.keys = [key for key, _, _ in report.columns]
        self.kinds = [kind for _, _, kind in report.columns]
        self.titles = [self.say(title) for _, title, _ in report.columns]
        self.title = self.say(REPORT_TITLES[report.name])

    def say(self, text: str) -> str:
        return translated(text, self.language)

    def rows(self) -> list[list]:
        return [[self.say(row[key]) if key in TITLE_VALUES else row[key] for key in self.keys]
                for row in self.report.rows]

    def totals(self) -> list | None:
        """The totals row ("Total" first), when some column has a total."""
        totals = self.report.totals or {}
        if not any(key in totals for key in self.keys[1:]):
            return None
        return [self.say("Total")] + [totals.get(key) for key in self.keys[1:]]

    def summary(self) -> list[tuple[str, str, object]]:
        """(title, kind, value) of the totals that are no column's."""
        return [(self.say(TOTAL_TITLES.get(key, (key, COUNT))[0]),
                 TOTAL_TITLES.get(key, (key, COUNT))[1], value)
                for key, value in (self.report.totals or {}).items() if key not in self.keys]

    def text(self, value, kind: str) -> str:
        """A value as text: counts as digits, seconds as h:mm:ss, percents as `12.5%`."""
        if value is None:
            return ""
        if kind == SECONDS:
            return _csv_value(timedelta(seconds=value))
        if kind == PERCENT:
            number = f"{value:.1f}%"
            return number.replace(".", ",") if self.language == "ru" else number
        return str(value)

    def chart_labels(self) -> list[str]:
        chart = self.report.chart
        callbacks = self.report.name == "callbacks"       # its labels are bands: titles
        return [self.say(label) if callbacks else str(label) for label in chart["labels"]]

    def chart_series(self) -> list[dict]:
        return [{**series, "title": self.say(series["title"])}
                for series in self.report.chart["series"]]

    def axis_titles(self) -> tuple[str, str]:
        """The chart's axes: what its labels are, and what is counted."""
        series = self.report.chart["series"]
        counted = series[0]["title"] if len(series) == 1 else "Calls"
        return self.say(CATEGORY_TITLES[self.report.name]), self.say(counted)


# --- CSV ------------------------------------------------------------------------------------------

def report_csv(report: Report, language: str) -> str:
    """The table as CSV (no BOM): the header, the rows, the totals row; the delimiter of the
    language's locale, as the calls' CSV; text neutralised against formulas."""
    table = ReportTable(report, language)
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";" if language == "ru" else ",",
                        lineterminator="\r\n")
    writer.writerow([neutralised(title) for title in table.titles])
    totals = table.totals()
    for values in table.rows() + ([totals] if totals else []):
        writer.writerow([neutralised(table.text(v, kind)) if kind == TEXT else
                         table.text(v, kind) for v, kind in zip(values, table.kinds)])
    return buffer.getvalue()


# --- Excel ----------------------------------------------------------------------------------------

def _write_xlsx(out: Path, table: ReportTable, about: list[tuple[str, str]]) -> None:
    """The table (typed cells, a bold totals row, the summary under it), a native chart of
    it beside, the traffic heat map on its own sheet, and the About sheet."""
    from openpyxl import Workbook
    from openpyxl.styles import Font
    book = Workbook()
    sheet = book.active
    sheet.title = _sheet_title(table.title)
    sheet.freeze_panes = "A2"
    _append(sheet, table.titles, [TEXT] * len(table.titles), bold=True)
    for values in table.rows():
        _append(sheet, values, table.kinds)
    totals = table.totals()
    if totals:
        _append(sheet, totals, table.kinds, bold=True)
    if table.summary():
        sheet.append([])
        for title, kind, value in table.summary():
            _append(sheet, [title, value], [TEXT, kind])
    if table.report.chart["labels"]:
        sheet.add_chart(_xlsx_chart(sheet, table), f"{_column(len(table.keys) + 2)}2")
    _fit_widths(sheet)
    if "heatmap" in table.report.extra:
        _heatmap_sheet(book.create_sheet(_sheet_title(table.say("Heat map"))), table)
    about_sheet = book.create_sheet(_sheet_title(table.say("About")))
    for name, value in about:
        _append(about_sheet, [table.say(name), value], [TEXT, TEXT])
        about_sheet.cell(about_sheet.max_row, 1).font = Font(bold=True)
    about_sheet.column_dimensions["A"].width = 24
    about_sheet.column_dimensions["B"].width = 60
    book.save(out)


def _append(sheet, values: list, kinds: list[str], *, bold: bool = False) -> None:
    """A row of typed cells: text neutralised, seconds as durations, percents as fractions."""
    from openpyxl.styles import Font
    sheet.append([_cell_value(v, kind) for v, kind in zip(values, kinds)])
    for cell, kind in zip(sheet[sheet.max_row], kinds):
        if kind in NUMBER_FORMATS:
            cell.number_format = NUMBER_FORMATS[kind]
        if bold:
            cell.font = Font(bold=True)


def _cell_value(value, kind: str):
    if value is None:
        return None
    if kind == SECONDS:
        return timedelta(seconds=value)
    if kind == PERCENT:
        return value / 100
    if kind == COUNT:
        return value
    return neutralised(str(value))


def _xlsx_chart(sheet, table: ReportTable):
    """A bar chart (stacked where the report's is) or, for traffic, a line chart, of the
    table's own cells when the chart's labels are a column of it, else of a block of the
    chart's figures written under the table."""
    from openpyxl.chart import BarChart, LineChart, Reference
    chart_data = table.report.chart
    if chart_data["type"] == "line":
        chart = LineChart()
    else:
        chart = BarChart()
        chart.type = "col"
        if chart_data.get("stacked"):
            chart.grouping = "stacked"
            chart.overlap = 100
    header_row, label_col, series_cols = _chart_cells(sheet, table)
    last_row = header_row + len(chart_data["labels"])
    for col in series_cols:
        chart.add_data(Reference(sheet, min_col=col, min_row=header_row, max_row=last_row),
                       titles_from_data=True)
    for series in chart.series:
        series.smooth = False                     # a line chart's default curves the trend
    chart.set_categories(Reference(sheet, min_col=label_col, min_row=header_row + 1,
                                   max_row=last_row))
    chart.title = table.title
    chart.x_axis.title, chart.y_axis.title = table.axis_titles()
    chart.x_axis.delete = chart.y_axis.delete = False     # else Excel hides the axes
    chart.legend.position = "b"
    chart.height = 9
    chart.width = min(40.0, max(16.0, 0.6 * len(chart_data["labels"]) + 8))
    return chart


def _chart_cells(sheet, table: ReportTable) -> tuple[int, int, list[int]]:
    """(header row, label column, series columns) of the chart's figures on the sheet."""
    chart = table.report.chart
    keys = table.keys
    for key in keys:
        if [row[key] for row in table.report.rows] == chart["labels"] and all(
                series["key"] in keys for series in chart["series"]):
            return 1, keys.index(key) + 1, [keys.index(s["key"]) + 1 for s in chart["series"]]
    sheet.append([])
    series = table.chart_series()
    _append(sheet, [table.axis_titles()[0]] + [s["title"] for s in series],
            [TEXT] * (len(series) + 1), bold=True)
    header_row = sheet.max_row
    for i, label in enumerate(table.chart_labels()):
        _append(sheet, [label] + [s["values"][i] for s in series], [TEXT] + [COUNT] * len(series))
    return header_row, 1, list(range(2, len(series) + 2))


def _heatmap_sheet(sheet, table: ReportTable) -> None:
    """Calls by weekday (rows) and local hour (columns), shaded by a colour scale."""
    from openpyxl.formatting.rule import ColorScaleRule
    heatmap = table.report.extra["heatmap"]
    _append(sheet, [""] + [f"{hour:02}" for hour in heatmap["hours"]],
            [TEXT] * (len(heatmap["hours"]) + 1), bold=True)
    for day, values in zip(heatmap["days"], heatmap["values"]):
        _append(sheet, [table.say(day)] + values, [TEXT] + [COUNT] * len(values))
    cells = f"B2:{_column(len(heatmap['hours']) + 1)}{len(heatmap['days']) + 1}"
    sheet.conditional_formatting.add(cells, ColorScaleRule(
        start_type="num", start_value=0, start_color="FFFFFF",
        end_type="max", end_color="E0533D"))
    for index in range(2, len(heatmap["hours"]) + 2):
        sheet.column_dimensions[_column(index)].width = 5


def _fit_widths(sheet) -> None:
    for index, values in enumerate(sheet.iter_cols(values_only=True), start=1):
        widest = max(len(str(v)) for v in values if v is not None) if any(values) else 0
        sheet.column_dimensions[_column(index)].width = min(60, max(8, widest + 3))


def _column(index: int) -> str:
    from openpyxl.utils import get_column_letter
    return get_column_letter(index)


def _sheet_title(text: str) -> str:
    """A sheet's name: no []:*?/\\ and at most 31 characters."""
    return "".join(" " if c in "[]:*?/\\" else c for c in text)[:31]


# --- PDF ------------------------------------------------------------------------------------------

def _write_pdf(out: Path, table: ReportTable, about: list[tuple[str, str]]) -> None:
    """A4 landscape: the title, what the report covers, the chart (and the traffic heat map),
    then the table with its totals."""
    from fpdf import FPDF
    pdf = FPDF(orientation="L", format="A4")
    pdf.set_auto_page_break(True, margin=12)
    pdf.add_font("DejaVu", "", FONTS / "DejaVuSansCondensed.ttf")
    pdf.add_font("DejaVu", "B", FONTS / "DejaVuSansCondensed-Bold.ttf")
    pdf.add_page()
    pdf.set_font("DejaVu", "B", 14)
    pdf.cell(0, 8, table.title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 8)
    for name, value in about:
        if name != "Report":                   # the title says it
            pdf.cell(0, 4.5, f"{table.say(name)}: {value}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    if table.report.chart["labels"]:
        _PdfChart(pdf, table).draw()
    if "heatmap" in table.report.extra:
        _pdf_heatmap(pdf, table)
    _pdf_table(pdf, table)
    pdf.output(str(out))


class _PdfChart:
    """The report's chart drawn with lines and rectangles: y axis with a scale, bars (side by
    side or stacked) or lines, labels under the x axis (turned when they do not fit), legend."""

    HEIGHT = 70         # mm of the plot
    LABELS = 24         # mm under the plot for turned labels

    def __init__(self, pdf, table: ReportTable):
        self.pdf = pdf
        self.table = table
        self.chart = table.report.chart
        self.labels = table.chart_labels()
        self.series = table.chart_series()

    def draw(self) -> None:
        pdf = self.pdf
        if pdf.y + self.HEIGHT + self.LABELS + 20 > pdf.page_break_trigger:
            pdf.add_page()
        x_title, y_title = self.table.axis_titles()
        self.left, self.top = pdf.l_margin + 14, pdf.y + 4
        self.width = pdf.epw - 16
        self.bottom = self.top + self.HEIGHT
        self.scale_top, step = _scale(self._highest())
        self._axes(step, y_title)
        self.slot = self.width / len(self.labels)
        if self.chart["type"] == "line":
            self._lines()
        else:
            self._bars()
        self._x_labels(x_title)
        self._legend()

    def _highest(self) -> float:
        values = [[v or 0 for v in s["values"]] for s in self.series]
        if self.chart.get("stacked"):
            return max(map(sum, zip(*values)), default=0)
        return max((max(v, default=0) for v in values), default=0)

    def _y(self, value: float) -> float:
        return self.bottom - self.HEIGHT * value / self.scale_top

    def _axes(self, step: float, title: str) -> None:
        pdf = self.pdf
        pdf.set_font("DejaVu", "", 6)
        pdf.set_draw_color(220, 220, 220)
        pdf.set_line_width(0.1)
        tick = 0.0
        while tick <= self.scale_top + step / 2:
            y = self._y(tick)
            pdf.line(self.left, y, self.left + self.width, y)
            text = str(int(tick))
            pdf.text(self.left - 1.5 - pdf.get_string_width(text), y + 1, text)
            tick += step
        pdf.set_draw_color(90, 90, 90)
        pdf.set_line_width(0.25)
        pdf.line(self.left, self.top, self.left, self.bottom)
        pdf.line(self.left, self.bottom, self.left + self.width, self.bottom)
        pdf.set_font("DejaVu", "", 7)
        with pdf.rotation(90, self.left - 11, self.top + self.HEIGHT / 2):
            pdf.text(self.left - 11 - pdf.get_string_width(title) / 2,
                     self.top + self.HEIGHT / 2, title)

    def _bars(self) -> None:
        pdf = self.pdf
        stacked = self.chart.get("stacked")
        width = min(30.0, self.slot * 0.7) if stacked else min(20.0, self.slot * 0.8 /
                                                                 len(self.series))
        group = width if stacked else width * len(self.series)
        for i in range(len(self.labels)):
            start = self.left + self.slot * (i + 0.5) - group / 2
            base = 0.0
            for n, series in enumerate(self.series):
                value = series["values"][i] or 0
                pdf.set_fill_color(*PALETTE[n % len(PALETTE)])
                x = start if stacked else start + n * width
                low = base if stacked else 0
                if value:
                    pdf.rect(x, self._y(low + value), width, self._y(low) - self._y(low + value),
                             style="F")
                base += value if stacked else 0

    def _lines(self) -> None:
        pdf = self.pdf
        pdf.set_line_width(0.5)
        for n, series in enumerate(self.series):
            pdf.set_draw_color(*PALETTE[n % len(PALETTE)])
            pdf.set_fill_color(*PALETTE[n % len(PALETTE)])
            points = [(self.left + self.slot * (i + 0.5), self._y(v))
                      for i, v in enumerate(series["values"]) if v is not None]
            for a, b in zip(points, points[1:]):
                pdf.line(*a, *b)
            if len(self.labels) <= 62:
                for x, y in points:
                    pdf.circle(x, y, 0.6, style="F")

    def _x_labels(self, title: str) -> None:
        """Under the axis: level when every label fits its slot, else turned upright (every
        n-th when even that is too close)."""
        pdf = self.pdf
        pdf.set_font("DejaVu", "", 6)
        widest = max(pdf.get_string_width(label) for label in self.labels)
        level = widest <= self.slot - 1
        every = 1 if level else math.ceil(3 / self.slot)
        for i in range(0, len(self.labels), every):
            label = self.labels[i] if level else _shortened(pdf, self.labels[i], self.LABELS - 4)
            centre = self.left + self.slot * (i + 0.5)
            if level:
                pdf.text(centre - pdf.get_string_width(label) / 2, self.bottom + 3.5, label)
            else:
                x, y = centre + 0.8, self.bottom + 1.5 + pdf.get_string_width(label)
                with pdf.rotation(90, x, y):
                    pdf.text(x, y, label)
        below = 6 if level else self.LABELS
        pdf.set_font("DejaVu", "", 7)
        pdf.text(self.left + self.width / 2 - pdf.get_string_width(title) / 2,
                 self.bottom + below + 2, title)
        pdf.set_y(self.bottom + below + 4)

    def _legend(self) -> None:
        pdf = self.pdf
        pdf.set_font("DejaVu", "", 7)
        x = self.left
        for n, series in enumerate(self.series):
            width = pdf.get_string_width(series["title"]) + 9
            if x + width > self.left + self.width:
                x, pdf.y = self.left, pdf.y + 4.5
            pdf.set_fill_color(*PALETTE[n % len(PALETTE)])
            pdf.rect(x, pdf.y + 0.6, 3, 3, style="F")
            pdf.text(x + 4.2, pdf.y + 3.2, series["title"])
            x += width
        pdf.set_y(pdf.y + 8)


def _scale(highest: float) -> tuple[float, float]:
    """The y axis's top and step: a round step (1, 2 or 5 times a power of ten), 4 to 10 of
    them up to the highest value."""
    if highest <= 0:
        return 5.0, 1.0
    magnitude = 10 ** math.floor(math.log10(highest / 5))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= highest / 8)
    step = max(step, 1.0)
    return step * math.ceil(highest / step), step


def _shortened(pdf, text: str, width: float) -> str:
    while text and pdf.get_string_width(text) > width:
        text = text[:-2] + "…"
    return text


def _pdf_heatmap(pdf, table: ReportTable) -> None:
    """Calls by weekday and local hour: a grid shaded from white to red, the count in it."""
    heatmap = table.report.extra["heatmap"]
    cell_w, cell_h, left = (pdf.epw - 16) / 24, 6, pdf.l_margin + 14
    if pdf.y + 12 + cell_h * 8 > pdf.page_break_trigger:
        pdf.add_page()
    pdf.set_font("DejaVu", "B", 10)
    pdf.cell(0, 7, table.say("Heat map"), new_x="LMARGIN", new_y="NEXT")
    top = pdf.y + 1
    highest = max((max(day) for day in heatmap["values"]), default=0) or 1
    pdf.set_font("DejaVu", "", 6)
    for h, hour in enumerate(heatmap["hours"]):
        text = f"{hour:02}"
        pdf.text(left + cell_w * (h + 0.5) - pdf.get_string_width(text) / 2, top + 3, text)
    pdf.set_draw_color(255, 255, 255)
    for d, (day, values) in enumerate(zip(heatmap["days"], heatmap["values"])):
        y = top + 4 + cell_h * d
        pdf.set_text_color(0, 0, 0)
        pdf.text(pdf.l_margin, y + 4, table.say(day))
        for h, value in enumerate(values):
            share = value / highest
            pdf.set_fill_color(255, round(255 - 172 * share), round(255 - 194 * share))
            pdf.rect(left + cell_w * h, y, cell_w, cell_h, style="FD")
            if value:
                text = str(value)
                pdf.set_text_color(*((255, 255, 255) if share > 0.6 else (0, 0, 0)))
                pdf.text(left + cell_w * (h + 0.5) - pdf.get_string_width(text) / 2, y + 4,
                         text)
    pdf.set_text_color(0, 0, 0)
    pdf.set_y(top + 4 + cell_h * 7 + 5)


def _pdf_table(pdf, table: ReportTable) -> None:
    """The table, numbers right-aligned, the totals row bold, then the other totals."""
    from fpdf.fonts import FontFace
    rows = [[table.text(v, k) for v, k in zip(values, table.kinds)] for values in table.rows()]
    totals = table.totals()
    pdf.set_font("DejaVu", "B", 7)
    widths = [max(pdf.get_string_width(title) + 3, 12) for title in table.titles]
    pdf.set_font("DejaVu", "", 7)
    for row in rows:
        widths = [max(w, min(90, pdf.get_string_width(text) + 3)) for w, text in zip(widths, row)]
    scale = pdf.epw / sum(widths)
    widths = [w * scale for w in widths] if scale < 1 else widths
    align = ["LEFT" if kind == TEXT else "RIGHT" for kind in table.kinds]
    bold = FontFace(emphasis="BOLD")
    pdf.set_fill_color(255, 255, 255)          # the chart's last colour is no cell's
    with pdf.table(col_widths=widths, width=sum(widths), align="LEFT", line_height=4,
                   text_align=align, first_row_as_headings=True, repeat_headings=1,
                   headings_style=FontFace(emphasis="BOLD", fill_color=(235, 238, 242))) as grid:
        grid.row(table.titles)
        for row in rows:
            grid.row(row)
        if totals:
            line = grid.row()
            for value, kind in zip(totals, table.kinds):
                line.cell(table.text(value, kind), style=bold)
    pdf.ln(3)
    pdf.set_font("DejaVu", "", 9)
    for title, kind, value in table.summary():
        pdf.cell(0, 5, f"{title}: {table.text(value, kind)}", new_x="LMARGIN", new_y="NEXT")
