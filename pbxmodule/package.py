"""`extcdr package`: the marketplace archive of the module — a ZIP with `module.json` at its
root and the module's code, without tests, the stand-in PBX (`standin/`), data (`db/` is the
module's data folder on a PBX), virtualenvs or caches. Reproducible: the same
tree gives the same bytes (sorted names, fixed times and modes), so its checksum identifies a
release."""
from __future__ import annotations

import configparser
import hashlib
import json
import os
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The module's Python code (its rooms): shipped as files, run by the module's runtime.
PYTHON_PACKAGES = ("cli", "daemon", "web", "reports", "exports", "pbxmodule", "pbx", "mirror",
                   "i18n")
LAUNCHERS = ("bin/extcdr", "bin/_venv.sh")     # a development tree's: run with its .venv
# What a module needs on the PBX: its description, code, pages, launchers and metadata.
INCLUDED = ("module.json", "README.md", "setup.cfg", *LAUNCHERS,
            "Setup", "Lib", "App", "Messages",                  # the PHP glue Core loads
            *PYTHON_PACKAGES)
EXCLUDED_NAMES = {"__pycache__", ".pytest_cache"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".db", ".db-wal", ".db-shm", ".lock", ".partial")
_TIME = (1980, 1, 1, 0, 0, 0)          # the earliest a ZIP can say: no build time leaks in


class PackageError(ValueError):
    """The tree cannot be packaged; the message says why."""


RELEASE_SECTION = "extcdr:release"      # setup.cfg: what this vendor's release says


def manifest(root: Path = ROOT) -> dict:
    """The module's `module.json` as released: with the licence ids and documentation links of
    the release settings."""
    description = json.loads((root / "module.json").read_text(encoding="utf-8"))
    return {**description, **release_ids(root), "wiki_links": release_wiki_links(root)}


def release_ids(root: Path = ROOT) -> dict[str, int]:
    """`lic_product_id` and `lic_feature_id` from setup.cfg's [extcdr:release] (placeholders
    until the vendor is registered with the marketplace)."""
    section = _release_section(root)
    try:
        return {key: int(section[key]) for key in ("lic_product_id", "lic_feature_id")}
    except (KeyError, ValueError) as exc:
        raise PackageError(f"{root / 'setup.cfg'}: [{RELEASE_SECTION}] needs whole-number "
                           f"lic_product_id and lic_feature_id ({exc})") from None


def release_wiki_links(root: Path = ROOT) -> dict[str, str]:
    """The module's documentation by language (module.json `wiki_links`: the PBX links the
    module's card to them) from [extcdr:release] `wiki_link_<language>`."""
    links = {key.removeprefix("wiki_link_"): value
             for key, value in _release_section(root).items() if key.startswith("wiki_link_")}
    if not links or not all(value.startswith("https://") for value in links.values()):
        raise PackageError(f"{root / 'setup.cfg'}: [{RELEASE_SECTION}] needs wiki_link_en, "
                           f"wiki_link_ru, … as https:// links")
    return links


def _release_section(root: Path):
    setup = configparser.ConfigParser()
    setup.read(root / "setup.cfg", encoding="utf-8")
    if not setup.has_section(RELEASE_SECTION):
        raise PackageError(f"{root / 'setup.cfg'}: no [{RELEASE_SECTION}] section")
    return setup[RELEASE_SECTION]


def module_files(root: Path = ROOT) -> list[Path]:
    """The files the archive holds, relative to `root`, sorted."""
    found = []
    for name in INCLUDED:
        top = root / name
        if top.is_file():
            found.append(Path(name))
            continue
        if not top.is_dir():
            raise PackageError(f"{top}: missing")
        for folder, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_NAMES and not d.startswith("."))
            for file in files:
                if file.endswith(EXCLUDED_SUFFIXES) or file.startswith("."):
                    continue
                found.append((Path(folder) / file).relative_to(root))
    return sorted(found)


def build(out: Path, root: Path = ROOT, runtime: Path | None = None) -> dict:
    """Write the archive to `out` (whole or not at all); returns {file, version, sha256, md5}.
    `runtime`: the module's own Python (pbxmodule.runtime.build()), which becomes `bin/extcdr`
    and `bin/_internal/` in place of the development launchers; without it the archive runs
    with a Python environment of the PBX's (the stand-in's: EXTCDR_VENV)."""
    description = manifest(root)
    files = [(relative, root / relative) for relative in module_files(root)]
    if runtime is not None:
        files = [(relative, path) for relative, path in files
                 if relative.as_posix() not in LAUNCHERS]
        files += [(Path("bin") / path.relative_to(runtime), path)
                  for path in sorted(Path(runtime).rglob("*")) if path.is_file()]
        files.sort()
    partial = out.with_name(f".{out.name}.partial")
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for relative, path in files:
                info = zipfile.ZipInfo(relative.as_posix(), date_time=_TIME)
                executable = os.access(path, os.X_OK)
                info.external_attr = (0o100755 if executable else 0o100644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                data = (json.dumps(description, indent=2, ensure_ascii=False) + "\n").encode() \
                    if relative == Path("module.json") else path.read_bytes()
                archive.writestr(info, data, compresslevel=9)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    data = out.read_bytes()
    return {"file": str(out), "module": description["moduleUniqueID"],
            "version": description["version"], "sha256": hashlib.sha256(data).hexdigest(),
            "md5": hashlib.md5(data).hexdigest()}
