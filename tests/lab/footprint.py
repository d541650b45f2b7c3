"""The lab's own footprint: CPU of each piece (each lab host's systemd services, and the
controller's processes), read from the kernel's cgroup counters over a window, at idle and
under load through the edge. The lab runs every host on the same cores, so what monitoring,
log shipping and the exporters take is taken from the apps: this is how the lab's defaults
are chosen, and how a change to them is checked.

    python -m tests.lab.footprint [--seconds 20] [--rate 0 | --fraction 0.6 --capacity N]
        [--json PATH]

CPU is in per cent of one core (200 % is both cores of a 2-core machine)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.lab.ansible_run import ROOT

# The cgroup v2 hierarchy (on a hybrid host, its "unified" mount: the v1 controllers' own
# cpu.stat files hold no usage).
CGROUP = next(
    p
    for p in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
    if (p / "cgroup.procs").exists()
)


def usage_usec(cpu_stat: Path) -> int:
    for line in cpu_stat.read_text().splitlines():
        key, _sep, value = line.partition(" ")
        if key == "usage_usec":
            return int(value)
    raise ValueError(f"no usage_usec in {cpu_stat}")


def containers() -> dict[str, str]:
    """Each running lab container's full id -> its name."""
    out = subprocess.run(
        ["podman", "ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return dict(line.split(maxsplit=1) for line in out.splitlines() if line.strip())


def container_cgroups(ids: dict[str, str]) -> dict[str, Path]:
    """'host/unit' -> the cgroup holding it, for every service of every lab container."""
    found: dict[str, Path] = {}
    for stat in CGROUP.glob("**/libpod-*/cpu.stat"):
        cid = stat.parent.name.removeprefix("libpod-").removesuffix(".scope")
        name = ids.get(cid)
        if name is None:
            continue
        found[f"{name}/(all)"] = stat.parent
        for unit in stat.parent.glob("system.slice/**/*.service"):
            found[f"{name}/{unit.name.removesuffix('.service')}"] = unit
    return found


def snapshot(groups: dict[str, Path]) -> dict[str, int]:
    values = {}
    for key, path in groups.items():
        try:
            values[key] = usage_usec(path / "cpu.stat")
        except (OSError, ValueError):
            continue  # a unit that stopped meanwhile
    return values


def host_total() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def measure(seconds: float) -> dict[str, Any]:
    """CPU per piece over `seconds`, per cent of one core, largest first."""
    groups = container_cgroups(containers())
    before, busy0 = snapshot(groups), host_total()
    time.sleep(seconds)
    after, busy1 = snapshot(groups), host_total()
    pieces = {
        key: round((after[key] - before[key]) / 1e6 / seconds * 100, 1)
        for key in before.keys() & after.keys()
    }
    busy, total = busy1[0] - busy0[0], busy1[1] - busy0[1]
    cores = os.cpu_count() or 1
    in_containers = sum(v for k, v in pieces.items() if k.endswith("/(all)"))
    return {
        "seconds": seconds,
        "cores": cores,
        "machine_busy_pct": round(busy / total * 100 * cores, 1) if total else None,
        "lab_containers_pct": round(in_containers, 1),
        "pieces": dict(sorted(pieces.items(), key=lambda kv: -kv[1])),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=0.0, help="load through the edge, req/s")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    report: dict[str, Any] = {"idle": measure(args.seconds)}
    if args.rate > 0:
        from tests.lab.edge import edge_load, fetch_pebble_roots

        roots = fetch_pebble_roots(ROOT / ".lab" / "footprint-roots.pem")
        with edge_load(roots, rate=args.rate) as load:
            load.wait_for(args.rate * 3, timeout=30)
            report["load"] = {"rate": args.rate, **measure(args.seconds)}
        report["load"]["failed"] = load.result.totals()["failed"]
    for phase, figures in report.items():
        print(
            f"== {phase}: machine {figures['machine_busy_pct']} %, lab containers "
            f"{figures['lab_containers_pct']} % (of {figures['cores']} cores x 100)"
        )
        for key, value in figures["pieces"].items():
            if value >= 0.5 and not key.endswith("/(all)"):
                print(f"  {value:6.1f} %  {key}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
