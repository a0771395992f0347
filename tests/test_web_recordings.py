"""Recordings: served only from the recordings root, never by traversal or a symlink out of
it; a file the PBX deleted is "unavailable", not an error; an operator only gets their own."""
import json
import re
import urllib.parse
import urllib.request

import pytest

from mirror.settings import load
from pbx.recording_files import resolve
from standin.shell import StandinLogin
from tests.stack import serving
from tests.webclient import Browser
from web import create_app

PREFIX = "/admin-cabinet/module-extended-c-d-r/calls/"
WRITTEN_AS = "/storage/usbdisk1/mikopbx/astspool/monitor"


def test_resolve_keeps_to_the_root(tmp_path):
    root = tmp_path / "monitor"
    (root / "2024/10/25").mkdir(parents=True)
    good = root / "2024/10/25/a.mp3"
    good.write_bytes(b"ID3")
    outside = tmp_path / "secret.txt"
    outside.write_text("no")
    (root / "2024/10/25/escape.mp3").symlink_to(outside)
    assert resolve(f"{WRITTEN_AS}/2024/10/25/a.mp3", root, WRITTEN_AS) == good.resolve()
    for written in (f"{WRITTEN_AS}/../../../etc/passwd", f"{WRITTEN_AS}/2024/../../secret.txt",
                    "/etc/passwd", f"{WRITTEN_AS}//etc/passwd", f"{WRITTEN_AS}/",
                    f"{WRITTEN_AS}/2024/10/25/escape.mp3", f"{WRITTEN_AS}x/a.mp3",
                    f"{WRITTEN_AS}/a\x00.mp3"):
        assert resolve(written, root, WRITTEN_AS) is None, written


@pytest.fixture(scope="module")
def base(demo_mirror, demo_pbx):
    settings = load(None, {"module.db": demo_mirror, "pbx.recordings_root": demo_pbx / "monitor"})
    app = create_app(settings, login=StandinLogin.from_file(None))
    with serving(app, threads=4) as server:
        yield f"http://127.0.0.1:{server.effective_port}"


def first_file(call, demo_pbx):
    return demo_pbx / "monitor" / call["recordings"][0][len(WRITTEN_AS) + 1:]


def calls_with_recordings(browser, demo_pbx):
    """(calls whose first recording is on disk, calls whose file the PBX deleted)."""
    _, _, body = browser.request(f"{PREFIX}api/v1/calls?from=2024-10-20&to=2024-10-28&limit=500")
    calls = [c for c in json.loads(body)["calls"] if c["recordings"]]
    return ([c for c in calls if first_file(c, demo_pbx).is_file()],
            [c for c in calls if not first_file(c, demo_pbx).is_file()])


def test_a_recording_with_ranges_and_a_readable_name(base, demo_pbx):
    admin = Browser(base)
    admin.login("admin", "admin")
    present, _ = calls_with_recordings(admin, demo_pbx)
    call = present[0]
    data = first_file(call, demo_pbx).read_bytes()
    status, headers, _ = admin.request(f"{PREFIX}recordings/{call['linkedid']}/1")
    assert status == 200
    assert re.search(r'filename="?\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\w+-\w+_1\.mp3',
                     headers["Content-Disposition"])
    req = urllib.request.Request(f"{base}{PREFIX}recordings/{call['linkedid']}/1",
                                 headers={"Range": "bytes=4-11"})
    with admin.opener.open(req) as reply:
        assert reply.status == 206 and reply.read() == data[4:12]


def test_missing_file_is_unavailable_and_bad_numbers_are_404(base, demo_pbx):
    admin = Browser(base)
    admin.login("admin", "admin")
    present, gone = calls_with_recordings(admin, demo_pbx)
    if gone:
        status, _, body = admin.request(f"{PREFIX}recordings/{gone[0]['linkedid']}/1")
        assert status == 404 and "unavailable" in body
    linkedid = present[0]["linkedid"]
    for number in (0, 99):
        assert admin.request(f"{PREFIX}recordings/{linkedid}/{number}")[0] == 404
    assert admin.request(f"{PREFIX}recordings/{linkedid}/..%2F..%2Fetc%2Fpasswd")[0] == 404


def test_an_operator_gets_only_recordings_of_their_calls(base, demo_pbx):
    admin = Browser(base)
    admin.login("admin", "admin")
    present, _ = calls_with_recordings(admin, demo_pbx)
    foreign = next(c for c in present if "201" not in c["employees"])
    operator = Browser(base)
    operator.login("operator201", "operator201")
    assert operator.request(f"{PREFIX}recordings/{foreign['linkedid']}/1")[0] == 404


@pytest.mark.parametrize("name", ["admin", "operator201"])
def test_the_recordings_of_a_filter_as_one_zip(base, demo_pbx, name):
    import io
    import zipfile
    browser = Browser(base)
    browser.login(name, name)
    day = {"from": "2024-10-27", "to": "2024-10-28"}
    calls = browser.calls(PREFIX, **day)
    request = urllib.request.Request(base + PREFIX + "recordings.zip?from=2024-10-27&to=2024-10-28")
    with browser.opener.open(request) as reply:
        status, headers, data = reply.status, reply.headers, reply.read()
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    files = [f for f in archive.namelist() if f != "unavailable.txt"]
    wanted = [(c, n) for c in calls for n, _ in enumerate(c["recordings"], start=1)]
    on_disk = [(c, n) for c, n in wanted
               if (demo_pbx / "monitor" / c["recordings"][n - 1][len(WRITTEN_AS) + 1:]).is_file()]
    assert len(files) == len(on_disk) > 0
    for (call, number), file in zip(on_disk, files):
        assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\w+-\w+_%d(_\d+)?\.\w+" % number,
                            file), file
        source = demo_pbx / "monitor" / call["recordings"][number - 1][len(WRITTEN_AS) + 1:]
        assert archive.read(file) == source.read_bytes()
    missing = len(wanted) - len(on_disk)
    if missing:
        assert len(archive.read("unavailable.txt").decode().splitlines()) == missing + 1
    if name == "operator201":
        assert all("201" in c["employees"] for c in calls)


@pytest.mark.parametrize("name, words", [
    ("admin", "No call of this filter has a recording"),
    ("operator201", "Ни у одного звонка этого отбора нет записи"),
])
def test_a_filter_without_recordings_gets_a_message_not_an_empty_zip(base, name, words):
    browser = Browser(base)
    browser.login(name, name)
    day = {"from": "2024-10-27", "to": "2024-10-28", "status": "missed"}
    calls = browser.calls(PREFIX, **day)
    assert calls and not any(c["recordings"] for c in calls)
    status, headers, body = browser.request(
        PREFIX + "recordings.zip?" + urllib.parse.urlencode(day))
    assert status == 404 and "Content-Disposition" not in headers
    assert words in body and "<html" in body.lower()
    # the file name of an archive: its filter and the PBX's local time
    status, headers, _ = browser.request(
        PREFIX + "recordings.zip?from=2024-10-27&to=2024-10-28&status=answered")
    assert status == 200
    assert re.fullmatch(r'attachment; filename="recordings_\d{4}-\d\d-\d\d_\d{4}_'
                        r'2024-10-27--2024-10-28_answered\.zip"', headers["Content-Disposition"])
