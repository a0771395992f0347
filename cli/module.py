"""The module on a PBX: `package` (the marketplace archive), `install`, `upgrade`, `enable`,
`disable`, `uninstall`, `licence`, and `prepare` (what Core's install runs through the module's
Setup). The steps' code (`pbxmodule.lifecycle`: archives, licences, the marketplace) is loaded
when a step runs, so that other commands stay small."""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from cli.base import CliError
from pbxmodule.package import build, manifest

MODULE_ID = manifest()["moduleUniqueID"]
PBX_HELP = "the PBX's storage folder (mikopbx.db, custom_modules/)"


def add_commands(sub) -> dict:
    package = sub.add_parser("package", help="build the marketplace archive (module.json at its "
                             "root; reproducible) and print its checksums")
    package.add_argument("--out", required=True, type=Path, help="the .zip to write")
    package.add_argument("--without-runtime", action="store_true",
                         help="leave out the module's own Python (bin/extcdr then needs a "
                              "Python environment with its dependencies: development only)")

    for name, text in (("install", "install the module on a PBX (disabled until enabled)"),
                       ("upgrade", "upgrade the installed module, keeping its data")):
        step = sub.add_parser(name, help=text)
        step.add_argument("--pbx", required=True, type=Path, help=PBX_HELP)
        step.add_argument("--archive", type=Path,
                          help="the module's archive (default: the newest from the PBX's "
                               "marketplace)")
    for name, text in (("enable", "turn the module's workers and pages on (needs a licence)"),
                       ("disable", "turn the module's workers and pages off; data stays"),
                       ("uninstall", "remove the module from the PBX")):
        step = sub.add_parser(name, help=text)
        step.add_argument("--pbx", required=True, type=Path, help=PBX_HELP)
        step.add_argument("--module", default=MODULE_ID, help=f"module id (default {MODULE_ID})")
    sub.choices["enable"].add_argument(
        "--wait", nargs="?", type=float, const=15.0, metavar="SECONDS",
        help="return once the module's pages are served (the PBX has started its workers); "
             "fail after SECONDS (default 15)")
    sub.choices["uninstall"].add_argument(
        "--keep-settings", action="store_true",
        help="keep the history, saved filters and reports for the next install")
    licence = sub.add_parser("licence", help="the module's licence on a PBX: show it, or "
                             "activate a key or coupon with the marketplace")
    licence.add_argument("action", choices=("show", "activate"))
    licence.add_argument("key", nargs="?", help="with activate: MIKO-XXXXX-XXXXX-XXXXX-XXXXX "
                         "or MIKOUPD-XXXXX-XXXXX-XXXXX-XXXXX; - reads it from stdin")
    licence.add_argument("--pbx", required=True, type=Path, help=PBX_HELP)
    licence.add_argument("--module", default=MODULE_ID, help=f"module id (default {MODULE_ID})")
    prepare = sub.add_parser("prepare", help="(Core's install, through the module's Setup) "
                             "write the module's settings for this PBX, migrate its DB and "
                             "prepare what Core asks the PHP glue for")
    prepare.add_argument("--module-dir", required=True, type=Path,
                         help="the installed module's folder (custom_modules/<id>)")
    prepare.add_argument("--config-db", required=True, type=Path, help="the PBX's mikopbx.db")
    prepare.add_argument("--cdr-db", required=True, type=Path, help="the PBX's cdr.db")
    prepare.add_argument("--recordings", required=True, type=Path,
                         help="the PBX's recordings folder (asterisk.monitordir)")
    prepare.add_argument("--core-licence", action="store_true",
                         help="the licence is Core's: ask it through the module's REST callback")
    return {"package": cmd_package, "licence": cmd_licence, "prepare": cmd_prepare,
            **{name: cmd_lifecycle for name in ("install", "upgrade", "enable", "disable",
                                                "uninstall")}}


def cmd_package(args) -> int:
    if not args.out.parent.is_dir():
        raise CliError(f"{args.out.parent}: no such directory")
    bundle = None
    if not args.without_runtime:
        from pbxmodule.runtime import RuntimeBuildError
        from pbxmodule.runtime import build as build_runtime
        try:
            bundle = build_runtime()
        except RuntimeBuildError as exc:
            raise CliError(str(exc)) from None
    print(json.dumps(build(args.out, runtime=bundle)))
    return 0


def cmd_prepare(args) -> int:
    from pbxmodule.prepare import PbxPaths, PrepareError, prepare
    if not (args.module_dir / "module.json").is_file():
        raise CliError(f"{args.module_dir}: not an installed module (no module.json)")
    try:
        prepare(args.module_dir.resolve(), PbxPaths(args.config_db, args.cdr_db, args.recordings),
                core_licence=args.core_licence)
    except PrepareError as exc:
        raise CliError(str(exc)) from None
    print(f"{args.module_dir.name}: prepared")
    return 0


def cmd_lifecycle(args) -> int:
    """install, upgrade, enable, disable, uninstall: one line of what was done."""
    from pbxmodule import lifecycle
    tree = lifecycle.PbxTree.open(args.pbx)
    if args.command in ("install", "upgrade"):
        with tempfile.TemporaryDirectory() as scratch:
            archive = args.archive or lifecycle.fetch(tree, MODULE_ID, Path(scratch))
            step = lifecycle.install if args.command == "install" else lifecycle.upgrade
            print(step(tree, archive))
        return 0
    if args.command == "uninstall":
        print(lifecycle.uninstall(tree, args.module, keep_settings=args.keep_settings))
        return 0
    print({"enable": lifecycle.enable, "disable": lifecycle.disable}[args.command](
        tree, args.module))
    if (args.command == "enable" and args.wait is not None
            and not lifecycle.wait_for_pages(tree, args.module, args.wait)):
        raise lifecycle.LifecycleError(
            f"{args.module} is enabled but its pages did not start within {args.wait:g} s: "
            f"is the PBX running its workers? See {tree.root / 'logs'}")
    return 0


def cmd_licence(args) -> int:
    from pbxmodule import lifecycle
    from pbxmodule.licence import LicenceError, masked
    tree = lifecycle.PbxTree.open(args.pbx)
    if args.action == "activate":
        if not args.key:
            raise CliError("licence activate: give the key or coupon (or - to read it from stdin)")
        key = sys.stdin.readline() if args.key == "-" else args.key
        grant = lifecycle.activate(tree, args.module, key)
    else:
        try:
            grant = lifecycle.licence_check(tree, args.module).grant()
        except LicenceError as exc:
            print(f"{args.module}: no valid licence: {exc}")
            return 1
    until = time.strftime("%Y-%m-%d", time.gmtime(grant.expires))
    print(f"{args.module}: licensed to this PBX until {until} ({masked(grant.key)}, "
          f"product {grant.product_id}, feature {grant.feature_id})")
    return 0
