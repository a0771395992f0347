"""The stand-in PBX's Core: the steps of MikoPBX Core that run a module's own PHP (its Setup's
install and uninstall, its Conf's enable and disable hooks, its controller's sidebar page) are
done by `php` on `core/shim.php`, under stubs of Core's classes as one platform declares them
(2024.1 or 2026.1), and a module's PHP workers run with those classes as Core starts them. A
PBX folder names its Core in `core.json` (`pbxmodule.lifecycle.PbxTree` runs it)."""
from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

PROFILES = ("2024.1", "2026.1")
SHIM = Path(__file__).resolve().parent / "core" / "shim.php"
PREPEND = SHIM.with_name("prepend.php")       # Core's classes for a module's worker


class CoreShimError(ValueError):
    """The stand-in's Core cannot be set up; the message says why."""


def install_core(pbx_root: Path, profile: str = "2026.1", *, host: Sequence[str] = ()) -> None:
    """Give the PBX folder the stand-in's Core of `profile` (a copy of its own, as a PBX has).
    `host`: a command the PBX runs its PHP under, and so the module's workers and every
    process they start (a test's sandbox without Python)."""
    if profile not in PROFILES:
        raise CoreShimError(f"unknown Core profile {profile!r}; use {' or '.join(PROFILES)}")
    php = shutil.which("php")
    if php is None:
        raise CoreShimError("php is not installed, which runs the module's PHP as Core does "
                            "(apt-get install php8.2-cli php8.2-sqlite3)")
    core = Path(pbx_root).resolve() / "core"
    shutil.copytree(SHIM.parent, core, dirs_exist_ok=True)
    (Path(pbx_root) / "core.json").write_text(json.dumps({
        "profile": profile,
        "php": [*host, php, "-d", "display_errors=stderr", "-d", "error_reporting=E_ALL"],
        "shim": str(core / SHIM.name), "prepend": str(core / PREPEND.name)}, indent=1) + "\n")
