"""Running the collection's modules as Ansible runs them on a host: a Python process of its
own, given its arguments as JSON, answering one JSON object (exit 1 when it failed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
#: Where `make setup` links this checkout as the collection fastapi_metal.stack.
COLLECTIONS = ROOT / ".ansible" / "collections"
PACKAGE = "ansible_collections.fastapi_metal.stack.plugins"


def collection_path() -> str:
    link = COLLECTIONS / "ansible_collections" / "fastapi_metal" / "stack"
    if not (link / "galaxy.yml").is_file():
        raise RuntimeError(f"{link} does not lead to this checkout: run `make setup` first")
    return str(COLLECTIONS)


def run_module(
    name: str,
    args: dict[str, Any],
    *,
    check: bool = False,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    """Run module ``name`` with ``args``; its result, with ``rc`` (the process's exit code)."""
    payload = {"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check, "_ansible_diff": True}}
    proc = subprocess.run(
        [sys.executable, "-m", f"{PACKAGE}.modules.{name}", json.dumps(payload)],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "PYTHONPATH": collection_path(), **(env or {})},
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise AssertionError(
            f"{name} printed no result (rc {proc.returncode}): {proc.stderr[-2000:]}"
        )
    return {**json.loads(lines[-1]), "rc": proc.returncode}
