"""Working with calls from the command line: `comment`, `tag`, `delete` — the page's rules.

Without `--user` the command acts as the PBX's administrator (whoever has a shell on the PBX
is one); with `--user` (and `--users`) as that user: an operator reaches only the calls their
extensions may see, changes only their own comments, and neither deletes nor manages tags.
"""
from __future__ import annotations

import getpass
import json
import sys
import time
from pathlib import Path

from cli.base import CliError, add_db_argument, add_user_arguments, chosen_user
from cli.mirror import add_filter_arguments, filter_params
from mirror import annotations, deletions
from mirror import settings as settings_module
from mirror.annotations import Actor
from mirror.database import open_module_db
from mirror.pbxtime import PbxClock
from mirror.queries import call_visible, find_call
from mirror.records import comment_record, iso_time
from pbx.mirror_context import MirrorContext
from pbx.recording_files import RecordingFiles


def add_commands(sub) -> dict:
    comment = sub.add_parser("comment", help="list, add, edit or delete a call's comments")
    add_db_argument(comment)
    comment.add_argument("call", metavar="LINKEDID")
    comment.add_argument("text", nargs="?", help="add this comment (up to 200 characters)")
    action = comment.add_mutually_exclusive_group()
    action.add_argument("--edit", nargs=2, metavar=("ID", "TEXT"),
                        help="replace the text of comment ID")
    action.add_argument("--delete", type=int, metavar="ID", help="delete comment ID")
    action.add_argument("--history", action="store_true", help="every change of its comments")
    comment.add_argument("--format", choices=("text", "json"), default="text")
    add_user_arguments(comment, "act as this user (their role and extensions apply); "
                       "from --users")

    tag = sub.add_parser("tag", help="a call's tags, or the list of tags (admins)")
    add_db_argument(tag)
    tag.add_argument("call", metavar="LINKEDID", nargs="?",
                     help="the call (without it: the list of tags)")
    action = tag.add_mutually_exclusive_group()
    action.add_argument("--set", metavar="NAMES", help="the call's tags become exactly these "
                        "(comma-separated; empty: none)")
    action.add_argument("--add", metavar="NAME", help="set this tag on the call")
    action.add_argument("--remove", metavar="NAME", help="clear this tag from the call")
    action.add_argument("--create", metavar="NAME", help="add a tag to the list")
    action.add_argument("--rename", nargs=2, metavar=("NAME", "NEW"), help="rename a tag")
    action.add_argument("--drop", metavar="NAME", help="remove a tag from the list and calls")
    tag.add_argument("--colour", default="grey",
                     help=f"with --create/--rename: {', '.join(annotations.TAG_COLOURS)}")
    tag.add_argument("--format", choices=("text", "json"), default="text")
    add_user_arguments(tag, "act as this user (their role and extensions apply); from --users")

    delete = sub.add_parser("delete", help="delete a call or its recordings (admins), or the "
                            "recordings of a filter's calls; kept deleted through resyncs")
    add_db_argument(delete)
    delete.add_argument("call", metavar="LINKEDID", nargs="?",
                        help="the call (without it: the recordings of the filter's calls)")
    delete.add_argument("--recordings", action="store_true",
                        help="only the recording files; the call stays")
    delete.add_argument("--reason", required=True, help="why (kept with who deleted what)")
    delete.add_argument("--yes", type=int, metavar="COUNT",
                        help="for a filter: the count it printed, to confirm the deletion")
    delete.add_argument("--config", type=Path,
                        help="settings file (TOML): pbx.recordings_root and where the PBX "
                             "writes it (pbx.recordings_written_as)")
    add_filter_arguments(delete)
    add_user_arguments(delete, "act as this user (only an admin deletes); from --users")
    return {"comment": cmd_comment, "tag": cmd_tag, "delete": cmd_delete}


# --- comment -------------------------------------------------------------------------------------

def cmd_comment(args) -> int:
    actor, visible_to = _actor(args)
    db = open_module_db(args.db)
    try:
        row = _visible_call(db, args.call, visible_to)
        now, clock = _now(), _clock(db)
        try:
            if args.history:
                _print(args.format, [
                    {**change, "at": iso_time(change.pop("at_ms"), clock.tz)}
                    for change in annotations.comment_history(db, args.call)],
                    lambda c: f"{c['at']}  {c['actor']}  {c['action']}  #{c['comment']}  "
                              f"{c['old'] or ''} -> {c['new'] or ''}")
                return 0
            if args.delete is not None:
                annotations.delete_comment(db, args.call, args.delete, actor, now)
                print(f"comment {args.delete} deleted", file=sys.stderr)
                return 0
            if args.edit is not None:
                comment_id, text = args.edit
                if not comment_id.isdigit():
                    raise CliError(f"--edit: a comment ID is a number, not {comment_id[:20]!r}")
                annotations.edit_comment(db, args.call, int(comment_id), actor, text, now)
                print(f"comment {comment_id} changed", file=sys.stderr)
                return 0
            if args.text is not None:
                added = annotations.add_comment(db, args.call, actor, args.text, now)
                print(f"comment {added['id']} added", file=sys.stderr)
                return 0
        except LookupError:
            which = args.edit[0] if args.edit else args.delete
            raise CliError(f"the call {args.call} has no comment {which}") from None
        _print(args.format, [comment_record(c, clock.tz) for c in
                             row["comments"]],
               lambda c: f"#{c['id']}  {c['created']}  {c['author']}: {c['text']}"
                         + ("  (edited)" if c["edited"] else ""))
    finally:
        db.close()
    return 0


# --- tag -----------------------------------------------------------------------------------------

def cmd_tag(args) -> int:
    actor, visible_to = _actor(args)
    db = open_module_db(args.db)
    try:
        listing = args.create or args.rename or args.drop
        if args.call is None or listing:
            if args.call is not None:
                raise CliError("--create, --rename and --drop change the list: give no call")
            if args.set is not None or args.add or args.remove:
                raise CliError("give the call (LINKEDID) whose tags to change")
            if args.create:
                annotations.create_tag(db, actor, args.create, args.colour)
            elif args.rename:
                annotations.change_tag(db, actor, _tag_id(db, args.rename[0]), args.rename[1],
                                       args.colour)
            elif args.drop:
                annotations.delete_tag(db, actor, _tag_id(db, args.drop))
            _print(args.format, annotations.tag_list(db),
                   lambda t: f"{t['name']}  ({t['colour']})")
            return 0
        _visible_call(db, args.call, visible_to)
        now = _now()
        if args.set is not None:
            annotations.set_call_tags(db, args.call, actor,
                                      [n for n in args.set.split(",") if n.strip()], now)
        elif args.add:
            annotations.add_call_tag(db, args.call, actor, args.add, now)
        elif args.remove:
            annotations.remove_call_tag(db, args.call, _tag_id(db, args.remove))
        _print(args.format, _visible_call(db, args.call, visible_to)["tags"],
               lambda t: t["name"])
    finally:
        db.close()
    return 0


def _tag_id(db, name: str) -> int:
    (tag_id,) = annotations.tag_ids(db, [name])
    return tag_id


# --- delete --------------------------------------------------------------------------------------

def cmd_delete(args) -> int:
    actor, visible_to = _actor(args)
    if not actor.admin:
        raise CliError("only an admin may delete calls or recordings")
    settings = settings_module.load(args.config)
    files = RecordingFiles(settings["pbx.recordings_root"],
                           settings["pbx.recordings_written_as"])
    db = open_module_db(args.db)
    try:
        if args.call is not None:
            if filter_params(args):
                raise CliError("give either a call (LINKEDID) or a filter, not both")
            deletions.refuse_in_progress(db, args.call)
            _visible_call(db, args.call, visible_to)
            if args.recordings:
                done = deletions.delete_recordings(db, [args.call], actor.name, args.reason,
                                                   _now(), files.locate)
            else:
                done = deletions.delete_call(db, args.call, actor.name, args.reason, _now(),
                                             files.locate)
            print(f"deleted: {done.calls} call{'s' if done.calls != 1 else ''}, "
                  f"{done.files} file{'s' if done.files != 1 else ''}", file=sys.stderr)
            return 0
        if not args.recordings:
            raise CliError("a filter deletes recordings only: add --recordings (or give one "
                           "call's LINKEDID to delete the call)")
        return _delete_filter_recordings(args, db, actor, files)
    finally:
        db.close()


def _delete_filter_recordings(args, db, actor: Actor, files: RecordingFiles) -> int:
    flt = MirrorContext(settings_module.load(args.config), db).call_filter(filter_params(args))
    if args.yes is None:
        deletions.deletion_reason(args.reason)
        found = deletions.recorded(flt, db).count()
        print(f"{found:,} calls of this filter have recordings; to delete their files run "
              f"again with --yes {found}")
        return 0
    done = deletions.delete_filter_recordings(db, flt, args.yes, actor.name, args.reason,
                                              _now(), files.locate)
    print(f"deleted the recordings of {done.calls:,} calls ({done.files:,} files)",
          file=sys.stderr)
    return 0


# --- shared --------------------------------------------------------------------------------------

def _actor(args):
    """(who acts, the calls they may see): `--user`, else this machine's administrator."""
    user = chosen_user(args)
    if user is None:
        return Actor(getpass.getuser(), admin=True), None
    return Actor(user.name, admin=user.role == "admin"), user.visible_to


def _visible_call(db, linkedid: str, visible_to) -> dict:
    row = find_call(linkedid, db)
    if row is None or not call_visible(row["id"], visible_to, db):
        raise CliError(f"no call {linkedid} (or not one this user may see)")
    return row


def _clock(db) -> PbxClock:
    return MirrorContext(settings_module.load(), db).clock()


def _print(fmt: str, items: list[dict], line) -> None:
    for item in items:
        print(json.dumps(item, ensure_ascii=False) if fmt == "json" else line(item))


def _now() -> int:
    return int(time.time() * 1000)
