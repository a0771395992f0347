"""Numbered migrations of the module's own database (`module.db`).

`PRAGMA user_version` holds the number of the last step applied. All pending steps run in one
transaction, so a failed step leaves the database exactly as the installed version left it
(an upgrade that fails keeps the old version working). Steps are never edited once
released: a change of schema is a new step.

A module.db on PostgreSQL (a central history, issue 22) has its own list, `PG_MIGRATIONS`: a
baseline equal to the SQLite schema at `PG_BASELINE_VERSION`, then one entry per later step
(see the PostgreSQL section below for how its tables differ). It has no triggers: the writer
keeps its rollup tables and `call.returned_after_s` for each batch (`mirror.rollups.
kept_by_writer`), as it does on SQLite while its triggers stand idle.
"""
from __future__ import annotations

import secrets
import sqlite3
from datetime import datetime, timezone
from typing import Callable, Iterable

from peewee import Database

from mirror.dialect import POSTGRESQL, lock_shared_rows, run, write_transaction
from mirror.rollups import (CALLBACKS, CALLS, EMPLOYEES, LINES, MENUS, PAUSE, QUEUES, ROLLUPS,
                            UNPAUSED, returned_after)

# What `call_name` holds of a call row: its caller's and callee's names on separate lines (a
# search never matches across them), each once; a "name" of digits only is left out (a search
# with no letters is a number search). Calls without names have no row. Migration 6 fills the
# table with it and the writer's merge keeps it up to date: a change is a new migration.
# Rows go in id order: FTS5 flushes its pending terms whenever a rowid is not above the last.
_NAMED = "GLOB '*[^0-9+ ()-]*'"
CALL_NAMES = (f"SELECT id, names FROM (SELECT id, trim("
              f"CASE WHEN src_name {_NAMED} THEN src_name ELSE '' END || char(10) || "
              f"CASE WHEN dst_name {_NAMED} AND dst_name <> src_name THEN dst_name ELSE '' END, "
              f"char(10)) AS names FROM call WHERE {{calls}}) WHERE names <> '' ORDER BY id")

# A call's queue (`Queue:<n>` leg, the first if it went through several) and the seconds its
# caller waited there (until an agent answered, or until they gave up). Migration 10 fills the
# columns; the classifier computes them for every call it writes (`mirror.calls.Call`).
CALL_QUEUES = ("UPDATE {table} SET (queue, queue_wait_s) = (SELECT substr(l.dst_chan, 7), "
               "(coalesce(l.answer_ms, l.end_ms, l.start_ms) - l.start_ms) / 1000 FROM leg l "
               "WHERE l.linkedid = {table}.linkedid AND l.dst_chan LIKE 'queue:%' "
               "ORDER BY l.start_ms, l.source_id LIMIT 1) WHERE {calls}")
# An incoming call's first menu (`App:<n>` leg: an IVR or another dialplan application), the
# digits its caller pressed there (`dtmf_digits`, recorded by MikoPBX 2026.1 and later) and
# whether an unanswered caller left in it (no leg of the call started after it). Migration 13
# fills the columns; the classifier computes them for every call it writes.
CALL_MENUS = ("UPDATE {table} SET (ivr, ivr_digits, ivr_left) = (SELECT substr(l.dst_chan, 5), "
              "l.dtmf_digits, NOT {table}.answered AND NOT EXISTS (SELECT 1 FROM leg n "
              "WHERE n.linkedid = l.linkedid AND n.start_ms > l.start_ms) FROM leg l "
              "WHERE l.linkedid = {table}.linkedid AND {table}.direction = 'incoming' "
              "AND l.dst_chan LIKE 'app:%' ORDER BY l.start_ms, l.source_id LIMIT 1) "
              "WHERE {calls}")

# `PRAGMA application_id` of every module.db ("ECDR"), set by migration 7.
APPLICATION_ID = 0x45434452
# Tables every module.db has had since migration 1: a mirror of a release before migration 7
# (no application id yet) is known by them.
MIRROR_TABLES = frozenset({"leg", "call", "call_employee", "sync_state", "employee",
                           "group_member"})

# The hourly counters of calls (migration 12): what one call adds or takes away, and the
# counters of a set of calls computed afresh (to fill them, and for tests to check them).
_UNRETURNED = "({row}.status = 'missed' AND {row}.returned_by IS NULL)"
_ROLLUP_ADD = (
    "INSERT INTO call_rollup (hour, direction, status, unreturned, calls, talk_s, wait_s) "
    "VALUES ({row}.start_ms / 3600000, {row}.direction, {row}.status, "
    + _UNRETURNED + ", 1, {row}.talk_s, {row}.wait_s) "
    "ON CONFLICT (hour, direction, status, unreturned) DO UPDATE SET calls = calls + 1, "
    "talk_s = talk_s + excluded.talk_s, wait_s = wait_s + excluded.wait_s;")
_ROLLUP_SUBTRACT = (
    "UPDATE call_rollup SET calls = calls - 1, talk_s = talk_s - {row}.talk_s, "
    "wait_s = wait_s - {row}.wait_s WHERE hour = {row}.start_ms / 3600000 "
    "AND direction = {row}.direction AND status = {row}.status "
    "AND unreturned = " + _UNRETURNED + ";")
ROLLUP_OF_CALLS = (
    "INSERT INTO call_rollup (hour, direction, status, unreturned, calls, talk_s, wait_s) "
    "SELECT start_ms / 3600000, direction, status, "
    "status = 'missed' AND returned_by IS NULL, count(*), sum(talk_s), sum(wait_s) "
    "FROM call WHERE {calls} GROUP BY 1, 2, 3, 4")

# Migration 16 (both engines): the PBX a row came from, '' for the only PBX.
PBX_COLUMNS = tuple(f"ALTER TABLE {table} ADD COLUMN pbx TEXT NOT NULL DEFAULT ''"
                    for table in ("call", "leg", "live_call", "employee", "group_member"))

PBX_LIMITS = ("ALTER TABLE api_token ADD COLUMN pbxs TEXT NOT NULL DEFAULT '[]'",
              "ALTER TABLE report ADD COLUMN owner_pbxs TEXT NOT NULL DEFAULT '[]'",
              "ALTER TABLE report ADD COLUMN pbx TEXT NOT NULL DEFAULT ''")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: legs, calls, employees of calls, number search, sync state, employees and groups.
    (
        """CREATE TABLE leg (
            id INTEGER PRIMARY KEY,
            uniqueid TEXT NOT NULL UNIQUE,
            linkedid TEXT NOT NULL,
            source_id INTEGER NOT NULL,
            start_ms INTEGER NOT NULL,
            answer_ms INTEGER,
            end_ms INTEGER,
            src_chan TEXT NOT NULL, src_num TEXT NOT NULL, src_name TEXT NOT NULL,
            dst_chan TEXT NOT NULL, dst_num TEXT NOT NULL, dst_name TEXT NOT NULL,
            did TEXT NOT NULL, disposition TEXT NOT NULL, dialstatus TEXT NOT NULL,
            recordingfile TEXT NOT NULL, from_account TEXT NOT NULL, to_account TEXT NOT NULL,
            appname TEXT NOT NULL, is_app INTEGER NOT NULL, transfer INTEGER NOT NULL,
            a_transfer INTEGER NOT NULL, duration INTEGER, billsec INTEGER)""",
        "CREATE INDEX leg_linkedid ON leg (linkedid)",
        """CREATE TABLE call (
            id INTEGER PRIMARY KEY,
            linkedid TEXT NOT NULL UNIQUE,
            start_ms INTEGER NOT NULL,
            end_ms INTEGER NOT NULL,
            direction TEXT NOT NULL,
            status TEXT NOT NULL,
            reason TEXT,
            answered INTEGER NOT NULL,
            src TEXT NOT NULL, src_name TEXT NOT NULL,
            dst TEXT NOT NULL, dst_name TEXT NOT NULL,
            external_number TEXT, ext_key TEXT,
            did TEXT, line TEXT,
            answered_by TEXT,
            missed_by TEXT NOT NULL, transferred_to TEXT NOT NULL, employees TEXT NOT NULL,
            wait_s INTEGER NOT NULL, talk_s INTEGER NOT NULL, duration_s INTEGER NOT NULL,
            recordings TEXT NOT NULL,
            callback_of TEXT, returned_by TEXT,
            callback_attempts INTEGER NOT NULL DEFAULT 0,
            leg_count INTEGER NOT NULL)""",
        # Newest-first range scans for every filter; the rowid (id) breaks ties for keyset paging.
        # (start_ms, id) is the keyset order; talk_s rides along for the minimum-talk filter.
        "CREATE INDEX call_period ON call (start_ms, id, talk_s)",
        "CREATE INDEX call_direction ON call (direction, start_ms)",
        "CREATE INDEX call_status ON call (status, start_ms)",
        "CREATE INDEX call_ext_key ON call (ext_key, start_ms)",
        """CREATE TABLE call_employee (
            extension TEXT NOT NULL,
            start_ms INTEGER NOT NULL,
            call_id INTEGER NOT NULL,
            PRIMARY KEY (extension, start_ms, call_id)) WITHOUT ROWID""",
        "CREATE INDEX call_employee_call ON call_employee (call_id)",
        # Substring search on numbers: trigrams make `LIKE '%916%'`/MATCH an index lookup.
        "CREATE VIRTUAL TABLE call_number USING fts5(numbers, tokenize = 'trigram')",
        # Merge segments less eagerly than the default 4: cheaper batch inserts, same lookups.
        "INSERT INTO call_number (call_number, rank) VALUES ('automerge', 8)",
        "CREATE TABLE sync_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # Snapshot of the PBX's employees and ModuleUsersGroups' groups, refreshed by each sync,
        # so readers of module.db filter by group without opening PBX files.
        "CREATE TABLE employee (extension TEXT PRIMARY KEY, name TEXT NOT NULL) WITHOUT ROWID",
        """CREATE TABLE group_member (
            group_name TEXT NOT NULL, extension TEXT NOT NULL,
            PRIMARY KEY (group_name, extension)) WITHOUT ROWID""",
    ),
    # 2: what users keep (written by the web process in short transactions, never by the sync):
    # named filters, one of them the default, and per-user settings (columns, language).
    (
        """CREATE TABLE saved_filter (
            id INTEGER PRIMARY KEY,
            user TEXT NOT NULL,
            name TEXT NOT NULL,
            params TEXT NOT NULL,
            is_default INTEGER NOT NULL DEFAULT 0,
            UNIQUE (user, name))""",
        """CREATE TABLE user_setting (
            user TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
            PRIMARY KEY (user, key)) WITHOUT ROWID""",
    ),
    # 3: the page's tab counters read only the period index: it carries what they group by.
    (
        "DROP INDEX call_period",
        "CREATE INDEX call_period ON call (start_ms, id, talk_s, direction, status, returned_by)",
    ),
    # 4: mailed reports (written by the web: definitions; by the daemon's scheduler: sends).
    # A report mails its owner's saved filter over a relative period; the owner's role and
    # extensions as of their last visit bound what it holds. Each send is logged; its file
    # waits in the reports folder until `expires_ms`, reachable by a signed link.
    (
        """CREATE TABLE report (
            id INTEGER PRIMARY KEY,
            owner TEXT NOT NULL,
            owner_role TEXT NOT NULL,
            owner_extensions TEXT NOT NULL,
            name TEXT NOT NULL,
            filter_id INTEGER NOT NULL,
            period TEXT NOT NULL,
            frequency TEXT NOT NULL,
            at_time TEXT NOT NULL,
            on_day INTEGER,
            on_date TEXT,
            format TEXT NOT NULL,
            delivery TEXT NOT NULL,
            link_hours INTEGER NOT NULL,
            recipients TEXT NOT NULL,
            subject TEXT NOT NULL,
            body TEXT NOT NULL,
            language TEXT NOT NULL,
            link_base TEXT NOT NULL,
            enabled INTEGER NOT NULL DEFAULT 1,
            next_run_ms INTEGER,
            requested_ms INTEGER,
            UNIQUE (owner, name))""",
        "CREATE INDEX report_next_run ON report (next_run_ms)",
        """CREATE TABLE report_send (
            id INTEGER PRIMARY KEY,
            report_id INTEGER NOT NULL,
            due_ms INTEGER NOT NULL,
            period_start_ms INTEGER NOT NULL,
            period_end_ms INTEGER NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_ms INTEGER,
            finished_ms INTEGER,
            calls INTEGER,
            recipients TEXT NOT NULL,
            delivery TEXT NOT NULL,
            file TEXT,
            expires_ms INTEGER,
            error TEXT)""",
        "CREATE INDEX report_send_of_report ON report_send (report_id, id)",
        "CREATE INDEX report_send_retry ON report_send (next_attempt_ms)",
        "CREATE TABLE module_secret (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
        "INSERT INTO module_secret (name, value) VALUES ('report_links', randomblob(32))",
    ),
    # 5: calls in progress (some leg still in the PBX's `cdr` table, or channels up on AMI).
    # The daemon replaces these rows on every sync; `call` holds finished calls only, so a call
    # in progress is never counted, listed as missed, exported or mailed.
    (
        """CREATE TABLE live_call (
            linkedid TEXT PRIMARY KEY,
            start_ms INTEGER NOT NULL,
            direction TEXT NOT NULL,
            state TEXT NOT NULL,
            since_ms INTEGER NOT NULL,
            src TEXT NOT NULL, src_name TEXT NOT NULL,
            dst TEXT NOT NULL, dst_name TEXT NOT NULL,
            external_number TEXT, did TEXT, line TEXT,
            employees TEXT NOT NULL,
            parties TEXT NOT NULL) WITHOUT ROWID""",
    ),
    # 6: substring search on names (the caller's and the callee's as the PBX wrote them), like
    # `call_number`; rowid = call.id. Employees' current names are matched through `employee`
    # and `call_employee` at query time, so a renamed employee is found under the new name.
    (
        "CREATE VIRTUAL TABLE call_name USING fts5(names, tokenize = 'trigram')",
        "INSERT INTO call_name (call_name, rank) VALUES ('automerge', 8)",
        "INSERT INTO call_name (rowid, names) " + CALL_NAMES.format(calls="true"),
    ),
    # 7: the file says it is a module.db, so another program's SQLite file given as the
    # mirror is recognised and refused, never read or written (see mirror.database).
    (
        f"PRAGMA application_id = {APPLICATION_ID}",
    ),
    # 8: what open pages ask for. Each writer transaction that changes what pages show takes
    # the next `revision` (sync_state) and stamps the calls it writes; a call taken back out
    # (found still in progress) leaves `call_gone` until it is written again. A page asks for
    # the calls stamped after the revision it has (see web.history `updates`).
    (
        "ALTER TABLE call ADD COLUMN revision INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX call_revision ON call (revision)",
        """CREATE TABLE call_gone (
            linkedid TEXT PRIMARY KEY,
            revision INTEGER NOT NULL,
            employees TEXT NOT NULL) WITHOUT ROWID""",
        "CREATE INDEX call_gone_revision ON call_gone (revision)",
    ),
    # 9: who may see what under ModuleUsersUI's CDR filters (mirror.queries.Visibility): which
    # employees of a call placed a leg of it ('outgoing-selected'), and the visibility scope
    # a report's owner had on their last visit. Calls mirrored before: from their legs.
    (
        "ALTER TABLE call_employee ADD COLUMN placed INTEGER NOT NULL DEFAULT 0",
        """UPDATE call_employee SET placed = 1 WHERE EXISTS (
            SELECT 1 FROM call c JOIN leg l ON l.linkedid = c.linkedid
            WHERE c.id = call_employee.call_id AND l.src_num = call_employee.extension)""",
        "ALTER TABLE report ADD COLUMN owner_scope TEXT NOT NULL DEFAULT 'involved'",
    ),
    # 10: working with calls. What users add to calls is keyed by linkedid, so a resync that
    # rewrites the call rows never touches it: comments (with every change audited) and tags
    # (an admin's list). `deletion` is the audit of deleted calls and recordings and the
    # tombstone that keeps them deleted through resyncs. `call_hangup`: who hung up, written by
    # the daemon from AMI for the calls it saw end (no row: unknown). A call's queue and its
    # wait there come from its `Queue:` leg (CALL_QUEUES); partial indexes serve the recording
    # filters; a supervisor's limit to some groups' calls.
    (
        """CREATE TABLE comment (
            id INTEGER PRIMARY KEY,
            linkedid TEXT NOT NULL,
            author TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            edited_ms INTEGER,
            text TEXT NOT NULL,
            folded TEXT NOT NULL)""",
        "CREATE INDEX comment_of_call ON comment (linkedid, id)",
        """CREATE TABLE comment_audit (
            id INTEGER PRIMARY KEY,
            comment_id INTEGER NOT NULL,
            linkedid TEXT NOT NULL,
            actor TEXT NOT NULL,
            at_ms INTEGER NOT NULL,
            action TEXT NOT NULL,
            old_text TEXT,
            new_text TEXT)""",
        "CREATE INDEX comment_audit_of_call ON comment_audit (linkedid, id)",
        """CREATE TABLE tag (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE COLLATE NOCASE,
            colour TEXT NOT NULL)""",
        """CREATE TABLE call_tag (
            linkedid TEXT NOT NULL,
            tag_id INTEGER NOT NULL,
            set_by TEXT NOT NULL,
            set_ms INTEGER NOT NULL,
            PRIMARY KEY (linkedid, tag_id)) WITHOUT ROWID""",
        "CREATE INDEX call_tag_of_tag ON call_tag (tag_id, linkedid)",
        """CREATE TABLE deletion (
            id INTEGER PRIMARY KEY,
            linkedid TEXT NOT NULL,
            what TEXT NOT NULL,
            actor TEXT NOT NULL,
            at_ms INTEGER NOT NULL,
            reason TEXT NOT NULL,
            files INTEGER NOT NULL DEFAULT 0,
            ext_key TEXT, start_ms INTEGER, end_ms INTEGER,
            relinked INTEGER NOT NULL DEFAULT 1)""",
        "CREATE INDEX deletion_kind ON deletion (what, linkedid)",
        "CREATE INDEX deletion_of_call ON deletion (linkedid)",
        "CREATE INDEX deletion_to_relink ON deletion (relinked) WHERE relinked = 0",
        """CREATE TABLE call_hangup (
            linkedid TEXT PRIMARY KEY,
            side TEXT NOT NULL,
            channel TEXT NOT NULL,
            number TEXT NOT NULL,
            cause INTEGER,
            cause_txt TEXT NOT NULL,
            at_ms INTEGER NOT NULL) WITHOUT ROWID""",
        "CREATE INDEX call_hangup_side ON call_hangup (side)",
        "ALTER TABLE call ADD COLUMN queue TEXT",
        "ALTER TABLE call ADD COLUMN queue_wait_s INTEGER",
        CALL_QUEUES.format(table="call", calls="true"),
        "CREATE INDEX call_queue ON call (queue, start_ms) WHERE queue IS NOT NULL",
        "CREATE INDEX call_recorded ON call (start_ms, id) WHERE recordings <> '[]'",
        "CREATE INDEX call_unrecorded ON call (start_ms, id) WHERE recordings = '[]'",
        # A supervisor an admin limited to the calls of some employee groups (the settings
        # page): JSON list of group names.
        """CREATE TABLE supervisor_groups (
            user TEXT PRIMARY KEY,
            groups TEXT NOT NULL) WITHOUT ROWID""",
    ),
    # 11: a mailed report's own filters (JSON of page parameters: employees, groups,
    # directions, statuses, tags), on top of its saved filter or instead of one (filter_id 0).
    (
        "ALTER TABLE report ADD COLUMN filters TEXT NOT NULL DEFAULT '{}'",
    ),
    # 12: counters that need not count: the calls of each UTC hour (`start_ms / 3600000`) by
    # direction, status and whether a missed call is unreturned, with their talk and wait. A
    # period's counts are its whole hours' sums plus the calls of its partial hours at each
    # end (mirror.rollups), in any timezone and across DST changes. Triggers keep them in the
    # transaction that changes a call, whoever writes it (the daemon's merges and re-links,
    # a deletion in the web): exact after `kill -9`, resyncs and deletes.
    (
        """CREATE TABLE call_rollup (
            hour INTEGER NOT NULL,
            direction TEXT NOT NULL,
            status TEXT NOT NULL,
            unreturned INTEGER NOT NULL,
            calls INTEGER NOT NULL,
            talk_s INTEGER NOT NULL,
            wait_s INTEGER NOT NULL,
            PRIMARY KEY (hour, direction, status, unreturned)) WITHOUT ROWID""",
        ROLLUP_OF_CALLS.format(calls="true"),
        f"""CREATE TRIGGER call_rollup_added AFTER INSERT ON call BEGIN
            {_ROLLUP_ADD.format(row="NEW")}
        END""",
        f"""CREATE TRIGGER call_rollup_removed AFTER DELETE ON call BEGIN
            {_ROLLUP_SUBTRACT.format(row="OLD")}
        END""",
        f"""CREATE TRIGGER call_rollup_changed AFTER UPDATE OF start_ms, direction, status,
            returned_by, talk_s, wait_s ON call BEGIN
            {_ROLLUP_SUBTRACT.format(row="OLD")}
            {_ROLLUP_ADD.format(row="NEW")}
        END""",
    ),
    # 13: analytics (mirror.rollups). The digits callers press in menus; a call's first menu
    # (CALL_MENUS) and how long its caller waited to be called back (returned_after, kept by
    # triggers whichever of the two calls changes); per UTC day, what employees, lines, queues,
    # callbacks and menus did, kept by triggers like the hourly counters.
    (
        "ALTER TABLE leg ADD COLUMN dtmf_digits TEXT NOT NULL DEFAULT ''",
        # The legs mirrored before have no digits: the next sync reads the PBX's history again
        # from its first row (as after a restored backup), keeping every call it has.
        "UPDATE sync_state SET value = '0' WHERE key = 'cursor'",
        "ALTER TABLE call ADD COLUMN ivr TEXT",
        "ALTER TABLE call ADD COLUMN ivr_digits TEXT",
        "ALTER TABLE call ADD COLUMN ivr_left INTEGER",
        "ALTER TABLE call ADD COLUMN returned_after_s INTEGER",
        CALL_MENUS.format(table="call", calls="true"),
        "UPDATE call SET returned_after_s = " + returned_after("call")
        + " WHERE returned_by IS NOT NULL",
        "CREATE INDEX call_returned_by ON call (returned_by) WHERE returned_by IS NOT NULL",
        # Has a row only inside the writer's transaction, while it keeps what the triggers
        # below keep itself, for a whole batch (mirror.rollups.kept_by_writer).
        f"CREATE TABLE {PAUSE} (paused INTEGER PRIMARY KEY)",
        f"""CREATE TRIGGER call_returned_after_linked AFTER UPDATE OF returned_by, end_ms ON call
            WHEN {UNPAUSED} AND (OLD.returned_by IS NOT NEW.returned_by
                OR (NEW.returned_by IS NOT NULL AND OLD.end_ms IS NOT NEW.end_ms))
            BEGIN UPDATE call SET returned_after_s = {returned_after("NEW")}
            WHERE id = NEW.id; END""",
        f"""CREATE TRIGGER call_returned_after_moved AFTER UPDATE OF start_ms ON call
            WHEN {UNPAUSED} AND OLD.start_ms IS NOT NEW.start_ms
            BEGIN UPDATE call SET returned_after_s = (NEW.start_ms - end_ms) / 1000
            WHERE returned_by = NEW.linkedid; END""",
        f"""CREATE TRIGGER call_returned_after_written AFTER INSERT ON call WHEN {UNPAUSED} BEGIN
            UPDATE call SET returned_after_s = (NEW.start_ms - end_ms) / 1000
            WHERE returned_by = NEW.linkedid;
            UPDATE call SET returned_after_s = {returned_after("NEW")}
            WHERE id = NEW.id AND NEW.returned_by IS NOT NULL; END""",
        f"""CREATE TRIGGER call_returned_after_gone AFTER DELETE ON call WHEN {UNPAUSED} BEGIN
            UPDATE call SET returned_after_s = NULL WHERE returned_by = OLD.linkedid; END""",
        *(statement for rollup in (EMPLOYEES, LINES, QUEUES, CALLBACKS, MENUS)
          for statement in rollup.ddl()),
        # The hourly counters' triggers as the new ones: idle while the writer keeps the
        # rollups of a batch itself, and moved by an upsert only where it changed a figure.
        "DROP TRIGGER call_rollup_added",
        "DROP TRIGGER call_rollup_removed",
        "DROP TRIGGER call_rollup_changed",
        *CALLS.ddl()[2:],
    ),
    # 14: contacts and the CRM. Names for outside numbers (an admin's imported or typed
    # contacts; the PBX's phone book is read where it is), matched by the calls' `ext_key`
    # (the last N digits); webhooks with an outbox the writer fills in the transaction that
    # writes the calls (at-least-once: a delivery is marked done only after the receiver said
    # so) and the log of every attempt; API tokens for scripts (stored as digests); missed
    # calls marked handled from a CRM (they leave the worklist and the Unreturned tab).
    (
        """CREATE TABLE contact (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            company TEXT NOT NULL DEFAULT '',
            numbers TEXT NOT NULL DEFAULT '[]',
            email TEXT NOT NULL DEFAULT '',
            note TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL,
            source_key TEXT,
            updated_ms INTEGER NOT NULL,
            updated_by TEXT NOT NULL DEFAULT '')""",
        # `source`: 'import' or 'manual'; `source_key`: what a re-import matches (a vCard's
        # UID, a CSV row's id column, else its first number's key): updated, never duplicated.
        "CREATE UNIQUE INDEX contact_source_key ON contact (source_key) "
        "WHERE source_key IS NOT NULL",
        """CREATE TABLE contact_number (
            ext_key TEXT NOT NULL,
            contact_id INTEGER NOT NULL,
            number TEXT NOT NULL,
            PRIMARY KEY (ext_key, contact_id)) WITHOUT ROWID""",
        "CREATE INDEX contact_number_of ON contact_number (contact_id)",
        """CREATE TABLE webhook (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            url TEXT NOT NULL,
            secret TEXT NOT NULL,
            events TEXT NOT NULL,
            filters TEXT NOT NULL DEFAULT '{}',
            unreturned_after_min INTEGER NOT NULL DEFAULT 30,
            enabled INTEGER NOT NULL DEFAULT 1,
            created_ms INTEGER NOT NULL,
            created_by TEXT NOT NULL,
            forgotten_before_ms INTEGER NOT NULL DEFAULT 0)""",
        # `events`: JSON list of missed, unreturned, answered, callback; calls that ended
        # before `created_ms` are history, never sent, and so are those that ended before
        # `forgotten_before_ms` (their settled events were pruned: never queued again).
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            hook_id INTEGER NOT NULL,
            event TEXT NOT NULL,
            linkedid TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            due_ms INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL DEFAULT 'pending',
            UNIQUE (hook_id, linkedid, event))""",
        # The idempotency key `<hook_id>:<event>:<linkedid>` is these columns (not stored
        # again: an event's row is a third smaller). `state`: pending (due at `due_ms`),
        # delivered, failed (gave up; redeliver resets it), cancelled (no longer holds)
        "CREATE INDEX outbox_due ON outbox (due_ms) WHERE state = 'pending'",
        "CREATE INDEX outbox_of_hook ON outbox (hook_id, id)",
        """CREATE TABLE delivery (
            id INTEGER PRIMARY KEY,
            outbox_id INTEGER NOT NULL,
            at_ms INTEGER NOT NULL,
            status INTEGER,
            response TEXT NOT NULL DEFAULT '',
            duration_ms INTEGER NOT NULL)""",
        # `status`: the HTTP status (NULL: no answer); `response`: the answer's first 2 KB or
        # the error, as text
        "CREATE INDEX delivery_of ON delivery (outbox_id, id)",
        """CREATE TABLE api_token (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            digest TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL,
            extensions TEXT NOT NULL DEFAULT '[]',
            created_by TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            expires_ms INTEGER,
            revoked_ms INTEGER,
            last_used_ms INTEGER)""",
        # `digest`: SHA-256 of the token, shown once; `role`: what it may see (admin: every
        # call; operator: the calls of `extensions`, a JSON list)
        """CREATE TABLE call_handled (
            linkedid TEXT PRIMARY KEY,
            start_ms INTEGER NOT NULL,
            handled_by TEXT NOT NULL,
            at_ms INTEGER NOT NULL,
            note TEXT NOT NULL DEFAULT '') WITHOUT ROWID""",
        # `start_ms`: the call's start, so that the tab counters find the handled calls of a
        # period by an index range (they subtract them from the hourly counters)
        "CREATE INDEX call_handled_period ON call_handled (start_ms)",
    ),
    # 15: a supervisor's API token sees the calls of the members of its employee groups
    # (`groups`, a JSON list) and of its `extensions`; one made before names neither and
    # is refused with a message saying so (mirror.tokens). And a leaner outbox, for the worst
    # case of a backfill (a hook older than the history: every call queues its events in the
    # writer's transaction). An event and a state are codes, their positions in
    # mirror.webhooks.EVENTS and STATES (0: missed, pending), and no index of a hook's rows:
    # its log walks the outbox backwards by id. The rows are kept.
    (
        "ALTER TABLE api_token ADD COLUMN groups TEXT NOT NULL DEFAULT '[]'",
        """CREATE TABLE outbox_15 (
            id INTEGER PRIMARY KEY,
            hook_id INTEGER NOT NULL,
            event INTEGER NOT NULL,
            linkedid TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            due_ms INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            state INTEGER NOT NULL DEFAULT 0,
            UNIQUE (hook_id, linkedid, event))""",
        # `event`: 0 missed, 1 unreturned, 2 answered, 3 callback; `state`: 0 pending (due at
        # `due_ms`, 0: at once), 1 delivered, 2 failed, 3 cancelled
        """INSERT INTO outbox_15 SELECT id, hook_id,
            CASE event WHEN 'missed' THEN 0 WHEN 'unreturned' THEN 1 WHEN 'answered' THEN 2
                ELSE 3 END,
            linkedid, created_ms, due_ms, attempts,
            CASE state WHEN 'pending' THEN 0 WHEN 'delivered' THEN 1 WHEN 'failed' THEN 2
                ELSE 3 END
            FROM outbox""",
        "DROP TABLE outbox",
        "ALTER TABLE outbox_15 RENAME TO outbox",
        "CREATE INDEX outbox_due ON outbox (due_ms) WHERE state = 0",
    ),
    # 16: several PBXs writing one central history (issue 22): every call and leg, call in
    # progress and employee snapshot carries the PBX it came from (`pbx`, the setting
    # `pbx.id`; '' for the only PBX). A PBX's daemon replaces only its own calls in progress
    # and employees. SQLite has one PBX: no index on `pbx`, and the employees stay keyed by
    # extension (PostgreSQL's by PBX and extension, PG_PBXS), the writer's SQL the same.
    PBX_COLUMNS,
    # 17: the outbox's index holds only the rows that wait for a time (an unreturned event
    # due N minutes after its call, a retry, a Redeliver): an event due at once — nine in ten
    # of them — is no index entry the writer makes. The deliverer finds those in id order
    # from `webhook.next_id`, where the hook's first one may be (all before it were
    # settled or wait for a time): ids only grow (AUTOINCREMENT: never one used again, not
    # after the newest rows are pruned or a hook deleted), and on SQLite the writer is one,
    # so no event is committed later with a smaller id than one already seen.
    (
        "ALTER TABLE webhook ADD COLUMN next_id INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE outbox_16 (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            hook_id INTEGER NOT NULL,
            event INTEGER NOT NULL,
            linkedid TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            due_ms INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            state INTEGER NOT NULL DEFAULT 0,
            UNIQUE (hook_id, linkedid, event))""",
        "INSERT INTO outbox_16 SELECT * FROM outbox",
        "DROP TABLE outbox",
        "ALTER TABLE outbox_16 RENAME TO outbox",
        "CREATE INDEX outbox_due ON outbox (due_ms) WHERE state = 0 AND due_ms > 0",
    ),
    # 18: limits to PBXs (issue 22): an API token and a mailed report's owner may be limited
    # to some PBXs of a central history (`pbxs`, `owner_pbxs`: JSON lists; []: every PBX's);
    # a report keeps the PBX whose page made it (`pbx`; '': the only one), whose time its
    # schedule and periods are in, whichever PBX's daemon sends it.
    PBX_LIMITS,
)

LATEST = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """module.db was written by a newer version of the module."""


def migrate(conn: sqlite3.Connection) -> int:
    """Bring a module.db connection to the latest schema; returns the version it had."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > LATEST:
        raise SchemaTooNew(f"module.db has schema {found}, this version knows up to {LATEST}")
    if found == LATEST:
        return found
    conn.execute("BEGIN IMMEDIATE")      # every pending step in one transaction
    try:
        for version in range(found + 1, LATEST + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {LATEST}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return found


# --- PostgreSQL (a central history of several PBXs, issue 22) ---------------------------------
#
# A PostgreSQL mirror has no older releases to migrate: its first step is a baseline equal to
# the SQLite schema at `PG_BASELINE_VERSION`, written the PostgreSQL way. The departures:
# * 64-bit `bigint` for every *_ms, id, revision, hour/day slot and summed measure (PostgreSQL's
#   `integer` is 32-bit); ids are identity columns; no WITHOUT ROWID; `"user"` quoted.
# * `call`, `leg` and `call_employee` are partitioned by UTC month of `start_ms`
#   (`month_partitions` makes a month's tables), so their keys include `start_ms`: the writer
#   upserts calls on (linkedid, start_ms) and legs on (uniqueid, start_ms).
# * The FTS5 tables `call_number` and `call_name` are two columns of `call` with pg_trgm GIN
#   indexes, which the writer fills with the call row: `numbers`, the digits of its numbers as
#   `mirror.staging.searchable_numbers` makes them, and `names`, what `CALL_NAMES` selects (the
#   caller's and callee's names that are not only digits, one a line; '' without any).
# * `tag` names are unique whatever their case by an index on lower(name) (SQLite: NOCASE).
# * No triggers: the rollups' tables (and `call.returned_after_s`) are kept by whoever writes
#   calls, inside `mirror.rollups.kept_by_writer` (the writer's batches, deletions).
# * `extcdr_schema` holds the one row that says the schema is ours, and its version
#   (SQLite: `PRAGMA application_id` and `user_version`).
# A later change of schema is one more entry of `PG_MIGRATIONS`, numbered as its SQLite step.

PG_BASELINE_VERSION = 14
# The advisory locks (transaction-scoped) that keep two processes from migrating at once and
# from making the same month's partitions at once.
PG_MIGRATION_LOCK = APPLICATION_ID
PG_PARTITION_LOCK = APPLICATION_ID + 1
PARTITIONED = ("call", "leg", "call_employee")


class NotOurSchema(Exception):
    """A PostgreSQL database (its current schema) that holds tables, but not a module's."""


# A call's `names` column on PostgreSQL, computed from its row `{c}` (CALL_NAMES' expression,
# with a regex for GLOB).
_PG_NAMED = "~ '[^0-9+ ()-]'"
PG_CALL_NAMES = (f"btrim(CASE WHEN {{c}}.src_name {_PG_NAMED} THEN {{c}}.src_name ELSE '' END "
                 f"|| chr(10) || CASE WHEN {{c}}.dst_name {_PG_NAMED} AND {{c}}.dst_name <> "
                 f"{{c}}.src_name THEN {{c}}.dst_name ELSE '' END, chr(10))")


def _pg_rollup_table(rollup) -> str:
    whole = POSTGRESQL.whole_number
    columns = ((rollup.slot, whole),
               *((name, whole if kind == "INTEGER" else "text") for name, kind in rollup.keys),
               *((measure, whole) for measure in rollup.measures))
    key = ", ".join((rollup.slot, *rollup.key_names))
    return (f"CREATE TABLE {rollup.table} ("
            + ", ".join(f"{name} {kind} NOT NULL" for name, kind in columns)
            + f", PRIMARY KEY ({key}))")


def _report_links_secret(db: Database) -> None:
    """The key that signs mailed reports' download links (SQLite: `randomblob(32)`)."""
    run(db, "INSERT INTO module_secret (name, value) VALUES ('report_links', ?)",
        (secrets.token_bytes(32),))


_ID = "id bigint GENERATED BY DEFAULT AS IDENTITY"

PG_BASELINE: tuple[str | Callable[[Database], None], ...] = (
    """CREATE TABLE extcdr_schema (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        application text NOT NULL,
        version integer NOT NULL)""",
    "INSERT INTO extcdr_schema (application, version) VALUES ('ECDR', 0)",
    # Trigram indexes for substring search of numbers and names. A trusted extension: the
    # database's owner may create it.
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    f"""CREATE TABLE leg (
        {_ID},
        uniqueid text NOT NULL,
        linkedid text NOT NULL,
        source_id bigint NOT NULL,
        start_ms bigint NOT NULL,
        answer_ms bigint,
        end_ms bigint,
        src_chan text NOT NULL, src_num text NOT NULL, src_name text NOT NULL,
        dst_chan text NOT NULL, dst_num text NOT NULL, dst_name text NOT NULL,
        did text NOT NULL, disposition text NOT NULL, dialstatus text NOT NULL,
        recordingfile text NOT NULL, from_account text NOT NULL, to_account text NOT NULL,
        appname text NOT NULL, is_app integer NOT NULL, transfer integer NOT NULL,
        a_transfer integer NOT NULL, duration integer, billsec integer,
        dtmf_digits text NOT NULL DEFAULT '',
        PRIMARY KEY (start_ms, id),
        UNIQUE (uniqueid, start_ms)) PARTITION BY RANGE (start_ms)""",
    "CREATE INDEX leg_linkedid ON leg (linkedid)",
    f"""CREATE TABLE call (
        {_ID},
        linkedid text NOT NULL,
        start_ms bigint NOT NULL,
        end_ms bigint NOT NULL,
        direction text NOT NULL,
        status text NOT NULL,
        reason text,
        answered integer NOT NULL,
        src text NOT NULL, src_name text NOT NULL,
        dst text NOT NULL, dst_name text NOT NULL,
        external_number text, ext_key text,
        did text, line text,
        answered_by text,
        missed_by text NOT NULL, transferred_to text NOT NULL, employees text NOT NULL,
        wait_s integer NOT NULL, talk_s integer NOT NULL, duration_s integer NOT NULL,
        recordings text NOT NULL,
        callback_of text, returned_by text,
        callback_attempts integer NOT NULL DEFAULT 0,
        leg_count integer NOT NULL,
        revision bigint NOT NULL DEFAULT 0,
        queue text, queue_wait_s integer,
        ivr text, ivr_digits text, ivr_left integer,
        returned_after_s integer,
        numbers text NOT NULL DEFAULT '',
        names text NOT NULL DEFAULT '',
        PRIMARY KEY (start_ms, id),
        UNIQUE (linkedid, start_ms)) PARTITION BY RANGE (start_ms)""",
    "CREATE INDEX call_period ON call (start_ms, id) "
    "INCLUDE (talk_s, direction, status, returned_by)",
    "CREATE INDEX call_direction ON call (direction, start_ms)",
    "CREATE INDEX call_status ON call (status, start_ms)",
    "CREATE INDEX call_ext_key ON call (ext_key, start_ms)",
    "CREATE INDEX call_revision ON call (revision)",
    "CREATE INDEX call_queue ON call (queue, start_ms) WHERE queue IS NOT NULL",
    "CREATE INDEX call_recorded ON call (start_ms, id) WHERE recordings <> '[]'",
    "CREATE INDEX call_unrecorded ON call (start_ms, id) WHERE recordings = '[]'",
    "CREATE INDEX call_returned_by ON call (returned_by) WHERE returned_by IS NOT NULL",
    "CREATE INDEX call_numbers ON call USING gin (numbers gin_trgm_ops)",
    "CREATE INDEX call_names ON call USING gin (names gin_trgm_ops)",
    """CREATE TABLE call_employee (
        extension text NOT NULL,
        start_ms bigint NOT NULL,
        call_id bigint NOT NULL,
        placed integer NOT NULL DEFAULT 0,
        PRIMARY KEY (extension, start_ms, call_id)) PARTITION BY RANGE (start_ms)""",
    "CREATE INDEX call_employee_call ON call_employee (call_id)",
    "CREATE TABLE sync_state (key text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE employee (extension text PRIMARY KEY, name text NOT NULL)",
    """CREATE TABLE group_member (
        group_name text NOT NULL, extension text NOT NULL,
        PRIMARY KEY (group_name, extension))""",
    f"""CREATE TABLE saved_filter (
        {_ID} PRIMARY KEY,
        "user" text NOT NULL,
        name text NOT NULL,
        params text NOT NULL,
        is_default integer NOT NULL DEFAULT 0,
        UNIQUE ("user", name))""",
    """CREATE TABLE user_setting (
        "user" text NOT NULL, key text NOT NULL, value text NOT NULL,
        PRIMARY KEY ("user", key))""",
    f"""CREATE TABLE report (
        {_ID} PRIMARY KEY,
        owner text NOT NULL,
        owner_role text NOT NULL,
        owner_extensions text NOT NULL,
        name text NOT NULL,
        filter_id bigint NOT NULL,
        period text NOT NULL,
        frequency text NOT NULL,
        at_time text NOT NULL,
        on_day integer,
        on_date text,
        format text NOT NULL,
        delivery text NOT NULL,
        link_hours integer NOT NULL,
        recipients text NOT NULL,
        subject text NOT NULL,
        body text NOT NULL,
        language text NOT NULL,
        link_base text NOT NULL,
        enabled integer NOT NULL DEFAULT 1,
        next_run_ms bigint,
        requested_ms bigint,
        owner_scope text NOT NULL DEFAULT 'involved',
        filters text NOT NULL DEFAULT '{{}}',
        UNIQUE (owner, name))""",
    "CREATE INDEX report_next_run ON report (next_run_ms)",
    f"""CREATE TABLE report_send (
        {_ID} PRIMARY KEY,
        report_id bigint NOT NULL,
        due_ms bigint NOT NULL,
        period_start_ms bigint NOT NULL,
        period_end_ms bigint NOT NULL,
        status text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_ms bigint,
        finished_ms bigint,
        calls bigint,
        recipients text NOT NULL,
        delivery text NOT NULL,
        file text,
        expires_ms bigint,
        error text)""",
    "CREATE INDEX report_send_of_report ON report_send (report_id, id)",
    "CREATE INDEX report_send_retry ON report_send (next_attempt_ms)",
    "CREATE TABLE module_secret (name text PRIMARY KEY, value bytea NOT NULL)",
    _report_links_secret,
    """CREATE TABLE live_call (
        linkedid text PRIMARY KEY,
        start_ms bigint NOT NULL,
        direction text NOT NULL,
        state text NOT NULL,
        since_ms bigint NOT NULL,
        src text NOT NULL, src_name text NOT NULL,
        dst text NOT NULL, dst_name text NOT NULL,
        external_number text, did text, line text,
        employees text NOT NULL,
        parties text NOT NULL)""",
    """CREATE TABLE call_gone (
        linkedid text PRIMARY KEY,
        revision bigint NOT NULL,
        employees text NOT NULL)""",
    "CREATE INDEX call_gone_revision ON call_gone (revision)",
    f"""CREATE TABLE comment (
        {_ID} PRIMARY KEY,
        linkedid text NOT NULL,
        author text NOT NULL,
        created_ms bigint NOT NULL,
        edited_ms bigint,
        text text NOT NULL,
        folded text NOT NULL)""",
    "CREATE INDEX comment_of_call ON comment (linkedid, id)",
    f"""CREATE TABLE comment_audit (
        {_ID} PRIMARY KEY,
        comment_id bigint NOT NULL,
        linkedid text NOT NULL,
        actor text NOT NULL,
        at_ms bigint NOT NULL,
        action text NOT NULL,
        old_text text,
        new_text text)""",
    "CREATE INDEX comment_audit_of_call ON comment_audit (linkedid, id)",
    f"""CREATE TABLE tag (
        {_ID} PRIMARY KEY,
        name text NOT NULL,
        colour text NOT NULL)""",
    "CREATE UNIQUE INDEX tag_name ON tag (lower(name))",
    """CREATE TABLE call_tag (
        linkedid text NOT NULL,
        tag_id bigint NOT NULL,
        set_by text NOT NULL,
        set_ms bigint NOT NULL,
        PRIMARY KEY (linkedid, tag_id))""",
    "CREATE INDEX call_tag_of_tag ON call_tag (tag_id, linkedid)",
    f"""CREATE TABLE deletion (
        {_ID} PRIMARY KEY,
        linkedid text NOT NULL,
        what text NOT NULL,
        actor text NOT NULL,
        at_ms bigint NOT NULL,
        reason text NOT NULL,
        files integer NOT NULL DEFAULT 0,
        ext_key text, start_ms bigint, end_ms bigint,
        relinked integer NOT NULL DEFAULT 1)""",
    "CREATE INDEX deletion_kind ON deletion (what, linkedid)",
    "CREATE INDEX deletion_of_call ON deletion (linkedid)",
    "CREATE INDEX deletion_to_relink ON deletion (relinked) WHERE relinked = 0",
    """CREATE TABLE call_hangup (
        linkedid text PRIMARY KEY,
        side text NOT NULL,
        channel text NOT NULL,
        number text NOT NULL,
        cause integer,
        cause_txt text NOT NULL,
        at_ms bigint NOT NULL)""",
    "CREATE INDEX call_hangup_side ON call_hangup (side)",
    """CREATE TABLE supervisor_groups (
        "user" text PRIMARY KEY,
        groups text NOT NULL)""",
    *(_pg_rollup_table(rollup) for rollup in ROLLUPS),
    # Kept with the SQLite schema for the writer's grouped rollup upkeep (kept_by_writer).
    f"CREATE TABLE {PAUSE} (paused integer PRIMARY KEY)",
    f"""CREATE TABLE contact (
        {_ID} PRIMARY KEY,
        name text NOT NULL,
        company text NOT NULL DEFAULT '',
        numbers text NOT NULL DEFAULT '[]',
        email text NOT NULL DEFAULT '',
        note text NOT NULL DEFAULT '',
        source text NOT NULL,
        source_key text,
        updated_ms bigint NOT NULL,
        updated_by text NOT NULL DEFAULT '')""",
    "CREATE UNIQUE INDEX contact_source_key ON contact (source_key) "
    "WHERE source_key IS NOT NULL",
    """CREATE TABLE contact_number (
        ext_key text NOT NULL,
        contact_id bigint NOT NULL,
        number text NOT NULL,
        PRIMARY KEY (ext_key, contact_id))""",
    "CREATE INDEX contact_number_of ON contact_number (contact_id)",
    f"""CREATE TABLE webhook (
        {_ID} PRIMARY KEY,
        name text NOT NULL,
        url text NOT NULL,
        secret text NOT NULL,
        events text NOT NULL,
        filters text NOT NULL DEFAULT '{{}}',
        unreturned_after_min integer NOT NULL DEFAULT 30,
        enabled integer NOT NULL DEFAULT 1,
        created_ms bigint NOT NULL,
        created_by text NOT NULL,
        forgotten_before_ms bigint NOT NULL DEFAULT 0)""",
    f"""CREATE TABLE outbox (
        {_ID} PRIMARY KEY,
        hook_id bigint NOT NULL,
        event text NOT NULL,
        linkedid text NOT NULL,
        created_ms bigint NOT NULL,
        due_ms bigint NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        state text NOT NULL DEFAULT 'pending',
        UNIQUE (hook_id, linkedid, event))""",
    "CREATE INDEX outbox_due ON outbox (due_ms) WHERE state = 'pending'",
    "CREATE INDEX outbox_of_hook ON outbox (hook_id, id)",
    f"""CREATE TABLE delivery (
        {_ID} PRIMARY KEY,
        outbox_id bigint NOT NULL,
        at_ms bigint NOT NULL,
        status integer,
        response text NOT NULL DEFAULT '',
        duration_ms bigint NOT NULL)""",
    "CREATE INDEX delivery_of ON delivery (outbox_id, id)",
    f"""CREATE TABLE api_token (
        {_ID} PRIMARY KEY,
        name text NOT NULL,
        digest text NOT NULL UNIQUE,
        role text NOT NULL,
        extensions text NOT NULL DEFAULT '[]',
        created_by text NOT NULL,
        created_ms bigint NOT NULL,
        expires_ms bigint,
        revoked_ms bigint,
        last_used_ms bigint)""",
    """CREATE TABLE call_handled (
        linkedid text PRIMARY KEY,
        start_ms bigint NOT NULL,
        handled_by text NOT NULL,
        at_ms bigint NOT NULL,
        note text NOT NULL DEFAULT '')""",
    "CREATE INDEX call_handled_period ON call_handled (start_ms)",
)

# (version, its statements): the baseline, then one entry per later SQLite step.
PG_MIGRATIONS: tuple[tuple[int, tuple], ...] = (
    (PG_BASELINE_VERSION, PG_BASELINE),
    (15, (
        "ALTER TABLE api_token ADD COLUMN groups text NOT NULL DEFAULT '[]'",
        "DROP INDEX outbox_due",
        "DROP INDEX outbox_of_hook",
        "ALTER TABLE outbox ALTER COLUMN event TYPE smallint USING CASE event "
        "WHEN 'missed' THEN 0 WHEN 'unreturned' THEN 1 WHEN 'answered' THEN 2 ELSE 3 END",
        "ALTER TABLE outbox ALTER COLUMN state DROP DEFAULT",
        "ALTER TABLE outbox ALTER COLUMN state TYPE smallint USING CASE state "
        "WHEN 'pending' THEN 0 WHEN 'delivered' THEN 1 WHEN 'failed' THEN 2 ELSE 3 END",
        "ALTER TABLE outbox ALTER COLUMN state SET DEFAULT 0",
        "CREATE INDEX outbox_due ON outbox (due_ms) WHERE state = 0")),
    (16, (
        *PBX_COLUMNS,
        # A PBX's calls in the keyset order (a page or a report of one PBX).
        "CREATE INDEX call_pbx ON call (pbx, start_ms, id)",
        # Each PBX's snapshot of its employees and groups beside the others'.
        "ALTER TABLE employee DROP CONSTRAINT employee_pkey",
        "ALTER TABLE employee ADD PRIMARY KEY (pbx, extension)",
        "ALTER TABLE group_member DROP CONSTRAINT group_member_pkey",
        "ALTER TABLE group_member ADD PRIMARY KEY (pbx, group_name, extension)")),
    # Several writers (one a PBX) commit ids out of order here: the hook's `next_id` stays 0
    # and every pending row is in the index, due at once (0) or later, by hook.
    (17, (
        "ALTER TABLE webhook ADD COLUMN next_id bigint NOT NULL DEFAULT 0",
        "DROP INDEX outbox_due",
        "CREATE INDEX outbox_due ON outbox (hook_id, due_ms, id) WHERE state = 0")),
    (18, PBX_LIMITS),
)


def postgresql_version(db: Database) -> int:
    """The schema version of a PostgreSQL module database: 0 while its current schema is empty.
    NotOurSchema when that schema holds other tables than a module's."""
    if _table_exists(db, "extcdr_schema"):
        application, version = run(db, "SELECT application, version FROM extcdr_schema"
                                   ).fetchone()
        if application == "ECDR":
            return version
        others = ["extcdr_schema"]
    else:
        others = [name for (name,) in run(
            db, "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
                "ORDER BY 1 LIMIT 4")]
        if not others:
            return 0
    raise NotOurSchema("its schema holds other tables ("
                       + ", ".join(others[:3]) + (", …" if len(others) > 3 else "") + ")")


def migrate_postgresql(db: Database) -> int:
    """Bring a PostgreSQL module database to the latest schema; returns the version it had.
    All pending steps run in one transaction holding an advisory lock: two processes starting
    together migrate once, and a database that is not ours is refused before anything is
    written."""
    with write_transaction(db):
        run(db, "SELECT pg_advisory_xact_lock(?)", (PG_MIGRATION_LOCK,))
        found = postgresql_version(db)
        if found > LATEST:
            raise SchemaTooNew(f"module.db has schema {found}, this version knows up to {LATEST}")
        for version, statements in PG_MIGRATIONS:
            if version <= found:
                continue
            for statement in statements:
                if callable(statement):
                    statement(db)
                else:
                    run(db, statement)
            run(db, "UPDATE extcdr_schema SET version = ?", (version,))
    return found


def month_partitions(db: Database, starts_ms: Iterable[int]) -> list[str]:
    """Make the monthly partitions of `call`, `leg` and `call_employee` that rows starting at
    `starts_ms` (epoch ms) go to, where missing (a row of a month without one is refused);
    returns the tables made. In the caller's transaction, or one of its own: a writer makes
    its batch's months in one of their own before the batch (`mirror.store.Store.months`), so
    its batch's transaction starts knowing them, another writer's new month included."""
    months = sorted({_month_of(start) for start in starts_ms})
    wanted = [(f"{table}_{year:04d}_{month:02d}", table, year, month)
              for year, month in months for table in PARTITIONED]
    missing = [want for want in wanted if not _table_exists(db, want[0])]
    if not missing:
        return []
    made = []
    with db.atomic():
        # Shared by every PBX's writer: a writer waiting for another's new month while holding
        # the rows all writers change (mirror.dialect.lock_shared_rows) would deadlock.
        lock_shared_rows(db)
        run(db, "SELECT pg_advisory_xact_lock(?)", (PG_PARTITION_LOCK,))
        for name, table, year, month in missing:
            start = month_start_ms(year, month)
            end = month_start_ms(year + month // 12, month % 12 + 1)
            if not _table_exists(db, name):     # another writer may have made it meanwhile
                # Made, then attached: CREATE TABLE … PARTITION OF would lock the whole table
                # against every reader and writer (waiting for each transaction that touched
                # it — another PBX's writer that waits for this one: a deadlock); ATTACH
                # only keeps other DDL off it.
                run(db, f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS)")
                run(db, f"ALTER TABLE {table} ATTACH PARTITION {name} "
                        f"FOR VALUES FROM ({start}) TO ({end})")
                made.append(name)
    return made


def _table_exists(db: Database, name: str) -> bool:
    """`name` is a table of the current schema (where CREATE makes them), not of another one
    on the search path. Read from the catalog as of this statement: the server's cache of
    names (to_regclass) may not yet know a table another writer committed while this
    transaction waited for it."""
    return run(db, "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n "
                   "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
                   "AND c.relname = ?)", (name,)).fetchone()[0]


def _month_of(start_ms: int) -> tuple[int, int]:
    moment = datetime.fromtimestamp(start_ms / 1000, timezone.utc)
    return moment.year, moment.month


def month_start_ms(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=timezone.utc).timestamp()) * 1000
