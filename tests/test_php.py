"""The PHP glue Core loads (Setup/, Lib/, App/, Messages/): every file lints with `php -l`,
parses as PHP 7.4 (2024.1 runs 7.4, 2026.1 runs 8.4), and its phpunit suite passes against
stubs of Core's signatures from each platform (standin/core/stubs/<profile>/Core.php)."""
import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

GLUE = sorted(p for folder in ("Setup", "Lib", "App", "Messages")
              for p in (ROOT / folder).rglob("*.php"))
PROFILES = ("2024.1", "2026.1")


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed (./bin/test installs php8.2-cli php8.2-ast phpunit)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_the_glue_is_all_there():
    names = {p.relative_to(ROOT).as_posix() for p in GLUE}
    assert {"Setup/PbxExtensionSetup.php", "Lib/ExtendedCDRConf.php", "Lib/WorkerExtendedCDR.php",
            "App/Controllers/ModuleExtendedCDRController.php", "Messages/en.php",
            "Messages/ru.php"} <= names


@pytest.mark.parametrize("path", GLUE, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_php_file_lints(path):
    done = subprocess.run([tool("php"), "-l", path], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_php_file_parses_as_php_7_4():
    done = subprocess.run([tool("php"), ROOT / "tests/php/php74_guard.php", *GLUE],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_guard_catches_php_8_syntax(tmp_path):
    newer = tmp_path / "newer.php"
    newer.write_text("<?php\nclass A { public function __construct(private int $x) {} }\n"
                     "$y = match (1) { 1 => 2 };\n$z = $a?->b;\nfunction f(int|string $a, $b,) {}\n")
    done = subprocess.run([tool("php"), ROOT / "tests/php/php74_guard.php", newer],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert [line.split(": ", 1)[1] for line in done.stdout.splitlines()] == [
        "a promoted constructor parameter (8.0)", "match (8.0)", "?-> (8.0)",
        "a union type (8.0)", "a trailing comma in a parameter list (8.0)"]


def test_every_message_file_names_the_module():
    for language in ("en", "ru"):
        done = subprocess.run(
            [tool("php"), "-r", "echo json_encode(require $argv[1]);",
             ROOT / "Messages" / f"{language}.php"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert {"BreadcrumbModuleExtendedCDR", "SubHeaderModuleExtendedCDR"} <= set(
            __import__("json").loads(done.stdout))


@pytest.mark.parametrize("profile", PROFILES)
def test_the_glue_works_against_core(profile):
    done = subprocess.run([tool("phpunit"), "-c", ROOT / "tests/php/phpunit.xml"],
                          cwd=ROOT / "tests/php", capture_output=True, text=True, timeout=300,
                          env={**os.environ, "EXTCDR_CORE_PROFILE": profile})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "OK (" in done.stdout


def test_a_one_parameter_acl_hook_would_not_load_on_2026(tmp_path):
    """Why the hook has two parameters: the 2024.1 form is a fatal signature mismatch on 2026.1
    (the stubs carry Core's declarations, so the check is real)."""
    old = tmp_path / "old.php"
    old.write_text(
        "<?php\nrequire $argv[1]; require $argv[2];\n"
        "class OldConf extends MikoPBX\\Modules\\Config\\ConfigClass {\n"
        "    public function applyACLFiltersToCDRQuery(array &$parameters): void {}\n}\n"
        "echo 'loaded';\n")
    stubs = ROOT / "standin/core/stubs"
    for profile, loads in (("2024.1", True), ("2026.1", False)):
        done = subprocess.run([tool("php"), old, stubs / "common.php", stubs / profile / "Core.php"],
                              capture_output=True, text=True, timeout=60)
        assert (done.stdout == "loaded") is loads, (profile, done.stdout, done.stderr)
