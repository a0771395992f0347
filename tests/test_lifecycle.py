"""The module's life on a PBX, through the `extcdr` commands the PBX calls: install from the
built archive into a fresh PBX tree, licences from a stand-in marketplace over real HTTP,
enable/disable, upgrade from a previous schema, a failing migration, uninstall and reinstall."""
from __future__ import annotations

import base64
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from mirror import schema
from mirror.database import open_module_db
from mirror.dialect import run
from mirror.settings import load as load_settings
from pbxmodule import package
from pbxmodule.licence import Grant, LicenceCheck
from pbxmodule.prepare import update_settings
from standin.amiemu import manager_users
from standin.marketplace_server import serve as serve_marketplace
from standin.marketplace_server import sign
from tests.conftest import ROOT
from tests.mirror import rollups_off

MODULE = "ModuleExtendedCDR"
# This release's licence ids (setup.cfg [extcdr:release]), which the stand-in marketplace sells.
PRODUCT, FEATURE = package.release_ids().values()
LICENCE_FILE = f"{PRODUCT}-{FEATURE}.json"
COUPON = "MIKOUPD-7K2QX-44ZMA-0PL9D-3VW8E"
KEY = "MIKO-AB12C-DE34F-GH56J-KL78M"
OTHER_PRODUCT_KEY = "MIKO-ZZZZZ-ZZZZZ-ZZZZZ-00001"


# --- archives --------------------------------------------------------------------------------

def build_variant(work: Path, version: str, schema_edit=None,
                  code_edits: dict[str, list[tuple[str, str]]] | None = None) -> Path:
    """The module's archive as another release: this tree with another version and, if given,
    its schema file edited (an older or a newer list of migrations) and other files' text
    replaced (`code_edits`: file -> [(old, new)], each old text present)."""
    source = work / f"src-{version}"
    for relative in package.module_files():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, source / relative)
    description = json.loads((source / "module.json").read_text())
    description["version"] = version
    (source / "module.json").write_text(json.dumps(description, indent=2, ensure_ascii=False))
    if schema_edit:
        code = (source / "mirror" / "schema.py").read_text()
        (source / "mirror" / "schema.py").write_text(schema_edit(code))
    for relative, replacements in (code_edits or {}).items():
        code = (source / relative).read_text()
        for old, new in replacements:
            assert old in code, f"{relative} no longer has {old!r}: update the variant"
            code = code.replace(old, new)
        (source / relative).write_text(code)
    out = work / f"{MODULE}-{version}.zip"
    package.build(out, source)
    return out


# --- a marketplace and PBXs --------------------------------------------------------------------

@pytest.fixture
def market(tmp_path, archive):
    folder = tmp_path / "market"
    (folder / "archives").mkdir(parents=True)
    shutil.copy(archive, folder / "archives" / archive.name)
    (folder / "keys.json").write_text(json.dumps({
        COUPON: {"product_id": PRODUCT, "features": [FEATURE], "days": 365},
        KEY: {"product_id": PRODUCT, "features": [FEATURE], "days": 30},
        OTHER_PRODUCT_KEY: {"product_id": PRODUCT, "features": [FEATURE + 1], "days": 30},
    }))
    server, url = serve_marketplace(folder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.market
    server.shutdown()
    server.server_close()


def make_pbx(where: Path, market, cli, *, calls: int = 300, version: str | None = None) -> Path:
    """A fresh PBX tree (config DB, history, recordings) trusting the stand-in marketplace."""
    code, _, err = cli("demo-data", "--out", where, "--calls", calls, "--seed", 7,
                       "--end-day", "2026-11-20")
    assert code == 0, err
    shutil.copy(market.folder / "endpoint.json", where / "marketplace.json")
    if version:
        with sqlite3.connect(where / "mikopbx.db") as conn:
            conn.execute("UPDATE m_PbxSettings SET value = ? WHERE key = 'PBXVersion'", (version,))
    return where


@pytest.fixture
def pbx(tmp_path, market, cli) -> Path:
    return make_pbx(tmp_path / "pbx", market, cli)


def registration(pbx: Path) -> dict | None:
    with sqlite3.connect(pbx / "mikopbx.db") as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM m_PbxExtensionModules WHERE uniqid = ?",
                           (MODULE,)).fetchone()
    return dict(row) if row else None


def module_db(pbx: Path) -> Path:
    return pbx / "custom_modules" / MODULE / "db" / "module.db"


def sync_history(pbx: Path, cli) -> int:
    """Mirror the PBX's history into the installed module's DB; returns the number of calls."""
    code, _, err = cli("sync", "--cdr-db", pbx / "cdr.db", "--pbx-db", pbx / "mikopbx.db",
                       "--db", module_db(pbx), "--once")
    assert code == 0, err
    return count(pbx, "call")


def count(pbx: Path, table: str) -> int:
    with sqlite3.connect(module_db(pbx)) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def user_data(pbx: Path) -> dict:
    """What users made: saved filters, mailed reports, comments and tags of calls."""
    with sqlite3.connect(module_db(pbx)) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        made = {"filters": "SELECT user, name, params FROM saved_filter ORDER BY id",
                "reports": "SELECT name FROM report ORDER BY id",
                "comments": "SELECT linkedid, author, text FROM comment ORDER BY id",
                "tags": "SELECT t.name, ct.linkedid FROM call_tag ct JOIN tag t "
                        "ON t.id = ct.tag_id ORDER BY 1, 2"}
        data = {what: conn.execute(query).fetchall()
                if query.split(" FROM ")[1].split()[0] in tables else []
                for what, query in made.items()}
    return {what: rows for what, rows in data.items() if rows or what in ("filters", "reports")}


def annotate(pbx: Path) -> None:
    """A comment and a tag on the newest mirrored call, as people leave them."""
    from mirror.annotations import Actor, add_comment, create_tag, set_call_tags
    from mirror.database import open_module_db
    db = open_module_db(module_db(pbx))
    try:
        (linkedid,) = db.execute_sql("SELECT linkedid FROM call ORDER BY start_ms DESC "
                                     "LIMIT 1").fetchone()
        admin = Actor("admin", admin=True)
        add_comment(db, linkedid, admin, "Клиент ждёт счёт", 1_700_000_000_000)
        create_tag(db, admin, "VIP", "red")
        set_call_tags(db, linkedid, admin, ["VIP"], 1_700_000_000_000)
    finally:
        db.close()


def save_filter(pbx: Path, name: str, params: dict | None = None) -> int:
    from mirror.database import open_module_db
    from mirror.userdata import save_filter as save
    db = open_module_db(module_db(pbx))
    try:
        return save(db, "admin", name, params or {"status": "missed"}, default=False)
    finally:
        db.close()


def add_report(pbx: Path) -> int:
    """Admin's daily report of a saved filter; returns its id."""
    from mirror.database import open_module_db
    from mirror.pbxtime import PbxClock
    from reports.definitions import Owner, report_form, save_report
    filter_id = save_filter(pbx, "Missed calls of Sales", {"status": "missed", "group": "Sales"})
    db = open_module_db(module_db(pbx))
    try:
        form = report_form({"name": "Every morning", "filter": str(filter_id),
                            "frequency": "daily", "at": "08:00", "period": "yesterday",
                            "format": "xlsx", "delivery": "attach", "link_hours": "48",
                            "recipients": "boss@example.com"}, "en")
        return save_report(db, Owner("admin", "admin", ()), form, link_base="",
                           clock=PbxClock("UTC"))
    finally:
        db.close()


def in_use(pbx: Path, cli) -> tuple[int, dict, str]:
    """The installed module licensed, enabled, its history mirrored and a filter saved, as a
    PBX has it before an upgrade: (calls, user data, the settings file's text)."""
    licensed(pbx, cli)
    assert cli("enable", "--pbx", pbx)[0] == 0
    calls = sync_history(pbx, cli)
    save_filter(pbx, "Long calls", {"min_talk": "300"})
    return calls, user_data(pbx), (module_db(pbx).parent / "extcdr.toml").read_text()


def licensed(pbx: Path, cli, key: str = COUPON) -> None:
    code, out, err = cli("licence", "activate", key, "--pbx", pbx)
    assert code == 0, err
    assert "licensed to this PBX until" in out


# --- install -----------------------------------------------------------------------------------

def test_install_from_the_built_archive_puts_a_working_module_in_a_fresh_pbx(pbx, archive, cli):
    code, out, err = cli("install", "--pbx", pbx, "--archive", archive)
    assert code == 0, err
    assert f"installed {MODULE} 0.1.0" in out and "disabled until enabled" in out
    installed = pbx / "custom_modules" / MODULE
    assert json.loads((installed / "module.json").read_text())["version"] == "0.1.0"
    assert (installed / "cli" / "__init__.py").is_file() and not (installed / "tests").exists()
    assert not (installed / "standin").exists()
    with sqlite3.connect(module_db(pbx)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST
    # Registered by the module's Setup as Core's installDB does: disabled, named by its
    # Messages, with its sidebar item.
    row = registration(pbx)
    assert (row["version"], row["disabled"], row["name"]) == ("0.1.0", "1",
                                                               "Extended call history")
    with sqlite3.connect(pbx / "mikopbx.db") as conn:
        item = json.loads(conn.execute("SELECT value FROM m_PbxSettings WHERE key = ?",
                                       (f"AdditionalMenuItem{MODULE}",)).fetchone()[0])
    assert item == {"uniqid": MODULE, "group": "modules", "iconClass": "puzzle",
                    "caption": f"Breadcrumb{MODULE}", "showAtSidebar": True}
    settings = installed / "db" / "extcdr.toml"
    assert settings.stat().st_mode & 0o777 == 0o600          # holds the proxy token and secrets
    with sqlite3.connect(pbx / "mikopbx.db") as conn:         # not an admin-edited AMI user
        assert conn.execute("SELECT count(*) FROM m_AsteriskManagerUsers WHERE username = "
                            "'extcdr'").fetchone()[0] == 0
    registered = json.loads((installed / "registration.json").read_text())
    assert registered["sidebar"]["href"] == "/admin-cabinet/module-extended-c-d-r/calls/"
    assert registered["workers"] == {}             # the Conf names them at enable
    # The installed code runs by itself: the mirror fills with the PBX's calls.
    done = subprocess.run([sys.executable, "-m", "cli", "sync", "--cdr-db", pbx / "cdr.db",
                           "--db", module_db(pbx), "--once"], cwd=installed,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert count(pbx, "call") > 0
    # Idempotent: a second install changes nothing and says so.
    code, out, _ = cli("install", "--pbx", pbx, "--archive", archive)
    assert (code, out.strip()) == (0, f"{MODULE} 0.1.0 is already installed")


def test_install_refuses_an_older_pbx_and_a_bad_archive_and_leaves_nothing(tmp_path, market,
                                                                          archive, cli):
    old = make_pbx(tmp_path / "old", market, cli, calls=20, version="2023.2.180")
    code, _, err = cli("install", "--pbx", old, "--archive", archive)
    assert code == 2
    assert err.strip() == (f"extcdr: {MODULE} 0.1.0 needs MikoPBX 2024.1.114 or newer; this "
                           "PBX runs 2023.2.180")
    assert registration(old) is None
    assert [p.name for p in (old / "custom_modules").iterdir()
            if p.name not in ("ModuleUsersGroups", "ModulePhoneBook")     # the demo PBX's
            and not p.name.startswith(".lifecycle")] == []
    evil = tmp_path / "evil.zip"
    import zipfile
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("module.json", (ROOT / "module.json").read_text())
        z.writestr("../../escape.txt", "x")
    pbx = make_pbx(tmp_path / "pbx", market, cli, calls=20)
    code, _, err = cli("install", "--pbx", pbx, "--archive", evil)
    assert code == 2 and "unsafe path '../../escape.txt'" in err
    assert not (tmp_path / "escape.txt").exists() and registration(pbx) is None
    for name, member, text in (("list.zip", "module.json", "[1]"),
                               ("none.zip", "README.md", "no manifest")):
        with zipfile.ZipFile(tmp_path / name, "w") as z:
            z.writestr(member, text)
        code, _, err = cli("install", "--pbx", pbx, "--archive", tmp_path / name)
        assert code == 2 and ("not an object" in err or "no module.json" in err), err
    code, _, err = cli("install", "--pbx", tmp_path / "nowhere", "--archive", archive)
    assert code == 2 and "not a PBX (no mikopbx.db)" in err


def test_install_from_the_marketplace_downloads_the_offered_archive(pbx, market, cli):
    code, out, err = cli("install", "--pbx", pbx)
    assert code == 0, err
    assert f"installed {MODULE} 0.1.0" in out
    assert "GET /api/v1/modules" in market.requests
    assert f"GET /api/v1/modules/{MODULE}/0.1.0.zip" in market.requests


# --- licence -----------------------------------------------------------------------------------

def test_enable_without_a_licence_is_refused_and_says_why(pbx, archive, cli):
    cli("install", "--pbx", pbx, "--archive", archive)
    code, _, err = cli("enable", "--pbx", pbx)
    assert code == 2
    assert f"{MODULE} stays disabled by licence: the module has no licence" in err
    row = registration(pbx)
    assert (row["disabled"], row["disableReason"]) == ("1", "DisabledByLicense")
    assert "no licence" in row["disableReasonText"]
    assert not (pbx / "nginx" / "modules_locations" / f"{MODULE}.conf").exists()


@pytest.mark.parametrize("key", ["MIKO-1234", "MIKO-12345-12345-12345", "MIKOUPD-ABCDE-ABCDE-ABCDE-ABCD!",
                                 "KEY-12345-12345-12345-12345", "МИКО-12345-12345-12345-12345",
                                 "MIKO-12345-12345-12345-12345-1"])
def test_a_malformed_key_is_refused_before_any_request(pbx, market, cli, key):
    code, _, err = cli("licence", "activate", key, "--pbx", pbx)
    assert code == 2
    assert "is not a licence key MIKO-XXXXX-XXXXX-XXXXX-XXXXX or a coupon MIKOUPD-" in err
    assert market.requests == []
    assert not (pbx / "licences").exists()


def test_a_coupon_activates_the_module_for_this_pbx_and_enable_turns_it_on(pbx, market, archive,
                                                                            cli, tmp_path):
    cli("install", "--pbx", pbx, "--archive", archive)
    code, out, err = cli("licence", "activate", COUPON.lower().replace("-", "- "), "--pbx", pbx)
    assert code == 0, err
    assert "licensed to this PBX until" in out and "MIKOUPD-*****-*****-*****-3VW8E" in out
    assert market.requests == ["POST /api/v1/licences"]
    licence = json.loads((pbx / "licences" / LICENCE_FILE).read_text())
    assert licence["grant"]["host_id"] == (pbx / "host-id").read_text().strip()
    assert licence["grant"]["expires"] - time.time() > 364 * 86_400
    code, out, err = cli("enable", "--pbx", pbx)
    assert (code, out.strip()) == (0, f"{MODULE} is enabled"), err
    row = registration(pbx)
    assert (row["disabled"], row["disableReason"]) == ("0", "")
    location = (pbx / "nginx" / "modules_locations" / f"{MODULE}.conf").read_text()
    assert "location ^~ /admin-cabinet/module-extended-c-d-r/calls/ {" in location
    # Its own AMI user, as Core appends generateManagerConf() to manager.conf.
    section = (pbx / "asterisk" / "manager_modules" / f"{MODULE}.conf").read_text()
    ami = _installed_settings(pbx)
    assert section.startswith(f"[extcdr]\nsecret={ami['ami.secret']}\n")
    assert manager_users(pbx / "asterisk" / "manager_modules") == {"extcdr": ami["ami.secret"]}
    assert cli("enable", "--pbx", pbx)[1].strip() == f"{MODULE} is already enabled"
    # Nothing runs the PBX's workers here: waiting for the pages says so instead of hanging.
    code, out, err = cli("enable", "--pbx", pbx, "--wait", "0.5")
    assert code == 2 and "its pages did not start within 0.5 s" in err, err
    assert registration(pbx)["disabled"] == "0"
    # The same coupon on another PBX: the marketplace refuses, the other PBX stays unlicensed.
    other = make_pbx(tmp_path / "other", market, cli, calls=20)
    code, _, err = cli("licence", "activate", COUPON, "--pbx", other)
    assert code == 2 and "this key was already activated on another PBX" in err
    # A key without this module's feature, and an unknown one.
    code, _, err = cli("licence", "activate", OTHER_PRODUCT_KEY, "--pbx", other)
    assert code == 2 and f"does not include product {PRODUCT} feature {FEATURE}" in err
    code, _, err = cli("licence", "activate", "MIKO-00000-00000-00000-00000", "--pbx", other)
    assert code == 2 and "unknown" in err
    assert not (other / "licences").exists()


def test_an_edited_a_copied_and_an_expired_licence_are_rejected(tmp_path, pbx, market, archive,
                                                                cli):
    cli("install", "--pbx", pbx, "--archive", archive)
    licensed(pbx, cli, KEY)
    licence_file = pbx / "licences" / LICENCE_FILE
    genuine = licence_file.read_text()

    edited = json.loads(genuine)
    edited["grant"]["expires"] += 10 * 365 * 86_400              # a longer licence by hand
    licence_file.write_text(json.dumps(edited))
    code, _, err = cli("enable", "--pbx", pbx)
    assert code == 2 and "was not issued by the marketplace or was altered" in err

    other = make_pbx(tmp_path / "other", market, cli, calls=20)
    cli("install", "--pbx", other, "--archive", archive)
    (other / "licences").mkdir()
    (other / "licences" / LICENCE_FILE).write_text(genuine)     # copied from the first PBX
    code, _, err = cli("enable", "--pbx", other)
    assert code == 2 and "the licence was issued for another PBX" in err
    assert registration(other)["disableReason"] == "DisabledByLicense"

    signing_key = load_pem_private_key((market.folder / "signing.key").read_bytes(), None)
    grant = Grant(**json.loads(genuine)["grant"])
    expired = Grant(**{**grant.__dict__, "expires": int(time.time()) - 60})
    licence_file.write_text(sign(expired, signing_key))
    code, _, err = cli("enable", "--pbx", pbx)
    assert code == 2 and "the licence expired on" in err
    code, out, _ = cli("licence", "show", "--pbx", pbx)
    assert code == 1 and "no valid licence: the licence expired on" in out

    licence_file.write_text(genuine)
    assert cli("enable", "--pbx", pbx)[0] == 0
    # A licence signed by someone else's key is refused like an edited one.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    licence_file.write_text(sign(grant, Ed25519PrivateKey.generate()))
    check = LicenceCheck.of(_installed_settings(pbx))
    assert "was not issued by the marketplace" in check.problem()
    assert base64.b64decode(check.public_key) and check.required


def _installed_settings(pbx: Path):
    from mirror import settings
    return settings.load(pbx / "custom_modules" / MODULE / "db" / "extcdr.toml")


# --- enable / disable / uninstall ---------------------------------------------------------------

def test_enable_disable_enable_keeps_the_data(pbx, archive, cli):
    cli("install", "--pbx", pbx, "--archive", archive)
    licensed(pbx, cli)
    calls = sync_history(pbx, cli)
    save_filter(pbx, "Missed today")
    before = user_data(pbx)
    location = pbx / "nginx" / "modules_locations" / f"{MODULE}.conf"
    assert cli("enable", "--pbx", pbx)[0] == 0 and location.exists()
    code, out, _ = cli("disable", "--pbx", pbx)
    assert (code, out.strip()) == (0, f"{MODULE} is disabled")
    assert not location.exists()
    row = registration(pbx)
    assert (row["disabled"], row["disableReason"]) == ("1", "DisabledByUser")
    assert cli("disable", "--pbx", pbx)[1].strip() == f"{MODULE} is already disabled"
    assert cli("enable", "--pbx", pbx)[0] == 0 and location.exists()
    assert count(pbx, "call") == calls and user_data(pbx) == before


def test_uninstall_keeping_settings_then_install_restores_history_filters_and_reports(
        pbx, archive, cli):
    cli("install", "--pbx", pbx, "--archive", archive)
    licensed(pbx, cli)
    cli("enable", "--pbx", pbx)
    calls = sync_history(pbx, cli)
    add_report(pbx)
    annotate(pbx)
    before = user_data(pbx)
    assert before["comments"] and before["tags"]
    settings_before = (module_db(pbx).parent / "extcdr.toml").read_text()

    code, out, err = cli("uninstall", "--pbx", pbx, "--keep-settings")
    assert code == 0, err
    assert f"uninstalled {MODULE}; its data is kept in" in out
    assert not (pbx / "custom_modules" / MODULE).exists() and registration(pbx) is None
    assert not (pbx / "nginx" / "modules_locations" / f"{MODULE}.conf").exists()
    assert (pbx / "custom_modules" / "Backup" / MODULE / "db" / "module.db").is_file()
    assert not list((pbx / "custom_modules" / "Backup" / MODULE / "db").glob("*.py"))
    assert cli("uninstall", "--pbx", pbx)[1].strip() == f"{MODULE} is not installed"

    code, out, err = cli("install", "--pbx", pbx, "--archive", archive)
    assert code == 0, err
    assert "with the history, filters and reports kept at uninstall" in out
    assert count(pbx, "call") == calls and user_data(pbx) == before
    assert (module_db(pbx).parent / "extcdr.toml").read_text() == settings_before
    assert registration(pbx)["disabled"] == "1"          # installed modules start disabled
    assert cli("enable", "--pbx", pbx)[0] == 0           # the licence is the PBX's: kept

    # Without --keep-settings the data goes, and the next install starts empty.
    assert cli("uninstall", "--pbx", pbx)[0] == 0
    assert not (pbx / "custom_modules" / "Backup" / MODULE).exists()
    assert cli("install", "--pbx", pbx, "--archive", archive)[0] == 0
    assert count(pbx, "call") == 0 and user_data(pbx) == {"filters": [], "reports": []}


# --- upgrade -----------------------------------------------------------------------------------

def _without_last_migration(code: str) -> str:
    """The schema file without its last step, on both engines."""
    return code.replace("LATEST = len(MIGRATIONS)",
                        "MIGRATIONS = MIGRATIONS[:-1]\nLATEST = len(MIGRATIONS)").replace(
        "\ndef postgresql_version(", "\nPG_MIGRATIONS = PG_MIGRATIONS[:-1]\n\n\n"
                                     "def postgresql_version(")


# The code of the release before the last schema step (18: API tokens and mailed reports
# limited to PBXs of a central history), as it used the tables then. Whoever adds a step puts
# its code here.
BEFORE_LAST_STEP: dict[str, list[tuple[str, str]]] = {
    # a report had no owner's PBXs nor a PBX of its own; a token had no PBXs
    "mirror/models.py": [
        ('    owner_pbxs = TextField(default="[]")', "    # owner_pbxs"),
        ('    pbx = TextField(default="")          # the PBX whose', "    # pbx, the PBX whose")],
    "mirror/tokens.py": [('"groups", "pbxs", "created_by"', '"groups", "\'[]\'", "created_by"')],
}


def _with_failing_migrations(code: str) -> str:
    return code.replace("LATEST = len(MIGRATIONS)", """MIGRATIONS = MIGRATIONS + (
    ("CREATE TABLE call_note (call_id INTEGER, note TEXT)",),
    ("CREATE INDEX call_note_call ON call_note (call_id)",
     "ALTER TABLE no_such_table ADD COLUMN broken TEXT"),
)
LATEST = len(MIGRATIONS)""")


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def test_upgrade_from_the_previous_schema_version_keeps_everything(tmp_path, pbx, archive, cli):
    previous = build_variant(tmp_path, "0.0.9", _without_last_migration, BEFORE_LAST_STEP)
    assert cli("install", "--pbx", pbx, "--archive", previous)[0] == 0
    with sqlite3.connect(module_db(pbx)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST - 1
        # The last step (18) gives tokens and reports their PBXs, and a report its PBX.
        assert "pbxs" not in _columns(conn, "api_token")
        assert not {"owner_pbxs", "pbx"} & _columns(conn, "report")
        conn.execute("INSERT INTO api_token (name, digest, role, extensions, groups, created_by, "
                     "created_ms) VALUES ('crm', 'd1', 'operator', '[\"201\"]', '[]', 'admin', 1)")
        tokens = conn.execute("SELECT * FROM api_token").fetchall()
    calls, before, settings_before = in_use(pbx, cli)

    code, out, err = cli("upgrade", "--pbx", pbx, "--archive", archive)
    assert code == 0, err
    assert out.strip() == f"upgraded {MODULE} 0.0.9 -> 0.1.0, data kept"
    with sqlite3.connect(module_db(pbx)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST
        # kept, limited to no PBX (every PBX's calls, as before)
        assert conn.execute("SELECT * FROM api_token").fetchall() == [
            (*token, "[]") for token in tokens]
        assert {"owner_pbxs", "pbx"} <= _columns(conn, "report")
        # the rollups, kept through the upgrade
        assert rollups_off(conn) == [] and conn.execute(
            "SELECT sum(calls) FROM call_rollup").fetchone()[0] == calls
        assert conn.execute("SELECT sum(calls) FROM line_rollup").fetchone()[0] == conn.execute(
            "SELECT count(*) FROM call WHERE direction <> 'internal'").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM module_secret").fetchone()[0] == 1
    assert count(pbx, "call") == calls and user_data(pbx) == before
    assert (module_db(pbx).parent / "extcdr.toml").read_text() == settings_before
    row = registration(pbx)
    assert (row["version"], row["disabled"]) == ("0.1.0", "0")        # enabled as before
    assert (pbx / "nginx" / "modules_locations" / f"{MODULE}.conf").exists()
    assert json.loads((pbx / "custom_modules" / MODULE / "module.json").read_text())[
        "version"] == "0.1.0"
    assert cli("upgrade", "--pbx", pbx, "--archive", archive)[1].strip() == \
        f"{MODULE} is already at version 0.1.0"
    code, _, err = cli("upgrade", "--pbx", pbx, "--archive", previous)
    assert code == 2 and "0.0.9 is older" in err


def test_an_upgrade_keeps_a_pbx_writing_its_central_history(tmp_path, pbx, archive, cli,
                                                           pg_schema_url):
    """A PBX pointed at a central PostgreSQL history (README "Many PBXs") stays pointed at it
    through an upgrade, which migrates that history, not a new local file."""
    previous = build_variant(tmp_path, "0.0.9", _without_last_migration, BEFORE_LAST_STEP)
    assert cli("install", "--pbx", pbx, "--archive", previous)[0] == 0
    module_dir = pbx / "custom_modules" / MODULE
    update_settings(module_dir, "module", {"db": pg_schema_url})
    update_settings(module_dir, "pbx", {"id": "msk"})
    synced = subprocess.run(                                # by the installed release
        [sys.executable, "-m", "cli", "sync", "--cdr-db", pbx / "cdr.db", "--pbx-db",
         pbx / "mikopbx.db", "--db", pg_schema_url, "--pbx-id", "msk", "--once"],
        cwd=module_dir, capture_output=True, text=True)
    assert synced.returncode == 0, synced.stderr
    central = open_module_db(pg_schema_url, readonly=True)
    try:
        calls = run(central, "SELECT count(*) FROM call WHERE pbx = 'msk'").fetchone()[0]
        assert calls > 0 and schema.postgresql_version(central) == schema.LATEST - 1
    finally:
        central.close()

    code, _, err = cli("upgrade", "--pbx", pbx, "--archive", archive)
    assert code == 0, err
    kept = load_settings(module_dir / "db" / "extcdr.toml")
    assert (kept["module.db"], kept["pbx.id"]) == (pg_schema_url, "msk")
    central = open_module_db(pg_schema_url, readonly=True)
    try:
        assert schema.postgresql_version(central) == schema.LATEST
        assert run(central, "SELECT count(*) FROM call").fetchone()[0] == calls
    finally:
        central.close()


def test_a_failing_migration_fails_the_upgrade_and_the_previous_version_comes_back_whole(
        tmp_path, pbx, archive, cli):
    """Core upgrades by uninstalling (keeping the data) and installing the new version, whose
    Setup migrates the data: a migration that fails rolls back, the install fails saying why,
    and the data waits unchanged in the backup; installing the previous version again brings
    back the history, filters and the enabled module."""
    cli("install", "--pbx", pbx, "--archive", archive)
    licensed(pbx, cli)
    cli("enable", "--pbx", pbx)
    calls = sync_history(pbx, cli)
    save_filter(pbx, "Kept")
    before = user_data(pbx)
    broken = build_variant(tmp_path, "0.2.0", _with_failing_migrations)

    code, _, err = cli("upgrade", "--pbx", pbx, "--archive", broken)
    assert code == 2
    assert "upgrade to 0.2.0 failed" in err and "no such table: no_such_table" in err
    assert "install 0.1.0 again to go back" in err
    assert registration(pbx) is None and not (pbx / "custom_modules" / MODULE).exists()
    kept = pbx / "custom_modules" / "Backup" / MODULE / "db" / "module.db"
    with sqlite3.connect(kept) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'call_note'").fetchone()
    assert not any(p.name.startswith(f".{MODULE}") for p in (pbx / "custom_modules").iterdir())

    code, out, err = cli("install", "--pbx", pbx, "--archive", archive)
    assert code == 0 and "kept at uninstall" in out, err
    assert cli("enable", "--pbx", pbx)[0] == 0
    assert count(pbx, "call") == calls and user_data(pbx) == before
    installed = pbx / "custom_modules" / MODULE
    done = subprocess.run([sys.executable, "-m", "cli", "calls", "--db", module_db(pbx),
                           "--format", "jsonl", "--from", "2000-01-01"], cwd=installed,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == calls


# --- without a licence: pages and daemon ----------------------------------------------------------

def test_without_a_valid_licence_pages_show_activation_or_a_notice_and_the_api_refuses(
        pbx, market, archive, cli, served):
    from standin.shell import StandinLogin
    from tests.webclient import Browser
    from web import create_app
    cli("install", "--pbx", pbx, "--archive", archive)
    settings = _installed_settings(pbx)
    prefix = settings["web.prefix"]
    address = served(create_app(settings, login=StandinLogin.from_file(None)))
    admin, operator = Browser(f"http://{address}"), Browser(f"http://{address}")
    admin.login("admin", "admin")
    operator.login("operator201", "operator201")
    status, _, page = admin.request(prefix)
    assert status == 403
    assert "Extended call history is not licensed" in page
    assert "the module has no licence" in page
    assert 'href="/admin-cabinet/licensing/modify/"' in page
    status, _, page = operator.request(prefix, headers={"Accept-Language": "ru"})
    assert status == 403
    assert "Лицензия модуля не активна. Обратитесь к администратору АТС." in page
    assert "no licence" not in page and "licensing/modify" not in page
    status, _, body = admin.request(prefix + "api/v1/calls")
    assert status == 403 and json.loads(body)["error"].startswith("the module is not licensed")
    status, _, _ = admin.request(prefix + "export?format=csv")
    assert status == 403

    licensed(pbx, cli)                                   # takes effect at the next request
    assert admin.request(prefix)[0] == 200
    assert admin.request(prefix + "api/v1/calls")[0] == 200

    licence_file = pbx / "licences" / LICENCE_FILE
    signing_key = load_pem_private_key((market.folder / "signing.key").read_bytes(), None)
    grant = Grant(**json.loads(licence_file.read_text())["grant"])
    licence_file.write_text(sign(Grant(**{**grant.__dict__, "expires": int(time.time()) - 1}),
                                 signing_key))
    status, _, page = admin.request(prefix)
    assert status == 403 and "the licence expired on" in page


def test_the_daemon_pauses_without_a_licence_and_catches_up_once_licensed(pbx, archive, cli,
                                                                          caplog):
    from daemon.resident import Daemon
    cli("install", "--pbx", pbx, "--archive", archive)
    daemon = Daemon(_installed_settings(pbx))
    try:
        with caplog.at_level("WARNING", logger="extcdr.daemon"):
            wait = daemon.step(time.monotonic())
            daemon.step(time.monotonic())
        assert wait == 5.0 and count(pbx, "call") == 0
        paused = [r.message for r in caplog.records if "paused" in r.message]
        assert paused == ["paused, the mirror is kept as it is: the module has no licence: "
                          "activate a key or coupon in Module marketplace → Licence management"]
        licensed(pbx, cli)
        daemon.step(time.monotonic())
        assert count(pbx, "call") > 0
    finally:
        daemon.db.close()


def test_a_module_id_is_never_a_path(pbx, archive, cli, tmp_path):
    cli("install", "--pbx", pbx, "--archive", archive)
    (tmp_path / "precious").mkdir()
    for bad in ("../precious", "..", "Backup", "a/b", ""):
        code, _, err = cli("uninstall", "--pbx", pbx, "--module", bad)
        assert code == 2 and "is not a module id" in err
    assert (tmp_path / "precious").is_dir() and registration(pbx) is not None


def test_a_pbx_that_trusts_no_marketplace_gets_no_unlicensed_install(pbx, archive, cli):
    (pbx / "marketplace.json").unlink()
    code, _, err = cli("install", "--pbx", pbx, "--archive", archive)
    assert code == 2 and "this PBX has no marketplace set up" in err
    assert registration(pbx) is None and not (pbx / "custom_modules" / MODULE).exists()


def test_mailed_reports_wait_for_the_licence_and_go_once_it_is_back(pbx, archive, cli):
    from mirror.database import open_module_db
    from mirror.report_rows import request_send
    from reports.scheduler import ReportScheduler
    cli("install", "--pbx", pbx, "--archive", archive)
    report_id = add_report(pbx)
    db = open_module_db(module_db(pbx))
    request_send(db, "admin", report_id, time.time())              # "Send now"
    db.close()
    scheduler = ReportScheduler(_installed_settings(pbx))
    try:
        scheduler.step(time.time())
        assert count(pbx, "report_send") == 0                     # unlicensed: nothing goes
        licensed(pbx, cli)
        scheduler.step(time.time())
        assert count(pbx, "report_send") == 1                     # the request was kept
    finally:
        scheduler.close()
