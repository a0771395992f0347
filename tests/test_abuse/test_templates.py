"""Mailed reports' message templates cannot hold the module: each renders in a child process
bounded in CPU time, memory, wall time and output (`reports.templates`). The red team's
templates are refused at save with a readable 400, quickly and without growing the web
process; one that is harmless at save and explodes at send fails only its own send, while
another report due at the same moment still goes out."""
from __future__ import annotations

import threading
import time

import pytest

from reports.templates import SECONDS, TemplateRefused, render
from tests.test_reports import (DUE, PREFIX, boss, due_at, new_report, post_report,  # noqa: F401
                                saved_filter, sends, site, smtp)

ATTACKS = [
    ("{% for i in range(100000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
     "too long"),
    ("{{ ('x' * (10 ** 9)) | length }}", "too much memory"),
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
    ("{{ 10 ** 5000 }}", "fails"),
    ("{{ range(10 ** 9) | list }}", "fails"),
    ("{{ calls + 'x' }}", "TypeError"),
    ("{% for i in range(100000) %}{{ 'y' * 100 }}{% endfor %}", "more than 1,000,000"),
]


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


@pytest.mark.parametrize("template, words", ATTACKS)
def test_a_hostile_template_is_refused_quickly_without_growing_this_process(template, words):
    before, started = rss_mb(), time.monotonic()
    with pytest.raises(TemplateRefused, match=words):
        render([template], {"calls": 42})
    assert time.monotonic() - started < SECONDS + 1.5
    assert rss_mb() - before < 50


def test_a_normal_template_renders_in_a_blink():
    render(["warm-up"], {})
    started = time.monotonic()
    for _ in range(10):
        assert render(["{{ calls }} calls", "Hello {{ owner }}"], {"calls": 3, "owner": "A"}) \
            == ["3 calls", "Hello A"]
    assert (time.monotonic() - started) / 10 < 0.5


@pytest.mark.parametrize("template, words", ATTACKS[:3] + ATTACKS[5:6])
def test_the_report_form_refuses_them_with_a_readable_400(boss, template, words):  # noqa: F811
    filter_id = saved_filter(boss, f"Abuse {abs(hash(template))}", "period=today")
    started = time.monotonic()
    status, _, page = post_report(boss, name=f"Abuse {abs(hash(template))}", filter=filter_id,
                                  body=template)
    assert status == 400 and words.split()[0] in page and "Traceback" not in page
    assert time.monotonic() - started < SECONDS + 3


def test_a_template_that_explodes_at_send_fails_only_its_own_send(site, smtp, boss):  # noqa: F811
    """Harmless with the form's sample values (report "Missed calls"), a loop of loops with the
    report's own name: refused at send, while the other report due then is mailed."""
    bomb_filter = saved_filter(boss, "Bomb filter", "period=today")
    bomb = new_report(boss, name="Bomb", filter=bomb_filter, body=(
        "{% if report == 'Bomb' %}{% for i in range(100000) %}{% for j in range(100000) %}"
        "{% endfor %}{% endfor %}{% endif %}done"))
    fine_filter = saved_filter(boss, "Fine filter", "period=today")
    fine = new_report(boss, name="Fine", filter=fine_filter, recipients="fine@example.com")
    for report_id in (bomb, fine):
        due_at(site, report_id, DUE)
    started = time.monotonic()
    site["scheduler"].step(time.time())
    assert time.monotonic() - started < 30
    [mail] = smtp.take()
    assert mail["To"] == "fine@example.com"
    assert sends(site, fine)[-1]["status"] == "sent"
    failed = sends(site, bomb)[-1]
    assert failed["status"] == "failed" and "too long" in failed["error"]


def test_sixteen_hostile_saves_at_once_hold_no_one_else_up(site, boss):  # noqa: F811
    """At most two messages render at once per process (more are refused at once), so sixteen
    attackers cannot take the web server's threads or CPU from another user's page."""
    filter_id = saved_filter(boss, "Crowd", "period=today")
    answers: list[int] = []

    def attack(n: int) -> None:
        status, _, _ = post_report(boss, name=f"Crowd {n}", filter=filter_id, body=ATTACKS[0][0])
        answers.append(status)

    threads = [threading.Thread(target=attack, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    slowest = 0.0
    while any(thread.is_alive() for thread in threads):
        started = time.monotonic()
        assert boss.request(PREFIX + "?period=today")[0] == 200
        slowest = max(slowest, time.monotonic() - started)
    for thread in threads:
        thread.join()
    assert answers == [400] * 16
    assert slowest < 1.0
