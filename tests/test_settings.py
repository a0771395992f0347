"""One settings table: TOML file, overrides, one-line errors, README generated from it."""
from pathlib import Path

import pytest

from mirror import settings
from mirror.settings import SettingsError, load

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "extcdr.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file():
    s = load()
    assert s["pbx.cdr_db"] == Path(settings.PBX_CDR_DB)
    assert s["ami.port"] == 5038 and s["calls.callback_window"] == 86_400


def test_file_then_overrides(tmp_path):
    path = write(tmp_path, '[pbx]\ncdr_db = "/tmp/x/cdr.db"\ntimezone = "Europe/Berlin"\n'
                           '[ami]\nport = 15038\nsecret = "s3cret"\n')
    s = load(path, {"ami.port": "25038", "calls.callback_window": None})
    assert s["pbx.cdr_db"] == Path("/tmp/x/cdr.db") and s["pbx.timezone"] == "Europe/Berlin"
    assert s["ami.port"] == 25038 and s["calls.callback_window"] == 86_400
    assert "s3cret" not in s.describe() and "ami.secret=***" in s.describe()


def test_a_pbx_id_names_the_pbx_in_a_central_history(tmp_path):
    assert load()["pbx.id"] == ""
    s = load(write(tmp_path, "[pbx]\nid = 'office-2'\n"))
    assert s["pbx.id"] == "office-2" and "pbx.id=office-2" in s.describe()


@pytest.mark.parametrize("text, words", [
    ("[pbx]\ncdr_dbb = '/x'\n", "unknown setting 'pbx.cdr_dbb'"),
    ("[nonsense]\nx = 1\n", "unknown setting 'nonsense.x'"),
    ("[ami]\nport = 'five'\n", "setting 'ami.port' must be a whole number"),
    ("[ami]\nport = 0\n", "setting 'ami.port' must be at least 1"),
    ("[ami]\nenabled = 'maybe'\n", "setting 'ami.enabled' must be true or false"),
    ("[calls]\ncallback_window = 1.5\n", "must be a whole number"),
    ("[pbx]\ntimezone = 'Mars/Olympus'\n", "must be an IANA timezone"),
    ("[pbx]\ntimezone = 3\n", "setting 'pbx.timezone' must be text"),
    ("[pbx]\nid = 'Office 2'\n", "setting 'pbx.id' must be 1-32 of a-z, 0-9 and '-'"),
    ("[pbx]\nid = '-office'\n", "setting 'pbx.id' must be 1-32 of a-z, 0-9 and '-'"),
    ("[pbx]\nid = 'office:2'\n", "setting 'pbx.id' must be 1-32 of a-z, 0-9 and '-'"),
    ("[pbx]\nid = '" + "a" * 33 + "'\n", "setting 'pbx.id' must be 1-32 of a-z, 0-9 and '-'"),
    ("[log]\nlevel = 'loud'\n", "must be one of debug, info, warning, error"),
    ("[web]\npublish_url = 'ftp://127.0.0.1/x'\n", "'web.publish_url' must be an http:// URL"),
    ("[web]\npublish_url = 'http://'\n", "'web.publish_url' must be an http:// URL"),
    ("[licence]\ncore_url = 'http://192.0.2.1/pbxcore/api/modules/ModuleExtendedCDR/licence'\n",
     "'licence.core_url' must be an http:// URL on this machine"),
    ("port = 1\n", "'port' must be a [section]"),
    ("[ami\nport = 1\n", "not valid TOML"),
])
def test_bad_settings_name_the_key(tmp_path, text, words):
    with pytest.raises(SettingsError) as error:
        load(write(tmp_path, text))
    assert words in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(SettingsError, match="No such file"):
        load(tmp_path / "none.toml")


def test_readme_configuration_table_is_generated_from_the_settings():
    readme = (ROOT / "README.md").read_text()
    assert settings.readme_table() in readme
