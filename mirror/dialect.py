"""What differs between the engines module.db can live on: SQLite (a file on the PBX, the
default) and PostgreSQL (a central history of several PBXs, issue 22). The one seam: code that
writes SQL by hand asks here instead of testing the engine itself.

House SQL is written for SQLite, with `?` marks; `run` hands it to either engine. SQL that
peewee builds is right for its engine already and never goes through `sql()`.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice

import peewee
from peewee import Cast, Database, PostgresqlDatabase, fn

# A quoted literal ('it''s' included): `?` inside one is text, not a mark.
_LITERAL = re.compile(r"('(?:[^']|'')*')")


@dataclass(frozen=True)
class Dialect:
    name: str
    whole_number: str     # DDL type of a 64-bit whole number: *_ms, ids, revisions, sums

    @property
    def postgresql(self) -> bool:
        return self.name == "postgresql"

    def sql(self, text: str) -> str:
        """House SQL (`?` marks) as this engine's driver takes it. psycopg2 marks are `%s` and
        it reads every `%` as the start of one, even without parameters: a literal `%` (as in
        `LIKE 'queue:%'`) is doubled."""
        if not self.postgresql:
            return text
        pieces = _LITERAL.split(text)        # odd pieces are quoted literals
        return "".join(piece.replace("%", "%%") if i % 2 else
                       piece.replace("%", "%%").replace("?", "%s")
                       for i, piece in enumerate(pieces))


SQLITE = Dialect("sqlite", whole_number="INTEGER")
POSTGRESQL = Dialect("postgresql", whole_number="bigint")


def dialect_of(db: Database) -> Dialect:
    """The engine of an opened module.db (mirror.database.open_module_db)."""
    return POSTGRESQL if isinstance(db, PostgresqlDatabase) else SQLITE


def run(db: Database, text: str, params: tuple | list = ()):
    """Execute house SQL (`?` marks, `?N` too) on either engine; returns the cursor."""
    if dialect_of(db).postgresql:
        text, params = positional(text, params)
    return db.execute_sql(dialect_of(db).sql(text), params)


_MARK = re.compile(r"\?(\d*)")


def positional(text: str, params: tuple | list) -> tuple[str, list]:
    """House SQL with numbered marks (`?1`, a value used twice or out of order) as bare `?`s
    and their values in order, as psycopg2 takes them. A bare `?` is numbered as SQLite does:
    one past the largest number so far (peewee's marks after a statement's own)."""
    pieces = _LITERAL.split(text)
    values, largest = [], 0

    def bare(mark: re.Match) -> str:
        nonlocal largest
        number = int(mark.group(1)) if mark.group(1) else largest + 1
        largest = max(largest, number)
        values.append(params[number - 1])
        return "?"
    text = "".join(piece if i % 2 else _MARK.sub(bare, piece) for i, piece in enumerate(pieces))
    return text, values


def write_transaction(db: Database):
    """A transaction that writes (`with write_transaction(db): ...`). On SQLite it takes the
    write lock at its start (`BEGIN IMMEDIATE`), so it never fails half-way for a writer that
    came first; PostgreSQL locks rows as they are written, and refuses `IMMEDIATE`."""
    return db.atomic() if dialect_of(db).postgresql else db.atomic("IMMEDIATE")


def lock_shared_rows(db: Database) -> None:
    """Before a write transaction changes rows that every PBX's writer changes (PostgreSQL, a
    central history): the rollups' counters, the revision, the callback links of numbers the
    PBXs share. One transaction-scoped lock, held until commit, so these writes follow each
    other in commit order: no deadlock between the counters' upserts, a writer's callback
    links are worked out from every call committed before (a missed call on one PBX and its
    callback on another, written at the same time, link), and revisions are taken in commit
    order (a page that saw revision N never misses a call committed later with a lower one).
    What comes before it — reading the PBX, classifying, staging, the legs — runs at the same
    time as the other PBXs' writers. SQLite's write transaction already holds the file.

    Waiting here for the other writers is their work, not a hang: up to SHARED_ROWS_WAIT
    (the connections' lock_timeout, for the rest of the transaction)."""
    if dialect_of(db).postgresql:
        db.execute_sql(f"SET LOCAL lock_timeout = '{SHARED_ROWS_WAIT}'")
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (SHARED_ROWS_LOCK,))


# The advisory lock key of `lock_shared_rows` ("ECDR" + 3; mirror.schema and daemon.resident
# use + 0, 1, 2), and how long a writer waits for it (ten PBXs' batches of a backfill).
SHARED_ROWS_LOCK = 0x45434452 + 3
SHARED_ROWS_WAIT = "5min"


# --- fragments of the readers' SQL (mirror.queries, mirror.annotations, mirror.contacts) ---------

def ordered_join(db: Database) -> str:
    """A join whose left side is read first: SQLite takes `CROSS JOIN` as that order (a hint
    the plan tests keep); PostgreSQL's planner orders joins itself and knows no `CROSS JOIN …
    ON`."""
    return "JOIN" if dialect_of(db).postgresql else "CROSS JOIN"


def position(db: Database, text, part):
    """Where `part` starts in `text` (1-based, 0: nowhere) as a peewee expression."""
    return (fn.strpos if dialect_of(db).postgresql else fn.instr)(text, part)


def json_list_rows(db: Database, items: str) -> str:
    """A FROM item of the elements of a JSON list (`items`, SQL) as rows of one column `value`;
    a list of lists gives each inner list (`value->>0`, see `json_element`)."""
    if dialect_of(db).postgresql:
        return f"jsonb_array_elements(CAST({items} AS jsonb)) AS j(value)"
    return f"json_each({items})"


def json_element(db: Database, value: str, index: int) -> str:
    """Element `index` of the JSON list `value` (a row of `json_list_rows`) as text."""
    if dialect_of(db).postgresql:
        return f"{value}->>{int(index)}"
    return f"json_extract({value}, '$[{int(index)}]')"


def json_list_of(db: Database, *columns):
    """An aggregate: the group's rows as a JSON list (text) of lists of `columns`."""
    if dialect_of(db).postgresql:
        return fn.coalesce(Cast(fn.json_agg(fn.json_build_array(*columns)), "text"), "[]")
    return fn.json_group_array(fn.json_array(*columns))


def searched_in_call_columns(db: Database) -> bool:
    """Whether the number and name search reads `call.numbers`/`call.names` (PostgreSQL's
    trigram indexes) rather than SQLite's FTS5 tables `call_number`/`call_name`."""
    return dialect_of(db).postgresql


@contextmanager
def write_transaction_at_once(db: Database):
    """`write_transaction` that never waits for another writer: peewee's OperationalError at
    once when one holds the database (SQLite) or the rows written (PostgreSQL) — for writes a
    later request can do as well (a token's last use)."""
    if dialect_of(db).postgresql:
        with db.atomic():
            db.execute_sql("SET LOCAL lock_timeout = 1")        # ms; 0 would wait forever
            yield
        return
    conn = db.connection()
    waited = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        with db.atomic("IMMEDIATE"):
            yield
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(waited)}")


@contextmanager
def in_one_process(db: Database):
    """Queries (in a transaction of their own) that PostgreSQL plans without parallel workers:
    for a join of many rows with a small table, each worker would build the same hash of it
    and the whole take longer (SQLite has no workers)."""
    if not dialect_of(db).postgresql:
        yield
        return
    with db.atomic():
        db.execute_sql("SET LOCAL max_parallel_workers_per_gather = 0")
        yield


def larger(db: Database) -> str:
    """The SQL function of the larger of two values (SQLite's two-argument `max`)."""
    return "greatest" if dialect_of(db).postgresql else "max"


def hold(db: Database, what: str, key: int) -> bool:
    """Take the lock of `what` number `key` (a hook's lane, a report's send) for this
    connection until `let_go`, unless another connection holds it: False then. Several
    daemons (one a PBX) share a central history; the server lets go of a connection's locks
    when it ends, a daemon's kill -9 included, so another daemon takes its work on. SQLite's
    module.db has one daemon (its instance lock): always True."""
    if not dialect_of(db).postgresql:
        return True
    return run(db, f"SELECT pg_try_advisory_lock({_LOCK_KEYS})", (what, key)).fetchone()[0]


def let_go(db: Database, what: str, key: int) -> None:
    """Release what `hold` took."""
    if dialect_of(db).postgresql:
        run(db, f"SELECT pg_advisory_unlock({_LOCK_KEYS})", (what, key))


# Advisory locks are the server's, not a schema's: a lock is named by the schema (one history
# each), what it is and its number (as a 32-bit key: a clash only makes a daemon wait).
_LOCK_KEYS = ("hashtext(current_schema() || ':' || CAST(? AS text)), "
              "CAST(CAST(? AS bigint) % 2147483648 AS integer)")


def claim_rows(db: Database, query):
    """A SELECT (peewee) of rows this write transaction takes for itself. On PostgreSQL the
    rows are locked, and those another transaction holds skipped: several daemons (one a PBX)
    never claim the same row. SQLite's write transaction already shuts out every other writer."""
    return query.for_update("FOR UPDATE SKIP LOCKED") if dialect_of(db).postgresql else query


def inserted_id(db: Database, query) -> int | None:
    """Execute a peewee INSERT of one row (an upsert too) and return the row's id (None: an
    upsert that did nothing), on both engines by `RETURNING`: peewee asks PostgreSQL for the
    id only of models bound to a database, and ours are bound per query."""
    sql, params = query.returning(query.model._meta.primary_key).bind(db).sql()
    row = db.execute_sql(sql, params).fetchone()
    return None if row is None else row[0]


def staged(db: Database, schema: str, table: str) -> str:
    """A table of the writer's staging area `schema` (scratch, fixup, a worker's batch): on
    SQLite an attached in-memory schema, on PostgreSQL a temporary table of the connection
    (its own schema `pg_temp`, whose names the real tables never see)."""
    return f"pg_temp.{schema}_{table}" if dialect_of(db).postgresql else f"{schema}.{table}"


def emptied(db: Database, table: str) -> str:
    """The statement emptying a staging table. PostgreSQL's temporary tables are never
    vacuumed: deleted rows would pile up batch after batch in a long-lived writer's."""
    return f"TRUNCATE {table}" if dialect_of(db).postgresql else f"DELETE FROM {table}"


def insert_rows(db: Database, into: str, width: int, rows, then: str = "") -> None:
    """`INSERT INTO {into} VALUES … {then}` for each of `rows` (tuples of `width` values):
    SQLite's executemany; on PostgreSQL one COPY of them all (or, with `then`, psycopg2's
    execute_values: a page of rows per statement)."""
    if not dialect_of(db).postgresql:
        db.connection().executemany(
            f"INSERT INTO {into} VALUES ({', '.join('?' * width)}) {then}", rows)
        return
    from psycopg2.extras import execute_values
    with peewee.__exception_wrapper__:       # psycopg2's errors as peewee's
        if then:
            execute_values(db.cursor(), f"INSERT INTO {into} VALUES %s {then}", rows,
                           page_size=1000)
        else:
            db.cursor().copy_expert(f"COPY {into} FROM STDIN", _CopyText(rows))


# COPY's text format: tab-separated, \N for NULL, backslash escapes in text.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_value(value) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    if isinstance(value, bool):
        return "1" if value else "0"       # the mirror's 0/1 columns are integers
    return str(value)


class _CopyText:
    """Rows as the file COPY … FROM STDIN reads (psycopg2 calls `read`), made as it reads."""

    def __init__(self, rows):
        self._lines = ("\t".join(map(_copy_value, row)) + "\n" for row in rows)

    def read(self, size: int = -1) -> str:
        return "".join(islice(self._lines, 1000))

    readline = read


def json_items(dialect: Dialect, items: str, alias: str) -> str:
    """A FROM item of the strings of the JSON list `items` (SQL), as `{alias}.value`."""
    if dialect.postgresql:
        return f"jsonb_array_elements_text(({items})::jsonb) AS {alias}(value)"
    return f"json_each({items}) AS {alias}"
