"""The module's life on a PBX: install, enable, disable, upgrade, uninstall, licence.

A PBX here is a folder laid out as MikoPBX lays out its storage (`PbxTree`): the config DB
`mikopbx.db` (modules registered in `m_PbxExtensionModules`), `custom_modules/<id>/` with the
module's files and its data in `db/`, `custom_modules/Backup/<id>/db/` kept by an uninstall
that keeps settings. Each step does what MikoPBX's installer does, in its order, and runs the
module's own PHP where Core does (`PbxTree.core`: the Setup's install and uninstall, the Conf's
enable and disable hooks). Steps are one at a time (a lock); an archive is unpacked beside the
installed files and swapped in whole.

What the PBX then runs for an enabled module — its workers, its nginx location, its sidebar
entry — comes from `registration.json` in the module's folder and the files `enable` writes
from the Conf's hooks; the admin-shell stand-in (`standin.supervisor`) acts on them.
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
from pbxmodule.licence import Grant, LicenceCheck, LicenceError, check_key, verify
from pbxmodule.marketplace import MarketplaceClient, MarketplaceService, version_key
from pbxmodule.package import manifest
from pbxmodule.pids import alive
from pbxmodule.prepare import SETTINGS_FILE, update_settings
from pbxmodule.private import write_private

MODULE_ID = manifest()["moduleUniqueID"]   # this module, for the licence it activates
DISABLED_BY_USER = "DisabledByUser"          # MikoPBX's PbxExtensionState reasons
DISABLED_BY_LICENSE = "DisabledByLicense"
DISABLED_BY_CRASH_LOOP = "DisabledByCrashLoop"
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

    def core(self, action: str, module_id: str, *extra: str) -> dict:
        """One of Core's steps that run the module's own PHP (`install`, `enable`, `disable`,
        `uninstall`), as this PBX runs them: `core.json` names them (the stand-in PBX's
        `standin/core/shim.php`, under stubs of Core's classes). Its answer, or LifecycleError
        with what Core said."""
        core = self._core()
        done = subprocess.run(
            [*core["php"], core["shim"], core["profile"], str(self.root), action,
             checked_id(module_id), *extra],
            capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
            env=self.core_env())
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            answer = {"ok": False, "messages": done.stderr.strip().splitlines()[-1:]}
        if done.returncode != 0 or not answer.get("ok"):
            said = "; ".join(str(m) for m in answer.get("messages") or []) or "no message"
            raise LifecycleError(f"Core's {action} of {module_id} failed: {said}")
        return answer

    def worker_command(self, module_id: str, worker_file: str) -> list[str]:
        """How Core starts one of the module's PHP workers (`php -f <file> start`)."""
        core = self._core()
        return [*core["php"], "-d", f"auto_prepend_file={core['prepend']}", "-f",
                str(self.module_dir(module_id) / worker_file), "start"]

    def core_env(self) -> dict[str, str]:
        """The environment of Core's steps and workers: its classes of this PBX's profile, and
        the Python environment the module's own commands run with."""
        return {**os.environ, "EXTCDR_CORE_PROFILE": self._core()["profile"],
                "EXTCDR_PBX_ROOT": str(self.root), "EXTCDR_VENV": sys.prefix}

    def _core(self) -> dict:
        try:
            core = json.loads((self.root / "core.json").read_text())
            return {"php": [str(p) for p in core["php"]], "shim": str(core["shim"]),
                    "prepend": str(core["prepend"]), "profile": str(core["profile"])}
        except (OSError, ValueError, KeyError, TypeError):
            raise LifecycleError(f"this PBX has no Core to run a module's PHP with "
                                 f"({self.root}/core.json)") from None

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
    """Put the module's files in place and let Core install it: its Setup restores the data an
    uninstall kept, prepares the module for this PBX (settings, DB migrated, glue) and
    registers it, disabled until `enable`. A failed install leaves no module folder."""
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
        tree.marketplace()            # its settings need it: fail before anything changes
        restored = _install_files(tree, archive, module_id)
    kept = " with the history, filters and reports kept at uninstall" if restored else ""
    return f"installed {module_id} {version}{kept}; it is disabled until enabled"


def _install_files(tree: PbxTree, archive: Path, module_id: str) -> bool:
    """Unpack beside, swap in, run Core's install of the module; whether kept data came back."""
    with _staging(tree, module_id) as staging:
        _unpack(archive, staging)
        leftover = tree.module_dir(module_id) / "db"      # files without a registration
        if leftover.is_dir() and not tree.backup_dir(module_id).exists():
            _copy_data(leftover, tree.backup_dir(module_id) / "db")
        shutil.rmtree(tree.module_dir(module_id), ignore_errors=True)
        staging.rename(tree.module_dir(module_id))
    restored = tree.backup_dir(module_id).is_dir()
    try:
        tree.core("install", module_id)
        _standin_settings(tree, module_id)
    except BaseException:
        shutil.rmtree(tree.module_dir(module_id), ignore_errors=True)
        with tree.config() as conn:
            conn.execute("DELETE FROM m_PbxExtensionModules WHERE uniqid = ?", (module_id,))
        raise
    return restored


def upgrade(tree: PbxTree, archive: Path) -> str:
    """Core's upgrade: the module disabled, uninstalled keeping its data (`Backup/<id>/db`),
    the new version installed (its Setup restores and migrates the data), enabled again if it
    was. If the new version's install fails, the data waits in the backup, unchanged."""
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
        was_enabled = row["disabled"] == "0"
        if was_enabled:
            _disable(tree, module_id)
        _uninstall(tree, module_id, keep_settings=True)
        try:
            _install_files(tree, archive, module_id)
        except LifecycleError as exc:
            raise LifecycleError(
                f"upgrade to {version} failed: {exc}; {module_id}'s data is kept unchanged in "
                f"{tree.backup_dir(module_id)}: install {row['version']} again to go back") \
                from None
        if was_enabled:
            _enable(tree, module_id)
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
        _enable(tree, module_id)
    return f"{module_id} is {'already ' if row['disabled'] == '0' else ''}enabled"


def _enable(tree: PbxTree, module_id: str) -> None:
    """Core's enable: the module's Conf asked, then what its hooks give put where Core puts it
    (its nginx location, its manager.conf section)."""
    hooks = tree.core("enable", module_id)
    for path, text in ((tree.location_file(module_id), hooks["nginx_location"]),
                       (tree.manager_file(module_id), hooks["manager_conf"])):
        write_private(path, text)
    _register_workers(tree, module_id, hooks["workers"])
    tree.set_state(module_id, disabled=False)


def _register_workers(tree: PbxTree, module_id: str, workers: list[dict]) -> None:
    """The PHP workers the Conf names (getModuleWorkers()), by class, with the file Core's
    autoloader finds each in: what the PBX keeps running while the module is enabled."""
    prefix = f"Modules\\{module_id}\\"
    files = {}
    for worker in workers:
        name = str(worker.get("worker", ""))
        if not name.startswith(prefix) or not re.fullmatch(r"[A-Za-z0-9_\\]+", name):
            raise LifecycleError(f"{module_id} names a worker Core cannot start: {name[:80]!r}")
        files[name.rsplit("\\", 1)[-1]] = name.removeprefix(prefix).replace("\\", "/") + ".php"
    path = tree.module_dir(module_id) / "registration.json"
    registration = json.loads(path.read_text())
    registration["workers"] = files
    path.write_text(json.dumps(registration, indent=1) + "\n")


def disable(tree: PbxTree, module_id: str) -> str:
    """Workers and pages off; the data stays."""
    with tree.lock():
        row = _installed_row(tree, module_id)
        _disable(tree, module_id)
    return f"{module_id} is {'already ' if row['disabled'] == '1' else ''}disabled"


def _disable(tree: PbxTree, module_id: str) -> None:
    """Core's disable: the module's Conf told first (it stops its worker gracefully), then its
    location and AMI section gone and its workers stopped."""
    if (tree.module_dir(module_id) / "module.json").is_file():
        tree.core("disable", module_id)
    tree.set_state(module_id, disabled=True, reason=DISABLED_BY_USER)
    _remove_hooks(tree, module_id)
    stop_workers(tree, module_id)


def uninstall(tree: PbxTree, module_id: str, *, keep_settings: bool) -> str:
    """Remove the module; with `keep_settings` its data (`db/`) waits in the backup folder
    for the next install."""
    with tree.lock():
        live = tree.module_dir(module_id)
        if tree.registered(module_id) is None and not live.exists():
            return f"{module_id} is not installed"
        _disable(tree, module_id)             # as the admin panel does before an uninstall
        _uninstall(tree, module_id, keep_settings=keep_settings)
    backup = tree.backup_dir(module_id)
    kept = f"; its data is kept in {backup} for the next install" if keep_settings else ""
    return f"uninstalled {module_id}{kept}"


def _uninstall(tree: PbxTree, module_id: str, *, keep_settings: bool) -> None:
    """Core's uninstall: processes holding the module's bin/ files killed, then its Setup
    unregisters it and removes its files (the data to the backup folder with
    `keep_settings`); whatever is left is removed."""
    tree.core("uninstall", module_id, *(["keep"] if keep_settings else []))
    live = tree.module_dir(module_id)
    if live.exists():
        shutil.rmtree(live)
    with tree.config() as conn:
        conn.execute("DELETE FROM m_PbxExtensionModules WHERE uniqid = ?", (module_id,))


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


def _standin_settings(tree: PbxTree, module_id: str) -> None:
    """What the stand-in PBX adds to the settings Core's install prepared: its own licence
    (the signed licence of its marketplace, in place of Core's licence service) and what it
    shows for the module (`registration.json`: its sidebar entry)."""
    module_dir = tree.module_dir(module_id)
    description = _description(tree, module_id)
    _, public_key = tree.marketplace()
    product, feature = int(description["lic_product_id"]), int(description["lic_feature_id"])
    tree.host_id()
    update_settings(module_dir, "licence", {
        "core_url": "", "public_key": public_key, "file": str(tree.licence_file(product, feature)),
        "host_id_file": str(tree.host_id_file)})
    own = _module_settings(tree, module_id)
    registration = {
        "sidebar": {"caption": description.get("name", {}), "href": own["web.prefix"],
                    "icon": "list alternate outline"},
        "workers": {},                       # the Conf names them when the module is enabled
    }
    (module_dir / "registration.json").write_text(json.dumps(registration, indent=1) + "\n")


def _module_settings(tree: PbxTree, module_id: str) -> settings.Settings:
    return settings.load(tree.module_dir(module_id) / SETTINGS_FILE)


def _remove_hooks(tree: PbxTree, module_id: str) -> None:
    """Disabled or removed: Core no longer adds the module's location and AMI section."""
    tree.location_file(module_id).unlink(missing_ok=True)
    tree.manager_file(module_id).unlink(missing_ok=True)
