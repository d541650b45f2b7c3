"""Bad inventories that playbooks/preflight.yml must stop on the controller, and a way to run
a playbook that cannot reach any host: ssh is replaced by a recorder that connects nowhere and
writes down every attempt. Shared by tests/security (the example production inventory) and
tests/lab/cluster/test_05_preflight.py (the lab's inventory)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.lab.ansible_run import RECAP, ROOT, PlaybookRun, ansible_env
from tests.lab.topology import LAB_VARS

VENV_BIN = Path(sys.executable).parent
PREFLIGHT = ROOT / "playbooks" / "preflight.yml"
PRODUCTION = ROOT / "inventories" / "production"
PRODUCTION_VAULT_PASS = PRODUCTION / ".vault-pass.example"
LAB = ROOT / "inventories" / "lab"

FAKE_SSH = """#!/bin/sh
# Stands in for ssh: writes the attempt down and connects nowhere.
printf '%s\\n' "$*" >> "$FAKE_SSH_LOG"
echo "fake ssh: no connection made" >&2
exit 255
"""

# One result line of a task: "ok: [app1 -> localhost]", "fatal: [lb1]: FAILED! =>" ...
RESULT = re.compile(
    r"^(?:ok|changed|fatal|failed|skipping|unreachable): "
    r"\[(?P<host>[^\]\s]+)(?: -> (?P<to>[^\]\s]+))?\]",
    re.M,
)
TASK = re.compile(r"^TASK \[(?P<name>.+?)\] \*+$", re.M)

Mutation = Callable[[Path], None]


@dataclass(frozen=True)
class Case:
    """A bad inventory: extra vars, or a copy of the inventory changed by `mutate`."""

    id: str
    expect: tuple[str, ...]  # what the failure must say: the variable and the expected form
    playbook: str = "site.yml"
    extra: dict[str, Any] | None = None
    mutate: Mutation | None = None


@dataclass
class IsolatedRun:
    case_id: str
    run: PlaybookRun
    ssh_attempts: list[str] = field(default_factory=list)

    @property
    def flat(self) -> str:
        """The output with YAML's line folding and quote doubling undone."""
        return " ".join(self.run.output.replace("''", "'").split())


# --- changes to a copy of an inventory -------------------------------------------------


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _dump(path: Path, data: Any) -> None:
    path.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))


def drop_group(name: str) -> Mutation:
    def mutate(inventory: Path) -> None:
        hosts = inventory / "hosts.yml"
        data = _load(hosts)
        del data["all"]["children"][name]
        _dump(hosts, data)

    return mutate


def drop_secret_env(key: str) -> Mutation:
    def mutate(inventory: Path) -> None:
        app = inventory / "group_vars" / "app.yml"
        data = _load(app)
        del data["fastapi_app_secret_env"][key]
        _dump(app, data)

    return mutate


def chain(*mutations: Mutation) -> Mutation:
    def mutate(inventory: Path) -> None:
        for m in mutations:
            m(inventory)

    return mutate


def add_locked_vault_value(inventory: Path) -> None:
    """A vaulted variable whose password the run is not given (group_vars/all/zz_vault.yml)."""
    all_dir = inventory / "group_vars" / "all"
    single = inventory / "group_vars" / "all.yml"
    if single.exists():
        all_dir.mkdir()
        single.rename(all_dir / "main.yml")
    with tempfile.TemporaryDirectory() as tmp:
        password = Path(tmp) / "pass"
        password.write_text("a password nobody gives the run\n")
        out = subprocess.run(
            [
                str(VENV_BIN / "ansible-vault"),
                "encrypt_string",
                "--vault-password-file",
                str(password),
                "--name",
                "vault_fm_probe",
                "probe-value",
            ],
            capture_output=True,
            text=True,
            check=True,
            env=ansible_env(),
        )
    (all_dir / "zz_vault.yml").write_text("---\n" + out.stdout)


# --- the matrix --------------------------------------------------------------------------

CASES: list[Case] = [
    Case(
        "server-name-not-an-fqdn",
        ("nginx_server_names", "fully qualified domain names", "app..lab.test"),
        extra={"nginx_server_names": ["app..lab.test"]},
    ),
    Case(
        "no-server-names-with-an-lb",
        ("nginx_server_names", "names on every lb host"),
        extra={"nginx_server_names": []},
    ),
    Case(
        "rate-not-like-10r-s",
        ("nginx_rate_limit_zones", "10r/s", "10 per second"),
        extra={
            "nginx_rate_limit_zones": [{"name": "perip", "rate": "10 per second", "size": "10m"}]
        },
    ),
    Case(
        "fail-timeout-in-words",
        ("nginx_upstream_fail_timeout", "an nginx time", "2 seconds"),
        extra={"nginx_upstream_fail_timeout": "2 seconds"},
    ),
    Case(
        "body-size-with-a-unit-nginx-does-not-know",
        ("nginx_client_max_body_size", "an nginx size", "10MB"),
        extra={"nginx_client_max_body_size": "10MB"},
    ),
    Case(
        "release-id-escapes-releases",
        ("fastapi_app_release", "safe path segment", "../../../etc"),
        playbook="rolling_upgrade.yml",
        extra={"fastapi_app_release": "../../../etc"},
    ),
    Case(
        "rollback-release-escapes-releases",
        ("fastapi_app_rollback_release", "safe path segment"),
        playbook="rollback.yml",
        extra={"fastapi_app_rollback_release": "../previous"},
    ),
    Case(
        "zero-workers",
        ("fastapi_app_workers", "an integer >= 1"),
        extra={"fastapi_app_workers": 0},
    ),
    Case(
        "keep-one-release",
        ("fastapi_app_keep_releases", "an integer >= 2"),
        extra={"fastapi_app_keep_releases": 1},
    ),
    Case(
        "app-name-not-a-unit-name",
        ("fastapi_app_name", "lowercase letters", "Notes App"),
        extra={"fastapi_app_name": "Notes App"},
    ),
    Case(
        "port-out-of-range",
        ("fastapi_app_port", "1-65535", "70000"),
        extra={"fastapi_app_port": 70000},
    ),
    Case(
        "serial-zero-percent",
        ("fastapi_app_serial", "a percentage 1%-100%", "0%"),
        playbook="rolling_upgrade.yml",
        extra={"fastapi_app_serial": "0%"},
    ),
    Case(
        "allowlist-entry-not-an-address",
        ("nginx_private_allowlist", "addresses or CIDR ranges", "monitoring.example.com"),
        extra={"nginx_private_allowlist": ["10.0.0.7", "monitoring.example.com"]},
    ),
    Case(
        "ssh-sources-empty",
        ("base_firewall_ssh_sources", "includes the controller"),
        extra={"base_firewall_ssh_sources": []},
    ),
    Case(
        "certbot-without-email",
        ("certbot_email", "ops@example.com"),
        extra={"certbot_email": ""},
    ),
    Case(
        "source-path-missing",
        ("fastapi_app_source", "exists on the controller", "/nonexistent/notes-src"),
        extra={"fastapi_app_source": "/nonexistent/notes-src"},
    ),
    Case(
        "database-without-password",
        ("postgresql_databases", "non-empty password", "entry 1 (name notes)"),
        extra={"postgresql_databases": [{"name": "notes", "owner": "notes"}]},
    ),
    Case(
        "secret-in-the-plain-env",
        ("fastapi_app_env", "API_TOKEN", "move it to fastapi_app_secret_env"),
        extra={"fastapi_app_env": {"APP_ENV": "production", "API_TOKEN": "t0ken"}},
    ),
    Case(
        "lock-host-outside-app",
        ("fastapi_app_lock_host", "a host of the 'app' group", "db1"),
        playbook="rolling_upgrade.yml",
        extra={"fastapi_app_lock_host": "db1"},
    ),
    Case(
        "two-problems-reported-at-once",
        ("fastapi_app_workers", "fastapi_app_keep_releases"),
        extra={"fastapi_app_workers": 0, "fastapi_app_keep_releases": 0},
    ),
    Case(
        "no-app-group",
        ("no host in group 'app'", "all.children.app.hosts"),
        mutate=drop_group("app"),
    ),
    Case(
        "no-db-group-and-no-database-url",
        ("a host in group 'db'", "DATABASE_URL", "no DATABASE_URL on app1, app2"),
        mutate=chain(drop_group("db"), drop_secret_env("DATABASE_URL")),
    ),
    Case(
        "database-url-refers-to-a-missing-db-group",
        (
            "fastapi_app_secret_env.DATABASE_URL (value not shown)",
            "postgresql://USER:PASSWORD@HOST:5432/DB",
        ),
        mutate=drop_group("db"),
    ),
    Case(
        "vault-locked",
        ("the vault is locked", "vault_fm_probe", "--vault-password-file"),
        mutate=add_locked_vault_value,
    ),
]


# Several apps (the lab's fastapi_metal_apps): each entry checked as an app, and the rules of
# the list. Run against the lab's own inventory.
_NOTES, _TYPICAL, _TINY = LAB_VARS["fastapi_metal_apps"]


APP_CASES: list[Case] = [
    Case(
        "apps-port-taken-twice",
        ("fastapi_metal_apps[typical]", "a port of its own for each app", "8000"),
        extra={"fastapi_metal_apps": [_NOTES, {**_TYPICAL, "fastapi_app_port": 8000}, _TINY]},
    ),
    Case(
        "apps-key-misspelt",
        ("fastapi_metal_apps[tiny]", "variables of the fastapi_app role", "fastapi_app_modul"),
        extra={"fastapi_metal_apps": [_NOTES, _TYPICAL, {**_TINY, "fastapi_app_modul": "x:app"}]},
    ),
    Case(
        "apps-env-key-with-a-space",
        ("fastapi_metal_apps[typical].fastapi_app_env", "BAD KEY"),
        extra={
            "fastapi_metal_apps": [_NOTES, {**_TYPICAL, "fastapi_app_env": {"BAD KEY": "x"}}, _TINY]
        },
    ),
    Case(
        "apps-release-without-the-app",
        ("fastapi_metal_app", "fastapi_app_release", "-e fastapi_metal_app=notes"),
        playbook="rolling_upgrade.yml",
        extra={"fastapi_app_release": "1.0.0-abc"},
    ),
    Case(
        "apps-port-for-every-app",
        ("fastapi_app_port", "in each entry of fastapi_metal_apps"),
        extra={"fastapi_app_port": 9000},
    ),
]


def one_app_inventory(dest: Path) -> Path:
    """A copy of the lab (copied_inventory) made an inventory of one app, the form the matrix
    above is written for: the first app of fastapi_metal_apps as the fastapi_app_* variables
    of group_vars/app.yml, its names as nginx_server_names, its database in
    postgresql_databases and as DATABASE_URL."""
    group_vars = dest / "group_vars"
    everything = _load(group_vars / "all.yml")
    app = dict(everything.pop("fastapi_metal_apps")[0])
    _dump(group_vars / "all.yml", everything)
    names = app.pop("nginx_server_names")
    password = app.pop("fastapi_app_database")["password"]
    name = app["fastapi_app_name"]
    variable = password.strip("{} ")
    db = "hostvars[groups['db'][0]]"
    app["fastapi_app_secret_env"] = {
        "DATABASE_URL": f"{{{{ 'postgresql://{name}:%s@%s:%s/{name}' | format({variable}, "
        f"{db}['ansible_host'], {db}['postgresql_port'] | default(5432)) }}}}"
    }
    app_file = group_vars / "app.yml"
    _dump(app_file, {**(_load(app_file) if app_file.exists() else {}), **app})
    lb_file = group_vars / "lb.yml"
    _dump(lb_file, {**_load(lb_file), "nginx_server_names": names})
    _dump(
        group_vars / "db.yml",
        {"postgresql_databases": [{"name": name, "owner": name, "password": password}]},
    )
    return dest


# --- running playbooks that cannot reach a host ---------------------------------------------


def preflight_task_names() -> set[str]:
    """Every task name of playbooks/preflight.yml (blocks and rescues included)."""
    names: set[str] = set()

    def walk(tasks: Iterable[dict[str, Any]]) -> None:
        for task in tasks:
            names.add(task["name"])
            for key in ("block", "rescue", "always"):
                walk(task.get(key, []))

    for play in _load(PREFLIGHT):
        walk(play.get("tasks", []))
    return names


@dataclass
class NoSshRunner:
    """Runs playbooks with ssh replaced by the recorder: no host can be reached."""

    workdir: Path
    inventory: Path
    vault_password_file: Path | None = None
    _count: int = 0

    def __post_init__(self) -> None:
        self.fake_ssh = self.workdir / "fake-ssh"
        self.fake_ssh.write_text(FAKE_SSH)
        self.fake_ssh.chmod(0o755)

    def run(
        self,
        playbook: str,
        *args: str,
        extra: dict[str, Any] | None = None,
        inventory: Path | None = None,
        case_id: str = "",
    ) -> IsolatedRun:
        self._count += 1
        log = self.workdir / f"ssh-{self._count}.log"
        log.touch()
        cmd = [
            "nice",
            "-n",
            "10",
            str(VENV_BIN / "ansible-playbook"),
            str(ROOT / "playbooks" / playbook),
            "-i",
            str(inventory or self.inventory),
        ]
        if self.vault_password_file:
            cmd += ["--vault-password-file", str(self.vault_password_file)]
        if extra:
            cmd += ["-e", json.dumps(extra)]
        cmd += list(args)
        env = dict(ansible_env(), ANSIBLE_SSH_EXECUTABLE=str(self.fake_ssh), FAKE_SSH_LOG=str(log))
        start = time.monotonic()
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        run = PlaybookRun(cmd, proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start)
        run.recap = {
            m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
            for m in RECAP.finditer(proc.stdout)
        }
        return IsolatedRun(case_id, run, log.read_text().splitlines())

    def run_case(self, case: Case) -> IsolatedRun:
        if case.mutate is None:
            return self.run(case.playbook, extra=case.extra, case_id=case.id)
        with copied_inventory(self.inventory) as inventory:
            case.mutate(inventory)
            return self.run(case.playbook, extra=case.extra, inventory=inventory, case_id=case.id)

    def run_cases(self, cases: list[Case], workers: int = 2) -> dict[str, IsolatedRun]:
        """Every case, a few at a time (each run is a controller-only Ansible start)."""
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return {r.case_id: r for r in pool.map(self.run_case, cases)}


@contextmanager
def copied_inventory(source: Path) -> Iterator[Path]:
    """A copy of an inventory two levels below the repository, as inventories/<name> is, so
    that its "{{ inventory_dir }}/../.." paths still name the repository."""
    parent = ROOT / ".lab"
    parent.mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="preflight-inventory-", dir=parent))
    try:
        shutil.copytree(source, path, dirs_exist_ok=True)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def assert_stopped_in_preflight(
    result: IsolatedRun, case: Case, secrets: Iterable[str] = ()
) -> None:
    """The run failed on the controller, in preflight, naming the variable and the expected
    form, without a connection to any host and without a change anywhere."""
    run = result.run
    context = f"{case.id}: {' '.join(run.args)}\n{run.tail(60)}"
    assert run.rc != 0, context
    for text in case.expect:
        assert text in result.flat, f"{case.id}: the failure does not say {text!r}\n{run.tail(60)}"
    assert result.ssh_attempts == [], f"{case.id}: ssh was attempted: {result.ssh_attempts}"
    tasks = set(TASK.findall(run.output))
    assert tasks, context
    assert tasks <= preflight_task_names(), (
        f"{case.id}: tasks beyond preflight ran: {tasks - preflight_task_names()}"
    )
    delegated = [(m["host"], m["to"]) for m in RESULT.finditer(run.output)]
    assert delegated, context
    assert all(to == "localhost" for _task, to in delegated), (
        f"{case.id}: a result not on the controller: {delegated}"
    )
    assert run.recap, context
    assert all(h["changed"] == 0 for h in run.recap.values()), run.recap
    # A boolean, so that a failure does not print the secret into the test log.
    leaked = [i for i, secret in enumerate(secrets) if secret in run.output]
    assert not leaked, f"{case.id}: secret #{leaked} is in the output"
