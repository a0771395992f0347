"""What people add to calls: comments (each change audited) and tags from an admin's list.

Both are keyed by the call's linkedid, so a resync that rewrites the call rows leaves them as
they were, and both are the users' own data (kept across upgrades, and across an uninstall
that keeps settings). The web process and the CLI write them in short transactions, each a change
open pages are told of (the calls get the history's next revision, as the daemon's writes do);
whether the user may see the call is the caller's check (`mirror.queries.call_visible`), who may
change what is checked here.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass

from peewee import JOIN, Database

from mirror.dialect import json_list_of, run, write_transaction
from mirror.models import Call, CallHangup, CallTag, Comment, Tag
from mirror.store import next_revision

COMMENT_LIMIT = 200
TAG_NAME_LIMIT = 40
# Fomantic-UI's named colours: a tag's label on the page.
TAG_COLOURS = ("red", "orange", "yellow", "olive", "green", "teal", "blue", "violet", "purple",
               "pink", "brown", "grey", "black")
_MARKUP = re.compile(r"[<>&\"'`]")


class AnnotationError(ValueError):
    """A comment or tag request users can correct; the message says how."""


class NotAllowed(PermissionError):
    """The user may not change this (another's comment, an admin's list)."""


@dataclass(frozen=True)
class Actor:
    """Who changes annotations: their login name, and whether they are an admin."""
    name: str
    admin: bool = False


# What a calls query reads beside each call (`with_notes`), and how it becomes the row's
# `tags`, `comments` and `hangup` (`notes_read`).
_NOTE_COLUMNS = ("note_tags", "note_comments", "hangup_side", "hangup_number", "hangup_cause",
                 "hangup_cause_txt")


def with_notes(query):
    """A calls query that also reads what was added to each call — its tags, its comments and
    who hung up — looked up by SQLite as each call is read (a key lookup each, no Python per
    call without them); `notes_read` turns them into the row's fields."""
    db = query._database            # the engine the (bound) calls query runs on
    tags = (CallTag.select(json_list_of(db, Tag.id, Tag.name, Tag.colour))
            .join(Tag, on=(Tag.id == CallTag.tag_id)).where(CallTag.linkedid == Call.linkedid))
    comments = Comment.select(json_list_of(
        db, Comment.id, Comment.author, Comment.text, Comment.created_ms, Comment.edited_ms)
    ).where(Comment.linkedid == Call.linkedid)
    return (query.select_extend(tags.alias("note_tags"), comments.alias("note_comments"),
                                CallHangup.side.alias("hangup_side"),
                                CallHangup.number.alias("hangup_number"),
                                CallHangup.cause.alias("hangup_cause"),
                                CallHangup.cause_txt.alias("hangup_cause_txt"))
            .join(CallHangup, JOIN.LEFT_OUTER, on=(CallHangup.linkedid == Call.linkedid)))


def notes_read(row: dict) -> dict:
    """A row of a `with_notes` query with `tags` ({id, name, colour} by name), `comments`
    ({id, author, text, created_ms, edited_ms} oldest first) and `hangup` (None: unknown)."""
    tags, comments, side, number, cause, cause_txt = (row.pop(name) for name in _NOTE_COLUMNS)
    row["tags"] = [] if tags == "[]" else sorted(
        ({"id": i, "name": name, "colour": colour} for i, name, colour in json.loads(tags)),
        key=lambda tag: tag["name"].casefold())
    row["comments"] = [] if comments == "[]" else sorted(
        ({"id": i, "author": author, "text": text, "created_ms": created, "edited_ms": edited}
         for i, author, text, created, edited in json.loads(comments)),
        key=lambda comment: comment["id"])
    row["hangup"] = None if side is None else {"side": side, "number": number, "cause": cause,
                                               "cause_txt": cause_txt}
    return row


# --- comments ------------------------------------------------------------------------------------

def comment_text(text: str) -> str:
    """A comment as kept: one paragraph of printable text, 1..COMMENT_LIMIT characters."""
    text = " ".join("".join(ch if unicodedata.category(ch)[0] != "C" else " "
                            for ch in str(text)).split())
    if not text:
        raise AnnotationError("write a comment first: it is empty")
    if len(text) > COMMENT_LIMIT:
        raise AnnotationError(f"a comment has at most {COMMENT_LIMIT} characters, this one has "
                              f"{len(text)}")
    return text


def add_comment(db: Database, linkedid: str, actor: Actor, text: str,
                now_ms: int) -> dict:
    text = comment_text(text)
    with write_transaction(db):
        comment_id = run(
            db, "INSERT INTO comment (linkedid, author, created_ms, text, folded) "
            "VALUES (?, ?, ?, ?, ?) RETURNING id",
            (linkedid, actor.name, now_ms, text, text.casefold())).fetchone()[0]
        _audit(db, comment_id, linkedid, actor, now_ms, "added", None, text)
        _shown_again(db, "?", (linkedid,))
    return {"id": comment_id, "author": actor.name, "text": text, "created_ms": now_ms,
            "edited_ms": None}


def edit_comment(db: Database, linkedid: str, comment_id: int, actor: Actor, text: str,
                 now_ms: int) -> dict:
    text = comment_text(text)
    with write_transaction(db):
        author, old, created = _changeable(db, linkedid, comment_id, actor)
        run(db, "UPDATE comment SET text = ?, folded = ?, edited_ms = ? WHERE id = ?",
            (text, text.casefold(), now_ms, comment_id))
        _audit(db, comment_id, linkedid, actor, now_ms, "edited", old, text)
        _shown_again(db, "?", (linkedid,))
    return {"id": comment_id, "author": author, "text": text, "created_ms": created,
            "edited_ms": now_ms}


def delete_comment(db: Database, linkedid: str, comment_id: int, actor: Actor,
                   now_ms: int) -> None:
    with write_transaction(db):
        _, old, _ = _changeable(db, linkedid, comment_id, actor)
        run(db, "DELETE FROM comment WHERE id = ?", (comment_id,))
        _audit(db, comment_id, linkedid, actor, now_ms, "deleted", old, None)
        _shown_again(db, "?", (linkedid,))


def comment_history(db: Database, linkedid: str) -> list[dict]:
    """Every change of the call's comments, oldest first (the audit trail)."""
    rows = run(
        db, "SELECT comment_id, actor, at_ms, action, old_text, new_text FROM comment_audit "
        "WHERE linkedid = ? ORDER BY id", (linkedid,))
    return [{"comment": comment_id, "actor": who, "at_ms": at, "action": action, "old": old,
             "new": new} for comment_id, who, at, action, old, new in rows]


def _changeable(db, linkedid: str, comment_id: int, actor: Actor) -> tuple[str, str, int]:
    """(author, text, created) of a comment the actor may change: their own, or any for an
    admin. LookupError when the call has no such comment."""
    row = run(db, "SELECT author, text, created_ms FROM comment WHERE id = ? "
              "AND linkedid = ?", (comment_id, linkedid)).fetchone()
    if row is None:
        raise LookupError(comment_id)
    if row[0] != actor.name and not actor.admin:
        raise NotAllowed("only its author or an admin may change a comment")
    return row


def _audit(db, comment_id: int, linkedid: str, actor: Actor, now_ms: int, action: str,
           old: str | None, new: str | None) -> None:
    run(
        db, "INSERT INTO comment_audit (comment_id, linkedid, actor, at_ms, action, old_text, "
        "new_text) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (comment_id, linkedid, actor.name, now_ms, action, old, new))


# --- tags ----------------------------------------------------------------------------------------

def tag_list(db: Database) -> list[dict]:
    """The admin's tags by name: {id, name, colour}."""
    return [{"id": tag_id, "name": name, "colour": colour} for tag_id, name, colour in
            run(db, "SELECT id, name, colour FROM tag ORDER BY lower(name), id")]


def tag_fields(name: str, colour: str) -> tuple[str, str]:
    """A tag's name and colour as kept; AnnotationError saying what is wrong."""
    name = " ".join(str(name).split())
    if not name:
        raise AnnotationError("give the tag a name")
    if len(name) > TAG_NAME_LIMIT:
        raise AnnotationError(f"a tag name has at most {TAG_NAME_LIMIT} characters")
    if _MARKUP.search(name) or any(unicodedata.category(ch)[0] == "C" for ch in name):
        raise AnnotationError("a tag name is plain text: no < > & \" ' ` characters")
    if name.replace(",", "") != name:
        raise AnnotationError("a tag name cannot hold a comma (filters list tags with commas)")
    colour = colour or "grey"
    if colour not in TAG_COLOURS:
        raise AnnotationError(f"unknown colour {colour[:20]!r}; use one of: "
                              f"{', '.join(TAG_COLOURS)}")
    return name, colour


def create_tag(db: Database, actor: Actor, name: str, colour: str = "grey") -> dict:
    _admin(actor)
    name, colour = tag_fields(name, colour)
    with write_transaction(db):
        if name.casefold() in _tags_by_name(db):
            raise AnnotationError(f"a tag named {name!r} exists already")
        tag_id = run(db, "INSERT INTO tag (name, colour) VALUES (?, ?) RETURNING id",
                     (name, colour)).fetchone()[0]
    return {"id": tag_id, "name": name, "colour": colour}


def change_tag(db: Database, actor: Actor, tag_id: int, name: str, colour: str) -> dict:
    _admin(actor)
    name, colour = tag_fields(name, colour)
    with write_transaction(db):
        _tag(db, tag_id)
        if _tags_by_name(db).get(name.casefold(), tag_id) != tag_id:
            raise AnnotationError(f"a tag named {name!r} exists already")
        run(db, "UPDATE tag SET name = ?, colour = ? WHERE id = ?", (name, colour, tag_id))
        _shown_again(db, "SELECT linkedid FROM call_tag WHERE tag_id = ?", (tag_id,))
    return {"id": tag_id, "name": name, "colour": colour}


def delete_tag(db: Database, actor: Actor, tag_id: int) -> None:
    """Remove a tag from the list and from every call it was set on."""
    _admin(actor)
    with write_transaction(db):
        _tag(db, tag_id)
        _shown_again(db, "SELECT linkedid FROM call_tag WHERE tag_id = ?", (tag_id,))
        run(db, "DELETE FROM call_tag WHERE tag_id = ?", (tag_id,))
        run(db, "DELETE FROM tag WHERE id = ?", (tag_id,))


def tag_ids(db: Database, names) -> list[int]:
    """The ids of tags given by name (any case, Cyrillic too); AnnotationError naming an
    unknown one."""
    known = _tags_by_name(db)
    ids = []
    for name in names:
        tag_id = known.get(" ".join(str(name).split()).casefold())
        if tag_id is None:
            shown = str(name) if len(str(name)) <= 40 else str(name)[:37] + "..."
            raise AnnotationError(f"unknown tag {shown!r}; an admin adds tags to the list first")
        ids.append(tag_id)
    return ids


def set_call_tags(db: Database, linkedid: str, actor: Actor, names,
                  now_ms: int) -> None:
    """Make the call's tags exactly `names` (set the new ones, clear the others)."""
    with write_transaction(db):
        wanted = set(tag_ids(db, names))
        have = {tag_id for (tag_id,) in run(
            db, "SELECT tag_id FROM call_tag WHERE linkedid = ?", (linkedid,))}
        for tag_id in have - wanted:
            run(db, "DELETE FROM call_tag WHERE linkedid = ? AND tag_id = ?",
                (linkedid, tag_id))
        for tag_id in wanted - have:
            run(db, "INSERT INTO call_tag (linkedid, tag_id, set_by, set_ms) "
                "VALUES (?, ?, ?, ?)", (linkedid, tag_id, actor.name, now_ms))
        if wanted != have:
            _shown_again(db, "?", (linkedid,))


def add_call_tag(db: Database, linkedid: str, actor: Actor, name: str,
                 now_ms: int) -> None:
    with write_transaction(db):
        (tag_id,) = tag_ids(db, [name])
        if run(db, "INSERT INTO call_tag (linkedid, tag_id, set_by, set_ms) "
               "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
               (linkedid, tag_id, actor.name, now_ms)).rowcount:
            _shown_again(db, "?", (linkedid,))


def remove_call_tag(db: Database, linkedid: str, tag_id: int) -> None:
    with write_transaction(db):
        if run(db, "DELETE FROM call_tag WHERE linkedid = ? AND tag_id = ?",
               (linkedid, tag_id)).rowcount:
            _shown_again(db, "?", (linkedid,))


def _shown_again(db, calls_sql: str, params=()) -> None:
    """The calls `calls_sql` names (their linkedids) look different now: open pages showing
    them get their rows again (a new revision stamped on them)."""
    run(db, f"UPDATE call SET revision = ? WHERE linkedid IN ({calls_sql})",
        (next_revision(db), *params))


def _tag(db, tag_id: int) -> None:
    if run(db, "SELECT 1 FROM tag WHERE id = ?", (tag_id,)).fetchone() is None:
        raise LookupError(tag_id)


def _tags_by_name(db) -> dict[str, int]:
    """The list's tags by their names casefolded (SQLite's NOCASE folds ASCII only)."""
    return {name.casefold(): tag_id for tag_id, name in run(db, "SELECT id, name FROM tag")}


def _admin(actor: Actor) -> None:
    if not actor.admin:
        raise NotAllowed("only an admin manages the list of tags")
