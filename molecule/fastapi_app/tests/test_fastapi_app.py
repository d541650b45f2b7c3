"""fastapi_app on one host: the state an operator relies on, tinyapp as the app."""

import json

import pytest

NAME = "tiny"


def journal(host):
    return host.run(f"journalctl -u {NAME}.service -u {NAME}.socket --no-pager -n 80").stdout


def test_service_active_and_socket_listening(host):
    service = host.service(f"{NAME}.service")
    if not service.is_running:
        pytest.fail(journal(host))
    assert service.is_enabled
    assert host.service(f"{NAME}.socket").is_running
    assert any(
        s.startswith("tcp://") and s.endswith(":8000") for s in host.socket.get_listening_sockets()
    )


def test_runs_as_the_app_user_without_login_shell(host):
    user = host.user(NAME)
    assert user.shell == "/usr/sbin/nologin"
    assert user.home == f"/var/lib/{NAME}"
    main_pid = host.run(f"systemctl show -p MainPID --value {NAME}.service").stdout.strip()
    assert host.process.get(pid=int(main_pid)).user == NAME


def test_env_file_is_private(host):
    env = host.file(f"/etc/{NAME}/env")
    assert env.mode == 0o640
    assert env.user == "root"
    assert env.group == NAME
    assert "TINYAPP_TOKEN" in env.content_string


def test_release_venv_imports_the_app(host):
    current = host.file(f"/opt/{NAME}/current")
    assert current.is_symlink
    assert current.linked_to.startswith(f"/opt/{NAME}/releases/1.0.0-")
    cmd = host.run(
        f"/opt/{NAME}/current/venv/bin/python -c 'import tinyapp, gunicorn, uvicorn_worker'"
    )
    assert cmd.rc == 0, cmd.stderr


def test_serves_the_release_over_http(host):
    out = host.run("curl -s -m 5 http://$(hostname -I | awk '{print $1}'):8000/health")
    assert out.rc == 0, f"{out.stderr}\n{journal(host)}"
    body = json.loads(out.stdout)
    release = host.file(f"/opt/{NAME}/current").linked_to.rsplit("/", 1)[1]
    assert body == {"status": "ok", "release": release}
    hello = json.loads(
        host.run("curl -s -m 5 http://$(hostname -I | awk '{print $1}'):8000/").stdout
    )
    assert hello["hello"] == "molecule"


def test_unit_exposure_is_low(host):
    """systemd-analyze security scores the unit's hardening; 10 is unprotected."""
    out = host.run(f"systemd-analyze security --no-pager {NAME}.service")
    assert out.rc == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if "Overall exposure level" in x)
    score = float(line.split(":", 1)[1].split()[0])
    print(f"exposure of {NAME}.service: {score}")
    assert score <= 2.0, out.stdout
