"""The alert rules (roles/monitoring/templates/rules.yml.j2), rendered with the role's
defaults as the role renders them, checked and unit-tested by promtool (Debian's, the same
version as the monitoring hosts run): every rule fires in one case and stays quiet in
another (alert_rules_test.yml), and every threshold moved a little either way fails them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from tests.helpers.role_defaults import role_defaults
from tests.lab.ansible_run import ROOT

TEMPLATE = ROOT / "roles" / "monitoring" / "templates" / "rules.yml.j2"
TESTS = Path(__file__).with_name("alert_rules_test.yml")
# `make setup` unpacks Debian's prometheus package here (promtool without a service).
PROMTOOL = Path(
    os.environ.get("PROMTOOL", ROOT / ".lab" / "promtool" / "root" / "usr" / "bin" / "promtool")
)


def render(**overrides: object) -> str:
    env = jinja2.Environment(
        variable_start_string="[%", variable_end_string="%]", undefined=jinja2.StrictUndefined
    )
    return env.from_string(TEMPLATE.read_text()).render(
        {**role_defaults("monitoring"), **overrides}
    )


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if not PROMTOOL.is_file():
        pytest.fail(f"promtool is missing at {PROMTOOL}: run `make setup`")
    return subprocess.run(
        [str(PROMTOOL), *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def rules(text: str) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in yaml.safe_load(text)["groups"] for r in g["rules"]}


def rule_names(text: str) -> list[str]:
    return [r["alert"] for g in yaml.safe_load(text)["groups"] for r in g["rules"]]


def test_the_rules_are_valid(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(render())
    checked = promtool("check", "rules", "rules.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rule_names(render()))} rules found" in checked.stdout


SERIES = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{(.*)\}\s*$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"([^"]*)"')


def parse_series(series: str) -> tuple[str, dict[str, str]]:
    """'metric{k="v", ...}' as (metric, labels)."""
    m = SERIES.match(series)
    assert m, f"cannot read the series {series!r}"
    return m[1], dict(LABEL.findall(m[2]))


def quiet_series(rule: dict[str, Any], case: dict[str, Any], check: dict[str, Any]) -> list[str]:
    """The input series of a case that show a firing check's rule staying quiet: a series of a
    metric the rule's expr reads, that none of the expected alerts is about (promtool compares
    exp_alerts exhaustively, so an alert from it would fail the case)."""
    metrics = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["expr"]))
    fired = [
        {k: str(v) for k, v in a["exp_labels"].items() if k not in rule.get("labels", {})}
        for a in check["exp_alerts"]
    ]
    quiet = []
    for s in case["input_series"]:
        metric, labels = parse_series(s["series"])
        if metric in metrics and not any(f.items() <= labels.items() for f in fired):
            quiet.append(s["series"])
    return quiet


def test_every_rule_fires_and_stays_quiet_in_its_unit_tests(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(render())
    shutil.copy(TESTS, tmp_path / TESTS.name)
    tested = promtool("test", "rules", TESTS.name, cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    cases = yaml.safe_load(TESTS.read_text())["tests"]
    by_name = rules(render())
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case["alert_rule_test"]:
            name = check["alertname"]
            # An expectation about a rule that does not exist is quiet for any rules file.
            assert name in by_name, f"a unit test of {name}, which is no rule"
            if not check["exp_alerts"]:
                quiet.add(name)  # explicit: exp_alerts: []
                continue
            firing.add(name)
            # Implicit: another series of a metric the rule reads, which must not fire.
            if quiet_series(by_name[name], case, check):
                quiet.add(name)
    names = list(by_name)
    assert sorted(set(names) - firing) == [], "rules without a firing case"
    assert sorted(set(names) - quiet) == [], (
        "rules without a quiet case: give each an `exp_alerts: []` check, or a second input "
        "series of a metric its expr reads that the expected alerts do not name"
    )


def test_the_unit_tests_can_fail(tmp_path: Path) -> None:
    """The same tests against rules whose thresholds moved fail: they test the rules."""
    (tmp_path / "rules.yml").write_text(
        render(monitoring_alert_edge_5xx_ratio=0.5, monitoring_alert_target_down_for="10m")
    )
    shutil.copy(TESTS, tmp_path / TESTS.name)
    tested = promtool("test", "rules", TESTS.name, cwd=tmp_path)
    assert tested.returncode != 0
    assert "alertname: EdgeErrorRatioHigh" in tested.stdout + tested.stderr
    assert "alertname: TargetDown" in tested.stdout + tested.stderr


# Windows, not thresholds: the cases' series change at a constant rate, which reads the same
# over any window; the annotations name them.
WINDOWS = {"monitoring_alert_edge_window", "monitoring_alert_disk_window"}
THRESHOLDS = sorted(
    k for k in role_defaults("monitoring") if k.startswith("monitoring_alert_") and k not in WINDOWS
)
DURATION = re.compile(r"(\d+)([smh])")
SECONDS = {"s": 1, "m": 60, "h": 3600}
# A count or ratio moves by a quarter, a duration (a `for`) by half or double.
MOVES = {"lower": (0.8, 0.5), "higher": (1.25, 2.0)}


def moved(value: object, direction: str) -> object:
    """A threshold moved: 0.05 -> 0.04 or 0.0625, "2m" -> "60s" or "240s"."""
    by_a_quarter, by_half = MOVES[direction]
    if isinstance(value, str):
        m = DURATION.fullmatch(value)
        assert m, f"not a duration: {value!r}"
        return f"{round(int(m[1]) * SECONDS[m[2]] * by_half)}s"
    if isinstance(value, int):
        return round(value * by_a_quarter)
    assert isinstance(value, float), value
    return value * by_a_quarter


@pytest.mark.parametrize("direction", sorted(MOVES))
@pytest.mark.parametrize("knob", THRESHOLDS)
def test_each_threshold_is_pinned_by_the_cases(tmp_path: Path, knob: str, direction: str) -> None:
    """Each alert threshold, moved either way, fails the unit tests of every rule that uses it:
    the cases sit on both sides of it, close. Only the expr and `for` move; the annotations
    keep the defaults' text, so that the cases, not a message, tell."""
    value = moved(role_defaults("monitoring")[knob], direction)
    base, mutant = rules(render()), rules(render(**{knob: value}))
    changed = {}
    for name, rule in base.items():
        new = mutant[name]
        if (rule["expr"], rule.get("for")) != (new["expr"], new.get("for")):
            changed[name] = {**rule, "expr": new["expr"]} | (
                {"for": new["for"]} if "for" in new else {}
            )
    assert changed, f"{knob} moves no rule's expr or for"
    (tmp_path / "rules.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "moved", "rules": list(changed.values())}]})
    )
    # These rules' checks only (a rules file of the moved rules alone runs in a second).
    tests = yaml.safe_load(TESTS.read_text())
    cases = []
    for case in tests["tests"]:
        checks = [c for c in case["alert_rule_test"] if c["alertname"] in changed]
        if checks:
            cases.append({**case, "alert_rule_test": checks})
    (tmp_path / TESTS.name).write_text(yaml.safe_dump({**tests, "tests": cases}))
    tested = promtool("test", "rules", TESTS.name, cwd=tmp_path)
    out = tested.stdout + tested.stderr
    assert tested.returncode != 0, f"{knob}: {value} passes the unit tests too"
    assert [n for n in changed if f"alertname: {n}," not in out] == [], out[-3000:]
