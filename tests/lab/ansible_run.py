"""Run the project's playbooks against the lab from tests, and read what they did."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
INVENTORY = ROOT / "inventories" / "lab"
RUN_LOGS = ROOT / ".lab" / "results" / "playbooks"
RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)",
    re.M,
)


# ansible.posix.profile_tasks prints, under each TASK banner, when the task started:
# "Tuesday 01 December 2026  07:40:01 +0000 (0:00:00.036)       0:00:05.678 ****".
TASK_BANNER = re.compile(
    r"^TASK \[(?P<name>.+?)\] \**\n(?P<when>\w+ \d{2} \w+ \d{4}  \d{2}:\d{2}:\d{2} [+-]\d{4}) \(",
    re.M,
)


@dataclass
class PlaybookRun:
    args: list[str]
    rc: int
    output: str
    seconds: float
    recap: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(h["changed"] for h in self.recap.values())

    def task_starts(self) -> list[tuple[str, float]]:
        """Each task the run started, with when (epoch seconds, whole seconds)."""
        return [
            (m["name"], datetime.strptime(m["when"], "%A %d %B %Y  %H:%M:%S %z").timestamp())
            for m in TASK_BANNER.finditer(self.output)
        ]

    def window(self, *names: str) -> tuple[float, float] | None:
        """From the start of the first task whose name contains one of `names` to the start
        of the task after the last such task (the run's phases, e.g. staging); None if the
        run never started such a task."""
        starts = self.task_starts()
        hits = [i for i, (task, _when) in enumerate(starts) if any(n in task for n in names)]
        if not hits:
            return None
        end = starts[hits[-1] + 1][1] if hits[-1] + 1 < len(starts) else starts[hits[-1]][1] + 1
        return starts[hits[0]][1], max(end, starts[hits[0]][1] + 1)

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
        PATH=f"{VENV_BIN}:{env.get('PATH', '')}",
    )
    return env


# The lab runs the controller, the load generator and every "server" on the same two cores;
# on real servers the controller is another machine and each host has cores of its own, so
# a deploy's work never adds up across hosts as it does here: a site.yml rerun alone took
# 184 % of the lab's 200 % (the modules on five hosts 120 %, the controller about 55 %,
# tests/lab/footprint.py). The lab puts that work where it takes only what the servers leave
# idle: one CPU group of the scheduler (cgroup v1 "cpu", cpu.shares DEPLOY_CPU_SHARES against
# 256-2048 for the lab hosts, lab/lab.py) holding the playbook's processes and every lab
# host's sshd, whose sessions run the modules. What a deploy starts through systemd (a
# restarted service) runs in its host's own group, as on a server. Without that controller
# (a pure cgroup v2 machine), the playbook runs at nice 10 in a session of its own whose
# autogroup is at nice 10 too (a plain nice ranks a process only within its session).
NICE = ["nice", "-n", "10"]
AUTOGROUP_NICE = 10
CPU_V1 = Path("/sys/fs/cgroup/cpu")
DEPLOY_CPU_GROUP = CPU_V1 / "fastapi-metal-deploy"
DEPLOY_CPU_SHARES = 16


def deploy_work_pids() -> list[int]:
    """The sshd processes of every lab host (podman containers: libpod-* CPU groups), and
    the controller's SSH connection masters (ControlPersist), wherever they are now."""

    def matching(procs: Path, wanted: Callable[[bytes], bool]) -> list[int]:
        found = []
        with contextlib.suppress(OSError):
            for pid in procs.read_text().split():
                with contextlib.suppress(OSError):
                    if wanted(Path(f"/proc/{pid}/cmdline").read_bytes()):
                        found.append(int(pid))
        return found

    def sshd(cmd: bytes) -> bool:
        return cmd.startswith((b"sshd:", b"/usr/sbin/sshd"))

    def mux(cmd: bytes) -> bool:
        return cmd.startswith(b"ssh: ") and b"[mux]" in cmd

    pids = [p for procs in CPU_V1.glob("**/libpod-*/cgroup.procs") for p in matching(procs, sshd)]
    return pids + matching(CPU_V1 / "cgroup.procs", mux)


def deprioritise(pid: int) -> None:
    """Give the playbook `pid` (and the lab hosts' sshd) only the CPU the servers leave."""
    with contextlib.suppress(OSError):  # no autogroups, or the run already ended
        Path(f"/proc/{pid}/autogroup").write_text(f"{AUTOGROUP_NICE}\n")
    if not (CPU_V1 / "cpu.shares").exists():
        return
    with contextlib.suppress(OSError):
        DEPLOY_CPU_GROUP.mkdir(exist_ok=True)
        (DEPLOY_CPU_GROUP / "cpu.shares").write_text(f"{DEPLOY_CPU_SHARES}\n")
    procs = DEPLOY_CPU_GROUP / "cgroup.procs"
    for moved in (pid, *deploy_work_pids()):
        with contextlib.suppress(OSError):  # gone meanwhile
            procs.write_text(f"{moved}\n")


def playbook_cmd(
    playbook: str,
    *args: str,
    extra: dict[str, object] | None = None,
    inventory: Path = INVENTORY,
) -> list[str]:
    cmd = [
        *NICE,
        str(VENV_BIN / "ansible-playbook"),
        str(ROOT / "playbooks" / playbook),
        "-i",
        str(inventory),
    ]
    if extra:
        cmd += ["-e", json.dumps(extra)]
    return cmd + list(args)


def run_playbook(
    playbook: str,
    *args: str,
    extra: dict[str, object] | None = None,
    timeout: float = 1200,
    inventory: Path = INVENTORY,
) -> PlaybookRun:
    """Run a playbook to the end; the output is printed so CI logs explain themselves."""
    cmd = playbook_cmd(playbook, *args, extra=extra, inventory=inventory)
    start = time.monotonic()
    with subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=ansible_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        deprioritise(proc.pid)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    run = PlaybookRun(cmd, proc.returncode, stdout + stderr, time.monotonic() - start)
    run.recap = {
        m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
        for m in RECAP.finditer(stdout)
    }
    # Every run's whole output, for the runs whose assertions passed but whose story matters.
    RUN_LOGS.mkdir(parents=True, exist_ok=True)
    log = RUN_LOGS / f"{datetime.now():%H%M%S}-{Path(playbook).stem}-rc{run.rc}.log"
    log.write_text(" ".join(cmd) + "\n\n" + run.output)
    shown = playbook_cmd(playbook, *args, inventory=inventory)  # the extra vars are in the log
    print(f"\n$ {' '.join(shown)}  -> rc={run.rc} in {run.seconds:.1f} s")
    print(f"  output: {log}")
    print(f"  recap: {run.recap}")
    return run


def start_playbook(
    playbook: str, *args: str, extra: dict[str, object] | None = None
) -> subprocess.Popen[str]:
    """Start a playbook in the background (for concurrent-deploy tests)."""
    proc = subprocess.Popen(
        playbook_cmd(playbook, *args, extra=extra),
        cwd=ROOT,
        env=ansible_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deprioritise(proc.pid)
    return proc


def lab_exec(host: str, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Look inside a lab host, as a person would (podman exec)."""
    env = dict(os.environ, CONTAINERS_CONF=str(ROOT / "lab" / "containers.conf"))
    proc = subprocess.run(
        ["podman", "exec", host, "bash", "-c", command],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{host}: {command!r} failed ({proc.returncode}): {proc.stderr}{proc.stdout}"
        )
    return proc
