"""Webhooks in the settings, for admins: the hooks (name, URL, events, the wait before
"unreturned", a filter as the page's parameters, enabled), each one's secret shown and renewed
on demand, and its log of deliveries, newest first, with a Redeliver button. Each change is a
form post with the page's CSRF token; a bad value shows the form again with what is wrong.
The daemon's sender (`daemon.deliverer`) does the sending."""
from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, url_for

from mirror import webhooks
from mirror.queries import whole_number
from mirror.webhooks import EVENTS, WebhookError
from web.admin import admins_only
from web.context import user_db

webhook_settings = Blueprint("webhooks", __name__)
webhook_settings.before_request(admins_only)

LOG_PAGE = 50
# How events and states are labelled (English; translated through i18n.RUSSIAN).
EVENT_LABELS = {"missed": "Missed call", "unreturned": "Not called back in time",
                "answered": "Answered call", "callback": "Missed call returned"}
STATE_LABELS = {"pending": "pending", "delivered": "delivered", "failed": "failed",
                "cancelled": "cancelled"}


@webhook_settings.get("/settings/webhooks")
def page(values: dict | None = None, error: str | None = None, status: int = 200):
    return render_template("settings/webhooks.html", hooks=webhooks.hooks(user_db()),
                           events=EVENTS, values=values or {"events": ["missed"],
                                                            "unreturned_after_min": 30,
                                                            "enabled": True},
                           event_labels=EVENT_LABELS, error=error), status


@webhook_settings.post("/settings/webhooks")
def create():
    try:
        values = webhooks.hook_values(_form(), _allowed_hosts())
    except WebhookError as error:
        return page(_typed(), str(error), 400)
    hook_id = webhooks.create_hook(user_db(), values, g.user.name)
    return redirect(url_for("webhooks.hook", hook_id=hook_id))


@webhook_settings.get("/settings/webhooks/<int:hook_id>")
def hook(hook_id: int, values: dict | None = None, error: str | None = None, status: int = 200):
    found = _hook(hook_id)
    before = request.args.get("before")
    before = whole_number(before, "before", 1) if before else None
    log = webhooks.deliveries(user_db(), hook_id, limit=LOG_PAGE + 1, before=before)
    older = log[LOG_PAGE - 1]["id"] if len(log) > LOG_PAGE else None
    if values is None:
        values = {**found, "filters": urlencode(found["filters"])}
    return render_template("settings/webhook.html", hook=found, values=values, events=EVENTS,
                           log=log[:LOG_PAGE], older=older, newest=before is not None,
                           event_labels=EVENT_LABELS, state_labels=STATE_LABELS,
                           error=error), status


@webhook_settings.post("/settings/webhooks/<int:hook_id>")
def update(hook_id: int):
    _hook(hook_id)
    try:
        values = webhooks.hook_values(_form(), _allowed_hosts())
    except WebhookError as error:
        return hook(hook_id, _typed(), str(error), 400)
    webhooks.change_hook(user_db(), hook_id, values)
    return redirect(url_for("webhooks.hook", hook_id=hook_id))


@webhook_settings.post("/settings/webhooks/<int:hook_id>/secret")
def renew_secret(hook_id: int):
    _changed(webhooks.renew_secret, hook_id)
    return redirect(url_for("webhooks.hook", hook_id=hook_id) + "#secret")


@webhook_settings.post("/settings/webhooks/<int:hook_id>/delete")
def delete(hook_id: int):
    _changed(webhooks.delete_hook, hook_id)
    return redirect(url_for("webhooks.page"))


@webhook_settings.post("/settings/webhooks/<int:hook_id>/deliveries/<int:outbox_id>/redeliver")
def redeliver(hook_id: int, outbox_id: int):
    _changed(webhooks.redeliver, hook_id, outbox_id)
    return redirect(url_for("webhooks.hook", hook_id=hook_id))


def _changed(change, *args):
    try:
        change(user_db(), *args)
    except LookupError:
        abort(404)


def _hook(hook_id: int) -> dict:
    try:
        return webhooks.hook_of(user_db(), hook_id)
    except LookupError:
        abort(404)


def _form() -> dict:
    form = request.form
    return {"name": form.get("name", ""), "url": form.get("url", ""),
            "events": form.getlist("events"), "filters": form.get("filters", ""),
            "unreturned_after_min": form.get("unreturned_after_min", ""),
            "enabled": form.get("enabled") == "on"}


def _typed() -> dict:
    """What the admin typed, to show again with the error."""
    return {**_form(), "filters": request.form.get("filters", "")}


def _allowed_hosts() -> list[str]:
    hosts = current_app.config["EXTCDR_WEBHOOK_HOSTS"]
    return [host.strip() for host in hosts.split(",") if host.strip()]
