"""`extcdr retention`: how many months of history module.db keeps and what it still holds
before them; `--keep-months N` changes the history's setting (the settings page's too), and
`--apply` drops those months now, as the daemon does within the hour (`mirror.retention`)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from cli.base import add_db_argument
from daemon.sync import mirror_sync
from mirror import retention
from mirror import settings as settings_module
from mirror.database import open_module_db
from mirror.retention import utc_day
from pbx.mirror_context import MirrorContext


def add_commands(sub) -> dict:
    command = sub.add_parser("retention", help="months of history kept; drop older ones now")
    add_db_argument(command)
    command.add_argument("--keep-months", metavar="N",
                         help=f"keep the current month and the N before it (1-"
                              f"{retention.MAX_KEEP_MONTHS}); '' or 0: keep everything")
    command.add_argument("--apply", action="store_true",
                         help="drop the months before them now (the daemon does it hourly)")
    command.add_argument("--config", type=Path,
                         help="the settings file (its callback window re-links callbacks)")
    command.add_argument("--format", choices=("text", "json"), default="text")
    return {"retention": cmd_retention}


def cmd_retention(args) -> int:
    if args.keep_months is not None:
        retention.keep_months_value(args.keep_months)     # refused before module.db is opened
    db = open_module_db(args.db)
    try:
        if args.keep_months is not None:
            retention.set_keep_months(db, args.keep_months)
        now_ms = int(time.time() * 1000)
        months = retention.keep_months(db)
        cutoff = retention.cutoff_ms(months, now_ms)
        if args.apply:
            settings = settings_module.load(args.config)
            sync = mirror_sync(settings, db, MirrorContext(settings, db).clock())
            dropped, held = sync.retain(now_ms).dropped, []
        else:
            dropped, held = [], retention.old_months(db, cutoff) if cutoff else []
    finally:
        db.close()
    report = {"keep_months": months, "kept_from": utc_day(cutoff) if cutoff else None,
              "dropped": [{"month": m.name, "calls": m.calls} for m in dropped],
              "to_drop": [{"month": m.name, "calls": m.calls} for m in held]}
    if args.format == "json":
        print(json.dumps(report))
        return 0
    print(f"keeps: {months} months, calls from {report['kept_from']} (UTC)" if months
          else "keeps: every month (history.keep_months is not set)")
    for month in report["dropped"]:
        print(f"dropped {month['month']}: {month['calls']:,} calls")
    for month in report["to_drop"]:
        print(f"to drop {month['month']}: {month['calls']:,} calls (--apply, or the daemon "
              f"within the hour)")
    return 0
