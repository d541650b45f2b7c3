"""The lab image under molecule: systemd runs, a package's service is up."""

import pytest


def test_systemd_is_pid_1_and_running(host):
    assert host.process.get(pid=1).comm == "systemd"
    state = host.run("systemctl is-system-running").stdout.strip()
    if state != "running":
        failed = host.run("systemctl --failed --no-legend").stdout
        pytest.fail(f"systemd is {state}; failed units:\n{failed}")


def test_cron_is_enabled_and_running(host):
    service = host.service("cron")
    if not service.is_running:
        pytest.fail(host.run("journalctl -u cron --no-pager -n 50").stdout)
    assert service.is_enabled
    assert host.package("cron").is_installed
