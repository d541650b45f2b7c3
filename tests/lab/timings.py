"""How long the deploy takes on the lab, written to a JSON file (``make timings``).

    python -m tests.lab.timings [--out .lab/results/timings.json] [--apps 8]

Needs a converged lab (``make lab``) and changes it: it deploys a copy of the checkout with
another version (release B: same code, no new migration) and back, so what is measured is
the deploy's own machinery. In order:

* ``facts``: a play that only gathers facts on every host: the floor of any run;
* ``site_rerun``: ``site.yml`` on the converged lab (must change nothing);
* ``upgrade_a_b_cold``: ``rolling_upgrade.yml`` to B, B never built before;
* ``upgrade_b_a_cached`` and ``upgrade_a_b_cached``: back to the checkout's release and to B
  again, both already built (the build cache answers);
* then back to the checkout's release, untimed.

With ``--apps N`` (N > 2) the lab then scales out to N app hosts (``lab.py up --apps N``,
its own inventory) and, under ``scale``:

* ``converge``: one ``site.yml`` on the N-host lab (N - 2 new hosts): it must work first time;
* ``site_rerun``, ``upgrade_a_b_cold``, ``upgrade_b_a_cached``, ``upgrade_a_b_cached``: as
  above, on N app hosts;
* ``scale_in``: back to two app hosts (``lab.py up --apps 2``, ``site.yml``), timed too.

Each entry: seconds, rc, changed, hosts and the five slowest tasks. ``ratios`` compares them
with the targets of the deploy contract (rerun <= 5x facts; A->B cached <= 30 s for 2 hosts;
N hosts <= 2x the time of 2). Nothing here is a test: the numbers are for people, before and
after a change.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.lab.ansible_run import INVENTORY, ROOT, PlaybookRun, run_playbook
from tests.lab.releases import make_release

# The reference app, one of the lab's three: the timed deploys are its.
NOTES: dict[str, object] = {"fastapi_metal_app": "notes"}

# ansible.posix.profile_tasks' recap: "role : Task name ----------- 2.11s"
PROFILE_LINE = re.compile(r"^(?P<task>\S.*?) -{3,} (?P<seconds>\d+\.\d+)s$", re.M)
FACTS_ONLY = "- name: Gather facts only\n  hosts: all\n  gather_facts: true\n  tasks: []\n"


def summary(run: PlaybookRun) -> dict[str, Any]:
    slowest = [
        {"task": m["task"], "seconds": float(m["seconds"])}
        for m in PROFILE_LINE.finditer(run.output.split("TASKS RECAP")[-1])
    ][:5]
    return {
        "seconds": round(run.seconds, 1),
        "rc": run.rc,
        "changed": run.changed,
        "hosts": len(run.recap),
        "slowest": slowest,
    }


def must(run: PlaybookRun, what: str) -> PlaybookRun:
    if run.rc != 0:
        sys.exit(f"timings: {what} failed (rc={run.rc}); the lab is not converged:\n{run.tail()}")
    return run


def lab_up(apps: int) -> Path:
    """Bring the lab to `apps` app hosts; the inventory that describes it."""
    cmd = [sys.executable, str(ROOT / "lab/lab.py"), "up", "--apps", str(apps)]
    subprocess.run(cmd, check=True)
    return INVENTORY if apps == 2 else ROOT / ".lab/inventory"


def deploys(b: dict[str, object], inventory: Path = INVENTORY) -> dict[str, Any]:
    """A->B never built, B->A and A->B both cached, then back to A (untimed)."""
    out: dict[str, Any] = {}
    steps: list[tuple[str, dict[str, object]]] = [
        ("upgrade_a_b_cold", b),
        ("upgrade_b_a_cached", NOTES),
        ("upgrade_a_b_cached", b),
    ]
    for name, extra in steps:
        run = run_playbook("rolling_upgrade.yml", extra=extra, inventory=inventory)
        out[name] = summary(must(run, name.replace("_", " ")))
    must(
        run_playbook("rolling_upgrade.yml", extra=NOTES, inventory=inventory),
        "the way back to the checkout's release",
    )
    return out


def scale(apps: int, tmp: Path) -> dict[str, Any]:
    """Scale out to `apps` app hosts with one site.yml, deploy there, and scale back in."""
    out: dict[str, Any] = {"apps": apps}
    inventory = lab_up(apps)
    out["converge"] = summary(
        must(run_playbook("site.yml", inventory=inventory), f"site.yml scaling out to {apps}")
    )
    out["site_rerun"] = summary(
        must(run_playbook("site.yml", inventory=inventory), f"site.yml (rerun, {apps} app hosts)")
    )
    b = {**NOTES, "fastapi_app_source": str(make_release(tmp / f"b{apps}", "base", "99.0.1"))}
    out.update(deploys(b, inventory))
    lab_up(2)
    out["scale_in"] = summary(must(run_playbook("site.yml"), "site.yml scaling back in to 2"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".lab/results/timings.json")
    parser.add_argument(
        "--apps",
        type=int,
        default=2,
        choices=range(2, 9),
        metavar="2-8",
        help="then scale out to N app hosts (2: no scaling)",
    )
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit.stdout.strip(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        facts_play = ROOT / "playbooks" / f".timings-facts-{time.monotonic_ns()}.yml"
        facts_play.write_text(FACTS_ONLY)
        try:
            results["facts"] = summary(must(run_playbook(facts_play.name), "the facts play"))
        finally:
            facts_play.unlink()
        must(run_playbook("site.yml"), "site.yml")  # converged before the rerun is timed
        results["site_rerun"] = summary(must(run_playbook("site.yml"), "site.yml (rerun)"))

        b: dict[str, object] = {
            **NOTES,
            "fastapi_app_source": str(make_release(Path(tmp) / "b", "base", "99.0.0")),
        }
        results.update(deploys(b))
        if args.apps > 2:
            results["scale"] = scale(args.apps, Path(tmp))

    facts = results["facts"]["seconds"]
    results["ratios"] = {
        "site_rerun_over_facts": round(results["site_rerun"]["seconds"] / facts, 1),
        "target_site_rerun_over_facts": 5,
        "upgrade_a_b_cached_seconds": results["upgrade_a_b_cached"]["seconds"],
        "target_upgrade_a_b_cached_seconds_2_hosts": 30,
    }
    if "scale" in results:
        many, n = results["scale"], args.apps
        for name in ("site_rerun", "upgrade_a_b_cached"):
            ratio = many[name]["seconds"] / results[name]["seconds"]
            results["ratios"][f"{name}_{n}_over_2"] = round(ratio, 2)
        results["ratios"][f"target_{n}_over_2"] = 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["ratios"], indent=2))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
