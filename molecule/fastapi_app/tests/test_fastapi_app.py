"""fastapi_app on one host with two projects that are not ours, side by side: tinyapp (a bare
ASGI callable pinned by uv.lock) and typical (a FastAPI backend in the shape found in the wild).
The first tests read the converged state; the later ones run the converge again with the
scenario's test knobs to break a step, a release, an input, and check what is left serving."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

SCENARIO = Path(__file__).resolve().parents[1]
# The test secret: $, backticks, both quotes, spaces, #, =, non-ASCII, a backslash.
PASSWORD = yaml.safe_load((SCENARIO / "vars" / "secret.yml").read_text())["typical_first_password"]
ADDRESS = "$(hostname -I | awk '{print $1}')"
APPS = ("tiny", "typical")
# A secret the bad-input runs carry: its plain-ASCII prefix is what a leak shows in any form
# the output takes (Ansible's JSON results write a carriage return as \r, so the value
# itself would not be seen).
LEAK = "fm-sec-Q7"


def journal(host, name: str) -> str:
    return host.run(f"journalctl -u {name}.service -u {name}.socket --no-pager -n 80").stdout


def curl(host, path: str, port: int, *args: str) -> tuple[int, str]:
    out = host.run(
        f"curl -s -m 5 -o /tmp/fm-body -w '%{{http_code}}' {' '.join(args)} "
        f"http://{ADDRESS}:{port}{path}; echo; cat /tmp/fm-body"
    )
    code, _newline, body = out.stdout.partition("\n")
    return int(code or 0), body


def state(host) -> dict[str, tuple[str, str]]:
    """Each app's live configuration directory and the start of its main process."""
    return {
        name: (
            host.run(f"readlink /opt/{name}/current").stdout.strip(),
            host.run(f"systemctl show -p ExecMainStartTimestampMonotonic --value {name}").stdout,
        )
        for name in APPS
    }


def tree(host) -> list[str]:
    """Every directory, file and link under the apps' roots with its mode, owner, size, mtime
    and target: a release staged in releases/ or a configuration written in deploys/ shows
    here before anything restarts or `current` moves (which is all state() sees)."""
    roots = " ".join(f"/opt/{name}" for name in APPS)
    out = host.run(f"find {roots} -printf '%y %m %u:%g %s %T@ %p %l\\n'")
    assert out.rc == 0, out.stderr
    lines = sorted(out.stdout.splitlines())
    for name in APPS:  # the listing can see a release: it sees the live one
        assert any(f" /opt/{name}/current /opt/{name}/deploys/" in line for line in lines), name
    return lines


def changed(before: list[str], after: list[str]) -> list[str]:
    """The lines of two tree() listings that differ (a path added, removed or modified)."""
    return sorted(set(before) ^ set(after), key=lambda line: line.split(" ")[5])


def login(host, password: str) -> int:
    body = json.dumps({"username": "admin@example.com", "password": password})
    path = "/tmp/fm-login.json"  # noqa: S108 (inside the test container)
    host.run(f"cat > {path} <<'FM_EOF'\n{body}\nFM_EOF")
    code, _body = curl(
        host, "/api/v1/login/access-token", 8001, "-H 'content-type: application/json'",
        f"--data-binary @{path}",
    )  # fmt: skip
    return code


def converge(**extra: object) -> subprocess.CompletedProcess[str]:
    """The scenario's converge again, as molecule runs it, with extra variables."""
    ephemeral = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
    vars_file = ephemeral / "fm-extra.json"
    vars_file.write_text(json.dumps(extra))
    return subprocess.run(
        ["ansible-playbook", "-i", str(ephemeral / "inventory"), str(SCENARIO / "converge.yml"),
         "-e", f"@{vars_file}"],
        capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip


# --- tinyapp: a bare ASGI app, pinned by uv.lock ------------------------------------------


def test_both_services_run_as_their_own_users(host):
    for name in APPS:
        service = host.service(f"{name}.service")
        if not service.is_running:
            pytest.fail(journal(host, name))
        assert service.is_enabled and host.service(f"{name}.socket").is_running
        assert host.user(name).shell == "/usr/sbin/nologin"
        pid = host.run(f"systemctl show -p MainPID --value {name}.service").stdout.strip()
        assert host.process.get(pid=int(pid)).user == name


def test_tinyapp_serves_its_release_with_the_lock_files_pins(host):
    code, body = curl(host, "/health", 8000)
    assert code == 200, f"{body}\n{journal(host, 'tiny')}"
    release = host.run("readlink -f /opt/tiny/current/release").stdout.strip().rsplit("/", 1)[1]
    assert re.fullmatch(r"1\.0\.0-[0-9a-f]{10}", release), release  # <version>-<build key>
    assert json.loads(body) == {"status": "ok", "release": release}
    hello = json.loads(curl(host, "/", 8000)[1])
    assert hello["hello"] == "molecule"
    # uv.lock pins anyio 4.4.0; an unpinned build would take PyPI's newest 4.x.
    assert hello["anyio"] == "4.4.0"


def test_configuration_lives_in_the_release_and_is_private(host):
    for name in APPS:
        current = host.file(f"/opt/{name}/current")
        assert current.is_symlink and current.linked_to.startswith(f"/opt/{name}/deploys/")
        env = host.file(f"/opt/{name}/current/env")
        assert (env.mode, env.user, env.group) == (0o640, "root", name)
        assert host.file(f"/opt/{name}/current/gunicorn.conf.py").exists
        assert not host.file(f"/etc/{name}/env").exists


# --- typical: the shape found in the wild ---------------------------------------------------


def test_typical_answers_true_at_its_own_health_route(host):
    code, body = curl(host, "/api/v1/utils/health-check/", 8001)
    assert (code, body) == (200, "true"), journal(host, "typical")


def test_the_release_carries_the_projects_files_and_runs_in_them(host):
    release = "/opt/typical/current/release"
    for path in ("alembic.ini", "app/alembic/env.py", "app/initial_data.py"):
        assert host.file(f"{release}/{path}").exists, path
    assert not host.file(f"{release}/app/main.py").exists, "only the files named ship"
    workdir = host.run("systemctl show -p WorkingDirectory --value typical").stdout.strip()
    assert workdir == release


def test_settings_reach_the_app_in_its_own_shape(host):
    env = host.run("runuser -u typical -- cat /opt/typical/current/env").stdout
    keys = {line.split("=", 1)[0] for line in env.splitlines() if "=" in line}
    assert {"POSTGRES_SERVER", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD",
            "POSTGRES_DB"} <= keys  # fmt: skip
    assert "DATABASE_URL" not in keys


def test_the_initial_data_is_there_a_login_proves_it(host):
    """initial_data.py ran as the after_migrate step with the secret as systemd gives it: the
    first user logs in with exactly that password, and not with a near miss."""
    assert login(host, PASSWORD) == 200
    assert login(host, PASSWORD.replace("$word", "")) == 400, "the probe can fail"


def test_the_secret_is_byte_identical_in_the_service_and_in_every_step(host):
    pid = host.run("systemctl show -p MainPID --value typical").stdout.strip()
    environ = host.run(f"runuser -u typical -- cat /proc/{pid}/environ").stdout
    found = [v for v in environ.split("\0") if v.startswith("FIRST_SUPERUSER_PASSWORD=")]
    assert found == [f"FIRST_SUPERUSER_PASSWORD={PASSWORD}"]
    for point in ("before_activate", "after_activate", "after_deploy"):
        seen = host.file(f"/tmp/typical-{point}").content_string  # noqa: S108
        assert seen == PASSWORD + "\n", point


# --- failures leave the previous release and its configuration serving ----------------------


def test_a_failing_after_migrate_step_stops_before_any_restart_naming_it(host):
    before = state(host)
    run = converge(typical_after_migrate=["echo the seed broke >&2; exit 3"])
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    assert "step after_migrate (command 2 of 2) failed with exit status 3" in out, out[-3000:]
    assert "the seed broke" in out
    assert state(host) == before, "nothing restarted, current unchanged, tinyapp untouched"


def test_a_release_failing_its_gate_leaves_the_previous_one_and_its_configuration(host):
    before = state(host)
    live_conf = host.file("/opt/typical/current/gunicorn.conf.py").content_string
    run = converge(typical_module="app.main:nope")
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    assert "fm-app-1 is back on" in out, out[-3000:]
    after = state(host)
    assert after["typical"][0] == before["typical"][0], "current is the previous configuration"
    assert after["tiny"] == before["tiny"], "tinyapp never restarted"
    assert host.file("/opt/typical/current/gunicorn.conf.py").content_string == live_conf
    assert curl(host, "/api/v1/utils/health-check/", 8001) == (200, "true")


def test_a_rollback_restores_code_and_configuration_together(host):
    first = state(host)
    assert json.loads(curl(host, "/api/v1/utils/banner/", 8001)[1]) == {"banner": "first"}
    changed = converge(typical_banner="second")
    assert changed.returncode == 0, (changed.stdout + changed.stderr)[-3000:]
    assert json.loads(curl(host, "/api/v1/utils/banner/", 8001)[1]) == {"banner": "second"}
    second = state(host)
    assert second["typical"][0] != first["typical"][0] and second["tiny"] == first["tiny"]
    back = converge(typical_action="rollback")
    assert back.returncode == 0, (back.stdout + back.stderr)[-3000:]
    assert json.loads(curl(host, "/api/v1/utils/banner/", 8001)[1]) == {"banner": "first"}
    rolled = state(host)
    assert rolled["typical"][0] == first["typical"][0] and rolled["tiny"] == first["tiny"]
    assert 'BANNER="first"' in host.run("cat /opt/typical/current/env").stdout


# --- bad inputs stop before any host changes --------------------------------------------------


# Each case carries a secret starting with LEAK, the bad one itself or a good one beside it.
@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"fastapi_app_env": {"BAD KEY": "x"},
          "fastapi_app_secret_env": {"API_TOKEN": f"{LEAK}-a"}},
         "fastapi_app_env: expected names of letters, digits and _ and one-line values"),
        ({"fastapi_app_env": {"MOTD": "one\ntwo"},
          "fastapi_app_secret_env": {"API_TOKEN": f"{LEAK}-b"}},
         "the value of MOTD holds a newline"),
        ({"fastapi_app_secret_env": {"API_TOKEN": f"{LEAK}-c\ry"}},
         "the value of API_TOKEN holds a carriage return"),
    ],
)  # fmt: skip
def test_a_bad_environment_stops_in_preflight(host, extra, words):
    assert LEAK in json.dumps(extra), "the case carries the secret looked for"
    before, files = state(host), tree(host)
    run = converge(**extra)
    out = run.stdout + run.stderr
    assert run.returncode != 0 and words in out, out[-3000:]
    assert LEAK not in out, "the secret is in the run's output"
    assert state(host) == before
    assert changed(files, tree(host)) == []


def test_a_project_the_hosts_python_cannot_run_stops_before_any_host_changes(host, tmp_path):
    project = tmp_path / "needs-312"
    shutil.copytree(SCENARIO.parents[1] / "tests" / "fixtures" / "tinyapp", project)
    meta = project / "pyproject.toml"
    meta.write_text(
        meta.read_text().replace('requires-python = ">=3.11"', 'requires-python = ">=3.12"')
    )
    before, files = state(host), tree(host)
    run = converge(fastapi_app_source=str(project))
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    assert "requires Python >=3.12 (requires-python) but the app hosts run Python 3.11." in out
    assert "fastapi_app_python" in out
    assert state(host) == before
    assert changed(files, tree(host)) == [], "a release staged or configured on the host"
