"""Every role validates its input: meta/argument_specs.yml is complete (issue #7) and matches
defaults/main.yml and the role's README, so a knob cannot be added without a spec."""

from __future__ import annotations

import re
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


# Every option that carries a secret, per role (nested options as parent.child). This list, not
# the options' names, says what a secret is: the spec must mark exactly these `no_log`, in every
# entry point that declares them. A role with no secret is listed with an empty set, so a new
# role has to be classified here.
SECRET_OPTIONS: dict[str, set[str]] = {
    "base": set(),
    "certbot": set(),
    "fastapi_app": {"fastapi_app_secret_env", "fastapi_app_database"},
    # Alertmanager's receivers hold webhook URLs with tokens, SMTP passwords, API keys.
    "monitoring": {"monitoring_alertmanager_receivers"},
    "nginx": set(),
    "pgbackrest": {"pgbackrest_cipher_pass"},
    "postgresql": {"postgresql_databases.password"},
}
# A name that says "secret" must be in SECRET_OPTIONS (a backstop for new options, not the rule).
SECRET_WORD = re.compile(
    r"(^|_)(pass|password|passphrase|secret|token|cipher|hmac|credentials?)(_|$)"
)


def spec_options(role: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(entry point, option path, option) for every option of every entry point, nested too."""
    return [
        (entry, name, opt)
        for entry, body in spec(role).items()
        for name, opt in walk(body.get("options") or {})
    ]


def test_every_role_is_classified_for_secrets() -> None:
    assert sorted(SECRET_OPTIONS) == ROLES


@pytest.mark.parametrize("role", ROLES)
def test_exactly_the_secret_options_are_no_log_in_the_spec(role: str) -> None:
    options = spec_options(role)
    marked = {name for _entry, name, opt in options if opt.get("no_log") is True}
    assert marked == SECRET_OPTIONS[role], "the options marked no_log: true != SECRET_OPTIONS"
    # Each entry point that declares a secret marks it (an entry point may redeclare an option).
    unmarked = [
        f"{entry}: {name}"
        for entry, name, opt in options
        if name in SECRET_OPTIONS[role] and opt.get("no_log") is not True
    ]
    assert unmarked == [], "a secret option without no_log: true"


@pytest.mark.parametrize("role", ROLES)
def test_an_option_named_like_a_secret_is_listed_as_one(role: str) -> None:
    leaves = {name: name.rsplit(".", 1)[-1] for _entry, name, _opt in spec_options(role)}
    named = {name for name, leaf in leaves.items() if SECRET_WORD.search(leaf)}
    assert sorted(named - SECRET_OPTIONS[role]) == [], "named like a secret: list it as one"


@pytest.mark.parametrize("role", ROLES)
def test_the_readme_documents_every_option(role: str) -> None:
    readme = (ROOT / "roles" / role / "README.md").read_text()
    missing = [n for n in spec(role)["main"]["options"] if f"`{n}`" not in readme]
    assert missing == []
