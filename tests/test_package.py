"""The module as the PBX marketplace takes it: `module.json` with the fields MikoPBX reads, and
`extcdr package` building a reproducible archive with module.json at its root and nothing of
the tests, data or virtualenv."""
import ast
import configparser
import hashlib
import json
import re
import zipfile

from pbxmodule import package
from tests.conftest import ROOT

DESCRIPTION = package.manifest(ROOT)      # module.json with the release's licence ids


def test_module_json_has_what_mikopbx_reads():
    d = DESCRIPTION
    assert re.fullmatch(r"Module[A-Za-z0-9]+", d["moduleUniqueID"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", d["version"])
    assert re.fullmatch(r"\d{4}\.\d+\.\d+", d["min_pbx_version"])
    assert d["developer"].strip()
    assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", d["support_email"])
    assert isinstance(d["lic_product_id"], int) and isinstance(d["lic_feature_id"], int)
    # MIKO's own paid ModuleExtendedCDRs has 191/55: never ship them (setup.cfg holds ours).
    assert (d["lic_product_id"], d["lic_feature_id"]) != (191, 55)
    assert "lic_product_id" not in json.loads((ROOT / "module.json").read_text())
    assert isinstance(d["release_settings"]["publish_release"], bool)
    assert set(d["wiki_links"]) >= {"ru", "en"}
    assert all(url.startswith("https://") for url in d["wiki_links"].values())
    # ... ours, from setup.cfg: never the pages of MIKO's module.
    assert "wiki_links" not in json.loads((ROOT / "module.json").read_text())
    assert not any("module-extended-cdr" in url for url in d["wiki_links"].values())
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert d["version"] == setup["metadata"]["version"]


def test_the_archive_is_reproducible_and_holds_the_module_only(cli, tmp_path):
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    code, out, _ = cli("package", "--out", first, "--without-runtime")
    assert code == 0
    built = json.loads(out)
    assert cli("package", "--out", second, "--without-runtime")[0] == 0
    assert first.read_bytes() == second.read_bytes()
    assert built["sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
    assert built["version"] == DESCRIPTION["version"]
    with zipfile.ZipFile(first) as archive:
        names = archive.namelist()
        assert json.loads(archive.read("module.json")) == DESCRIPTION
        assert archive.testzip() is None
        assert (archive.getinfo("bin/extcdr").external_attr >> 16) & 0o111
    assert {"cli/__init__.py", "daemon/resident.py", "web/__init__.py", "mirror/schema.py",
            "setup.cfg", "Setup/PbxExtensionSetup.php", "Lib/ExtendedCDRConf.php",
            "Lib/WorkerExtendedCDR.php", "App/Controllers/ModuleExtendedCDRController.php",
            "Messages/en.php", "Messages/ru.php"} <= set(names)
    # Every page template, script and style the module serves is in it.
    served = {p.relative_to(ROOT).as_posix() for folder in ("web/templates", "web/static",
                                                            "web/nginx")
              for p in (ROOT / folder).rglob("*") if p.is_file()}
    assert served - set(names) == set()
    assert "web/templates/reports/list.html" in names
    assert not [n for n in names if n.startswith(("tests/", "standin/", ".venv/", ".demo/", ".git",
                                                  "db/", "bin/demo", "bin/test", "bin/bench"))
                or n.endswith((".db", ".pyc")) or "__pycache__" in n]


def test_the_archives_python_imports_nothing_of_the_stand_in(cli, tmp_path):
    """What a PBX runs must work without the development tree's stand-in PBX: no module of the
    archive imports `standin`, at the top or inside a function."""
    out = tmp_path / "m.zip"
    assert cli("package", "--out", out, "--without-runtime")[0] == 0
    with zipfile.ZipFile(out) as archive:
        sources = {n: archive.read(n).decode() for n in archive.namelist() if n.endswith(".py")}
        launcher = archive.read("bin/extcdr").decode()
    assert len(sources) > 40
    found = []
    for name, text in sources.items():
        for node in ast.walk(ast.parse(text, name)):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            found += [f"{name}: {m}" for m in modules if m.split(".")[0] == "standin"]
    assert found == []
    # The launcher runs the production command line when the stand-in is not beside it.
    assert 'exec "$VENV/bin/python" -P -m cli "$@"' in launcher


def test_a_missing_folder_is_a_clear_error(cli, tmp_path):
    code, _, err = cli("package", "--out", tmp_path / "nowhere" / "m.zip")
    assert code == 2 and "no such directory" in err
