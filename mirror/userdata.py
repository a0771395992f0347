"""What users keep in module.db: named filters (one of them the default, restored when the
page opens), settings such as the chosen columns and language, and the groups an admin limits
a supervisor to. The web process writes
these tables in short transactions; every function takes the user, so nobody reaches
another user's rows."""
from __future__ import annotations

import json

from peewee import Case, Database

from mirror.calls import qualified
from mirror.dialect import inserted_id, run, write_transaction
from mirror.models import SavedFilter

NAME_LIMIT = 60


class UserDataError(ValueError):
    """A request about saved filters users can correct; the message says how."""


def saved_filters(db: Database, user: str) -> list[dict]:
    """The user's filters by name: {id, name, params, is_default}."""
    query = (SavedFilter.select().where(SavedFilter.user == user)
             .order_by(SavedFilter.name).bind(db).dicts())
    return [{**row, "params": json.loads(row["params"]), "is_default": bool(row["is_default"])}
            for row in query]


def default_filter(db: Database, user: str) -> dict | None:
    return next((f for f in saved_filters(db, user) if f["is_default"]), None)


def save_filter(db: Database, user: str, name: str, params: dict[str, str],
                *, default: bool) -> int:
    """Create or overwrite the user's filter `name`; returns its id."""
    name = " ".join(name.split())
    if not name:
        raise UserDataError("give the filter a name")
    if len(name) > NAME_LIMIT:
        raise UserDataError(f"a filter name has at most {NAME_LIMIT} characters")
    encoded = json.dumps(params, ensure_ascii=False, sort_keys=True)
    with write_transaction(db):
        filter_id = inserted_id(db, SavedFilter.insert(
            user=user, name=name, params=encoded).on_conflict(
            conflict_target=[SavedFilter.user, SavedFilter.name],
            update={SavedFilter.params: encoded}))
        if default:
            _make_default(db, user, filter_id)
    return filter_id


def make_default(db: Database, user: str, filter_id: int) -> None:
    with write_transaction(db):
        _owned(db, user, filter_id)
        _make_default(db, user, filter_id)


def delete_filter(db: Database, user: str, filter_id: int) -> None:
    with write_transaction(db):
        _owned(db, user, filter_id)
        SavedFilter.delete().where(SavedFilter.id == filter_id).bind(db).execute()


def _owned(db: Database, user: str, filter_id: int) -> None:
    if not SavedFilter.select().where(SavedFilter.id == filter_id,
                                      SavedFilter.user == user).bind(db).exists():
        raise LookupError(filter_id)


def _make_default(db: Database, user: str, filter_id: int) -> None:
    SavedFilter.update(is_default=Case(None, [(SavedFilter.id == filter_id, 1)], 0)).where(
        SavedFilter.user == user).bind(db).execute()


def user_settings(db: Database, user: str) -> dict[str, str]:
    """Read at every request (columns, language): plain SQL, not a query built each time.
    (`"user"` quoted: PostgreSQL reads a bare `user` as the session's login.)"""
    return dict(run(db, 'SELECT key, value FROM user_setting WHERE "user" = ?', (user,)))


def set_user_setting(db: Database, user: str, key: str, value: str) -> None:
    with write_transaction(db):
        run(db, 'INSERT INTO user_setting ("user", key, value) VALUES (?, ?, ?) '
            'ON CONFLICT ("user", key) DO UPDATE SET value = excluded.value', (user, key, value))


def supervisor_groups(db: Database) -> dict[str, list[str]]:
    """The supervisors an admin limited to some groups: user -> group names."""
    return {user: json.loads(groups) for user, groups in run(
        db, 'SELECT "user", groups FROM supervisor_groups ORDER BY "user"')}


def set_supervisor_groups(db: Database, user: str, groups: list[str]) -> None:
    """Limit a supervisor to the calls of these groups' members (none: every call again)."""
    user = user.strip()
    if not user or len(user) > NAME_LIMIT:
        raise UserDataError(f"give the supervisor's login (at most {NAME_LIMIT} characters)")
    with write_transaction(db):
        if groups:
            run(db, 'INSERT INTO supervisor_groups ("user", groups) VALUES (?, ?) '
                'ON CONFLICT ("user") DO UPDATE SET groups = excluded.groups',
                (user, json.dumps(sorted(set(groups)), ensure_ascii=False)))
        else:
            run(db, 'DELETE FROM supervisor_groups WHERE "user" = ?', (user,))


def group_members(db: Database, groups) -> tuple[str, ...]:
    """The extensions of these employee groups' members now (ModuleUsersGroups, as the
    mirror keeps them), each `qualified` by its PBX in a history several PBXs write
    (`office:201`: two PBXs' 201 are two people)."""
    groups = list(groups)
    return tuple(sorted({qualified(pbx, extension) for pbx, extension in run(
        db, f"SELECT pbx, extension FROM group_member WHERE group_name IN "
            f"({','.join('?' * len(groups))})", groups)}))


def group_limit(db: Database, user: str) -> tuple[str, ...] | None:
    """The extensions a supervisor is limited to (their groups' members now), or None when
    no admin limited them. Read at every request: plain SQL."""
    row = run(db, 'SELECT groups FROM supervisor_groups WHERE "user" = ?', (user,)).fetchone()
    if row is None:
        return None
    return group_members(db, json.loads(row[0]))
