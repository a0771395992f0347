"""On a real MikoPBX the module's licence is Core's word: the Python side asks the module's REST
callback on the loopback, and the callback asks Core's `license` service. Here the callback is
the module's own PHP (Lib/ExtendedCDRConf.php) run by `php` under each Core profile behind a
real HTTP server, as Core's REST route runs it."""
import json
import subprocess
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pbxmodule import core_licence
from pbxmodule.core_licence import CoreLicence
from tests.stack import address, serving
from tests.test_php import PROFILES, tool

ROOT = Path(__file__).resolve().parent.parent
FEATURE = 4242


class CoreRest:
    """Core's `/pbxcore/api/modules/<ID>/<action>` on 127.0.0.1, running the module's PHP."""

    def __init__(self, modules: Path, profile: str):
        self.modules, self.profile, self.granted, self.asked = modules, profile, set(), 0
        core = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                core.asked += 1
                prefix = "/pbxcore/api/modules/ModuleExtendedCDR/"
                if not self.path.startswith(prefix):
                    self.send_error(404)
                    return
                done = subprocess.run(
                    [tool("php"), ROOT / "tests/php/rest_callback.php", core.modules,
                     self.path[len(prefix):], ",".join(map(str, core.granted))],
                    capture_output=True, timeout=60,
                    env={"EXTCDR_CORE_PROFILE": core.profile, "PATH": "/usr/bin:/bin"})
                assert done.returncode == 0, done.stderr
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(done.stdout)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = (f"http://127.0.0.1:{self.http.server_address[1]}"
                    f"/pbxcore/api/modules/ModuleExtendedCDR/licence")

    def close(self):
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(params=PROFILES)
def core(request, tmp_path):
    module = tmp_path / "ModuleExtendedCDR"
    module.mkdir()
    (module / "module.json").write_text(json.dumps({"moduleUniqueID": "ModuleExtendedCDR",
                                                    "lic_feature_id": FEATURE}))
    rest = CoreRest(tmp_path, request.param)
    yield rest
    rest.close()


def test_the_module_works_while_core_grants_its_feature(core):
    licence = CoreLicence(core.url)
    assert "does not include this module" in licence.problem(now=1000)
    assert licence.problem(now=1005) is not None and core.asked == 1     # remembered a while
    core.granted.add(FEATURE)                  # activated in Licence management
    assert licence.problem(now=1000 + core_licence.RETRY_S) is None
    assert core.asked == 2
    assert licence.problem(now=1100) is None and core.asked == 2
    core.granted.clear()                       # expired at Core
    assert "does not include" in licence.problem(now=1000 + core_licence.RETRY_S
                                                 + core_licence.ASK_EVERY_S)


def test_a_silent_core_keeps_the_last_grant_for_the_grace_only(core):
    core.granted.add(FEATURE)
    licence = CoreLicence(core.url)
    assert licence.problem(now=0) is None
    core.close()                               # Core's REST down (an upgrade, a restart)
    assert licence.problem(now=core_licence.ASK_EVERY_S) is None
    problem = licence.problem(now=core_licence.GRACE_S + 1)
    assert problem and "does not answer" in problem


def test_a_licence_of_another_modules_feature_is_no_licence(core):
    core.granted.add(FEATURE + 1)
    assert "does not include" in CoreLicence(core.url).problem(now=0)


@pytest.mark.parametrize("url", ["http://192.0.2.1/pbxcore/api/modules/ModuleExtendedCDR/licence",
                                 "https://127.0.0.1/x", "file:///etc/passwd"])
def test_core_is_asked_on_this_machine_only(url):
    assert "this machine only" in CoreLicence(url).problem()


def test_the_pages_follow_cores_word(core, demo_mirror, tmp_path, monkeypatch):
    """The pages, with `licence.core_url` set: refused with the reason while Core denies the
    feature, served once Core grants it (the next ask); nothing else decides."""
    from mirror.settings import load
    from web import create_app
    monkeypatch.setattr(core_licence, "RETRY_S", 0.0)      # a refusal is asked again at once
    config = tmp_path / "extcdr.toml"
    config.write_text(f'[web]\nproxy_token = "t"\n[licence]\ncore_url = "{core.url}"\n'
                      f'public_key = "not even a key"\n')
    app = create_app(load(config, {"module.db": demo_mirror}))
    headers = {"X-Extcdr-User": "admin", "X-Extcdr-Role": "admin", "X-Extcdr-Proxy-Token": "t"}
    with serving(app, threads=2) as http:
        url = (f"http://{address(http)}/admin-cabinet/module-extended-c-d-r/calls/"
               f"api/v1/calls?period=today")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers))
        assert refused.value.code == 403
        assert "does not include this module" in json.load(refused.value)["error"]
        core.granted.add(FEATURE)
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as reply:
            assert reply.status == 200 and "calls" in json.load(reply)
