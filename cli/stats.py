"""`extcdr stats`: an analytics report (`mirror.analytics`) of the mirror from the command line,
with the page's filters: a text table, its JSON (as `api/v1/stats`), CSV, or a file (Excel,
CSV, PDF) as the Analytics page exports it."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from cli.base import CliError, add_db_argument
from cli.mirror import add_filter_arguments, add_timezone_arguments, filter_params, mirror_context
from mirror.analytics import (GRAINS, REPORT_TITLES, REPORTS, SERVICE_LEVEL_S, TEXT, Report,
                              build_report, report_options)
from mirror.database import open_module_db
from mirror.queries import PERIODS, YEARS
from mirror.records import iso_time

PRINTED = ("table", "json", "csv")


def add_commands(sub) -> dict:
    # `resolve`: --period, added with the history's periods, is given the years too
    stats = sub.add_parser("stats", conflict_handler="resolve",
                           help="an analytics report: employees, traffic, lines, menus, queues "
                           "or callbacks, over a period and filter")
    add_db_argument(stats)
    stats.add_argument("--report", required=True, help=", ".join(REPORTS))
    stats.add_argument("--format", default="table", help="table, json or csv printed; with "
                       "--out: xlsx, csv or pdf")
    stats.add_argument("--out", type=Path, help="write the report to this file (as the page's "
                       "export)")
    stats.add_argument("--language", choices=("en", "ru"), default="en",
                       help="of the titles in csv and in files")
    stats.add_argument("--grain", help="traffic: the trend per " + ", ".join(GRAINS))
    stats.add_argument("--service-level", metavar="SECONDS",
                       help=f"queues: answered within this many seconds (default "
                       f"{SERVICE_LEVEL_S})")
    add_filter_arguments(stats)
    stats.add_argument("--period", choices=PERIODS + YEARS,
                       help="a period relative to today instead of --from/--to")
    add_timezone_arguments(stats)
    return {"stats": cmd_stats}


def cmd_stats(args) -> int:
    # openpyxl and fpdf: loaded for this command only, not for every one of extcdr
    from exports.analytics_files import ANALYTICS_FORMATS, report_about, report_csv, write_report
    formats = ANALYTICS_FORMATS if args.out else PRINTED
    if args.format not in formats:
        raise CliError(f"unknown format {args.format!r}" + (" with --out" if args.out else "")
                       + f"; use one of: {', '.join(formats)}"
                       + ("" if args.out else " (xlsx and pdf with --out FILE)"))
    if args.out and not args.out.parent.is_dir():
        raise CliError(f"{args.out.parent}: no such directory")
    name, options = report_options({"report": args.report, "grain": args.grain,
                                    "service_level": args.service_level})
    db = open_module_db(args.db, readonly=True)
    try:
        params = filter_params(args)
        context = mirror_context(args, db)
        clock = context.clock()
        flt = context.call_filter(params)
        report = build_report(name, flt, db, clock, options)
        if args.out:
            write_report(args.out, args.format, report, language=args.language,
                         about=report_about(report, params, flt, clock, args.language,
                                            "extcdr stats", db))
            print(f"{REPORT_TITLES[name]} written to {args.out}", file=sys.stderr)
        elif args.format == "json":
            print(json.dumps({**report.as_json(), "period": {
                "from": iso_time(flt.start_ms, clock.tz), "to": iso_time(flt.end_ms, clock.tz)}},
                ensure_ascii=False))
        elif args.format == "csv":
            sys.stdout.write(report_csv(report, args.language))
        else:
            _print_table(report)
    finally:
        db.close()
    return 0


def _print_table(report: Report) -> None:
    """The report's table in columns (numbers to the right), its totals row and the totals
    that are no column's."""
    from exports.analytics_files import ReportTable
    table = ReportTable(report, "en")
    lines = [table.titles] + [[table.text(v, k) for v, k in zip(values, table.kinds)]
                              for values in table.rows()]
    totals = table.totals()
    if totals:
        lines.append([table.text(v, k) for v, k in zip(totals, table.kinds)])
    widths = [min(40, max(map(len, column))) for column in zip(*lines)]
    print(REPORT_TITLES[report.name])
    for number, line in enumerate(lines):
        if number == len(lines) - 1 and totals:
            print("  ".join("-" * w for w in widths))
        cells = [text if len(text) <= w or i == len(line) - 1 else text[:w - 1] + "…"
                 for i, (text, w) in enumerate(zip(line, widths))]
        print("  ".join(f"{c:<{w}}" if kind == TEXT else f"{c:>{w}}"
                        for c, w, kind in zip(cells, widths, table.kinds)).rstrip())
    for title, kind, value in table.summary():
        print(f"{title}: {table.text(value, kind)}")
