# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""Action plugin of fastapi_metal.stack.inventory_check: the inventory's rules."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ansible.module_utils.common.yaml import yaml_load
from ansible.plugins.action import ActionBase
from ansible.utils.vars import load_extra_vars
from ansible_collections.fastapi_metal.stack.plugins.plugin_utils.inventory_rules import (
    FORMS,
    apps_problems,
    for_role,
    form_problems,
    groups_problem,
    rule_problems,
)


def role_variables(role: str) -> list[str]:
    """A role of this collection's variables: the options of its argument specs."""
    path = Path(__file__).resolve().parents[2] / "roles" / role / "meta" / "argument_specs.yml"
    specs = yaml_load(path.read_text())["argument_specs"]
    return sorted({name for entry in specs.values() for name in entry.get("options", {})})


def plain(value: Any) -> Any:
    """Every nested value rendered now (a lazy container would render on first access)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class ActionModule(ActionBase):  # type: ignore[misc]  # ansible ships no type information
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        _spec, args = self.validate_argument_spec(
            argument_spec={"prefixes": {"type": "list", "elements": "str", "default": []}}
        )
        prefixes: list[str] = args["prefixes"]
        variables = task_vars or {}
        templar = self._templar.copy_with_new_env(available_variables=variables)
        rendered: dict[str, Any] = {}
        errors: dict[str, str] = {}

        def render(var: str) -> Any:
            if var not in rendered:
                try:
                    rendered[var] = plain(templar.template(variables[var]))
                except Exception as exc:
                    errors[var] = str(exc)
                    rendered[var] = None
            return rendered[var]

        def get(var: str, default: Any) -> Any:
            return render(var) if var in variables else default

        def render_error(var: str) -> str | None:
            if var in variables:
                render(var)
            return errors.get(var)

        # A vaulted value that cannot be decrypted would fail wherever it is first used: it
        # fails here, saying how to unlock the vault. Vaulted variables are named vault_*.
        vaulted = [] if prefixes else sorted(k for k in variables if k.startswith("vault_"))
        locked = [k for k in vaulted if render_error(k)]
        if locked:
            result.update(failed=True, msg=(
                f"vault: the vault is locked - the vaulted variables {', '.join(vaulted)} cannot "
                f"be decrypted ({', '.join(locked)}). Give its password with "
                "--vault-password-file FILE, --ask-vault-pass or ANSIBLE_VAULT_PASSWORD_FILE=FILE."
            ))  # fmt: skip
            return result
        empty = [k for k in vaulted if str(render(k)) == ""]
        if empty:
            result.update(failed=True, msg=(
                f"vault: expected a value in every vault_* variable; {', '.join(empty)} is empty "
                "(e.g. ansible-vault encrypt_string --name vault_notes_db_password 'VALUE' >> "
                "group_vars/all/vault.yml)"
            ))  # fmt: skip
            return result

        groups: Mapping[str, list[str]] = variables.get("groups", {})
        app_hosts = list(groups.get("app", []))
        hostvars = variables.get("hostvars")
        missing_url = []
        for host in app_hosts if "fastapi_metal_apps" not in variables else []:
            raw = hostvars.raw_get(host) if hostvars is not None else {}
            env = raw.get("fastapi_app_secret_env") if isinstance(raw, Mapping) else None
            if not (isinstance(env, Mapping) and "DATABASE_URL" in env):
                missing_url.append(host)
        problems = []
        if not prefixes and (problem := groups_problem(groups, missing_url)):
            problems.append(problem)
        # A role checks its own variables (defaults included) wherever it runs; the preflight
        # play checks what the inventory sets, by the groups of the host.
        group_names = ["all", "app", "db", "lb"] if prefixes else variables.get("group_names", [])
        names = [f.var for f in FORMS if f.var.startswith(tuple(prefixes) or "")]
        forms = {v: render(v) for v in names if v in variables and not render_error(v)}
        problems += rule_problems(
            get, lambda var: var in variables, group_names, app_hosts, render_error
        )
        problems += form_problems(forms, group_names)
        if not prefixes and "fastapi_metal_apps" in variables:
            problems += self._apps_problems(variables, get, group_names, app_hosts, render_error)
        if prefixes:
            problems = for_role(problems, prefixes)
        result["checked"] = sorted(v for v in set(names) if v in variables)
        if problems:
            result.update(failed=True, msg="\n".join(problems), problems=problems)
        else:
            result["msg"] = "the inventory and the extra vars are usable"
        return result

    def _apps_problems(
        self,
        variables: Mapping[str, Any],
        get: Any,
        group_names: list[str],
        app_hosts: list[str],
        render_error: Any,
    ) -> list[str]:
        """fastapi_metal_apps: every entry checked as an app, against the others and against
        what the inventory and the extra vars set for every app."""
        if error := render_error("fastapi_metal_apps"):
            return [
                "fastapi_metal_apps: expected a list of apps the controller can render; it "
                "cannot be rendered (does it refer to a group or variable the inventory "
                f"lacks?): {error}"
            ]
        extra = load_extra_vars(self._loader)
        host = variables.get("inventory_hostname", "")
        hostvars = variables.get("hostvars")
        raw = hostvars.raw_get(host) if hostvars is not None else {}
        inventory_keys = [
            k for k in (raw if isinstance(raw, Mapping) else {}) if k.startswith("fastapi_app_")
        ]
        return apps_problems(
            get("fastapi_metal_apps", None),
            get,
            lambda var: var in variables,
            group_names,
            app_hosts,
            inventory_keys,
            list(extra),
            role_variables("fastapi_app"),
        )
