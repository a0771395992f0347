"""Exports of exactly what a filter selects: Excel (openpyxl write_only), CSV, PDF, JSON Lines.
Rows come from `mirror.queries` one at a time, so memory does not grow with the number of calls.
Nothing here imports Flask: the page, the CLI and the mailed reports share it."""
from __future__ import annotations

import csv
import io
import re
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterable, Iterator

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter

from i18n import PERIOD_LABELS, STATUS_LABELS, TAB_LABELS, translator
from i18n.hangup_words import hangup_words, side_words
from mirror.contacts import contact_label, with_contacts
from mirror.queries import (CallFilter, QueryError, call_rows, calls_query, employee_member,
                            employee_names, names_by_pbx, pbx_ids)
from mirror.records import call_record, json_line

FORMATS = ("xlsx", "csv", "pdf", "jsonl")
PDF_LIMIT = 20_000       # a PDF is a printable list (about 500 pages); Excel and CSV have no limit
MEDIA_TYPES = {
    "pdf": "application/pdf",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
}
FONTS = Path(__file__).parent / "fonts"        # DejaVu: Cyrillic in PDFs (licence beside it)
# Characters that make a spreadsheet read a cell as a formula (a caller name is untrusted).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Column:
    key: str
    title: str         # English; translated for the file's language
    width: int
    kind: str = "text"  # text | time | duration | count | number (a phone number, as text)


# Export columns in order; the page's column choice selects among them (see COLUMNS_OF_PAGE).
EXPORT_COLUMNS = (
    Column("time", "Date", 20, "time"),
    Column("pbx", "PBX", 12),               # a history of several PBXs only
    Column("direction", "Direction", 12),
    Column("src", "Who", 18, "number"), Column("src_name", "Who (name)", 22),
    Column("dst", "Whom", 18, "number"), Column("dst_name", "Whom (name)", 22),
    Column("contact", "Contact", 26),
    Column("line", "Line", 16), Column("did", "DID", 16, "number"),
    Column("status", "Status", 18),
    Column("answered_by", "Answered by", 14), Column("missed_by", "Missed by", 18),
    Column("wait", "Wait", 9, "duration"), Column("talk", "Talk", 9, "duration"),
    Column("recordings", "Records", 8, "count"),
    Column("queue", "Queue", 10), Column("queue_wait", "Wait in queue", 9, "duration"),
    Column("hangup", "Hung up", 30),
    Column("tags", "Tags", 17), Column("comments", "Comments", 28),
    Column("linkedid", "Call ID", 26),
)
COLUMNS_OF_PAGE = {"direction": ("direction",), "time": ("time",),
                   "src": ("src", "src_name", "contact"), "dst": ("dst", "dst_name", "contact"),
                   "line": ("line", "did"), "status": ("status",),
                   "answered": ("answered_by", "missed_by"), "queue": ("queue", "queue_wait"),
                   "wait": ("wait",), "talk": ("talk", "hangup"), "record": ("recordings",),
                   "notes": ("tags", "comments"), "pbx": ("pbx",)}


# The page's columns (the user picks among them), and those shown until they pick. The PBX's
# is not picked: it is shown when the history holds several PBXs (`with_pbx_column`).
PAGE_COLUMNS = tuple(c for c in COLUMNS_OF_PAGE if c != "pbx")
DEFAULT_PAGE_COLUMNS = tuple(c for c in PAGE_COLUMNS if c not in ("answered", "queue"))


def chosen_columns(setting: str | None) -> tuple[str, ...]:
    """The page columns a user chose (their `columns` setting), in the page's order."""
    if not setting:
        return DEFAULT_PAGE_COLUMNS
    return tuple(c for c in PAGE_COLUMNS if c in setting.split(","))


def with_pbx_column(columns: tuple[str, ...], pbxs: list[str]) -> tuple[str, ...]:
    """The page's columns and, when the user sees several PBXs' calls (`pbxs`, see
    `queries.pbx_ids`), the PBX's after the date."""
    if len(pbxs) < 2:
        return columns
    at = columns.index("time") + 1 if "time" in columns else 0
    return columns[:at] + ("pbx",) + columns[at:]


def export_columns(page_columns: Iterable[str] | None,
                   several_pbxs: bool = False) -> list[Column]:
    """The export's columns for the page's chosen ones (all when None, the PBX's of a history
    of `several_pbxs` only); the call id last."""
    if page_columns is None:
        return [column for column in EXPORT_COLUMNS if several_pbxs or column.key != "pbx"]
    keys = {key for c in page_columns for key in COLUMNS_OF_PAGE.get(c, ())} | {"linkedid"}
    return [column for column in EXPORT_COLUMNS if column.key in keys]


def neutralised(text: str) -> str:
    """Text a spreadsheet shows as typed: formula starts get a leading apostrophe-like quote.
    A phone number `+79161234567` stays as it is (digits only after the plus)."""
    if text and text.startswith(FORMULA_STARTS) and not _phone_number(text):
        return "'" + text
    return text


def _phone_number(text: str) -> bool:
    return text[0] == "+" and len(text) > 1 and text[1:].isdigit()


class CallCells:
    """One call row → the export's cell values (Python types), in the PBX's local time."""

    def __init__(self, columns: list[Column], clock, language: str):
        self.columns = columns
        self.clock = clock
        self.delimiter = ";" if language == "ru" else ","   # what Excel expects in that locale
        self.statuses = STATUS_LABELS[language]
        self.say = translator(language)
        self.language = language

    def titles(self) -> list[str]:
        return [self.say(c.title) for c in self.columns]

    def values(self, row: dict) -> list:
        return [self._value(column.key, row) for column in self.columns]

    def _value(self, key: str, row: dict):
        if key == "time":
            return self.clock.to_local(row["start_ms"] // 1000).replace(tzinfo=None)
        if key == "direction":
            return self.say(row["direction"])
        if key == "status":
            return self.statuses[row["status"]]
        if key == "wait":
            return timedelta(seconds=row["wait_s"])
        if key == "talk":
            return timedelta(seconds=row["talk_s"])
        if key == "recordings":
            return len(row["recordings"])
        if key == "missed_by":
            return ", ".join(row["missed_by"])
        if key == "queue_wait":
            return timedelta(seconds=row["queue_wait_s"]) if row["queue_wait_s"] is not None \
                else None
        if key == "hangup":
            hangup = row["hangup"] or {}
            return hangup_words(hangup.get("side"), hangup.get("cause"),
                                hangup.get("cause_txt", ""), self.language)
        if key == "tags":
            return neutralised(", ".join(tag["name"] for tag in row["tags"]))
        if key == "comments":
            return neutralised("; ".join(f"{c['author']}: {c['text']}" for c in row["comments"]))
        if key == "contact":
            return neutralised(contact_label(row.get("contact")))
        return neutralised(row[key] or "")


def about(exported_by: str, params: dict[str, object], flt: CallFilter, clock, language: str,
          db) -> list[tuple[str, str]]:
    """What heads an export, in words of the user's language: who made it, when, the period it
    covers (PBX time) and the rest of the filter. Names are English (translated where the file
    is written); values are already in `language`."""
    say = translator(language)
    lines = [("Exported by", exported_by),
             ("Exported at", clock.to_local(time.time()).strftime("%d.%m.%Y %H:%M")),
             ("Period", _period_in_words(params.get("period"), flt, clock, say))]
    if flt.tab != "all":
        lines.append(("Tab", say(TAB_LABELS[flt.tab])))
    if flt.directions:
        lines.append(("Direction", ", ".join(say(d) for d in flt.directions)))
    if flt.statuses:
        lines.append(("Status", ", ".join(STATUS_LABELS[language][s] for s in flt.statuses)))
    if flt.unreturned:
        lines.append(("Unreturned missed", say("yes")))
    if flt.number:
        lines.append(("Search", flt.number))
    if flt.employees:
        names, by_pbx = employee_names(db, flt.pbx), names_by_pbx(db)

        def named(employee: str) -> str:        # `201`, or `office:201` (that PBX's 201)
            pbx, extension = employee_member(employee)
            name = by_pbx.get(pbx, {}).get(extension) if pbx else names.get(extension)
            return f"{employee} {name or ''}".strip()
        lines.append(("Employees", ", ".join(named(e) for e in flt.employees)))
    if flt.groups:
        lines.append(("Groups", ", ".join(flt.groups)))
    if flt.min_talk:
        lines.append(("Min. talk", f"{flt.min_talk} {say('s')}"))
    if flt.max_talk is not None:
        lines.append(("Max. talk", f"{flt.max_talk} {say('s')}"))
    if flt.recording is not None:
        lines.append(("Recording", say("with a recording" if flt.recording
                                       else "without a recording")))
    if flt.queues:
        lines.append(("Queue", ", ".join(flt.queues)))
    if flt.tags:
        lines.append(("Tags", ", ".join(flt.tags)
                      + (f" ({say('all tags')})" if flt.tag_mode == "all" else "")))
    if flt.comment:
        lines.append(("Comments", flt.comment))
    if flt.hangup:
        lines.append(("Hung up", ", ".join(
            side_words(None if side == "unknown" else side, language) for side in flt.hangup)))
    if flt.pbx is not None:
        lines.append(("PBX", flt.pbx))
    return lines


def _period_in_words(period, flt: CallFilter, clock, say) -> str:
    """`yesterday (03.12.2026 – 03.12.2026)`, `01.12.2026 – 03.12.2026` (whole days) or
    `03.12.2026 09:30 – 03.12.2026 12:00`."""
    start = clock.to_local(flt.start_ms / 1000)
    end = clock.to_local(flt.end_ms / 1000)
    if start.time() == end.time() == datetime.min.time():      # whole local days
        days = f"{start:%d.%m.%Y} – {clock.to_local(flt.end_ms / 1000 - 1):%d.%m.%Y}"
        return f"{say(PERIOD_LABELS[period]).lower()} ({days})" if period in PERIOD_LABELS \
            else days
    return f"{start:%d.%m.%Y %H:%M} – {end:%d.%m.%Y %H:%M}"


def file_name(kind: str, fmt: str, params: dict[str, object], flt: CallFilter, clock) -> str:
    """`calls_2026-12-04_1530_yesterday_missed_201.xlsx`: what it holds, made when (PBX time),
    and its filter in a short form safe as a file name."""
    values = ([flt.tab] if flt.tab != "all" else []) + flt.statuses + flt.directions \
        + (["unreturned"] if flt.unreturned else []) + flt.employees + flt.groups \
        + ([flt.number] if flt.number else []) + ([f"talk{flt.min_talk}s"] if flt.min_talk else [])
    parts = [kind, clock.to_local(time.time()).strftime("%Y-%m-%d_%H%M"),
             _period_part(params.get("period"), flt, clock), *map(_safe_part, values)]
    return "_".join(filter(None, parts))[:150].rstrip("_-") + f".{fmt}"


def _period_part(period, flt: CallFilter, clock) -> str:
    """`yesterday`, `2026-12-03`, `2026-12-01--2026-12-03` or `2026-12-03T0930--2026-12-03T1200`."""
    if period in PERIOD_LABELS:
        return str(period)
    start, end = (clock.to_local(ms / 1000) for ms in (flt.start_ms, flt.end_ms))
    if start.time() != datetime.min.time() or end.time() != datetime.min.time():
        return f"{start:%Y-%m-%dT%H%M}--{end:%Y-%m-%dT%H%M}"
    last = clock.to_local(flt.end_ms / 1000 - 1)
    return f"{start:%Y-%m-%d}" + ("" if start.date() == last.date() else f"--{last:%Y-%m-%d}")


def _safe_part(text: str) -> str:
    """Letters, digits, + and - (no separators, quotes or dots), at most 24 characters."""
    return re.sub(r"[^\w+-]+", "-", text).strip("-")[:24]


def check_pdf_size(calls: int) -> None:
    if calls > PDF_LIMIT:
        raise TooManyForPdf(f"a PDF holds at most {PDF_LIMIT:,} calls; narrow the filter or "
                            f"export Excel or CSV")


def export_file(out: Path, fmt: str, flt: CallFilter, db, clock, language: str,
                about: list[tuple[str, str]], page_columns: Iterable[str] | None = None,
                progress=None) -> int:
    """Write the calls of `flt` to `out` in `fmt`; the file appears whole or not at all.
    `progress(calls so far)` is told every thousand calls. Returns the number of calls."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of: {', '.join(FORMATS)}")
    cells = CallCells(export_columns(page_columns, len(pbx_ids(db, flt.visible_to)) > 1), clock,
                      language)
    counted = _Counted(rows_of(flt, db), progress)
    partial = out.with_name(f".{out.name}.partial")
    try:
        if fmt == "xlsx":
            write_xlsx(partial, counted, cells, about)
        elif fmt == "pdf":
            write_pdf(partial, counted, cells, about)
        else:
            with open(partial, "w", encoding="utf-8", newline="") as file:
                file.writelines(text_chunks(fmt, counted, cells))
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return counted.count


class _Counted:
    """Rows passed through, counted (and the count reported every thousand rows)."""

    def __init__(self, rows: Iterable[dict], progress=None):
        self.rows = rows
        self.count = 0
        self.progress = progress

    def __iter__(self):
        for row in self.rows:
            self.count += 1
            if self.progress is not None and self.count % 1000 == 0:
                self.progress(self.count)
            yield row
        if self.progress is not None:
            self.progress(self.count)


def rows_of(flt: CallFilter, db) -> Iterator[dict]:
    """Every call of the filter, newest first, streamed (no limit, no page), each with the
    name of its outside number (`contact`)."""
    return with_contacts(call_rows(calls_query(replace(flt, limit=None, after=None), db)), db,
                         flt.phonebook)


def write_xlsx(out: Path, rows: Iterable[dict], cells: CallCells,
               about: list[tuple[str, str]]) -> None:
    """An Excel workbook: a sheet describing the export, then the calls with a frozen header,
    an autofilter, widths, real datetimes and durations, numbers as text."""
    book = Workbook(write_only=True)
    say = cells.say
    summary = book.create_sheet(say("Filter"))
    summary.column_dimensions["A"].width = 22
    summary.column_dimensions["B"].width = 60
    for name, value in about:
        summary.append([_bold(summary, say(name)), neutralised(value)])
    sheet = book.create_sheet(say("Calls"))
    sheet.freeze_panes = "A2"
    for index, column in enumerate(cells.columns, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = column.width
    sheet.append([_bold(sheet, title) for title in cells.titles()])
    # One cell per formatted column, its format set once, given each row's value: a row is
    # written before the next is appended (write-only), and a new styled cell per value
    # costs the writer a fifth of its time.
    formatted = [_formatted_cell(sheet, c.kind) for c in cells.columns]
    count = 0
    for count, row in enumerate(rows, start=1):
        line = cells.values(row)
        for index, cell in enumerate(formatted):
            if cell is not None and line[index] is not None:
                cell.value = line[index]
                line[index] = cell
        sheet.append(line)
    sheet.auto_filter.ref = f"A1:{get_column_letter(len(cells.columns))}{count + 1}"
    book.save(out)


def _bold(sheet, text: str) -> WriteOnlyCell:
    cell = WriteOnlyCell(sheet, value=text)
    cell.font = Font(bold=True)
    cell.alignment = Alignment(vertical="top")
    return cell


def _formatted_cell(sheet, kind: str) -> WriteOnlyCell | None:
    number_format = {"time": "yyyy-mm-dd hh:mm:ss", "duration": "[h]:mm:ss"}.get(kind)
    if number_format is None:
        return None
    cell = WriteOnlyCell(sheet)
    cell.number_format = number_format
    return cell


class TooManyForPdf(QueryError):
    """A PDF of more calls than anyone prints."""


def write_pdf(out: Path, rows: Iterable[dict], cells: CallCells,
              about: list[tuple[str, str]]) -> None:
    """A printable list (A4 landscape) with the filter on top and totals at the end."""
    from fpdf import FPDF

    from exports.pdf_table import RuledTable
    say = cells.say
    pdf = FPDF(orientation="L", format="A4")
    pdf.set_auto_page_break(True, margin=12)
    pdf.add_font("DejaVu", "", FONTS / "DejaVuSansCondensed.ttf")
    pdf.add_font("DejaVu", "B", FONTS / "DejaVuSansCondensed-Bold.ttf")
    pdf.add_page()
    pdf.set_font("DejaVu", "B", 13)
    pdf.cell(0, 8, say("Extended call history"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 8)
    for name, value in about:
        pdf.cell(0, 4.5, f"{say(name)}: {value}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    # The call id is left out (an Excel or CSV file has it), unless it is all that is chosen.
    shown = [i for i, c in enumerate(cells.columns) if c.key != "linkedid"] or [
        i for i, c in enumerate(cells.columns)]
    titles = [cells.titles()[i] for i in shown]
    widths, size = _pdf_widths(pdf, [cells.columns[i] for i in shown], titles)
    totals = _Totals()
    table = RuledTable(pdf, widths, titles, size, size * _PDF_LINE, "DejaVu")
    for count, row in enumerate(rows, start=1):
        check_pdf_size(count)
        values = cells.values(row)
        table.add([_text(values[i]) for i in shown])
        totals.add(row)
    table.close()
    pdf.ln(3)
    pdf.set_font("DejaVu", "B", 9)
    for line in totals.lines(cells):
        pdf.cell(0, 5, line, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(out))


# The PDF table's type (points) and its lines (mm a point); what the widest value of a kind
# of column looks like (a time, a duration, a count, a phone number of 13 digits), never
# broken; how narrow a column of free text may be before the type shrinks (mm at that type:
# at least 12, and 0.65 a unit of its width in a spreadsheet). Every column (20) then takes
# 5.2-point type (Russian headings: 4.9), as before numbers were kept whole, and 20,000 calls
# take 762 pages where they took 1,003.
_PDF_TYPE, _PDF_LINE = 7.0, 3.8 / 7
_PDF_WHOLE = {"time": "0000-00-00 00:00:00", "duration": "00:00:00", "count": "000",
              "number": "+0000000000000"}
_PDF_NARROWEST, _PDF_MM_A_WIDTH = 12.0, 0.65


def _pdf_widths(pdf, columns: list[Column], titles: list[str]) -> tuple[list[float], float]:
    """The columns' widths across the page and the table's type size. A column is at least
    as wide as its bold heading and as its kind's widest value (`_PDF_WHOLE`), which never
    wrap; one of free text at least `_PDF_NARROWEST` or its share of its spreadsheet width,
    and the room left is theirs in proportion to those widths. Columns wider than the page
    together (all of them chosen) take a smaller type instead."""
    pad = 2 * pdf.c_margin + 0.5
    pdf.set_font("DejaVu", "B", _PDF_TYPE)
    headings = [pdf.get_string_width(title) for title in titles]
    pdf.set_font("DejaVu", "", _PDF_TYPE)
    least = [max(heading, pdf.get_string_width(_PDF_WHOLE[column.kind])
                 if column.kind in _PDF_WHOLE
                 else max(_PDF_NARROWEST, column.width * _PDF_MM_A_WIDTH))
             for heading, column in zip(headings, columns)]
    room = pdf.epw - pad * len(columns)
    scale = min(1.0, room / sum(least))
    free = [0 if column.kind in _PDF_WHOLE else column.width for column in columns]
    spare = max(0.0, room - scale * sum(least)) / (sum(free) or 1)
    return ([width * scale + pad + spare * share for width, share in zip(least, free)],
            _PDF_TYPE * scale)


class _Totals:
    """Calls by direction and status, talk and wait time, for the end of a PDF."""

    def __init__(self):
        self.calls = 0
        self.by_direction: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.talk = self.wait = 0

    def add(self, row: dict) -> None:
        self.calls += 1
        self.by_direction[row["direction"]] += 1
        self.by_status[row["status"]] += 1
        self.talk += row["talk_s"]
        self.wait += row["wait_s"]

    def lines(self, cells: CallCells) -> list[str]:
        say = cells.say
        average_wait = self.wait // self.calls if self.calls else 0
        return [
            f"{say('Calls')}: {self.calls:,}   " + ", ".join(
                f"{say(d)}: {n:,}" for d, n in sorted(self.by_direction.items())),
            f"{say('Status')}: " + ", ".join(
                f"{cells.statuses[s]}: {n:,}" for s, n in sorted(self.by_status.items())),
            f"{say('Talk')}: {_text(timedelta(seconds=self.talk))}   "
            f"{say('Average wait')}: {_text(timedelta(seconds=average_wait))}",
        ]


def _text(value) -> str:
    value = _csv_value(value)
    return "" if value is None else " ".join(str(value).split())   # no tabs or line breaks


def text_chunks(fmt: str, rows: Iterable[dict], cells: CallCells) -> Iterator[str]:
    """A CSV or JSON Lines export as it is produced (to a file or a response)."""
    return csv_chunks(rows, cells) if fmt == "csv" else jsonl_chunks(rows, cells.clock.tz)


def csv_chunks(rows: Iterable[dict], cells: CallCells) -> Iterator[str]:
    """CSV as it is produced: UTF-8 with a BOM (Excel opens it right), a header line, the
    delimiter of the user's locale."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=cells.delimiter, lineterminator="\r\n")
    writer.writerow(cells.titles())
    yield "\ufeff" + buffer.getvalue()
    as_text = [i for i, c in enumerate(cells.columns) if c.kind in ("time", "duration")]
    for batch in _batches(rows, 500):
        buffer.seek(0)
        buffer.truncate()
        for row in batch:
            values = cells.values(row)
            for i in as_text:                # only times and durations need formatting
                values[i] = _csv_value(values[i])
            writer.writerow(values)
        yield buffer.getvalue()


def _csv_value(value):
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
        return f"{seconds // 3600}:{seconds // 60 % 60:02}:{seconds % 60:02}"
    return value


def jsonl_chunks(rows: Iterable[dict], tz) -> Iterator[str]:
    """The call record contract, one JSON object per line."""
    for batch in _batches(rows, 500):
        yield "".join(json_line(call_record(row, tz)) for row in batch)


def _batches(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
