# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""Writing an environment file that systemd reads back byte for byte (EnvironmentFile=).

systemd parses a double-quoted value like a POSIX shell's double-quoted string, without any
expansion: a backslash keeps the next character when it is one of ``"``, ``\\``, `` ` `` or
``$`` and is kept itself before any other character. Escaping exactly those four is therefore
lossless for every value without a newline, carriage return or NUL (those are refused: a
newline would end or continue the line, NUL cannot be passed in an environment). The file is
UTF-8, written as is (no ``\\u`` escapes, which systemd would keep as six characters).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FORBIDDEN = {"\n": "a newline", "\r": "a carriage return", "\0": "a NUL byte"}


def env_value(value: Any) -> str:
    """A value as the environment holds it (numbers and booleans as Jinja's ``string``)."""
    return "" if value is None else str(value)


def env_problem(key: Any, value: Any) -> str | None:
    """Why ``key=value`` cannot go into an environment file, or None; never quotes the value."""
    if not isinstance(key, str) or not ENV_KEY.match(key):
        return (
            f"the key {key!r} is not an environment variable name (letters, digits and _, not "
            "starting with a digit, e.g. DATABASE_URL)"
        )
    if isinstance(value, (Mapping, list, tuple)):
        return f"the value of {key} is a {type(value).__name__}, expected a string or a number"
    text = env_value(value)
    for char, name in FORBIDDEN.items():
        if char in text:
            return f"the value of {key} holds {name}, which an environment file cannot carry"
    return None


def quote(value: Any) -> str:
    text = env_value(value)
    return '"' + re.sub(r'(["\\`$])', r"\\\1", text) + '"'
