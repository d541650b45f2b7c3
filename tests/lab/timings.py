"""How long the deploy takes on the lab, written to a JSON file (``make timings``).

    python -m tests.lab.timings [--out .lab/results/timings.json]

Needs a converged lab (``make lab``) and changes it: it deploys a copy of the checkout with
another version (release B: same code, no new migration) and back, so what is measured is
the deploy's own machinery. In order:

* ``facts``: a play that only gathers facts on every host: the floor of any run;
* ``site_rerun``: ``site.yml`` on the converged lab (must change nothing);
* ``upgrade_a_b_cold``: ``rolling_upgrade.yml`` to B, B never built before;
* ``upgrade_b_a_cached`` and ``upgrade_a_b_cached``: back to the checkout's release and to B
  again, both already built (the build cache answers);
* then back to the checkout's release, untimed.

Each entry: seconds, rc, changed, hosts and the five slowest tasks. ``ratios`` compares them
with the targets of the deploy contract (rerun <= 5x facts; A->B cached <= 30 s for 2 hosts).
Nothing here is a test: the numbers are for people, before and after a change.
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

from tests.lab.ansible_run import ROOT, PlaybookRun, run_playbook
from tests.lab.releases import make_release

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".lab/results/timings.json")
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
            "fastapi_app_source": str(make_release(Path(tmp) / "b", "base", "99.0.0"))
        }
        steps: list[tuple[str, dict[str, object]]] = [
            ("upgrade_a_b_cold", b),
            ("upgrade_b_a_cached", {}),
            ("upgrade_a_b_cached", b),
        ]
        for name, extra in steps:
            results[name] = summary(
                must(run_playbook("rolling_upgrade.yml", extra=extra), name.replace("_", " "))
            )
        must(run_playbook("rolling_upgrade.yml"), "the way back to the checkout's release")

    facts = results["facts"]["seconds"]
    results["ratios"] = {
        "site_rerun_over_facts": round(results["site_rerun"]["seconds"] / facts, 1),
        "target_site_rerun_over_facts": 5,
        "upgrade_a_b_cached_seconds": results["upgrade_a_b_cached"]["seconds"],
        "target_upgrade_a_b_cached_seconds_2_hosts": 30,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["ratios"], indent=2))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
