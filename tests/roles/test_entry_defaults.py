"""The fastapi_app role's defaults read an app's entry first (fastapi_app_entry, one app of
fastapi_metal_apps): rendered by Ansible itself on the controller, every literal default is
the value the docs and the tests read (tests/helpers/role_defaults.py), and an entry's value
wins over it. A default whose Jinja literal Ansible reads otherwise than Python (backslashes)
fails here, not in a deploy."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.role_defaults import role_defaults
from tests.lab.ansible_run import ROOT, VENV_BIN, ansible_env

LITERALS = {
    name: value
    for name, value in role_defaults("fastapi_app").items()
    if not (isinstance(value, str) and "{{" in value) and name != "fastapi_app_entry"
}


def render(tmp_path: Path, *extra: str) -> dict[str, Any]:
    play = tmp_path / "render.yml"
    shown = {name: "{{ %s }}" % name for name in LITERALS}  # noqa: UP031 - Jinja braces
    play.write_text(json.dumps([{
        "hosts": "localhost", "gather_facts": False, "connection": "local",
        "roles": [{"role": "fastapi_app", "tags": ["never"]}],
        "tasks": [{"name": "Show", "ansible.builtin.debug": {"msg": shown}}],
    }]))  # fmt: skip
    env = dict(ansible_env(), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    env["ANSIBLE_CALLBACKS_ENABLED"] = (
        "ansible.builtin.junit"  # not profile_tasks: no lines in the JSON
    )
    env["JUNIT_OUTPUT_DIR"] = str(tmp_path)
    out = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), str(play), "-i", "localhost,", *extra],
        capture_output=True, text=True, cwd=ROOT, env=env, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout)["plays"][0]["tasks"][-1]["hosts"]["localhost"]
    return dict(result["msg"])


def test_every_literal_default_renders_as_written(tmp_path: Path) -> None:
    assert len(LITERALS) > 30  # the role's knobs, not an empty comparison
    assert render(tmp_path) == LITERALS


def test_an_entry_wins_over_the_defaults(tmp_path: Path) -> None:
    entry = {"fastapi_app_port": 8123, "fastapi_app_destructive_patterns": ["DROP"]}
    seen = render(tmp_path, "-e", json.dumps({"fastapi_app_entry": entry}))
    assert seen["fastapi_app_port"] == 8123
    assert seen["fastapi_app_destructive_patterns"] == ["DROP"]
    assert seen["fastapi_app_keep_releases"] == LITERALS["fastapi_app_keep_releases"]


def test_resume_brings_back_every_fact_keep_keeps() -> None:
    """steps/keep.yml keeps __fastapi_app_run_keys; steps/resume.yml must set each of them (a
    key in one list only would carry another app's value, or be reset)."""
    role = ROOT / "roles" / "fastapi_app"
    keys = yaml.safe_load((role / "vars" / "main.yml").read_text())["__fastapi_app_run_keys"]
    tasks = yaml.safe_load((role / "tasks" / "steps" / "resume.yml").read_text())
    resumed = next(t["ansible.builtin.set_fact"] for t in tasks if "ansible.builtin.set_fact" in t)
    assert sorted(resumed) == sorted(keys)
