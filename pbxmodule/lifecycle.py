"""The module's life on a PBX: install, enable, disable, upgrade, uninstall, licence.

A PBX here is a folder laid out as MikoPBX lays out its storage (`PbxTree`): the config DB
`mikopbx.db` (modules registered in `m_PbxExtensionModules`, AMI users in
`m_AsteriskManagerUsers`), `custom_modules/<id>/` with the module's files and its data in
`db/`, `custom_modules/Backup/<id>/db/` kept by an uninstall that keeps settings. Every step
is idempotent, one at a time (a lock), and either done or not done: files are unpacked beside
the installed version and swapped in only after the module's DB migrated, in one transaction,
with the new code.

What the PBX then runs for an enabled module — its workers, its nginx location, its sidebar
entry — comes from `registration.json` in the module's folder and the location file that
`enable` writes; the admin-shell stand-in (`standin.supervisor`) acts on them.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
import zipfile
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable
from zlib import error as zlib_error

from mirror import settings
from pbx.config import read_pbx_setting
from pbx.tables import PBX_CONFIG_DDL
from pbxmodule.errors import LifecycleError
from pbxmodule.glue import GLUE_FILE, read_glue, write_glue
from pbxmodule.licence import Grant, LicenceCheck, LicenceError, check_key, verify
from pbxmodule.marketplace import MarketplaceClient, MarketplaceService, version_key
from pbxmodule.package import manifest
from pbxmodule.pids import alive
from pbxmodule.private import write_private

MODULE_ID = manifest()["moduleUniqueID"]   # this module, for the licence it activates
DISABLED_BY_USER = "DisabledByUser"          # MikoPBX's PbxExtensionState reasons
DISABLED_BY_LICENSE = "DisabledByLicense"
DISABLED_BY_CRASH_LOOP = "DisabledByCrashLoop"
AMI_USER = "extcdr"
SETTINGS_FILE = "db/extcdr.toml"
MODULE_ID_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
# An archive is untrusted input: bounds checked from its central directory before anything is
# unpacked, and again on the bytes actually unpacked (a header may lie). Ours is about 0.5 MB.
MAX_ARCHIVE_BYTES = 50 * 2**20
MAX_EXPANDED_BYTES = 200 * 2**20
MAX_MEMBERS = 5_000
MAX_MANIFEST_BYTES = 64 * 2**10


def checked_id(module_id: str) -> str:
    """A module id as MikoPBX names them (a folder name, never a path)."""
    if not MODULE_ID_PATTERN.fullmatch(module_id or "") or module_id == "Backup":
        raise LifecycleError(f"{module_id[:60]!r} is not a module id (letters, digits, _)")
    return module_id


@dataclass(frozen=True)
class PbxTree:
    """The PBX's files the lifecycle touches, under one root (the stand-in's layout)."""
    root: Path

    @classmethod
    def open(cls, root: Path) -> "PbxTree":
        tree = cls(Path(root).resolve())
        if not tree.config_db.is_file():
            raise LifecycleError(f"{root}: not a PBX (no mikopbx.db)")
        with tree.config() as conn:
            for statement in PBX_CONFIG_DDL:
                if "m_PbxExtensionModules" in statement or "m_AsteriskManagerUsers" in statement:
                    conn.execute(statement)
        return tree

    config_db = property(lambda self: self.root / "mikopbx.db")
    modules = property(lambda self: self.root / "custom_modules")
    locations = property(lambda self: self.root / "nginx" / "modules_locations")
    # What enabled modules' generateManagerConf() add to Asterisk's manager.conf.
    manager_sections = property(lambda self: self.root / "asterisk" / "manager_modules")
    run_dir = property(lambda self: self.root / "run")
    host_id_file = property(lambda self: self.root / "host-id")

    def module_dir(self, module_id: str) -> Path:
        return self.modules / checked_id(module_id)

    def backup_dir(self, module_id: str) -> Path:
        return self.modules / "Backup" / checked_id(module_id)

    def location_file(self, module_id: str) -> Path:
        return self.locations / f"{checked_id(module_id)}.conf"

    def manager_file(self, module_id: str) -> Path:
        return self.manager_sections / f"{checked_id(module_id)}.conf"

    def licence_file(self, product_id: int, feature_id: int) -> Path:
        return self.root / "licences" / f"{product_id}-{feature_id}.json"

    @contextmanager
    def config(self):
        with closing(sqlite3.connect(self.config_db, timeout=10)) as conn, conn:
            yield conn

    def setting(self, key: str, default: str = "") -> str:
        return read_pbx_setting(self.config_db, key) or default

    def set_setting(self, key: str, value: str) -> None:
        with self.config() as conn:
            conn.execute("INSERT OR REPLACE INTO m_PbxSettings (key, value) VALUES (?, ?)",
                         (key, value))

    def host_id(self) -> str:
        """This PBX's identity, made once."""
        if not self.host_id_file.exists():
            self.host_id_file.write_text(secrets.token_hex(16) + "\n")
        return self.host_id_file.read_text().strip()

    def market(self, timeout: float = 15.0) -> MarketplaceService:
        """The marketplace this PBX uses (the one adapter that speaks its protocol)."""
        return MarketplaceClient(self.marketplace()[0], timeout)

    def marketplace(self) -> tuple[str, str]:
        """(URL, public key) of the marketplace this PBX trusts."""
        try:
            trusted = json.loads((self.root / "marketplace.json").read_text())
            return trusted["url"], trusted["public_key"]
        except (OSError, ValueError, KeyError, TypeError):
            raise LifecycleError(f"this PBX has no marketplace set up ({self.root}/"
                                 "marketplace.json with its url and public_key)") from None

    def registered(self, module_id: str) -> dict | None:
        with self.config() as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM m_PbxExtensionModules WHERE uniqid = ?",
                               (module_id,)).fetchone()
        return dict(row) if row else None

    def installed(self) -> list[dict]:
        with self.config() as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute(
                "SELECT * FROM m_PbxExtensionModules ORDER BY name")]

    def set_state(self, module_id: str, disabled: bool, reason: str = "", text: str = ""):
        with self.config() as conn:
            conn.execute("UPDATE m_PbxExtensionModules SET disabled = ?, disableReason = ?, "
                         "disableReasonText = ? WHERE uniqid = ?",
                         ("1" if disabled else "0", reason, text, module_id))

    @contextmanager
    def lock(self):
        """One lifecycle step at a time on this PBX."""
        self.modules.mkdir(parents=True, exist_ok=True)
        with open(self.modules / ".lifecycle.lock", "w") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LifecycleError("another install, upgrade or uninstall is running on "
                                     "this PBX: try again when it has finished") from None
            yield


# --- archives ----------------------------------------------------------------------------------

def _text(value) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _version(value) -> bool:
    return _text(value) and re.match(r"\d+(\.\d+)*", value.strip()) is not None


def _positive_number(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _texts_by_language(value) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


# module.json fields: (required, check, what the value must be). Core reads these too
# (PbxExtensionSetupBase); the optional ones end up in m_PbxExtensionModules.
MANIFEST_FIELDS = {
    "moduleUniqueID": (True, lambda v: _text(v) and MODULE_ID_PATTERN.fullmatch(v) is not None,
                       "a module id (text: letters, digits, _)"),
    "version": (True, _version, "a version number as text, e.g. \"1.2.3\""),
    "min_pbx_version": (True, _version, "a MikoPBX version as text, e.g. \"2024.1.114\""),
    "lic_product_id": (True, _positive_number, "a positive whole number"),
    "lic_feature_id": (True, _positive_number, "a positive whole number"),
    "developer": (False, lambda v: isinstance(v, str), "text"),
    "support_email": (False, lambda v: isinstance(v, str), "text"),
    "name": (False, _texts_by_language, "an object of texts by language"),
    "description": (False, _texts_by_language, "an object of texts by language"),
    "wiki_links": (False, _texts_by_language, "an object of texts by language"),
}


def read_archive(path: Path) -> dict:
    """The module.json of a marketplace archive of this module, after checking the archive is
    safe to unpack: its size, its expanded size and member count (from the central
    directory), its paths, and every field of module.json."""
    try:
        if path.stat().st_size > MAX_ARCHIVE_BYTES:
            raise LifecycleError(f"{path}: the archive is larger than "
                                 f"{MAX_ARCHIVE_BYTES // 2**20} MB")
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            _check_members(path, members)
            description = json.loads(_read_member(archive, "module.json", MAX_MANIFEST_BYTES))
    except (OSError, zipfile.BadZipFile, EOFError, zlib_error) as exc:
        raise LifecycleError(f"{path}: not a module archive ({exc})") from None
    except KeyError:
        raise LifecycleError(f"{path}: no module.json at the archive's root") from None
    except ValueError as exc:
        raise LifecycleError(f"{path}: module.json is not valid JSON ({exc})") from None
    if not isinstance(description, dict):
        raise LifecycleError(f"{path}: module.json is not an object")
    for field, (required, valid, must_be) in MANIFEST_FIELDS.items():
        if field not in description:
            if required:
                raise LifecycleError(f"{path}: module.json lacks {field} ({must_be})")
        elif not valid(description[field]):
            shown = json.dumps(description[field], ensure_ascii=False)[:60]
            raise LifecycleError(f"{path}: module.json: {field} must be {must_be}, not {shown}")
    if description["moduleUniqueID"] != MODULE_ID:
        raise LifecycleError(f"{path}: the archive is {description['moduleUniqueID']}, not "
                             f"{MODULE_ID}: this installer installs only {MODULE_ID}")
    return description


def _check_members(path: Path, members: list[zipfile.ZipInfo]) -> None:
    if len(members) > MAX_MEMBERS:
        raise LifecycleError(f"{path}: the archive holds more than {MAX_MEMBERS} files")
    if sum(info.file_size for info in members) > MAX_EXPANDED_BYTES:
        raise LifecycleError(f"{path}: the archive expands to more than "
                             f"{MAX_EXPANDED_BYTES // 2**20} MB")
    for info in members:
        name = PurePosixPath(info.filename)
        if name.is_absolute() or ".." in name.parts or "\\" in info.filename:
            raise LifecycleError(f"{path}: unsafe path {info.filename!r} in the archive")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise LifecycleError(f"{path}: the archive holds a symbolic link "
                                 f"({info.filename})")


def _read_member(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    with archive.open(name) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise LifecycleError(f"{archive.filename}: {name} is larger than {limit // 1024} KB")
    return data


def _unpacked(name: str) -> bool:
    """Whether an archive member is unpacked. `db/` is the module's data folder on the PBX
    (module.db, settings): nothing in it comes from an archive."""
    return PurePosixPath(name).parts[0] != "db"


def _unpack(archive: Path, into: Path) -> None:
    """Unpack member by member in chunks, counting the bytes actually written: a member that
    expands beyond what the central directory declared, or beyond the bound, stops it. The
    members are checked again here: the file may have changed since `read_archive`."""
    into.mkdir(parents=True)
    budget = MAX_EXPANDED_BYTES
    try:
        with zipfile.ZipFile(archive) as z:
            members = z.infolist()
            _check_members(archive, members)
            for info in members:
                if not _unpacked(info.filename):
                    continue
                target = into / info.filename
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as member, open(target, "wb") as out:
                    written = 0
                    while chunk := member.read(2**20):
                        written += len(chunk)
                        if written > info.file_size or written > budget:
                            raise LifecycleError(f"{archive}: {info.filename} expands beyond "
                                                 "its declared size")
                        out.write(chunk)
                budget -= written
                target.chmod(0o755 if (info.external_attr >> 16) & 0o111 else 0o644)
    except (zipfile.BadZipFile, EOFError, zlib_error) as exc:
        raise LifecycleError(f"{archive}: damaged archive ({exc})") from None
    (into / "db").mkdir(exist_ok=True)       # the module's data folder: module.db, settings


@contextmanager
def _staging(tree: PbxTree, module_id: str):
    """A folder beside the modules to unpack into; removed whatever happens, unless moved in
    place. Staging folders of earlier steps that were killed are swept first (the lock is
    held: no other step is using one)."""
    for stale in tree.modules.glob(".*.staging"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = tree.modules / f".{checked_id(module_id)}.staging"
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- the steps ---------------------------------------------------------------------------------

def install(tree: PbxTree, archive: Path) -> str:
    """Put the module's files in place, create or restore and migrate its DB, register it
    (disabled until `enable`)."""
    description = read_archive(archive)
    module_id, version = description["moduleUniqueID"], description["version"]
    with tree.lock():
        row = tree.registered(module_id)
        if row is not None and tree.module_dir(module_id).is_dir():
            if row["version"] == version:
                return f"{module_id} {version} is already installed"
            raise LifecycleError(f"{module_id} {row['version']} is installed: use "
                                 f"`extcdr upgrade` to go to {version}")
        _check_compatible(tree, description)
        with _staging(tree, module_id) as staging:
            _unpack(archive, staging)
            backup = tree.backup_dir(module_id) / "db"
            leftover = tree.module_dir(module_id) / "db"     # files without a registration
            restored = backup.is_dir() or leftover.is_dir()
            for data in (backup, leftover):
                if data.is_dir():
                    _copy_data(data, staging / "db")
            _write_settings(tree, description, staging)
            _migrate(staging, staging / "db" / "module.db")
            shutil.rmtree(tree.module_dir(module_id), ignore_errors=True)
            staging.rename(tree.module_dir(module_id))
        _register(tree, description)
    kept = " with the history, filters and reports kept at uninstall" if restored else ""
    return f"installed {module_id} {version}{kept}; it is disabled until enabled"


def upgrade(tree: PbxTree, archive: Path) -> str:
    """New files and DB migrations with the data kept. A migration that fails rolls back and
    leaves the installed version as it was, running if it ran."""
    description = read_archive(archive)
    module_id, version = description["moduleUniqueID"], description["version"]
    with tree.lock():
        row = tree.registered(module_id)
        if row is None or not tree.module_dir(module_id).is_dir():
            raise LifecycleError(f"{module_id} is not installed: use `extcdr install`")
        if version_key(version) == version_key(row["version"]):
            return f"{module_id} is already at version {version}"
        if version_key(version) < version_key(row["version"]):
            raise LifecycleError(f"{module_id} {row['version']} is installed; {version} is "
                                 "older (uninstall with --keep-settings first to go back)")
        _check_compatible(tree, description)
        tree.marketplace()            # its settings need it: fail before anything changes
        with _staging(tree, module_id) as staging:
            _unpack(archive, staging)
            live = tree.module_dir(module_id)
            was_enabled = row["disabled"] == "0"
            if was_enabled:
                tree.set_state(module_id, disabled=True)      # the PBX stops its workers
            try:
                stop_workers(tree, module_id)
                _migrate(staging, live / "db" / "module.db")
            except LifecycleError as exc:
                if was_enabled:
                    tree.set_state(module_id, disabled=False)
                raise LifecycleError(f"upgrade to {version} failed, {module_id} "
                                     f"{row['version']} is still installed and unchanged: "
                                     f"{exc}") from None
            _move_data(live / "db", staging / "db")
            try:
                _write_settings(tree, description, staging)
            except BaseException:
                _move_data(staging / "db", live / "db")   # the data back before staging goes
                raise
            previous = tree.modules / f".{module_id}.previous"
            shutil.rmtree(previous, ignore_errors=True)
            live.rename(previous)
            staging.rename(live)
            shutil.rmtree(previous)
        _register(tree, description)
        if was_enabled:
            _write_location(tree, module_id)
            tree.set_state(module_id, disabled=False)
    return f"upgraded {module_id} {row['version']} -> {version}, data kept"


def enable(tree: PbxTree, module_id: str) -> str:
    """Workers and pages on, if the licence allows; else the module stays disabled by licence."""
    with tree.lock():
        row = _installed_row(tree, module_id)
        try:
            licence_check(tree, module_id).grant()
        except LicenceError as exc:
            tree.set_state(module_id, disabled=True, reason=DISABLED_BY_LICENSE, text=str(exc))
            raise LifecycleError(f"{module_id} stays disabled by licence: {exc}") from None
        _write_location(tree, module_id)
        tree.set_state(module_id, disabled=False)
    return f"{module_id} is {'already ' if row['disabled'] == '0' else ''}enabled"


def disable(tree: PbxTree, module_id: str) -> str:
    """Workers and pages off; the data stays."""
    with tree.lock():
        row = _installed_row(tree, module_id)
        tree.set_state(module_id, disabled=True, reason=DISABLED_BY_USER)
        _remove_hooks(tree, module_id)
        stop_workers(tree, module_id)
    return f"{module_id} is {'already ' if row['disabled'] == '1' else ''}disabled"


def uninstall(tree: PbxTree, module_id: str, *, keep_settings: bool) -> str:
    """Remove the module; with `keep_settings` its data (`db/`) waits in the backup folder
    for the next install."""
    with tree.lock():
        live = tree.module_dir(module_id)
        if tree.registered(module_id) is None and not live.exists():
            return f"{module_id} is not installed"
        tree.set_state(module_id, disabled=True, reason=DISABLED_BY_USER)
        _remove_hooks(tree, module_id)
        stop_workers(tree, module_id)
        backup = tree.backup_dir(module_id)
        shutil.rmtree(backup, ignore_errors=True)
        if keep_settings and (live / "db").is_dir():
            _copy_data(live / "db", backup / "db")
        if live.exists():
            removing = tree.modules / f".{module_id}.removing"
            live.rename(removing)
            shutil.rmtree(removing)
        with tree.config() as conn:
            conn.execute("DELETE FROM m_PbxExtensionModules WHERE uniqid = ?", (module_id,))
    kept = f"; its data is kept in {backup} for the next install" if keep_settings else ""
    return f"uninstalled {module_id}{kept}"


def activate(tree: PbxTree, module_id: str, key: str) -> Grant:
    """Ask the marketplace for this host's licence of the module and keep it; a malformed key
    is refused before any request."""
    key = check_key(key)
    description = _description(tree, module_id)
    text = tree.market().activate(
        key, host_id=tree.host_id(), product_id=int(description["lic_product_id"]),
        feature_id=int(description["lic_feature_id"]))
    check = licence_check(tree, module_id)
    grant = verify(text, check.public_key, host_id=tree.host_id(),
                   product_id=check.product_id, feature_id=check.feature_id)
    check.file.parent.mkdir(parents=True, exist_ok=True)
    partial = check.file.with_name(f".{check.file.name}.partial")
    partial.write_text(text)
    partial.replace(check.file)
    return grant


def licence_check(tree: PbxTree, module_id: str) -> LicenceCheck:
    """How this PBX checks the module's licence (the same check its workers make)."""
    description = _description(tree, module_id)
    _, public_key = tree.marketplace()
    product, feature = int(description["lic_product_id"]), int(description["lic_feature_id"])
    return LicenceCheck(public_key, tree.licence_file(product, feature), tree.host_id_file,
                        product, feature)


def fetch(tree: PbxTree, module_id: str, into: Path) -> Path:
    """The newest archive of a module from the PBX's marketplace."""
    archive = into / f"{checked_id(module_id)}.zip"
    tree.market().download(module_id, archive, max_bytes=MAX_ARCHIVE_BYTES)
    return archive


# --- workers (run by the PBX; pid files in run/) ----------------------------------------------

def worker_pid_file(tree: PbxTree, module_id: str, name: str) -> Path:
    return tree.run_dir / f"{module_id}.{name}.pid"


def stop_workers(tree: PbxTree, module_id: str, patience_s: float = 15.0) -> None:
    """Wait for the PBX to stop the module's workers; stop those it leaves running. A pid file
    naming a process that is not one of the module's workers (stale, the pid reused) is only
    removed: nothing else is ever signalled."""
    deadline = time.monotonic() + patience_s
    ours = str(tree.module_dir(module_id)) + "/"      # in every worker's --config path
    for pid_file in sorted(tree.run_dir.glob(f"{checked_id(module_id)}.*.pid")):
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            pid = 0
        while pid > 0 and alive(pid, running=ours) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid > 0 and alive(pid, running=ours):
            os.kill(pid, 15)
            while alive(pid, running=ours):
                time.sleep(0.1)
        pid_file.unlink(missing_ok=True)


def wait_for_pages(tree: PbxTree, module_id: str, timeout: float = 15.0,
                   meanwhile: Callable[[], None] = lambda: None) -> bool:
    """Whether the enabled module's pages are served (its web worker listens) within `timeout`;
    `meanwhile` runs between tries (the shell starts workers there)."""
    if (_installed_row(tree, module_id)["disabled"] != "0"
            or not (tree.module_dir(module_id) / SETTINGS_FILE).is_file()):
        return False
    host, _, port = _module_settings(tree, module_id)["web.listen"].rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
            meanwhile()
    return False


# --- helpers -----------------------------------------------------------------------------------

def _installed_row(tree: PbxTree, module_id: str) -> dict:
    row = tree.registered(module_id)
    if row is None or not tree.module_dir(module_id).is_dir():
        raise LifecycleError(f"{module_id} is not installed")
    return row


def _description(tree: PbxTree, module_id: str) -> dict:
    """module.json of the installed module, else of this code (activation before install)."""
    installed = tree.module_dir(module_id) / "module.json"
    if installed.is_file():
        return json.loads(installed.read_text(encoding="utf-8"))
    description = manifest()
    if description["moduleUniqueID"] != module_id:
        raise LifecycleError(f"{module_id} is not installed")
    return description


def _check_compatible(tree: PbxTree, description: dict) -> None:
    needed = description["min_pbx_version"]
    have = tree.setting("PBXVersion")
    if not have:
        raise LifecycleError("this PBX does not say its version (m_PbxSettings PBXVersion)")
    if version_key(have) < version_key(needed):
        raise LifecycleError(f"{description['moduleUniqueID']} {description['version']} needs "
                             f"MikoPBX {needed} or newer; this PBX runs {have}")


def _is_code(path: Path) -> bool:
    return path.suffix in (".py", ".pyc") or path.name == "__pycache__"


def _copy_data(source: Path, target: Path) -> None:
    """The data files of a `db/` folder (not its code), SQLite files copied consistently."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if _is_code(path) or path.name.endswith(("-wal", "-shm", ".lock")):
            continue
        if path.is_dir():
            shutil.copytree(path, target / path.name, dirs_exist_ok=True)
        elif path.suffix == ".db":
            with closing(sqlite3.connect(path)) as src, \
                    closing(sqlite3.connect(target / path.name)) as dst:
                src.backup(dst)
        else:
            shutil.copy2(path, target / path.name)


def _move_data(source: Path, target: Path) -> None:
    for path in source.iterdir():
        if not _is_code(path):
            if (target / path.name).is_dir():
                shutil.rmtree(target / path.name)
            path.replace(target / path.name)


def _migrate(code: Path, db: Path) -> None:
    """Migrate `db` with the module code in `code` (the version being installed)."""
    done = subprocess.run([sys.executable, "-m", "cli", "migrate", "--db", str(db)],
                          cwd=code, env={**os.environ, "PYTHONPATH": str(code)},
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise LifecycleError(f"the module DB did not migrate: {reason.removeprefix('extcdr: ')}")


def _register(tree: PbxTree, description: dict) -> None:
    module_id = description["moduleUniqueID"]
    values = (description.get("name", {}).get("en", module_id), description["version"],
              description.get("developer", ""), description.get("support_email", ""),
              str(tree.module_dir(module_id)),
              description.get("description", {}).get("en", ""),
              json.dumps(description.get("wiki_links", {}), ensure_ascii=False))
    with tree.config() as conn:
        updated = conn.execute(
            "UPDATE m_PbxExtensionModules SET name = ?, version = ?, developer = ?, "
            "supportemail = ?, path = ?, description = ?, wiki_links = ? WHERE uniqid = ?",
            (*values, module_id)).rowcount
        if not updated:
            conn.execute(
                "INSERT INTO m_PbxExtensionModules (name, version, developer, supportemail, "
                "path, description, wiki_links, uniqid, disabled, disableReason, "
                "disableReasonText) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '1', '', '')",
                (*values, module_id))


def _write_settings(tree: PbxTree, description: dict, folder: Path) -> None:
    """The module's settings on this PBX (`db/extcdr.toml`) and what the PBX runs for it
    (`registration.json`). Values a previous install chose (port, tokens) and the
    administrator's own keys are kept."""
    module_id = description["moduleUniqueID"]
    live = tree.module_dir(module_id)
    path = folder / SETTINGS_FILE
    try:
        current = tomllib.loads(path.read_text()) if path.exists() else {}
    except tomllib.TOMLDecodeError as exc:
        raise LifecycleError(f"{path}: not valid TOML ({exc})") from None
    _, public_key = tree.marketplace()        # licences are checked against its key
    product, feature = int(description["lic_product_id"]), int(description["lic_feature_id"])
    web = current.setdefault("web", {})
    web.setdefault("listen", f"127.0.0.1:{_free_port()}")
    web.setdefault("proxy_token", secrets.token_hex(24))
    web.setdefault("prefix", "/admin-cabinet/module-extended-c-d-r/calls/")
    current.setdefault("ami", {}).update(
        host="127.0.0.1", port=int(tree.setting("AMIPort", "5038")), username=AMI_USER,
        # Its own AMI user, from generateManagerConf(): not one of m_AsteriskManagerUsers,
        # which the admin panel edits and which MikoPBX filters MikoPBX's UserEvents from.
        secret=current.get("ami", {}).get("secret") or secrets.token_hex(16))
    current.setdefault("pbx", {}).update(
        cdr_db=str(tree.root / "cdr.db"), config_db=str(tree.config_db),
        groups_db=str(tree.modules / "ModuleUsersGroups" / "db" / "module.db"),
        recordings_root=str(tree.root / "monitor"))
    current.setdefault("module", {})["db"] = str(live / "db" / "module.db")
    current.setdefault("licence", {}).update(
        public_key=public_key, file=str(tree.licence_file(product, feature)),
        host_id_file=str(tree.host_id_file))
    tree.host_id()
    write_private(path, _toml(current))
    config = str(live / SETTINGS_FILE)
    registration = {
        "sidebar": {"caption": description.get("name", {}), "href": web["prefix"],
                    "icon": "list alternate outline"},
        "workers": {"daemon": ["-m", "cli", "daemon", "--config", config],
                    "web": ["-m", "cli", "web", "--config", config]},
    }
    (folder / "registration.json").write_text(json.dumps(registration, indent=1) + "\n")
    write_glue(folder, settings.load(path))


def _module_settings(tree: PbxTree, module_id: str) -> settings.Settings:
    return settings.load(tree.module_dir(module_id) / SETTINGS_FILE)


def _write_location(tree: PbxTree, module_id: str) -> None:
    """What Core takes from the module's hooks when it is enabled: its nginx location
    (createNginxLocations()) and its manager.conf section (generateManagerConf()), both as the
    module prepared them in `db/glue.json`."""
    module_dir = tree.module_dir(module_id)
    if not (module_dir / GLUE_FILE).is_file():          # installed before the glue was written
        write_glue(module_dir, _module_settings(tree, module_id))
    glue = read_glue(module_dir)
    for path, text in ((tree.location_file(module_id), glue["nginx_location"]),
                       (tree.manager_file(module_id), glue["manager_conf"])):
        write_private(path, text)


def _remove_hooks(tree: PbxTree, module_id: str) -> None:
    """Disabled or removed: Core no longer adds the module's location and AMI section."""
    tree.location_file(module_id).unlink(missing_ok=True)
    tree.manager_file(module_id).unlink(missing_ok=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml(document: dict) -> str:
    """A settings document of [sections] with text, number and true/false values as TOML."""
    lines = []
    for section, table in document.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            shown = (str(value).lower() if isinstance(value, bool) else
                     str(value) if isinstance(value, (int, float)) else json.dumps(str(value)))
            lines.append(f"{key} = {shown}")
        lines.append("")
    return "\n".join(lines)
