"""A role's defaults as values: defaults/main.yml, where a default an app of
fastapi_metal_apps may override (``{{ fastapi_app_entry.X | default(LITERAL) }}``) counts as
its literal fallback."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ENTRY = re.compile(r"^\{\{\s*fastapi_app_entry\.(\w+)\s*\|\s*default\((.*)\)\s*\}\}$", re.S)
JINJA_WORDS = {"true": "True", "false": "False", "none": "None"}


def literal(name: str, value: Any, internal: dict[str, Any]) -> Any:
    """The fallback of an entry-overridable default when it is a literal (or names one of
    the role's internal values in vars/main.yml), else the value."""
    m = ENTRY.match(value) if isinstance(value, str) else None
    if not m or m[1] != name:
        return value
    if m[2].strip() in internal:
        return internal[m[2].strip()]
    text = JINJA_WORDS.get(m[2].strip(), m[2])
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return "{{ " + m[2] + " }}"  # a template fallback stays a template


def role_defaults(role: str) -> dict[str, Any]:
    path = ROOT / "roles" / role / "defaults" / "main.yml"
    raw: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    internal_path = ROOT / "roles" / role / "vars" / "main.yml"
    internal = yaml.safe_load(internal_path.read_text()) or {} if internal_path.exists() else {}
    return {name: literal(name, value, internal) for name, value in raw.items()}
