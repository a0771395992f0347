"""Which months a call's rows can be in, from its linkedid alone (PostgreSQL).

A central history's calls and legs are partitioned by the month they start in
(`mirror.schema`), and their keys hold `start_ms`: a lookup by linkedid alone probes every
month's index, so a writer that looked its batches up that way would slow down month after
month. MikoPBX names a call by the moment it began (`mikopbx-<unix>.<n>`: the linkedid's
*stamp*), so a call's rows start near their stamp. The writer keeps how far any row of its PBX
ever started from its stamp (`REACH`, per PBX: raised before a farther row is written) and
bounds its lookups by linkedid to the months a batch's stamps reach (`Span`): exact, since no
row of that PBX lies further. A linkedid without a stamp (not MikoPBX's) makes that PBX's
lookups unbounded, as they were.

Callbacks link calls of any PBX a window apart: `LINK_REACH`, the farthest a missed call ever
started before the call that returned it could (the callback window and the longest call, as
the writer re-linked with them), bounds the lookups of the calls a batch's calls returned.

SQLite keeps one PBX's history unpartitioned, with unique indexes on linkedid: no bounds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from peewee import Database

from mirror.dialect import run

# A stamp: the digits (unix seconds) after the linkedid's last `:` (a central history's
# `<pbx>:`) or `-` (`mikopbx-`), before its `.<n>`. One pattern for Python and PostgreSQL.
STAMP = r"(?:^|[:-])([0-9]{9,})(?:\.[^:-]*)?$"
_STAMP = re.compile(STAMP)
# Kept by the writer in `sync_state` (mirror.store.Store):
REACH = "stamp_reach_ms"        # per PBX (mirror.store.PBX_STATE)
LINK_REACH = "link_reach_ms"    # the history's
ANYWHERE = -1                   # a REACH: some row has no stamp


def stamp_ms(linkedid: str | None) -> int | None:
    """The moment in a linkedid (ms), None if it has none."""
    found = _STAMP.search(linkedid or "")
    return int(found.group(1)) * 1000 if found else None


@dataclass(frozen=True)
class Span:
    """The starts (ms) rows looked up can have; `lo` None: any."""
    lo: int | None = None
    hi: int | None = None

    def within(self, column: str) -> str:
        """SQL narrowing a lookup to the span (`''`: anywhere), as literals: the planner then
        reads only the partitions of those months."""
        if self.lo is None:
            return ""
        return f" AND {column} BETWEEN {int(self.lo)} AND {int(self.hi)}"

    def widened(self, before: int | None, after: int | None = 0) -> Span:
        """The span reaching `before` ms earlier and `after` later (None: any)."""
        if self.lo is None or before is None or after is None:
            return EVERYWHERE
        return Span(self.lo - before, self.hi + after)


EVERYWHERE = Span()


def span(lowest: int | None, highest: int | None, reach: int) -> Span:
    """The span of rows whose stamps lie between `lowest` and `highest` (None: a row has no
    stamp), `reach` ms about them."""
    if reach == ANYWHERE or lowest is None or highest is None:
        return EVERYWHERE
    return Span(lowest - reach, highest + reach)


def span_of(linkedids: Iterable[str], reach: int) -> Span:
    """Where the rows of these calls are."""
    stamps = [stamp_ms(linkedid) for linkedid in linkedids]
    if not stamps or None in stamps:
        return EVERYWHERE
    return span(min(stamps), max(stamps), reach)


def measure(db: Database, rows: str, params: tuple = ()) -> tuple[int | None, int | None, int]:
    """(lowest stamp, highest stamp, farthest start from its stamp or ANYWHERE) of `rows`
    (SQL giving linkedid, start_ms). PostgreSQL: its regular expressions read STAMP."""
    lowest, highest, farthest, unstamped = run(
        db, "SELECT min(s), max(s), coalesce(max(abs(start_ms - s)), 0), "
        "coalesce(bool_or(s IS NULL), false) FROM (SELECT start_ms, "
        "CAST(substring(linkedid FROM ?) AS bigint) * 1000 AS s FROM (" + rows + ") AS r) AS t",
        (STAMP, *params)).fetchone()
    if unstamped:
        return None, None, ANYWHERE
    return lowest, highest, int(farthest)
