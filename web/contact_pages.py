"""The contacts' pages: the list (search, paging), a contact's page with all its calls (those the
user may see), and for admins adding, editing, deleting and importing contacts — a CSV or vCard
file is previewed row by row first, then applied as previewed. Everyone who sees calls sees the
names; changes are for admins, each a form post with the page's CSRF token."""
from __future__ import annotations

import secrets
import threading
import time

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, url_for

from i18n import say_error
from mirror import contacts
from mirror.contact_files import MAX_FILE_BYTES, ContactFileError, parse_contacts_file
from mirror.contacts import ContactError
from mirror.queries import (CallFilter, call_rows, calls_query, decode_cursor, encode_cursor,
                            whole_number)
from web.auth import check_csrf
from web.context import mirror, named, user_db
from web.present import user_language

contacts_pages = Blueprint("contacts", __name__)

PAGE = 50
PENDING_FOR_S = 1800          # a previewed file waits this long for "apply"
PENDING_LIMIT = 8             # previewed files kept at once (the oldest is dropped)
PREVIEW_QUIET_ROWS = 200      # rows without a message the preview lists (those with all are)
_FAR_FUTURE_MS = 2**62


@contacts_pages.before_request
def admins_change():
    if request.endpoint in ("contacts.list_page", "contacts.contact_page"):
        return None
    if g.user.role != "admin":
        return render_template("message.html", title="Request refused",
                               message="Only an admin may change the contacts."), 403
    if request.method == "POST":
        check_csrf()
    return None


@contacts_pages.get("/contacts")
def list_page():
    search = request.args.get("q", "")[:100]
    page_no = whole_number(request.args.get("page") or "1", "page", 1, 1_000_000)
    rows, total = contacts.list_contacts(mirror(), search, limit=PAGE,
                                         offset=(page_no - 1) * PAGE)
    return render_template("contacts/list.html", contacts=rows, total=total, search=search,
                           page_no=page_no, pages=max(1, -(-total // PAGE)),
                           max_mb=MAX_FILE_BYTES // 1024 // 1024)


@contacts_pages.get("/contacts/<int:contact_id>")
def contact_page(contact_id: int):
    """A contact and its calls, newest first ("show more" by keyset), as the user may see."""
    contact = contacts.find_contact(mirror(), contact_id)
    if contact is None:
        abort(404)
    context = current_app.config["EXTCDR_CONTEXT"]
    flt = CallFilter(start_ms=0, end_ms=_FAR_FUTURE_MS,
                     ext_keys=tuple(contacts.contact_keys(mirror(), contact_id)),
                     limit=PAGE + 1, after=decode_cursor(request.args.get("cursor")),
                     number_match_digits=context.match_digits(),
                     visible_to=g.user.visible_to, phonebook=context.phonebook_names())
    rows = named(call_rows(calls_query(flt, mirror())), flt)
    last = rows[PAGE - 1] if len(rows) > PAGE else None
    return render_template("contacts/contact.html", contact=contact, calls=rows[:PAGE],
                           next_cursor=encode_cursor(last["start_ms"], last["id"])
                           if last else None)


# --- changes (admins) ---------------------------------------------------------------------------

@contacts_pages.get("/contacts/new")
def new():
    return render_template("contacts/edit.html", contact=None, form={}, error=None)


@contacts_pages.get("/contacts/<int:contact_id>/edit")
def edit(contact_id: int):
    contact = contacts.find_contact(mirror(), contact_id) or abort(404)
    form = {**contact, "numbers": "\n".join(contact["numbers"])}
    return render_template("contacts/edit.html", contact=contact, form=form, error=None)


@contacts_pages.post("/contacts")
def create():
    contact = _typed()
    if isinstance(contact, tuple):
        return contact
    contact_id = contacts.add_contact(user_db(), contact, g.user.name, _now_ms(),
                                      _match_digits())
    return redirect(url_for("contacts.contact_page", contact_id=contact_id))


@contacts_pages.post("/contacts/<int:contact_id>")
def save(contact_id: int):
    existing = contacts.find_contact(mirror(), contact_id) or abort(404)
    contact = _typed(existing)
    if isinstance(contact, tuple):
        return contact
    try:
        contacts.edit_contact(user_db(), contact_id, contact, g.user.name, _now_ms(),
                              _match_digits())
    except LookupError:
        abort(404)
    return redirect(url_for("contacts.contact_page", contact_id=contact_id))


@contacts_pages.post("/contacts/<int:contact_id>/delete")
def delete(contact_id: int):
    try:
        contacts.delete_contact(user_db(), contact_id)
    except LookupError:
        abort(404)
    return redirect(url_for("contacts.list_page"))


def _typed(existing: dict | None = None):
    """The form's contact, or the form again (400) saying what is wrong."""
    form = {name: request.form.get(name, "")[:5000]
            for name in ("name", "company", "numbers", "email", "note")}
    try:
        return contacts.contact_fields(**form, match_digits=_match_digits())
    except ContactError as error:
        return render_template("contacts/edit.html", contact=existing, form=form,
                               error=str(error)), 400


# --- import (admins) ----------------------------------------------------------------------------

@contacts_pages.post("/contacts/import")
def preview():
    """What the uploaded file would add, update and refuse; nothing is written yet."""
    if (request.content_length or 0) > MAX_FILE_BYTES + 65_536:
        return _import_refused(f"the file is too big: at most {MAX_FILE_BYTES // 1024 // 1024} "
                               f"MB of contacts at once", 413)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _import_refused("choose a CSV or vCard file to import", 400)
    data = upload.stream.read(MAX_FILE_BYTES + 1)
    try:
        plan = contacts.plan_import(mirror(), parse_contacts_file(data, _match_digits()),
                                    _match_digits())
    except ContactFileError as error:
        return _import_refused(str(error), 400)
    token = _pending().keep(g.user.name, data)
    return render_template("contacts/preview.html", plan=plan, token=token,
                           file_name=upload.filename[:200], quiet_rows=PREVIEW_QUIET_ROWS)


@contacts_pages.post("/contacts/import/<token>")
def apply(token: str):
    """Apply a previewed file: what it holds is planned again (the list may have changed
    since) and written in one transaction."""
    data = _pending().take(g.user.name, token)
    if data is None:
        return _import_refused("the preview expired: choose the file again", 410)
    try:
        parsed = parse_contacts_file(data, _match_digits())
    except ContactFileError as error:
        return _import_refused(str(error), 400)
    plan = contacts.plan_import(user_db(), parsed, _match_digits())
    counts = contacts.apply_import(user_db(), plan, g.user.name, _now_ms(), _match_digits())
    return redirect(url_for("contacts.list_page", added=counts["add"],
                            updated=counts["update"], refused=counts["refused"]))


def _import_refused(message: str, status: int):
    return render_template("message.html", title="Import refused",
                           message=say_error(message, user_language())), status


class PendingImports:
    """Previewed files waiting for "apply", each for the admin who previewed it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._files: dict[str, tuple[str, float, bytes]] = {}

    def keep(self, user: str, data: bytes) -> str:
        token = secrets.token_urlsafe(18)
        now = time.monotonic()
        with self._lock:
            for key in [k for k, (_, at, _) in self._files.items() if now - at > PENDING_FOR_S]:
                del self._files[key]
            while len(self._files) >= PENDING_LIMIT:
                del self._files[min(self._files, key=lambda k: self._files[k][1])]
            self._files[token] = (user, now, data)
        return token

    def take(self, user: str, token: str) -> bytes | None:
        with self._lock:
            found = self._files.get(token)
            if found is None or found[0] != user or time.monotonic() - found[1] > PENDING_FOR_S:
                return None
            del self._files[token]
            return found[2]


def _pending() -> PendingImports:
    return current_app.extensions.setdefault("extcdr_pending_imports", PendingImports())


def _match_digits() -> int:
    return current_app.config["EXTCDR_CONTEXT"].match_digits()


def _now_ms() -> int:
    return int(time.time() * 1000)

