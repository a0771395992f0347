"""The module's processes: `daemon` (resident, keeps the mirror) and `web` (the pages). Each
loads its process's code when it runs (`daemon.resident`, or Flask and waitress), so that other
commands, such as `extcdr sync`, stay small."""
from __future__ import annotations

from pathlib import Path

from cli.base import CliError, add_db_argument, setup_logging
from mirror import settings as settings_module
from pbx.config import groups_db_beside
from pbx.phonebook import phonebook_db_beside

# No thread waits for an open page (live updates go through nginx), so a few threads serve
# every request; more only contend for the interpreter (measured: 16 threads answered 89 API
# pages/s where 4 answered 152, `./bin/bench abuse`), 8 leave room for slow downloads.
WEB_THREADS = 8


def add_commands(sub) -> dict:
    daemon = sub.add_parser("daemon", help="resident: follow the PBX live and keep the mirror "
                            "up to date (SIGTERM stops, SIGHUP reloads the settings)")
    daemon.add_argument("--config", type=Path, help="settings file (TOML)")
    daemon.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one setting (repeatable)")
    daemon.add_argument("--cdr-db", type=Path, help="same as --set pbx.cdr_db=PATH")
    daemon.add_argument("--pbx-db", type=Path, help="same as --set pbx.config_db=PATH (and "
                        "pbx.groups_db and pbx.phonebook_db, ModuleUsersGroups' and "
                        "ModulePhoneBook's DBs, when found beside it)")
    add_db_argument(daemon, required=False,
                    help="same as --set module.db=PATH (or a postgresql:// URL)")
    daemon.add_argument("--syslog", action="store_true", help="log to syslog, not stderr")

    web = sub.add_parser("web", help="serve the history pages and the JSON API (waitress), "
                         "behind the PBX admin shell's nginx")
    web.add_argument("--config", type=Path, help="settings file (TOML; holds web.proxy_token)")
    add_db_argument(web, required=False,
                    help="same as --set module.db=PATH (or a postgresql:// URL)")
    web.add_argument("--listen", metavar="HOST:PORT", help="same as --set web.listen=HOST:PORT")
    # The login hook: `login(args) -> web.auth.Login | None`, a login run in this process
    # instead of the PBX's nginx (development: the stand-in shell adds `--standin`).
    web.set_defaults(login=lambda args: None)
    return {"daemon": cmd_daemon, "web": cmd_web}


def cmd_daemon(args) -> int:
    settings = daemon_settings(args)
    setup_logging(settings["log.level"], args.syslog)
    from daemon.locks import AlreadyRunning
    from daemon.resident import serve as serve_daemon
    try:
        return serve_daemon(settings)
    except AlreadyRunning as exc:
        raise CliError(str(exc)) from None


def daemon_settings(args) -> settings_module.Settings:
    """The daemon's settings: the file, then its flags, then each `--set`."""
    overrides = {"pbx.cdr_db": args.cdr_db, "pbx.config_db": args.pbx_db, "module.db": args.db}
    if args.pbx_db is not None:           # as `extcdr sync --pbx-db`: groups found beside it
        overrides["pbx.groups_db"] = groups_db_beside(args.pbx_db)
        overrides["pbx.phonebook_db"] = phonebook_db_beside(args.pbx_db)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--set {item!r}: use SECTION.KEY=VALUE")
        if settings_module.is_secret(key.strip()):
            raise CliError(f"--set {key.strip()}: secrets go in the settings file (--config), "
                           f"never on a command line")
        overrides[key.strip()] = value.strip()
    return settings_module.load(args.config, overrides)


def cmd_web(args) -> int:
    from waitress import serve

    from web import create_app
    settings = settings_module.load(args.config, {"module.db": args.db,
                                                  "web.listen": args.listen})
    login = args.login(args)
    if login is None and not settings["web.proxy_token"]:
        raise CliError("web.proxy_token is empty: set it in the settings file (and in the "
                       "nginx location), or no request can be trusted")
    host, _, port = settings["web.listen"].rpartition(":")
    if not host or not port.isdigit():
        raise CliError(f"web.listen {settings['web.listen']!r}: use HOST:PORT")
    setup_logging(settings["log.level"], syslog=False)
    print(f"listening on http://{host}:{port}{settings['web.prefix']}", flush=True)
    app = create_app(settings, login=login)
    if login is None:            # nginx's nchan tells open pages that calls changed
        app.extensions["extcdr_changes"].start()
    serve(app, host=host, port=int(port), threads=WEB_THREADS,
          trusted_proxy="127.0.0.1", trusted_proxy_headers="x-forwarded-for x-forwarded-proto")
    return 0
