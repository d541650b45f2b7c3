"""pytest plugin: a test that did not run is a failed test.

A skip (``pytest.skip``, ``skipif``, ``importorskip``, a skipped module) or an expected failure
(``xfail``, and an ``xfail`` that passed) leaves a run green while the check it stands for
never ran: a missing PostgreSQL, a role variable that went away, a host that was not there.
This plugin turns each of them into a failure of that test, with its reason, so the run fails.

Always on, not only when ``CI`` is set: ``make test`` is what CI runs (``.ci/run``) and must
give the same verdict on a workstation, and a guard that depends on the CI runner exporting a
variable is off without anyone noticing on a runner that does not. To explore locally with
skips allowed, pass ``-p no:tests.helpers.noskip`` explicitly; ``make`` never does.

Loaded by the repository's root ``conftest.py`` (``pytest_plugins``), so it covers every pytest
run whose rootdir is the repository: ``make test-app`` and molecule's testinfra verifier, which
runs pytest in the scenario's directory on ``molecule/<scenario>/tests/test_*.py`` (pytest
finds ``pyproject.toml``'s ``[tool.pytest.ini_options]`` above them: rootdir is the repository).
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

DISABLE = "-p no:tests.helpers.noskip"
WHY = "a test that did not run fails the run (tests/helpers/noskip.py)"


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The skip's or xfail's own reason, as pytest recorded it."""
    wasxfail = getattr(report, "wasxfail", None)
    if wasxfail is not None:
        return str(wasxfail) or "(no reason given)"
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        path, lineno, message = longrepr
        return f"{message} ({path}:{lineno})"
    return str(longrepr)


def _fail(report: pytest.TestReport | pytest.CollectReport, what: str) -> None:
    reason = _reason(report)
    if hasattr(report, "wasxfail"):
        del report.wasxfail
    report.outcome = "failed"
    report.longrepr = f"{what}, and {WHY}: {reason}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # tryfirst: the outermost wrapper, so it sees the report after the skipping plugin
    # turned an xfail into "skipped" (or an unexpected pass into "passed" with wasxfail).
    report = yield
    if report.skipped:
        _fail(report, "SKIPPED" if not hasattr(report, "wasxfail") else "XFAILED")
    elif report.passed and hasattr(report, "wasxfail"):
        _fail(report, "XPASSED")
    return report


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    # A module skipped as a whole (importorskip, skip(allow_module_level=True)).
    report = yield
    if report.skipped:
        _fail(report, "SKIPPED at collection")
    return report
