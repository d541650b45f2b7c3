"""The app unit under a sandbox systemd really applies (the container has CAP_SYS_ADMIN, as a
server's systemd has), and a secret through a real `-v --diff` converge (issue #7)."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

# The log scan is shared with the lab's tests and unit-tested (tests/security/test_logscan.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.helpers.logscan import JOURNAL, scan_for_secrets

NAME = "tiny"
HOST = "fm-sec-app"
# The test secret of molecule.yml, not a real one.
FIRST_TOKEN = "fm-sec-first-token-5b1e0c"  # noqa: S105
NEW_TOKEN = f"fm-sec-{secrets.token_hex(12)}"
# Mounts of the kernel's and of tmpfs: not where the service could leave data behind.
# Paths inside the container that PrivateTmp= replaces with the service's own directories.
PRIVATE_TMP = ("/tmp", "/var/tmp")  # noqa: S108
VIRTUAL = {
    "proc",
    "sysfs",
    "tmpfs",
    "devtmpfs",
    "devpts",
    "mqueue",
    "hugetlbfs",
    "cgroup",
    "cgroup2",
}


def journal(host) -> str:
    return host.run(f"journalctl -u {NAME}.service -u {NAME}.socket --no-pager -n 60").stdout


def main_pid(host) -> int:
    return int(host.check_output(f"systemctl show -p MainPID --value {NAME}.service"))


def mounts(host, pid: int) -> list[tuple[str, list[str], str, str]]:
    """(mount point, options, fstype, source root) of the process's mount namespace."""
    table = []
    for line in host.check_output(f"cat /proc/{pid}/mountinfo").splitlines():
        f = line.split()
        table.append((f[4], f[5].split(","), f[f.index("-") + 1], f[3]))
    return table


def test_the_service_and_its_workers_run_as_the_app_user(host):
    procs = [p.split() for p in host.check_output("ps -e -o unit=,user=,pid=").splitlines()]
    mine = [p for p in procs if p[0] == f"{NAME}.service"]
    if len(mine) < 3:
        pytest.fail(f"expected a master and 2 workers: {mine}\n{journal(host)}")
    assert {p[1] for p in mine} == {NAME}


def test_exposure_is_at_most_2(host):
    out = host.check_output(f"systemd-analyze security {NAME}.service --no-pager")
    level = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out)[1])
    assert level <= 2.0, out


def test_the_sandbox_is_in_effect_and_writable_only_where_the_app_keeps_state(host):
    pid = main_pid(host)
    assert host.check_output(f"readlink /proc/{pid}/ns/mnt") != host.check_output(
        "readlink /proc/1/ns/mnt"
    ), "the service shares PID 1's mount namespace: no sandbox"
    table = mounts(host, pid)
    root = [row[1] for row in table if row[0] == "/"]
    assert "ro" in root[-1], "'/' is writable for the service"
    writable = [
        (p, src) for p, opts, fstype, src in table if "rw" in opts and fstype not in VIRTUAL
    ]
    allowed = {f"/var/lib/{NAME}", "/run/.containerenv"}  # the latter: podman's marker file
    unexpected = [
        (p, src)
        for p, src in writable
        if p not in allowed and not (p in PRIVATE_TMP and "/systemd-private-" in src)
    ]
    assert unexpected == [], unexpected
    # The table was read: the state directory is there, writable.
    assert f"/var/lib/{NAME}" in [p for p, _src in writable], table
    home = [row[0] for row in table if row[0] in ("/home", "/root")]
    assert home, "ProtectHome=true hides /home and /root"


@pytest.mark.parametrize(
    ("path", "writable"),
    [
        (f"/opt/{NAME}/current/", False),
        (f"/opt/{NAME}/current/release/", False),
        (f"/opt/{NAME}/releases/", False),
        (f"/opt/{NAME}/deploys/", False),
        ("/etc/", False),
        ("/usr/local/", False),
        ("/var/log/", False),
        (f"/var/lib/{NAME}/", True),
        (f"/run/{NAME}/", True),
        (f"{PRIVATE_TMP[0]}/", True),
    ],
)
def test_even_root_in_the_services_mount_namespace_writes_only_state_and_runtime(
    host, path, writable
):
    # Root ignores file modes: what stops it here is the read-only mount alone.
    probe = f"{path}.fm-sec-probe"
    out = host.run(f"nsenter -t {main_pid(host)} -m -- sh -c 'touch {probe} && rm {probe}'")
    if writable:
        assert out.rc == 0, out.stderr
    else:
        assert out.rc != 0 and "Read-only file system" in out.stderr, (path, out.stderr)
    # The host's view is untouched either way.
    assert not host.file(probe).exists


def writable_by_the_app(host, *find_args: str) -> list[str]:
    """What the app user may write, by find run as that user; find must have read every
    directory (a path it could not list would hide what is under it)."""
    out = host.run(f"runuser -u {NAME} -- find {' '.join(find_args)} -writable")
    assert out.rc == 0, out.stderr
    return out.stdout.split()


def test_the_app_user_owns_none_of_its_code_or_configuration(host):
    # The probe sees a writable path: the app's state directory.
    assert writable_by_the_app(host, f"/var/lib/{NAME}", "-maxdepth 0") == [f"/var/lib/{NAME}"]
    code = (f"/opt/{NAME}", f"/opt/{NAME}/current/", f"/opt/{NAME}/current/release/")
    assert writable_by_the_app(host, *code) == []


def test_the_env_file_is_0640_root_and_the_app_group(host):
    env = host.file(f"/opt/{NAME}/current/env")
    assert (env.mode, env.user, env.group) == (0o640, "root", NAME)
    denied = host.run(f"runuser -u nobody -- cat /opt/{NAME}/current/env")
    assert denied.rc != 0 and "Permission denied" in denied.stderr


def converge(*args: str) -> subprocess.CompletedProcess[str]:
    """The scenario's converge again, as molecule runs it, with our arguments."""
    ephemeral = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
    scenario = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
    return subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(ephemeral / "inventory"),
            str(scenario / "converge.yml"),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def test_a_real_v_diff_converge_with_a_new_secret_shows_no_secret(host, tmp_path):
    started = host.check_output(f"systemctl show -p ExecMainStartTimestamp --value {NAME}")
    # The new secret goes in a file (-e @file), not on a command line others can list.
    extra = tmp_path / "extra.json"
    extra.touch(mode=0o600)
    extra.write_text(json.dumps({"fastapi_app_secret_env": {"TINYAPP_TOKEN": NEW_TOKEN}}))
    run = converge("-v", "--diff", "-e", f"@{extra}")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert re.search(rf"{HOST}\s+: ok=\d+\s+changed=[1-9]", output), output[-1500:]
    # Booleans, so that a failure does not print a secret into the test log.
    leaked = [t in output for t in (NEW_TOKEN, FIRST_TOKEN)]
    assert leaked == [False, False], "a secret is in the output of the -v --diff converge"
    # The change did happen: the live release's env holds the new secret, and the service was
    # restarted on it.
    env = host.file(f"/opt/{NAME}/current/env").content_string
    assert (NEW_TOKEN in env, FIRST_TOKEN in env) == (True, False)
    assert host.check_output(f"systemctl show -p ExecMainStartTimestamp --value {NAME}") != started
    # No secret in the journal, where the scan does find a marker logged just now (an empty
    # or unread journal would hide one).
    marker = f"fm-logscan-{secrets.token_hex(8)}"
    host.check_output(f"logger -t fm-log-scan -- {marker}")
    problems = scan_for_secrets(
        lambda script: host.check_output("bash -c %s", script),
        [JOURNAL],
        {JOURNAL.name: marker},
        [NEW_TOKEN, FIRST_TOKEN],
    )
    assert not problems, "\n".join(problems)
