"""Export benchmark: Excel, PDF and CSV exports (`exports.writers.export_file`) on a mirror of
a generated ~1,000,000-call PBX, each against a bare writer of the same cells measured in the
same run.

The PBX and mirror are built (or reused) exactly as `./bin/bench page` builds them (with a busy
office's tags, comments and hang-ups), so one `--keep DIR` serves both benchmarks; what reading
those costs the export's rows is printed first. Subsets are the newest calls: the period starts
at the start second of the Nth newest call (a few more calls share that second) and ends
2099-12-31.

* XLSX of `--xlsx-calls` calls: `export_file(…, "xlsx", …)` against a bare openpyxl
  `Workbook(write_only=True)` fed by the same query and the same `CallCells.values` (one sheet,
  header and rows; no filter sheet, styles, number formats, widths or autofilter). Both sides
  include the query, the row decoding and the cell values; a separate pass of those alone is
  printed so that the writers' own share can be read off. Budget: <= 1.3x.
* PDF of `--pdf-calls` calls (at most 100 under the most a PDF holds, as calls may share the
  first one's second): `export_file(…, "pdf", …)` against a bare fpdf2 document of the same
  cells (A4 landscape, the same DejaVu font, equal widths, one text per cell that has one, a
  line under each row and the column edges once a page, a new page when one is full; no
  headings on later pages, wrapping or totals), the fastest way fpdf2 draws a ruled table.
  Budget: <= 1.3x. If reportlab is installed (it is not a dependency) the same bare table
  drawn on its canvas is printed beside it: is fpdf2 the faster writer?
* Peak RSS of `extcdr export --format xlsx` of `--rss-calls` SMALL,LARGE calls, a fresh
  process each (its own VmHWM, read by the child at its end). Budget: LARGE - SMALL <= 30 MB.
* CSV of every call (2000-01-01 to 2099-12-31): `export_file(…, "csv", …)` against a bare
  `csv.writer` writing the header and the same `CallCells.values` (it prints datetimes and
  durations as the export does, so the files must match byte for byte, the BOM aside — checked).
  Budget: <= 1.5x. Then the same CSV over HTTP: the real app served by waitress in this process,
  logged in through the stand-in as admin; time to the first body byte (budget <= 1 s) and the
  whole download (compared with the file export, no budget).

After one unmeasured pass of the query and cell values (page cache, imports), that pass, the
export and the baseline run in turn `--runs` times; the fastest of each counts.
Nothing fails on time: the figures and ratios are for reading.

Run: ./bin/bench export [--calls 1000000] [--xlsx-calls 100000] [--pdf-calls 20000]
                        [--rss-calls 10000,200000] [--runs 2] [--keep DIR]
`--keep DIR` builds the PBX and mirror in DIR and reuses them in later runs with the same
--calls and --seed on the same day (1,000,000 calls take a minute or two to generate and sync).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from openpyxl import Workbook

from exports.writers import FONTS, PDF_LIMIT, CallCells, export_columns, export_file, rows_of
from mirror.database import open_module_db
from mirror.pbxtime import PbxClock
from mirror.queries import CallFilter, call_filter, call_rows, calls_query, sync_state
from tests.bench.page import PREFIX, TIMEZONE, annotate, make_app, prepare
from tests.stack import address, serving
from tests.webclient import Browser

ROOT = Path(__file__).resolve().parents[2]
ALL_FROM, PERIOD_END = "2000-01-01", "2099-12-31"     # whole days, PBX time
ABOUT = [("Exported by", "bench"), ("Exported at", "now"), ("Period", "the newest calls")]
LANGUAGE = "en"                                      # "," as the CSV delimiter
XLSX_RATIO, PDF_RATIO, CSV_RATIO, RSS_GROWTH_MB, FIRST_BYTE_S = 1.3, 1.3, 1.5, 30, 1.0
DOWNLOAD_CHUNK = 256 * 1024
T = TypeVar("T")
# `python -m cli ARGS`, then the process's own peak RSS (VmHWM, kB) on stderr.
PEAK_PROBE = ("import sys; from cli import main; code = main(sys.argv[1:]); "
              "status = open('/proc/self/status').read(); "
              "print(status.split('VmHWM:')[1].split()[0], 'kB', file=sys.stderr); sys.exit(code)")


@dataclass
class Result:
    """One row of the final table. `compare`: "ratio" (value / baseline <= budget),
    "difference" (value - baseline <= budget), "absolute" (value <= budget) or "none"."""
    case: str
    calls: int
    value: float
    baseline: float | None
    unit: str                      # "s" or "MB"
    compare: str
    budget: float | None = None

    def score(self) -> float | None:
        if self.compare == "ratio" or (self.compare == "none" and self.baseline):
            return self.value / self.baseline
        if self.compare == "difference":
            return self.value - self.baseline
        return self.value if self.compare == "absolute" else None

    def within(self) -> bool | None:
        return None if self.budget is None else self.score() <= self.budget


class Mirror:
    """The mirror opened read-only as `extcdr export` opens it, with its clock."""

    def __init__(self, path: Path):
        self.path = path
        self.db = open_module_db(path, readonly=True)
        state = sync_state(self.db)
        self.clock = PbxClock(state.get("timezone") or TIMEZONE)
        self.match_digits = int(state.get("number_match_digits", 9))

    def newest_from(self, calls: int) -> str:
        """`from` (local ISO date-time) of a period holding about the newest `calls` calls."""
        row = self.db.execute_sql("SELECT start_ms FROM call ORDER BY start_ms DESC, id DESC "
                                  "LIMIT 1 OFFSET ?", (calls - 1,)).fetchone()
        if row is None:
            return ALL_FROM
        return self.clock.to_local(row[0] // 1000).replace(tzinfo=None).isoformat()

    def filter(self, start: str) -> CallFilter:
        """The filter from `start` to PERIOD_END, as the page and the CLI build it."""
        return call_filter({"from": start, "to": PERIOD_END}, self.clock, time.time(),
                           number_match_digits=self.match_digits)

    def rows(self, start: str) -> Iterable[dict]:
        """The export's rows (`exports.writers.rows_of`) of the filter from `start`."""
        return rows_of(self.filter(start), self.db)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1_000_000, help="calls of the demo PBX")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--xlsx-calls", type=int, default=100_000)
    parser.add_argument("--pdf-calls", type=int, default=PDF_LIMIT)
    parser.add_argument("--rss-calls", default="10000,200000", metavar="SMALL,LARGE")
    parser.add_argument("--runs", type=int, default=2, help="timed passes per side; fastest counts")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="build the PBX and mirror here and reuse them in later runs")
    args = parser.parse_args()
    args.rss_calls = tuple(int(n) for n in args.rss_calls.split(","))
    end_day = datetime.now(ZoneInfo(TIMEZONE)).date()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        run(args.keep, args, end_day)
    else:
        with tempfile.TemporaryDirectory(prefix="extcdr-export-") as tmp:
            run(Path(tmp), args, end_day)


def run(root: Path, args, end_day) -> None:
    """Build (or reuse) the PBX and mirror in root, measure every case, print the table."""
    prepare(root, str(root / "module.db"), args.calls, args.seed, end_day, reuse=True)
    annotate(str(root / "module.db"))
    mirror = Mirror(root / "module.db")
    notes_case(mirror, args.runs)
    cells = CallCells(export_columns(None), mirror.clock, LANGUAGE)
    with tempfile.TemporaryDirectory(prefix="extcdr-export-out-") as tmp:
        out = Path(tmp)
        results = [xlsx_case(mirror, cells, out, args.xlsx_calls, args.runs),
                   pdf_case(mirror, cells, out, args.pdf_calls, args.runs),
                   rss_case(mirror, out, args.rss_calls)]
        csv_result = csv_case(mirror, cells, out, args.runs)
        results += [csv_result, *http_cases(root, csv_result)]
    print_table(results)


# -- the cases ------------------------------------------------------------------------------------

def xlsx_case(mirror: Mirror, cells: CallCells, out: Path, calls: int, runs: int) -> Result:
    """`export_file` xlsx of the newest `calls` calls against a bare write_only workbook."""
    start = mirror.newest_from(calls)
    print(f"\nXLSX of the calls from {start}:", flush=True)
    pair = export_pair(mirror, cells, out, "xlsx", start, bare_xlsx, runs)
    return Result("XLSX export_file vs bare write_only", pair.calls, pair.export_s,
                  pair.baseline_s, "s", "ratio", XLSX_RATIO)


def pdf_case(mirror: Mirror, cells: CallCells, out: Path, calls: int, runs: int) -> Result:
    """`export_file` pdf of the newest `calls` calls against a bare fpdf2 table (and, for
    reading only, the same bare table on reportlab's canvas when it is installed)."""
    start = mirror.newest_from(min(calls, PDF_LIMIT - 100))
    print(f"\nPDF of the calls from {start}:", flush=True)
    pair = export_pair(mirror, cells, out, "pdf", start, bare_pdf, runs)
    if importlib.util.find_spec("reportlab") is None:
        print("  reportlab is not installed: no comparison with its canvas")
    else:
        seconds = min([timed(lambda: bare_reportlab(out / "reportlab.pdf", mirror.rows(start),
                                                    cells))[0]
                       for _ in range(runs + 1)][1:])            # the first: its imports
        print(f"  the same bare table on reportlab's canvas: {seconds:.2f} s "
              f"({seconds / pair.baseline_s:.2f}x fpdf2's)", flush=True)
    return Result("PDF export_file vs bare fpdf2", pair.calls, pair.export_s, pair.baseline_s,
                  "s", "ratio", PDF_RATIO)


def export_pair(mirror: Mirror, cells: CallCells, out: Path, fmt: str, start: str,
                bare: Callable[[Path, Iterable[dict], CallCells], int], runs: int) -> Pair:
    """`export_file` in `fmt` of the calls from `start` (out/calls.FMT) against `bare` of the
    same rows (out/bare.FMT), and the query with the cell values alone; printed."""
    pair = compare(
        lambda: values_pass(mirror.rows(start), cells),
        lambda: export_file(out / f"calls.{fmt}", fmt, mirror.filter(start), mirror.db,
                            mirror.clock, LANGUAGE, ABOUT),
        lambda: bare(out / f"bare.{fmt}", mirror.rows(start), cells), runs)
    print_pair(pair, out / f"calls.{fmt}", out / f"bare.{fmt}")
    return pair


def notes_case(mirror: Mirror, runs: int) -> None:
    """What reading each call's tags, comments and who hung up costs an export's rows: every
    call's rows with them (as exports read them) and without."""
    flt = mirror.filter(ALL_FROM)
    with_notes = min(timed(lambda: sum(1 for _ in rows_of(flt, mirror.db)))[0]
                     for _ in range(runs))
    without = min(timed(lambda: sum(1 for _ in call_rows(calls_query(flt, mirror.db),
                                                        annotate=False)))[0]
                  for _ in range(runs))
    print(f"\nRows of every call with their tags, comments and hang-ups: {with_notes:.2f} s; "
          f"without: {without:.2f} s ({with_notes / without:.2f}x)", flush=True)


def rss_case(mirror: Mirror, out: Path, sizes: tuple[int, int]) -> Result:
    """Peak RSS of `extcdr export --format xlsx` of the newest SMALL and LARGE calls."""
    print("\nPeak RSS of `extcdr export --format xlsx`, a fresh process each:", flush=True)
    peaks = []
    for calls in sizes:
        seconds, (count, peak_mb) = timed(lambda: cli_export_peak(
            mirror, out / f"cli-{calls}.xlsx", mirror.newest_from(calls)))
        print(f"  {count:>9,} calls: {peak_mb:6.1f} MB peak, {seconds:6.2f} s", flush=True)
        peaks.append((count, peak_mb))
    (_, small_mb), (large_count, large_mb) = peaks
    return Result(f"XLSX peak RSS, {sizes[1]:,} vs {sizes[0]:,} (CLI)", large_count, large_mb,
                  small_mb, "MB", "difference", RSS_GROWTH_MB)


def csv_case(mirror: Mirror, cells: CallCells, out: Path, runs: int) -> Result:
    """`export_file` csv of every call against a bare csv.writer of the same values."""
    print(f"\nCSV of every call ({ALL_FROM} to {PERIOD_END}):", flush=True)
    pair = export_pair(mirror, cells, out, "csv", ALL_FROM, bare_csv, runs)
    same = sha256(out / "calls.csv", skip=len("\ufeff".encode())) == sha256(out / "bare.csv")
    print(f"  same bytes as the bare writer's (BOM aside): {'yes' if same else 'NO'}")
    return Result("CSV export_file vs bare csv.writer", pair.calls, pair.export_s,
                  pair.baseline_s, "s", "ratio", CSV_RATIO)


def http_cases(root: Path, csv_result: Result) -> list[Result]:
    """The page's CSV export of every call over HTTP: first byte and whole download (the
    page's default columns, so a little less than the file export's)."""
    print("\nCSV over HTTP (waitress, 4 threads, in this process; admin via the stand-in):",
          flush=True)
    url = f"{PREFIX}/export?" + urlencode({"format": "csv", "from": ALL_FROM, "to": PERIOD_END})
    with serving(make_app(root, str(root / "module.db"))) as server:
        browser = Browser(f"http://{address(server)}")
        status, _, body = browser.login("admin", "admin")
        if status != 302:
            raise SystemExit(f"login as admin failed: HTTP {status} {body[:300]!r}")
        first_s, total_s, size, lines = download(browser, url)
    print(f"  {size / 1e6:,.1f} MB (the page's default columns), {lines - 1:,} calls; first byte "
          f"{first_s:.3f} s, whole {total_s:.2f} s ({size / 1e6 / total_s:.1f} MB/s)", flush=True)
    return [Result("CSV over HTTP, first byte", lines - 1, first_s, None, "s", "absolute",
                   FIRST_BYTE_S),
            Result("CSV over HTTP, whole vs export_file", lines - 1, total_s, csv_result.value,
                   "s", "none")]


# -- the work measured ----------------------------------------------------------------------------

def values_pass(rows: Iterable[dict], cells: CallCells) -> int:
    """Run the query and compute every row's cells, writing nothing; returns the calls."""
    count = 0
    for count, row in enumerate(rows, start=1):
        cells.values(row)
    return count


def bare_xlsx(out: Path, rows: Iterable[dict], cells: CallCells) -> int:
    """The same header and cell values in a bare write_only workbook; returns the calls."""
    book = Workbook(write_only=True)
    sheet = book.create_sheet()
    sheet.append(cells.titles())
    count = 0
    for count, row in enumerate(rows, start=1):
        sheet.append(cells.values(row))
    book.save(out)
    return count


def bare_csv(out: Path, rows: Iterable[dict], cells: CallCells) -> int:
    """The same header and cell values through a bare csv.writer; returns the calls."""
    count = 0
    with open(out, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(cells.titles())
        for count, row in enumerate(rows, start=1):
            writer.writerow(cells.values(row))
    return count


# The bare PDF tables: A4 landscape in mm, 10 mm margins, rows of 4.6 mm in 7-point type.
_PAGE_W, _PAGE_H, _MARGIN, _ROW_H, _TYPE = 297.0, 210.0, 10.0, 4.6, 7


def _bare_rows(rows: Iterable[dict], cells: CallCells
               ) -> Iterator[tuple[bool, float, list[tuple[float, str]]]]:
    """Where each bare row goes: (a new page first?, its top, (left, text) of each cell), the
    titles first; equal widths across the page. The export's cells: no call id, no tabs or
    line breaks."""
    shown = [i for i, column in enumerate(cells.columns) if column.key != "linkedid"]
    titles = [cells.titles()[i] for i in shown]        # as the export: no call id
    lefts = _bare_edges(len(titles))[:-1]
    texts = ([" ".join(str(value).split()) if value is not None else "" for value in
              map(cells.values(row).__getitem__, shown)] for row in rows)
    top = _MARGIN
    for row in chain([titles], texts):
        new_page = top + _ROW_H > _PAGE_H - _MARGIN
        top = _MARGIN if new_page else top
        yield new_page, top, list(zip(lefts, row))
        top += _ROW_H


def _bare_edges(columns: int) -> list[float]:
    width = (_PAGE_W - 2 * _MARGIN) / columns
    return [_MARGIN + i * width for i in range(columns + 1)]


def bare_pdf(out: Path, rows: Iterable[dict], cells: CallCells) -> int:
    """The same header and cell values as a bare fpdf2 table, ruled as fast as fpdf2 rules
    (a line atop each page and under each row, the column edges once a page; no text for an
    empty cell); returns the calls."""
    from fpdf import FPDF
    pdf = FPDF(orientation="L", format="A4")
    pdf.set_auto_page_break(False)
    pdf.add_font("DejaVu", "", FONTS / "DejaVuSansCondensed.ttf")
    pdf.set_font("DejaVu", "", _TYPE)
    edges = _bare_edges(len(cells.titles()) - 1)
    left, right = edges[0], edges[-1]
    count, bottom = -1, _PAGE_H
    for count, (new_page, top, row) in enumerate(_bare_rows(rows, cells)):
        if new_page or count == 0:
            for x in edges if count else ():
                pdf.line(x, _MARGIN, x, bottom)
            pdf.add_page()
            pdf.line(left, top, right, top)
        bottom = top + _ROW_H
        pdf.line(left, bottom, right, bottom)
        for x, text in row:
            if text:
                pdf.text(x + 1, bottom - 1.2, text)
    for x in edges:
        pdf.line(x, _MARGIN, x, bottom)
    pdf.output(str(out))
    return count


def bare_reportlab(out: Path, rows: Iterable[dict], cells: CallCells) -> int:
    """The same bare table drawn on reportlab's canvas (points, from the page's bottom)."""
    from reportlab.lib.units import mm
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen.canvas import Canvas
    pdfmetrics.registerFont(TTFont("DejaVu", str(FONTS / "DejaVuSansCondensed.ttf")))
    canvas = Canvas(str(out), pagesize=(_PAGE_W * mm, _PAGE_H * mm))
    edges = [x * mm for x in _bare_edges(len(cells.titles()) - 1)]
    left, right = edges[0], edges[-1]
    count, bottom = -1, 0.0
    for count, (new_page, top, row) in enumerate(_bare_rows(rows, cells)):
        if new_page:
            for x in edges:
                canvas.line(x, (_PAGE_H - _MARGIN) * mm, x, bottom)
            canvas.showPage()
        if new_page or count == 0:
            canvas.setFont("DejaVu", _TYPE)
            canvas.line(left, (_PAGE_H - top) * mm, right, (_PAGE_H - top) * mm)
        bottom = (_PAGE_H - top - _ROW_H) * mm
        canvas.line(left, bottom, right, bottom)
        for x, text in row:
            if text:
                canvas.drawString(x * mm + mm, bottom + 1.2 * mm, text)
    for x in edges:
        canvas.line(x, (_PAGE_H - _MARGIN) * mm, x, bottom)
    canvas.save()
    return count


@dataclass
class Pair:
    """An export against its baseline: the fastest passes, in seconds."""
    calls: int
    values_s: float                # the query and the cell values alone
    export_s: float
    baseline_s: float


def compare(values: Callable[[], int], export: Callable[[], int], baseline: Callable[[], int],
            runs: int) -> Pair:
    """After one unmeasured `values` pass (page cache, imports), `runs` rounds of the three;
    the fastest of each counts. All three must see as many calls."""
    values()
    times: dict[Callable, list[float]] = {values: [], export: [], baseline: []}
    counts = set()
    for _ in range(runs):
        for fn, samples in times.items():
            seconds, count = timed(fn)
            samples.append(seconds)
            counts.add(count)
    if len(counts) != 1:
        raise SystemExit(f"the passes saw different numbers of calls: {sorted(counts)}")
    return Pair(counts.pop(), *(min(samples) for samples in times.values()))


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Seconds fn took, and what it returned."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def cli_export_peak(mirror: Mirror, out: Path, start: str) -> tuple[int, float]:
    """`extcdr export --format xlsx` of the calls from `start` in a fresh process: the calls it
    wrote and its own peak RSS in MB. The child reads its VmHWM itself: the ru_maxrss of wait4
    or RUSAGE_CHILDREN also counts the parent's memory the child had until exec. A failure
    stops the run."""
    command = [sys.executable, "-c", PEAK_PROBE, "export", "--db", str(mirror.path),
               "--format", "xlsx", "--out", str(out), "--from", start, "--to", PERIOD_END]
    done = subprocess.run(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"extcdr export: exit {done.returncode}: {done.stderr.strip()}")
    written, peak = done.stderr.splitlines()[-2:]           # "N calls written to …", "K kB"
    return int(written.split()[0].replace(",", "")), int(peak.split()[0]) / 1024


def download(browser: Browser, url: str) -> tuple[float, float, int, int]:
    """GET url with the browser's session: seconds to the first body byte and to the end,
    bytes and lines received. Anything but 200 stops the run."""
    started = time.perf_counter()
    with browser.opener.open(browser.base + url) as reply:
        first = reply.read(1)
        first_s = time.perf_counter() - started
        if reply.status != 200 or not first:
            raise SystemExit(f"GET {url}: HTTP {reply.status}, first byte {first!r}")
        size, lines = 1, first.count(b"\n")
        while chunk := reply.read(DOWNLOAD_CHUNK):
            size += len(chunk)
            lines += chunk.count(b"\n")
    return first_s, time.perf_counter() - started, size, lines


def sha256(path: Path, skip: int = 0) -> str:
    """Digest of a file's bytes after the first `skip`."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        file.seek(skip)
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# -- printing -------------------------------------------------------------------------------------

def print_pair(pair: Pair, export_out: Path, bare_out: Path) -> None:
    """An export against its baseline, and the writers' own share (the query and cell values
    taken out of both)."""
    export_s, bare_s, values_s = pair.export_s, pair.baseline_s, pair.values_s
    print(f"  {pair.calls:,} calls; query + CallCells.values alone {values_s:.2f} s")
    print(f"  export_file {export_s:.2f} s ({export_out.stat().st_size / 1e6:.1f} MB), "
          f"bare writer {bare_s:.2f} s ({bare_out.stat().st_size / 1e6:.1f} MB): "
          f"{export_s / bare_s:.2f}x")
    print(f"  writers alone: export {export_s - values_s:.2f} s, bare {bare_s - values_s:.2f} s: "
          f"{(export_s - values_s) / (bare_s - values_s):.2f}x", flush=True)


def print_table(results: list[Result]) -> None:
    print(f"\n{'case':<42} {'calls':>9} {'measured':>11} {'baseline':>11} {'ratio':>8} "
          f"{'budget':>9}  within")
    for r in results:
        baseline = f"{r.baseline:.3f} {r.unit}" if r.baseline is not None else "-"
        score = r.score()
        ratio = ("-" if score is None or r.compare == "absolute"
                 else f"{score:+.1f} {r.unit}" if r.compare == "difference" else f"{score:.2f}x")
        budget = ("-" if r.budget is None
                  else {"ratio": f"<= {r.budget:g}x", "difference": f"<= +{r.budget:g} {r.unit}",
                        "absolute": f"<= {r.budget:g} {r.unit}"}[r.compare])
        within = {None: "-", True: "yes", False: "NO"}[r.within()]
        print(f"{r.case:<42} {r.calls:>9,} {r.value:>9.3f} {r.unit:<2}{baseline:>11} {ratio:>8} "
              f"{budget:>9}  {within}")
    budgeted = [r for r in results if r.budget is not None]
    over = [r.case for r in budgeted if not r.within()]
    print(f"\n{len(budgeted) - len(over)} of {len(budgeted)} budgets met"
          + (f"; over: {', '.join(over)}" if over else ""))


if __name__ == "__main__":
    main()
