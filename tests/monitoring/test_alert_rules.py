"""The alert rules (roles/monitoring/templates/rules.yml.j2), rendered with the role's
defaults as the role renders them, checked and unit-tested by promtool (Debian's, the same
version as the monitoring hosts run): every rule fires in one case and stays quiet in
another (alert_rules_test.yml)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

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


def rule_names(text: str) -> list[str]:
    return [r["alert"] for g in yaml.safe_load(text)["groups"] for r in g["rules"]]


def test_the_rules_are_valid(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(render())
    checked = promtool("check", "rules", "rules.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rule_names(render()))} rules found" in checked.stdout


def test_every_rule_fires_and_stays_quiet_in_its_unit_tests(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(render())
    shutil.copy(TESTS, tmp_path / TESTS.name)
    tested = promtool("test", "rules", TESTS.name, cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    cases = yaml.safe_load(TESTS.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        names_in_case = {t["alertname"] for t in case["alert_rule_test"]}
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
        # A case whose expectation names one series as firing is quiet for the others of
        # the same case only if it says so: count explicit [] expectations, or a second
        # series in the input that the expected alerts do not name.
        for check in case["alert_rule_test"]:
            fired = {tuple(sorted(a["exp_labels"].items())) for a in check["exp_alerts"]}
            others = [
                s
                for s in case["input_series"]
                if fired
                and not any(
                    all(
                        f'{k}="{v}"' in s["series"]
                        for k, v in dict(f).items()
                        if k not in ("severity",)
                    )
                    for f in fired
                )
            ]
            if others and names_in_case:
                quiet.add(check["alertname"])
    names = rule_names(render())
    assert sorted(set(names) - firing) == [], "rules without a firing case"
    assert sorted(set(names) - quiet) == [], "rules without a quiet case"


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
