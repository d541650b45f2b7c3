"""Every molecule scenario's verifier finds tests: molecule's testinfra verifier prints
"Skipping, no tests found." and succeeds when its directory holds no test_*.py, so a moved
directory or a renamed file would leave a green verify that ran nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.parent for p in (ROOT / "molecule").glob("*/molecule.yml"))


def test_the_scenarios_are_found() -> None:
    assert {p.name for p in SCENARIOS} >= {"base", "cluster", "edge", "postgresql"}, SCENARIOS


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_the_verifier_directory_holds_test_functions(scenario: Path) -> None:
    config = yaml.safe_load((scenario / "molecule.yml").read_text())
    verifier = config.get("verifier") or {}
    assert verifier.get("name") == "testinfra", verifier
    directory = (scenario / verifier.get("directory", "tests")).resolve()
    # The same search as molecule's: test_*.py anywhere under the directory.
    files = sorted(directory.rglob("test_*.py"))
    tests = [f for f in files if re.search(r"^def test_", f.read_text(), re.M)]
    assert tests, f"{scenario.name}: no test function under {directory}"
