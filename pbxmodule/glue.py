"""What Core asks of the module, prepared for its PHP glue in the module's data folder:
`db/glue.json` holds the nginx locations (`createNginxLocations()`) and the module's own
manager.conf section (`generateManagerConf()`), which `Lib/PythonSide.php` hands to Core as
they are. Written whenever the module's settings are (install, upgrade)."""
from __future__ import annotations

import json
from pathlib import Path

from pbxmodule.nginx import LOCATION_TEMPLATES, location_config
from pbxmodule.private import write_private

GLUE_FILE = Path("db") / "glue.json"
# What the daemon reads of AMI: calls that end or change (Hangup, MikoPBX's UserEvents), and on
# a stock Asterisk the channels and Cdr events it builds legs from; CoreShowChannels to list the
# channels up after a reconnect. Only these events are sent to it.
AMI_READ = "call,cdr,reporting,system,user"
AMI_WRITE = "reporting,system"
AMI_EVENTS = ("Hangup", "UserEvent", "Cdr", "Newchannel", "Newstate", "CoreShowChannel",
              "CoreShowChannelsComplete")


def manager_section(settings) -> str:
    """The module's own AMI user for manager.conf: loopback only, only the events it uses."""
    lines = [f"[{settings['ami.username']}]", f"secret={settings['ami.secret']}",
             "deny=0.0.0.0/0.0.0.0", "permit=127.0.0.1/255.255.255.255",
             f"read={AMI_READ}", f"write={AMI_WRITE}"]
    lines += [f"eventfilter=Event: {event}" for event in AMI_EVENTS]
    return "\n".join(lines) + "\n"


def glue(settings, templates: Path = LOCATION_TEMPLATES) -> dict[str, str]:
    return {"nginx_location": location_config(settings, templates=templates),
            "manager_conf": manager_section(settings)}


def write_glue(module_dir: Path, settings) -> Path:
    """`db/glue.json` of the module in `module_dir` (mode 600: it holds the proxy token and the
    AMI secret), from the template that module ships; whole or not at all."""
    path = module_dir / GLUE_FILE
    write_private(path, json.dumps(glue(settings, module_dir / "web" / "nginx"), indent=1) + "\n")
    return path
