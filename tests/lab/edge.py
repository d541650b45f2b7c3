"""The lab's edge as a client sees it: pebble's issuing root to trust, and open-loop load on
the reference app through it (the cluster tests and the benchmark share both)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests.lab.ansible_run import ROOT
from tests.lab.loadgen import LoadGenerator
from tests.lab.topology import LAB_VARS, LB_IP

SITE = LAB_VARS["lab_site_name"]
PEBBLE_MGMT = "https://10.89.50.5:15000"  # pebble's management API (lab/lab.py: acme)


def fetch_pebble_roots(dest: Path) -> Path:
    """Pebble's issuing root (it changes with every pebble start), written to `dest`."""
    out = subprocess.run(
        ["curl", "-sf", "-m", "5", "--cacert", str(ROOT / ".lab/pebble/ca.pem"),
         f"{PEBBLE_MGMT}/roots/0"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    dest.write_text(out.stdout)
    return dest


def edge_load(roots: Path, port: int = 443, **options: Any) -> LoadGenerator:
    """Open-loop load on the notes app through the edge, verified against pebble's roots; a
    pool as large as rate x timeout, so a slow second is measured as latency instead of
    queueing in the client."""
    peak = max((r for _seconds, r in options.get("profile", ())), default=options.get("rate", 1))
    options.setdefault("timeout", 2.0)
    url = f"https://{SITE}" + ("" if port == 443 else f":{port}")
    return LoadGenerator(
        url, cafile=roots, resolve={SITE: LB_IP},
        max_connections=int(peak * options["timeout"]) + 10, **options,
    )  # fmt: skip
