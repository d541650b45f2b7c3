"""Every role validates its input: meta/argument_specs.yml is complete (issue #7) and matches
defaults/main.yml and the role's README, so a knob cannot be added without a spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.role_defaults import role_defaults
from tests.lab.ansible_run import ROOT

ROLES = sorted(p.parent.parent.name for p in (ROOT / "roles").glob("*/meta/argument_specs.yml"))


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) or {}


def spec(role: str) -> dict[str, Any]:
    return load(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]


def defaults(role: str) -> dict[str, Any]:
    return role_defaults(role)


def walk(options: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, opt in options.items():
        out.append((path + name, opt))
        out += walk(opt.get("options") or {}, f"{path}{name}.")
    return out


def test_every_role_has_argument_specs() -> None:
    roles = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())
    assert roles == ROLES


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_specified_and_every_option_has_a_default(role: str) -> None:
    options = spec(role)["main"]["options"]
    knobs = defaults(role)
    assert sorted(set(knobs) - set(options)) == [], "in defaults/main.yml but not in the spec"
    unset = [n for n, o in options.items() if n not in knobs and not o.get("required")]
    assert unset == [], "specified but neither required nor in defaults/main.yml"


@pytest.mark.parametrize("role", ROLES)
def test_every_option_has_a_type_and_a_description(role: str) -> None:
    for entry, body in spec(role).items():
        assert body.get("short_description"), entry
        for name, opt in walk(body.get("options") or {}):
            assert opt.get("type"), f"{entry}: {name} has no type"
            assert opt.get("description"), f"{entry}: {name} has no description"
            if opt["type"] in ("list",) and "elements" not in opt:
                pytest.fail(f"{entry}: {name} is a list without elements")
            if "choices" in opt and "default" in opt:
                assert opt["default"] in opt["choices"], f"{entry}: {name}"


@pytest.mark.parametrize("role", ROLES)
def test_spec_defaults_match_defaults_main(role: str) -> None:
    options = spec(role)["main"]["options"]
    for name, value in defaults(role).items():
        opt = options.get(name, {})
        templated = "{{" in repr(value)
        if opt.get("required"):
            # A required knob may only hold an empty placeholder in defaults/main.yml (which
            # satisfies `required` for ansible's validation: the role's preflight checks it).
            assert value in ("", [], {}, None), f"{name}: required, yet defaults to {value!r}"
        elif "default" in opt:
            assert opt["default"] == value, f"{name}: spec {opt['default']!r} != defaults {value!r}"
        else:
            assert templated, f"{name}: a literal default {value!r} missing from the spec"


@pytest.mark.parametrize("role", ROLES)
def test_secrets_are_no_log_in_the_spec(role: str) -> None:
    for body in spec(role).values():
        for name, opt in walk(body.get("options") or {}):
            leaf = name.rsplit(".", 1)[-1]
            if any(word in leaf for word in ("password", "secret", "token")):
                assert opt.get("no_log") is True, f"{name} carries a secret: no_log: true"


@pytest.mark.parametrize("role", ROLES)
def test_the_readme_documents_every_option(role: str) -> None:
    readme = (ROOT / "roles" / role / "README.md").read_text()
    missing = [n for n in spec(role)["main"]["options"] if f"`{n}`" not in readme]
    assert missing == []
