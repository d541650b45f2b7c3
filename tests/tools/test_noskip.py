"""tests/helpers/noskip.py: a test that did not run fails the run, and every pytest run whose
rootdir is this repository has the plugin (the root conftest.py's ``pytest_plugins``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.noskip import DISABLE, WHY

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "tests.helpers.noskip"

# Every way a test can not run, beside one that passes.
SUITE = """
import pytest

def test_passes():
    pass

def test_skip():
    pytest.skip("no database here")

@pytest.mark.skipif(True, reason="condition")
def test_skipif():
    pass

@pytest.fixture
def database():
    pytest.skip("skipped in a fixture")

def test_skip_in_a_fixture(database):
    pass

@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False

@pytest.mark.xfail(reason="known bug")
def test_xpass():
    pass
"""
SKIPPED_MODULE = """
import pytest

pytest.importorskip("a_module_that_is_not_installed")

def test_never_collected():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_suite=SUITE, test_skipped_module=SKIPPED_MODULE)
    return pytester


def test_without_the_plugin_the_suite_is_green(suite: pytest.Pytester) -> None:
    # What the plugin is for: none of these outcomes fails a run on its own.
    result = suite.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=4, xfailed=1, xpassed=1)


def test_every_test_that_did_not_run_fails_with_the_plugin(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-p", "no:cacheprovider", "-p", PLUGIN, "test_suite.py")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # skip, xfail and xpass fail the test; skipif and a skip in a fixture fail its setup
    # (counted as errors).
    result.assert_outcomes(passed=1, failed=3, errors=2)
    result.stdout.fnmatch_lines_random(
        [
            f"*SKIPPED, and {WHY}: Skipped: no database here*",
            f"*SKIPPED, and {WHY}: Skipped: condition*",
            f"*SKIPPED, and {WHY}: Skipped: skipped in a fixture*",
            f"*XFAILED, and {WHY}: known bug*",
            f"*XPASSED, and {WHY}: known bug*",
        ]
    )


def test_a_module_skipped_at_collection_fails_the_run(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-p", "no:cacheprovider", "-p", PLUGIN)
    # A collection error stops the run before any test (exit 2): nothing passes.
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [f"SKIPPED at collection, and {WHY}*a_module_that_is_not_installed*"]
    )


def test_the_root_conftest_names_the_plugin() -> None:
    tree = ast.parse((ROOT / "conftest.py").read_text())
    plugins = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and [getattr(t, "id", None) for t in node.targets] == ["pytest_plugins"]
    ]
    assert plugins == [[PLUGIN]], plugins


SKIP_EVERYTHING = """
import pytest

def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.skip(reason="skipped by the test's own plugin"))
"""


def run_a_skipped_repository_test(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest as ``make test-app`` runs it (cwd and rootdir: the repository) on one of this
    file's tests, skipped by a plugin of the run's own: nothing but the root conftest.py
    can turn that skip into a failure."""
    (tmp_path / "fm_skip_everything.py").write_text(SKIP_EVERYTHING)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "fm_skip_everything",
            *args,
            f"{Path(__file__).relative_to(ROOT)}::test_the_root_conftest_names_the_plugin",
        ],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_run_in_the_repository_fails_on_a_skip(tmp_path: Path) -> None:
    run = run_a_skipped_repository_test(tmp_path)
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout + run.stderr
    assert f"SKIPPED, and {WHY}: Skipped: skipped by the test's own plugin" in run.stdout
    assert f"rootdir: {ROOT}" in run.stdout


def test_the_same_run_without_the_plugin_passes(tmp_path: Path) -> None:
    # The documented way out, and the proof that the failure above is the plugin's doing.
    run = run_a_skipped_repository_test(tmp_path, *DISABLE.split())
    assert run.returncode == pytest.ExitCode.OK, run.stdout + run.stderr
    assert "1 skipped" in run.stdout
