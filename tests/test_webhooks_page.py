"""The webhooks' settings page: admins only, a CSRF token on every change, bad input shown
with what is wrong (in English and Russian), the secret renewed on demand, the log of
deliveries newest first and paged, Redeliver putting a delivery back to pending."""
import hashlib
import hmac
import re
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from contextlib import closing

import pytest

from mirror import webhooks
from mirror.settings import load
from tests.mirror import mirrored_demo
from tests.stack import serving
from tests.test_supervisor_groups import TOKEN
from web import create_app

PREFIX = "/admin-cabinet/module-extended-c-d-r/calls"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("hooks-pbx")
    db = mirrored_demo(out, 60, seed=31)
    config = tmp_path_factory.mktemp("web") / "extcdr.toml"
    config.write_text(f'[web]\nproxy_token = "{TOKEN}"\n'
                      '[webhooks]\nallowed_hosts = "127.0.0.1, crm.example.com"\n')
    app = create_app(load(config, {"module.db": db}))
    with serving(app, threads=4) as http:
        yield {"base": f"http://127.0.0.1:{http.effective_port}{PREFIX}", "db": db}


def request(base, path, *, user, role, data=None, params=None, language=""):
    """A request through the proxy's headers; a form post carries the user's CSRF token."""
    url = f"{base}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    headers = {"X-Extcdr-User": user, "X-Extcdr-Role": role, "X-Extcdr-Proxy-Token": TOKEN,
               "X-Extcdr-Language": language}
    body = None
    if data is not None:
        key = hashlib.sha256(f"extcdr:{TOKEN}".encode()).digest()
        token = hmac.new(key, f"csrf:{user}".encode(), hashlib.sha256).hexdigest()
        body = urllib.parse.urlencode({**data, "csrf_token": token}, doseq=True).encode()
    no_redirect = type("NoRedirect", (urllib.request.HTTPRedirectHandler,),
                       {"redirect_request": lambda *a, **k: None})
    try:
        with urllib.request.build_opener(no_redirect).open(
                urllib.request.Request(url, data=body, headers=headers)) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def admin(site, path, data=None, **kwargs):
    return request(site["base"], path, user="admin", role="admin", data=data, **kwargs)


def rows(site, sql, params=()):
    with closing(sqlite3.connect(site["db"])) as conn:
        return conn.execute(sql, params).fetchall()


HOOK = {"name": "CRM", "url": "http://127.0.0.1:8999/in", "events": ["missed", "callback"],
        "unreturned_after_min": "15", "filters": "direction=incoming", "enabled": "on"}


def test_only_admins_and_only_with_the_csrf_token(site):
    for role in ("supervisor", "operator"):
        status, body = request(site["base"], "/settings/webhooks", user="u", role=role)
        assert status == 403 and b"Only an admin" in body
        status, _ = request(site["base"], "/settings/webhooks", user="u", role=role, data=HOOK)
        assert status == 403
    forged = urllib.request.Request(
        site["base"] + "/settings/webhooks", data=b"name=x&url=http://127.0.0.1/&events=missed",
        headers={"X-Extcdr-User": "admin", "X-Extcdr-Role": "admin",
                 "X-Extcdr-Proxy-Token": TOKEN})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(forged)
    assert refused.value.code == 403
    assert rows(site, "SELECT count(*) FROM webhook") == [(0,)]


def test_create_edit_secret_log_redeliver_delete(site):
    status, _ = admin(site, "/settings", params=None)
    assert status == 200
    status, page = admin(site, "/settings")
    assert b"/settings/webhooks" in page                     # linked from the settings
    status, _ = admin(site, "/settings/webhooks", HOOK)
    assert status == 302
    (hook_id, secret, events, filters, after, enabled, by), = rows(
        site, "SELECT id, secret, events, filters, unreturned_after_min, enabled, created_by "
        "FROM webhook")
    assert (events, filters, after, enabled, by) == (
        '["missed", "callback"]', '{"direction": "incoming"}', 15, 1, "admin")
    status, page = admin(site, f"/settings/webhooks/{hook_id}")
    assert status == 200 and secret.encode() in page and b"direction=incoming" in page
    admin(site, f"/settings/webhooks/{hook_id}/secret", {})
    assert rows(site, "SELECT secret FROM webhook")[0][0] not in (secret, "")
    status, _ = admin(site, f"/settings/webhooks/{hook_id}", {**HOOK, "enabled": ""})
    assert status == 302 and rows(site, "SELECT enabled FROM webhook") == [(0,)]
    with closing(sqlite3.connect(site["db"])) as conn, conn:
        for n in range(60):
            conn.execute("INSERT INTO outbox (hook_id, event, linkedid, created_ms, due_ms, "
                         "attempts, state) VALUES (?, ?, ?, 0, 0, 9, ?)",
                         (hook_id, webhooks.MISSED, f"call-{n}", webhooks.FAILED))
            conn.execute("INSERT INTO delivery (outbox_id, at_ms, status, response, "
                         "duration_ms) VALUES (last_insert_rowid(), 0, 500, ?, 12)",
                         (f"<b>down {n}</b>",))
    status, page = admin(site, f"/settings/webhooks/{hook_id}")
    text = page.decode()
    assert text.index("call-59") < text.index("call-58")     # newest first
    assert "call-9<" not in text and "&lt;b&gt;down 59&lt;/b&gt;" in text
    older = re.search(r'href="([^"]*before=(\d+))"', text).group(2)
    status, page = admin(site, f"/settings/webhooks/{hook_id}", params={"before": older})
    assert b"call-9<" in page and b"call-59" not in page
    last = rows(site, "SELECT max(id) FROM outbox")[0][0]
    status, _ = admin(site, f"/settings/webhooks/{hook_id}/deliveries/{last}/redeliver", {})
    assert status == 302
    assert rows(site, "SELECT state, attempts FROM outbox WHERE id = ?", (last,)) == [
        (webhooks.PENDING, 0)]
    status, _ = admin(site, f"/settings/webhooks/{hook_id + 1}/deliveries/{last}/redeliver",
                      {})
    assert status == 404                                     # another hook's delivery
    status, _ = admin(site, f"/settings/webhooks/{hook_id}/delete", {})
    assert status == 302
    assert rows(site, "SELECT count(*) FROM webhook UNION ALL SELECT count(*) FROM outbox "
                      "UNION ALL SELECT count(*) FROM delivery") == [(0,), (0,), (0,)]


@pytest.mark.parametrize("change, english, russian", [
    ({"url": "ftp://127.0.0.1/in"}, "must start with http:// or https://", "должен начинаться"),
    ({"url": "https://evil.example.net/in"}, "is not among webhooks.allowed_hosts",
     "не входит в webhooks.allowed_hosts"),
    ({"events": []}, "choose at least one event", "выберите хотя бы одно событие"),
    ({"filters": "direction=sideways"}, "unknown direction", "sideways"),
    ({"filters": "period=today"}, "unknown filter", "неизвестный отбор"),
    ({"unreturned_after_min": "0"}, "1 to 10080 minutes", "от 1 до 10080 минут"),
])
def test_bad_input_is_shown_with_what_was_typed(site, change, english, russian):
    status, page = admin(site, "/settings/webhooks", {**HOOK, **change})
    assert status == 400 and english in page.decode() and b"Not saved" in page
    assert ('value="' + (change.get("url") or HOOK["url"]) + '"') in page.decode()
    status, page = request(site["base"], "/settings/webhooks", user="admin", role="admin",
                           data={**HOOK, **change}, language="ru")
    assert status == 400 and russian in page.decode()
    assert rows(site, "SELECT count(*) FROM webhook") == [(0,)]
