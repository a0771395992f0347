"""A hostile archive, and a stale pid file, against the lifecycle: each is refused in one line,
leaves nothing behind and touches neither the installed module nor any other module or
process (issue 15, items 4 and 7)."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from pbxmodule import lifecycle
from tests.conftest import ROOT
from tests.test_lifecycle import (MODULE, _with_failing_migrations, build_variant,  # noqa: F401
                                  market, module_db, pbx, registration)

OTHER = "ModuleUsersGroups"            # another module demo-data installs
PBX_MODULES = (OTHER, "ModulePhoneBook")   # all it installs


def variant(archive: Path, out: Path, *, manifest: dict | None = None,
            members: dict[str, bytes] | None = None, stored: bool = False) -> Path:
    """`archive` rewritten: module.json fields replaced by `manifest`, `members` added
    (uncompressed when `stored`)."""
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(out, "w", method) as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "module.json" and manifest is not None:
                data = json.dumps({**json.loads(data), **manifest}).encode()
            target.writestr(info, data)
        for name, data in (members or {}).items():
            target.writestr(name, data)
    return out


def with_zeros(archive: Path, out: Path, name: str, size: int) -> Path:
    """`archive` plus a member of `size` zero bytes, written in chunks (a zip bomb)."""
    out.write_bytes(archive.read_bytes())
    with zipfile.ZipFile(out, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as z, \
            z.open(name, "w") as member:
        chunk = bytes(2**20)
        for _ in range(size // len(chunk)):
            member.write(chunk)
    return out


def understate(path: Path, name: str, size: int) -> None:
    """Make the headers of member `name` claim it expands to `size` bytes (a lying header)."""
    data = bytearray(path.read_bytes())
    encoded = name.encode()
    for signature, offset in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
        at = data.find(signature)
        while at >= 0:
            name_at = at + (46 if signature == b"PK\x01\x02" else 30)
            if data[name_at:name_at + len(encoded)] == encoded:
                struct.pack_into("<I", data, at + offset, size)
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its sha256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def left_in(pbx: Path) -> list[str]:
    """What custom_modules holds besides the other module and the lifecycle's lock."""
    return sorted(p.name for p in (pbx / "custom_modules").iterdir()
                  if p.name not in (*PBX_MODULES, ".lifecycle.lock"))


def refused(cli, pbx: Path, archive: Path, command: str = "install") -> str:
    """Run the step, expect one line on stderr and exit 2; returns that line."""
    code, out, err = cli(command, "--pbx", pbx, "--archive", archive)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith("extcdr: "), err
    return err.strip()


# --- whose archive -------------------------------------------------------------------------------

def test_an_archive_claiming_another_modules_id_touches_nothing_of_that_module(
        pbx, archive, cli, tmp_path):
    other = pbx / "custom_modules" / OTHER
    before, rows_before = snapshot(other), _modules(pbx)
    hostile = variant(archive, tmp_path / "hostile.zip", manifest={"moduleUniqueID": OTHER})
    line = refused(cli, pbx, hostile)
    assert f"the archive is {OTHER}, not {MODULE}: this installer installs only {MODULE}" in line
    assert snapshot(other) == before and _modules(pbx) == rows_before
    assert left_in(pbx) == []
    # Installed, ours is not touched either: neither upgrade nor install replaces it.
    assert cli("install", "--pbx", pbx, "--archive", archive)[0] == 0
    ours = snapshot(pbx / "custom_modules" / MODULE)
    newer = variant(archive, tmp_path / "newer.zip",
                    manifest={"moduleUniqueID": OTHER, "version": "9.0.0"})
    refused(cli, pbx, newer, "upgrade")
    assert snapshot(pbx / "custom_modules" / MODULE) == ours and snapshot(other) == before


def _modules(pbx: Path) -> list[tuple]:
    with sqlite3.connect(pbx / "mikopbx.db") as conn:
        return conn.execute("SELECT * FROM m_PbxExtensionModules ORDER BY uniqid").fetchall()


# --- db/ is data: never from an archive --------------------------------------------------------

PLANTED = {
    "db/extcdr.toml": b'[web]\nlisten = "0.0.0.0:8080"\nproxy_token = "planted"\n',
    "db/reports/planted.pdf": b"%PDF-1.4 planted",
    "db/notes.txt": b"planted",
    "db/schema.py": b"raise SystemExit('planted')\n",
}


def planted_module_db(tmp_path: Path) -> bytes:
    path = tmp_path / "planted.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE planted (x)")
    return path.read_bytes()


def test_settings_and_data_planted_under_db_are_never_unpacked(pbx, archive, cli, tmp_path):
    members = {**PLANTED, "db/module.db": planted_module_db(tmp_path)}
    hostile = variant(archive, tmp_path / "planted.zip", members=members)
    code, _, err = cli("install", "--pbx", pbx, "--archive", hostile)
    assert code == 0, err
    data = pbx / "custom_modules" / MODULE / "db"
    settings = (data / "extcdr.toml").read_text()
    assert 'listen = "127.0.0.1:' in settings and 'proxy_token = "planted"' not in settings
    assert not (data / "reports").exists() and not (data / "notes.txt").exists()
    with sqlite3.connect(module_db(pbx)) as conn:
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'planted'").fetchone()
    assert not list(data.glob("*.py"))               # nor code: the data folder holds data only
    # An upgrade carrying the same plants keeps the settings the installer wrote.
    newer = variant(build_variant(tmp_path, "0.2.0"), tmp_path / "planted-0.2.0.zip",
                    members=members)
    code, _, err = cli("upgrade", "--pbx", pbx, "--archive", newer)
    assert code == 0, err
    assert (data / "extcdr.toml").read_text() == settings
    assert not (data / "reports").exists() and not (data / "notes.txt").exists()
    with sqlite3.connect(module_db(pbx)) as conn:
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'planted'").fetchone()


# --- module.json's types ---------------------------------------------------------------------

@pytest.mark.parametrize("field, value, must_be", [
    ("version", 5, "version must be a version number as text"),
    ("version", "latest", "version must be a version number as text"),
    ("min_pbx_version", [], "min_pbx_version must be a MikoPBX version as text"),
    ("moduleUniqueID", None, "moduleUniqueID must be a module id"),
    ("moduleUniqueID", "../ModuleUsersGroups", "moduleUniqueID must be a module id"),
    ("lic_product_id", {"a": 1}, "lic_product_id must be a positive whole number"),
    ("lic_feature_id", "55", "lic_feature_id must be a positive whole number"),
    ("lic_feature_id", True, "lic_feature_id must be a positive whole number"),
    ("developer", 7, "developer must be text"),
    ("name", 5, "name must be an object of texts by language"),
    ("wiki_links", {"en": ["x"]}, "wiki_links must be an object of texts by language"),
])
def test_a_wrongly_typed_module_json_field_is_refused_naming_the_field(
        pbx, archive, cli, tmp_path, field, value, must_be):
    hostile = variant(archive, tmp_path / "typed.zip", manifest={field: value})
    line = refused(cli, pbx, hostile)
    assert f"module.json: {must_be}" in line and line.endswith(f", not {json.dumps(value)}")
    assert registration(pbx) is None and left_in(pbx) == []


def test_a_missing_field_is_named(pbx, archive, cli, tmp_path):
    with zipfile.ZipFile(archive) as z:
        description = json.loads(z.read("module.json"))
    del description["version"]
    hostile = tmp_path / "missing.zip"
    with zipfile.ZipFile(hostile, "w") as z:
        z.writestr("module.json", json.dumps(description))
    assert "module.json lacks version (a version number as text" in refused(cli, pbx, hostile)


# --- nothing left behind -----------------------------------------------------------------------

def test_a_damaged_archive_leaves_no_staging_folder(pbx, archive, cli, tmp_path):
    damaged = variant(archive, tmp_path / "damaged.zip", stored=True,
                      members={"web/late.txt": b"x" * 4096})
    with zipfile.ZipFile(damaged) as z:
        at = z.getinfo("web/late.txt").header_offset
    data = bytearray(damaged.read_bytes())
    name_length, extra_length = struct.unpack_from("<HH", data, at + 26)
    data[at + 30 + name_length + extra_length] ^= 0xFF    # its CRC fails, found only unpacking
    damaged.write_bytes(bytes(data))
    assert "damaged archive" in refused(cli, pbx, damaged)
    assert registration(pbx) is None and left_in(pbx) == []


def test_a_failing_install_leaves_nothing_and_stale_staging_folders_are_swept(
        pbx, archive, cli, tmp_path):
    for stale in (f".{MODULE}.staging", f".{OTHER}.staging"):       # of killed installs
        (pbx / "custom_modules" / stale / "db").mkdir(parents=True)
        (pbx / "custom_modules" / stale / "db" / "junk").write_text("x")
    broken = build_variant(tmp_path, "0.2.0", _with_failing_migrations)
    assert "the module DB did not migrate" in refused(cli, pbx, broken)
    assert registration(pbx) is None and left_in(pbx) == []
    assert cli("install", "--pbx", pbx, "--archive", archive)[0] == 0
    assert left_in(pbx) == [MODULE]


# --- size bounds ------------------------------------------------------------------------------

def test_an_archive_larger_than_the_bound_is_refused(pbx, archive, cli, tmp_path):
    big = variant(archive, tmp_path / "big.zip", stored=True,
                  members={"web/static/noise.bin": os.urandom(lifecycle.MAX_ARCHIVE_BYTES)})
    assert "the archive is larger than 50 MB" in refused(cli, pbx, big)
    assert registration(pbx) is None and left_in(pbx) == []


def test_an_oversized_download_from_the_marketplace_is_refused_before_it_is_read_whole(
        pbx, market, archive, cli, tmp_path):
    big = variant(build_variant(tmp_path, "0.2.0"), tmp_path / "big.zip", stored=True,
                  members={"web/static/noise.bin": os.urandom(lifecycle.MAX_ARCHIVE_BYTES)})
    (market.folder / "archives" / archive.name).unlink()
    big.replace(market.folder / "archives" / big.name)
    code, _, err = cli("install", "--pbx", pbx)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"the marketplace's answer to api/v1/modules/{MODULE}/0.2.0.zip is larger than 50 " \
           "MB: refused" in err
    assert registration(pbx) is None and left_in(pbx) == []


def test_an_archive_of_too_many_files_is_refused(pbx, archive, cli, tmp_path):
    many = variant(archive, tmp_path / "many.zip",
                   members={f"web/static/n/{i}.txt": b"" for i in range(lifecycle.MAX_MEMBERS)})
    assert "the archive holds more than 5000 files" in refused(cli, pbx, many)
    assert registration(pbx) is None and left_in(pbx) == []


def _peak_rss_mb_of(*argv) -> tuple[subprocess.CompletedProcess, float]:
    """`extcdr` as its own process: its result and its own peak memory in MB."""
    # VmHWM: the peak of this program's own memory (ru_maxrss would count the pages of the
    # test process it was forked from).
    measured = ("import re, sys\nfrom standin.cli import main\ncode = main(sys.argv[1:])\n"
                "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])\n"
                "sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", measured, *map(str, argv)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    return done, int(done.stdout.split()[-1]) / 1024


def test_a_zip_bomb_is_refused_from_its_central_directory(pbx, archive, tmp_path):
    bomb = with_zeros(archive, tmp_path / "bomb.zip", "web/static/bomb.bin",
                      lifecycle.MAX_EXPANDED_BYTES + 2**20)
    assert bomb.stat().st_size < 5 * 2**20
    started = time.monotonic()
    done, peak_mb = _peak_rss_mb_of("install", "--pbx", pbx, "--archive", bomb)
    assert done.returncode == 2
    assert done.stderr.strip() == f"extcdr: {bomb}: the archive expands to more than 200 MB"
    assert time.monotonic() - started < 30 and peak_mb < 120
    assert registration(pbx) is None and left_in(pbx) == []


def test_a_member_that_expands_beyond_its_lying_header_is_stopped_while_unpacking(
        pbx, archive, tmp_path):
    bomb = with_zeros(archive, tmp_path / "liar.zip", "web/static/liar.bin", 300 * 2**20)
    understate(bomb, "web/static/liar.bin", 1000)
    with zipfile.ZipFile(bomb) as z:                    # the central directory says 1000 bytes
        assert z.getinfo("web/static/liar.bin").file_size == 1000
    done, peak_mb = _peak_rss_mb_of("install", "--pbx", pbx, "--archive", bomb)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "damaged archive" in done.stderr or "expands beyond its declared size" in done.stderr
    assert peak_mb < 120
    assert registration(pbx) is None and left_in(pbx) == []


# --- stale pid files (item 7) ------------------------------------------------------------------

def _pid_file(pbx: Path, worker: str = "daemon") -> Path:
    path = pbx / "run" / f"{MODULE}.{worker}.pid"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_disable_never_signals_a_process_a_stale_pid_file_names(pbx, archive, cli):
    assert cli("install", "--pbx", pbx, "--archive", archive)[0] == 0
    stranger = subprocess.Popen(["sleep", "60"])         # the pid, reused by someone else
    try:
        _pid_file(pbx).write_text(str(stranger.pid))
        _pid_file(pbx, "web").write_text("0")
        started = time.monotonic()
        code, out, err = cli("disable", "--pbx", pbx)
        assert (code, out.strip()) == (0, f"{MODULE} is already disabled"), err
        assert time.monotonic() - started < 5          # no waiting for a process not ours
        assert stranger.poll() is None                    # still running, never signalled
        assert list((pbx / "run").glob("*.pid")) == []    # the stale pid files are gone
    finally:
        stranger.kill()
        stranger.wait()


def test_stop_workers_still_stops_a_worker_of_the_module_left_running(pbx, archive, cli):
    assert cli("install", "--pbx", pbx, "--archive", archive)[0] == 0
    config = pbx.resolve() / "custom_modules" / MODULE / "db" / "extcdr.toml"
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                               "daemon", "--config", str(config)])
    try:
        _pid_file(pbx).write_text(str(worker.pid))
        lifecycle.stop_workers(lifecycle.PbxTree.open(pbx), MODULE, patience_s=0.2)
        assert worker.wait(timeout=5) == -15
        assert not _pid_file(pbx).exists()
    finally:
        worker.kill()
        worker.wait()


def test_a_pid_file_saying_minus_one_signals_nothing(pbx, archive, cli):
    """`kill -1` is every process of this user: a pid file must never come to that."""
    assert cli("install", "--pbx", pbx, "--archive", archive)[0] == 0
    _pid_file(pbx).write_text("-1")
    started = time.monotonic()
    assert cli("disable", "--pbx", pbx)[0] == 0
    assert time.monotonic() - started < 5 and not _pid_file(pbx).exists()
