"""The stand-in PBX's commands, a group the development tree adds to `extcdr`
(`python -m standin`, `./bin/extcdr`): `demo-data`, `ami-emulator`, `marketplace`,
`mail-catcher`, `crm-receiver`, `pg-server`, `admin-shell`; it also plugs the stand-in shell's
users into `web --standin` and `export --user`."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from datetime import date
from pathlib import Path

from waitress import create_server

import cli
from cli.base import CliError
from mirror import settings as settings_module
from mirror.pbxtime import PbxClock
from pbxmodule.lifecycle import PbxTree
from standin import amiemu, crm_receiver, demo, mailcatcher, marketplace_server, pgserver
from standin.admin_panel import create_shell_app
from standin.coreshim import PROFILES, CoreShimError, install_core
from standin.shell import (StandinLogin, load_users, missing_nginx_modules, nginx_config,
                           pbx_nginx_config)
from standin.supervisor import Supervisor, reload_nginx


def add_commands(sub) -> dict:
    web = sub.choices["web"]
    web.add_argument("--standin", action="store_true",
                     help="run the admin-shell stand-in (login, session, auth) in this process")
    web.add_argument("--users", type=Path,
                     help="with --standin: JSON list of {name, password, role, extensions}")
    web.set_defaults(login=_standin_login)
    for command in ("export", "comment", "tag", "delete"):
        sub.choices[command].set_defaults(
            users_of=lambda path: {name: a.user for name, a in load_users(path).items()})

    shell = sub.add_parser("admin-shell", help="development/demo: the admin-shell stand-in "
                           "(login, users, auth) and nginx; with --pbx the PBX's admin panel "
                           "that installs, licenses and runs modules, else in front of a "
                           "running `extcdr web`")
    shell.add_argument("--pbx", type=Path, help="a PBX folder: manage its modules (marketplace, "
                       "licences, enable switches) and run the enabled ones' workers")
    shell.add_argument("--config", type=Path,
                       help="without --pbx: the settings file `extcdr web` runs with")
    shell.add_argument("--app", metavar="HOST:PORT", help="without --pbx: where `extcdr web` "
                       "listens")
    shell.add_argument("--listen", metavar="HOST:PORT", required=True,
                       help="where nginx listens (loopback)")
    shell.add_argument("--run-dir", type=Path, required=True,
                       help="nginx's configuration, logs and temp files go here")
    shell.add_argument("--users", type=Path,
                       help="JSON list of {name, password, role, extensions[, language]}")

    emulator = sub.add_parser("ami-emulator", help="an AMI server for tests and the demo: "
                              "live calls into a demo cdr.db, transcripts, faults")
    amiemu.add_arguments(emulator)
    market = sub.add_parser("marketplace", help="tests/demo: a stand-in module marketplace "
                            "(archives and signed licences) on loopback")
    marketplace_server.add_arguments(market)
    catcher = sub.add_parser("mail-catcher", help="demo/development: an SMTP server that keeps "
                             "every mail as an .eml file")
    mailcatcher.add_arguments(catcher)
    central = sub.add_parser("pg-server", help="demo: a private PostgreSQL server (Debian's "
                             "postgresql) on loopback, the central history of the demo's PBXs")
    pgserver.add_arguments(central)
    receiver = sub.add_parser("crm-receiver", help="demo/development: a stand-in CRM that takes "
                              "webhooks, verifies their signatures and lists them on a page")
    crm_receiver.add_arguments(receiver)

    demo_data = sub.add_parser("demo-data", help="generate a realistic demo PBX")
    demo_data.add_argument("--out", required=True, type=Path)
    demo_data.add_argument("--calls", type=int, default=5_000)
    demo_data.add_argument("--seed", type=int, default=1)
    demo_data.add_argument("--end-day", type=date.fromisoformat, help="last day (default: today)")
    demo_data.add_argument("--timezone", default="Europe/Moscow")
    demo_data.add_argument("--overwrite", action="store_true",
                           help="replace a demo PBX already in --out")
    demo_data.add_argument("--core-profile", choices=PROFILES, default="2026.1",
                           help="the MikoPBX Core the PBX's stubs declare (default 2026.1)")
    return {"admin-shell": cmd_admin_shell, "ami-emulator": amiemu.run,
            "marketplace": marketplace_server.run, "mail-catcher": mailcatcher.run,
            "crm-receiver": crm_receiver.run, "pg-server": pgserver.run,
            "demo-data": cmd_demo_data}


def main(argv: list[str] | None = None) -> int:
    """`extcdr` with the stand-in's commands."""
    return cli.main(argv, groups=(*cli.GROUPS, sys.modules[__name__]))


def _standin_login(args) -> StandinLogin | None:
    if not args.standin:
        return None
    login = StandinLogin.from_file(args.users)
    if args.users is None:
        print("stand-in shell users: " + ", ".join(
            f"{a.user.name}/{a.password} ({a.user.role})" for a in login.accounts.values()))
    return login


def cmd_demo_data(args) -> int:
    if args.calls < 1:
        raise CliError("--calls must be at least 1")
    try:
        PbxClock(args.timezone)
    except (KeyError, ValueError) as exc:
        raise CliError(f"unknown timezone {args.timezone!r}") from exc
    args.out.mkdir(parents=True, exist_ok=True)
    stats = demo.generate(args.out, args.calls, args.seed, end_day=args.end_day,
                          timezone=args.timezone, overwrite=args.overwrite)
    try:
        install_core(args.out, args.core_profile)
    except CoreShimError as exc:
        raise CliError(str(exc)) from None
    span = f"{stats.first_start:%Y-%m-%d} .. {stats.last_end:%Y-%m-%d}" if stats.legs else "-"
    print(f"demo PBX in {args.out}: {stats.calls:,} calls ({len(stats.calls_by_kind)} kinds), "
          f"{stats.legs:,} legs, {stats.recordings_written:,} recording files, {span}")
    return 0


def cmd_admin_shell(args) -> int:
    """nginx in front of the stand-in shell and the module's pages."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        raise CliError("nginx is not installed (apt-get install nginx), or use "
                       "`extcdr web --standin`")
    if missing_nginx_modules():
        raise CliError(f"nginx's lua, ndk or nchan module is missing, which the module's access "
                       f"check and live updates need ({missing_nginx_modules()})")
    if args.pbx is None and (args.config is None or args.app is None):
        raise CliError("admin-shell: give --pbx, or --config and --app")
    accounts = load_users(args.users)
    user = "root" if os.geteuid() == 0 else None      # nginx workers must read the recordings
    args.run_dir.mkdir(parents=True, exist_ok=True)
    run_dir = args.run_dir.resolve()
    conf = run_dir / "nginx.conf"
    proc: subprocess.Popen | None = None
    supervisor = None
    if args.pbx is not None:
        tree = PbxTree.open(args.pbx)
        tree.locations.mkdir(parents=True, exist_ok=True)
        # Where the PBX's nginx listens, as MikoPBX keeps it (modules reach it on this machine).
        tree.set_setting("WEBPort", args.listen.rpartition(":")[2])
        supervisor = Supervisor(tree, reload_nginx=lambda: proc and reload_nginx(proc))
        home = "/admin-cabinet/"
        shell = create_server(create_shell_app(accounts, home, pbx=tree, supervisor=supervisor),
                              host="127.0.0.1", port=0, threads=4)
        text = pbx_nginx_config(run_dir=run_dir, listen=args.listen,
                                shell=f"127.0.0.1:{shell.effective_port}",
                                modules_locations=tree.locations, user=user)
    else:
        settings = settings_module.load(args.config, {})
        home = "/" + settings["web.prefix"].strip("/") + "/"
        shell = create_server(create_shell_app(accounts, home), host="127.0.0.1", port=0,
                              threads=4)
        text = nginx_config(
            run_dir=run_dir, listen=args.listen, shell=f"127.0.0.1:{shell.effective_port}",
            app=args.app, prefix=home, proxy_token=settings["web.proxy_token"],
            recordings_root=settings["pbx.recordings_root"], user=user)
    threading.Thread(target=shell.run, daemon=True).start()
    conf.write_text(text)
    conf.chmod(0o600)                                       # it holds the proxy token
    proc = subprocess.Popen([nginx, "-p", str(run_dir), "-c", str(conf),
                             "-e", str(run_dir / "error.log"), "-g", "daemon off;"])
    # From here on, stopping means nginx first, then (below) the workers: never leave them.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: proc.terminate())
    if supervisor is not None:
        supervisor.reconcile()
        threading.Thread(target=supervisor.run, daemon=True).start()
    print(f"admin shell on http://{args.listen}{home}", flush=True)
    if args.users is None:
        print("users: " + ", ".join(f"{a.user.name}/{a.password} ({a.user.role})"
                                    for a in accounts.values()), flush=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()
    finally:
        if supervisor is not None:
            supervisor.close()
        shell.close()
