"""The module brings its own Python: the archive `extcdr package` builds holds a frozen
runtime (`bin/extcdr`, `bin/_internal/`), and on a PBX where nothing Core runs can see any
Python — the Core shim's PHP, the module's PHP worker and every process they start run where
every interpreter, standard library, site-packages, pyenv, virtualenv and this development tree
are hidden (tests/sandbox.py) — it installs, enables, mirrors the PBX's history, serves its
page through nginx, exports XLSX, mails a report, disables and uninstalls."""
from __future__ import annotations

import hashlib
import io
import json
import shlex
import subprocess
import sys
import time
import zipfile
from datetime import date, timedelta
from pathlib import Path

import openpyxl
import pytest

from pbxmodule import package, runtime
from pbxmodule.prepare import update_settings
from standin.coreshim import install_core
from tests.conftest import wait_for
from tests.sandbox import no_python, pythons
from tests.stack import PREFIX, nginx_binary, pbx_admin_shell
from tests.test_exports import download
from tests.test_lifecycle import (MODULE, add_report, count, licensed, make_pbx,  # noqa: F401
                                  market, module_db)
from tests.test_reports import set_pbx_mail, smtp  # noqa: F401
from tests.webclient import Browser


@pytest.fixture(scope="session")
def bundle() -> Path:
    """The module's runtime, built once per set of inputs (cached under .cache/runtime)."""
    return runtime.build()


@pytest.fixture(scope="session")
def runtime_archive(bundle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runtime-archive") / f"{MODULE}.zip"
    package.build(out, runtime=bundle)
    return out


def test_the_archive_holds_the_runtime_and_no_launcher_needing_python(runtime_archive, bundle):
    with zipfile.ZipFile(runtime_archive) as archive:
        names = set(archive.namelist())
        launcher = archive.read("bin/extcdr")
        mode = archive.getinfo("bin/extcdr").external_attr >> 16
    assert launcher[:4] == b"\x7fELF" and mode & 0o111, "bin/extcdr is the frozen runtime"
    assert "bin/_venv.sh" not in names
    assert any(name.startswith("bin/_internal/libpython3") for name in names)
    assert "daemon/sync.py" in names and "web/templates/history/page.html" in names, \
        "the module's own code ships as its files"
    assert not [n for n in names if n.startswith(("bin/_internal/PIL", "bin/_internal/standin",
                                                  "bin/_internal/pytest"))]
    assert [n for n in names if n.startswith("bin/_internal/psycopg2/_psycopg")], \
        "PostgreSQL's driver: module.db may be a postgresql:// URL"
    etree = [n for n in names if n.startswith("bin/_internal/lxml/etree.")]
    assert etree, "openpyxl's write-only workbooks stream through lxml (the fastest writer)"
    assert not [n for n in names if n.startswith("bin/_internal/lxml/objectify")]
    assert runtime_archive.stat().st_size <= 60 * 2**20
    assert runtime.glibc_floor(bundle) <= (2, 36), "runs on Debian 12's glibc or older"


def test_extcdr_package_gives_the_same_archive_from_the_same_tree(runtime_archive, cli,
                                                                   tmp_path):
    """The command line packages the runtime by default (built once: the cache), byte for
    byte the same archive."""
    again = tmp_path / "again.zip"
    code, out, err = cli("package", "--out", again)
    assert code == 0, err
    assert again.read_bytes() == runtime_archive.read_bytes()
    assert json.loads(out)["sha256"] == hashlib.sha256(again.read_bytes()).hexdigest()


def test_the_runtime_keeps_a_central_history_on_postgresql(runtime_archive, pg_schema_url,
                                                           tmp_path):
    """The bundle's own driver (its own libpq) opens a postgresql:// module.db, where no
    Python can be found."""
    module = tmp_path / "module"
    with zipfile.ZipFile(runtime_archive) as archive:
        archive.extractall(module)
    (module / "bin" / "extcdr").chmod(0o755)
    done = subprocess.run([*no_python(), str(module / "bin" / "extcdr"), "migrate", "--db",
                           pg_schema_url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([*no_python(), str(module / "bin" / "extcdr"), "status", "--db",
                           pg_schema_url, "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["calls"] == 0


def test_the_sandbox_hides_every_python():
    folders, files = pythons()
    interpreters = [str(f) for f in files if "libpython" not in f.name]
    interpreters += [sys.executable, str(Path(sys.executable).resolve()), "python", "python3",
                     "python3.11", "pip3"]
    script = "".join(f"if {shlex.quote(p)} -c 'print(1)' >/dev/null 2>&1; then echo RUNS {p}; fi\n"
                     for p in interpreters)
    script += "".join(f'[ -z "$(ls -A {shlex.quote(str(f))})" ] || echo FULL {f}\n'
                      for f in folders)
    done = subprocess.run([*no_python(), "/bin/sh", "-c", script], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "", f"Python visible in the sandbox:\n{done.stdout}"
    outside = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True)
    assert f"RUNS {sys.executable}" in outside.stdout and "FULL" in outside.stdout, \
        "outside the sandbox the same check finds them"


@pytest.fixture
def python_free_pbx(tmp_path, market, cli, smtp):  # noqa: F811
    nginx_binary()
    pbx = make_pbx(tmp_path / "pbx", market, cli, calls=400)
    set_pbx_mail(pbx, MailSMTPHost="127.0.0.1", MailSMTPPort=str(smtp.port),
                 MailSMTPUseTLS="none", MailSMTPSenderAddress="pbx@example.com")
    install_core(pbx, "2026.1", host=no_python())
    return pbx


def test_installs_runs_and_uninstalls_on_a_pbx_without_python(python_free_pbx, runtime_archive,
                                                              cli, smtp, tmp_path):  # noqa: F811
    pbx = python_free_pbx
    module = pbx / "custom_modules" / MODULE
    code, _, err = cli("install", "--pbx", pbx, "--archive", runtime_archive)
    assert code == 0, err
    assert (module / "bin" / "extcdr").read_bytes()[:4] == b"\x7fELF"
    assert (module / "db" / "module.db").exists(), "the Setup ran extcdr prepare: the bundle"
    licensed(pbx, cli)
    update_settings(module, "reports", {"check_interval": 0.5})
    code, _, err = cli("enable", "--pbx", pbx)
    assert code == 0, err

    with pbx_admin_shell(pbx, tmp_path) as shell:
        base = shell["base"]
        assert wait_for(lambda: len(_module_processes(module)) == 2, 30), \
            shell["log"].read_text() + _worker_log(pbx)
        for pid in _module_processes(module):
            assert Path(f"/proc/{pid}/exe").resolve() == (module / "bin" / "extcdr").resolve()
            assert "no-python" in Path(f"/proc/{pid}/mountinfo").read_text(), \
                "it runs where Python is hidden"
        assert wait_for(lambda: count(pbx, "call") > 0, 30), _worker_log(pbx)

        admin = Browser(base)
        assert admin.login("admin", "admin")[0] == 302
        assert wait_for(lambda: admin.request(PREFIX)[0] == 200, 30), "the pages are served"
        period = {"from": (date.today() - timedelta(days=60)).isoformat(),
                  "to": date.today().isoformat()}
        calls = admin.calls(PREFIX, **period)
        status, _, page = admin.request(PREFIX + "?from=" + period["from"])
        assert status == 200 and "table" in page and calls
        book = openpyxl.load_workbook(io.BytesIO(download(admin, "xlsx", **period)))
        rows = list(book["Calls"].iter_rows(values_only=True))
        call_id = rows[0].index("Call ID")
        assert [row[call_id] for row in rows[1:]] == [c["linkedid"] for c in calls]

        from mirror.database import open_module_db
        from mirror.report_rows import request_send
        report_id = add_report(pbx)
        db = open_module_db(module_db(pbx))
        request_send(db, "admin", report_id, time.time())         # "Send now"
        db.close()
        [mail] = smtp.take(timeout=30)
        assert mail["Subject"].startswith("Every morning")
        attached = [part for part in mail.iter_attachments()]
        assert attached and attached[0].get_filename().endswith(".xlsx")
        openpyxl.load_workbook(io.BytesIO(attached[0].get_content()), read_only=True)

        code, _, err = cli("disable", "--pbx", pbx)
        assert code == 0, err
        assert wait_for(lambda: not _module_processes(module), 20), "disable stops them"
        code, _, err = cli("uninstall", "--pbx", pbx)
        assert code == 0, err
        assert not module.exists()


def _module_processes(module: Path) -> list[int]:
    """Processes running the module's bundle (its daemon and its web process)."""
    found = []
    for exe in Path("/proc").glob("[0-9]*/exe"):
        try:
            if exe.resolve() == (module / "bin" / "extcdr").resolve():
                found.append(int(exe.parent.name))
        except OSError:
            continue
    return found


def _worker_log(pbx: Path) -> str:
    logs = sorted(pbx.rglob("processes.log")) + sorted(pbx.rglob("*.log"))
    return "\n".join(p.read_text(errors="replace")[-1500:] for p in logs[:4])
