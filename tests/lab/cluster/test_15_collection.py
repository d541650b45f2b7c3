"""The roles as an installable collection, used the way an operator would: build the
artifact from this checkout, install it into an inventory repository of its own (no
roles/, no playbooks/ there), and converge the lab from that repository with
`ansible-playbook fastapi_metal.stack.site`. The lab was converged from the checkout just
before (molecule's converge), so the same roles from the collection must change nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import yaml

from tests.lab.ansible_run import NICE, RECAP, ROOT, VENV_BIN, PlaybookRun, ansible_env
from tests.lab.topology import ADDRESSES

GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
FQCN = f"{GALAXY['namespace']}.{GALAXY['name']}"

# What an operator's own repository holds besides its inventory (README.md shows it).
ANSIBLE_CFG = """\
[defaults]
inventory = inventories/lab
collections_path = ./collections
interpreter_python = /usr/bin/python3
host_key_checking = False
forks = 20

[ssh_connection]
pipelining = True
ssh_args = -o ControlMaster=auto -o ControlPersist=120s -o PreferredAuthentications=publickey
"""


def operator_env(cfg: Path) -> dict[str, str]:
    """An operator's shell: none of molecule's ANSIBLE_* (its collections and roles paths
    would hide what the repository's own ansible.cfg says), the venv on PATH, the lab's
    inventory told where the checkout is (its SSH key and the app's source)."""
    env = {k: v for k, v in ansible_env().items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    env.update(
        ANSIBLE_CONFIG=str(cfg), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
        FASTAPI_METAL_REPO=str(ROOT),
    )  # fmt: skip
    return env


def galaxy(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "ansible-galaxy"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_the_collection_builds_installs_and_converges_the_lab_from_its_own_repository(
    tmp_path: Path,
) -> None:
    ops = tmp_path / "ops"  # the operator's repository
    shutil.copytree(ROOT / "inventories" / "lab", ops / "inventories" / "lab")
    (ops / "ansible.cfg").write_text(ANSIBLE_CFG)
    env = operator_env(ops / "ansible.cfg")

    dist = str(tmp_path / "dist")
    built = galaxy("collection", "build", "--output-path", dist, str(ROOT), cwd=ROOT, env=env)
    assert built.returncode == 0, built.stdout + built.stderr
    (artifact,) = (tmp_path / "dist").glob("*.tar.gz")
    with tarfile.open(artifact) as tar:
        names = set(tar.getnames())
        member = tar.extractfile("MANIFEST.json")
        assert member is not None
        manifest = json.loads(member.read())
    assert manifest["collection_info"]["dependencies"] == GALAXY["dependencies"]
    local = sorted(n for n in names if n.split("/")[0].startswith((".venv", ".lab", ".ansible")))
    assert not local, f"the artifact holds the checkout's local state: {local[:5]}"
    wanted = (
        "playbooks/site.yml", "playbooks/rolling_upgrade.yml", "playbooks/rollback.yml",
        "playbooks/restore.yml",
        "roles/fastapi_app/meta/argument_specs.yml", "roles/nginx/files/fastapi-metal-nginx",
        "meta/runtime.yml", "plugins/modules/nginx_upstream.py",
        "plugins/module_utils/nginx_ops.py",
        "plugins/action/release_build.py", "plugins/plugin_utils/release_build.py",
    )  # fmt: skip
    for name in wanted:
        assert name in names, f"{name} missing from {artifact.name}"
    leaked = sorted(
        n
        for n in names
        if n.split("/")[0] in {"tests", "app", "lab", "molecule", "inventories", ".venv", ".lab"}
    )
    assert not leaked, f"the artifact carries what is not the collection's: {leaked[:10]}"

    installed = galaxy(
        "collection", "install", "--offline", "-p", "collections", str(artifact), cwd=ops, env=env
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "not part of the configured" not in installed.stderr, installed.stderr
    assert (ops / "collections/ansible_collections/fastapi_metal/stack/roles/base").is_dir()

    cmd = [*NICE, str(VENV_BIN / "ansible-playbook"), f"{FQCN}.site"]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ops, env=env, capture_output=True, text=True, check=False)
    run = PlaybookRun(cmd, proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start)
    run.recap = {
        m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
        for m in RECAP.finditer(proc.stdout)
    }
    print(f"\n$ (cd {ops} && {' '.join(cmd)}) -> rc={run.rc} in {run.seconds:.1f} s; {run.recap}")
    assert run.rc == 0, run.tail()
    assert set(run.recap) == set(ADDRESSES), run.recap
    assert run.changed == 0, (
        f"the collection's roles differ from the checkout's: {run.recap}\n{run.tail()}"
    )
