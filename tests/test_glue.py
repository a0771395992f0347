"""The hand-over to Core: at install the Python side writes `db/glue.json`, and the module's own
PHP (`Lib/ExtendedCDRConf.php`, loaded against stubs of Core 2024.1 and 2026.1) gives Core
exactly those texts: an nginx location that `nginx -t` accepts with MikoPBX's lua, ndk and nchan
modules, and a manager.conf section of the module's own loopback AMI user."""
import json
import os
import stat
import subprocess

import pytest

from mirror import settings
from standin.shell import NGINX_MODULES
from tests.conftest import ROOT
from tests.stack import nginx_binary
from tests.test_lifecycle import MODULE, market, pbx  # noqa: F401  (fixtures)
from tests.test_php import tool

CONF_CALL = r"""
require $argv[1]; require $argv[2];
require $argv[3] . '/Lib/ExtendedCDRConf.php';
StubCore::$modulesDir = $argv[4];
StubCore::$di = new StubDi();
$conf = new Modules\ModuleExtendedCDR\Lib\ExtendedCDRConf();
echo json_encode(['nginx_location' => $conf->createNginxLocations(),
                  'manager_conf' => $conf->generateManagerConf()]);
"""


@pytest.fixture
def installed(pbx, archive, cli):  # noqa: F811
    code, _, err = cli("install", "--pbx", pbx, "--archive", archive)
    assert code == 0, err
    return pbx / "custom_modules" / MODULE


def test_install_writes_the_glue_only_the_module_may_read(installed):
    glue = installed / "db" / "glue.json"
    assert stat.S_IMODE(glue.stat().st_mode) == 0o600
    texts = json.loads(glue.read_text())
    own = settings.load(installed / "db" / "extcdr.toml")
    assert f'X-Extcdr-Proxy-Token "{own["web.proxy_token"]}"' in texts["nginx_location"]
    assert "access_by_lua_block" in texts["nginx_location"]
    directives = [line.strip().split(" ")[0] for line in texts["nginx_location"].splitlines()]
    assert "auth_request" not in directives        # MikoPBX's nginx is built without it
    lines = texts["manager_conf"].splitlines()
    assert lines[:4] == [f"[{own['ami.username']}]", f"secret={own['ami.secret']}",
                         "deny=0.0.0.0/0.0.0.0", "permit=127.0.0.1/255.255.255.255"]
    assert "eventfilter=Event: Hangup" in lines and "eventfilter=Event: UserEvent" in lines


@pytest.mark.parametrize("profile", ("2024.1", "2026.1"))
def test_cores_hooks_return_what_python_prepared(installed, profile):
    stubs = ROOT / "standin/core/stubs"
    done = subprocess.run([tool("php"), "-r", CONF_CALL, stubs / "common.php",
                           stubs / profile / "Core.php", installed, installed.parent],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads((installed / "db" / "glue.json").read_text())


def test_the_location_passes_nginx_t_with_mikopbxs_modules(installed, tmp_path):
    location = json.loads((installed / "db" / "glue.json").read_text())["nginx_location"]
    conf = tmp_path / "nginx.conf"
    loads = "".join(f"load_module {path};\n" for path in NGINX_MODULES)
    conf.write_text(
        f"{loads}pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "events {}\nhttp {\n"
        + "".join(f"    {kind}_temp_path {tmp_path}/{kind};\n"
                  for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        + f"    server {{\n        listen 127.0.0.1:1;\n{location}\n    }}\n}}\n")
    done = subprocess.run([nginx_binary(), "-t", "-p", tmp_path, "-c", conf],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
