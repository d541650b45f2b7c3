"""plugins/plugin_utils/inventory_rules.py: each form and rule accepts a good value and names
the variable, the expected form and what was got for a bad one; secrets are never quoted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from ansible_collections.fastapi_metal.stack.plugins.plugin_utils.inventory_rules import (
    FORMS,
    for_role,
    form_problems,
    groups_problem,
    incomplete_databases,
    rule_problems,
)

ALL = ["all", "app", "db", "lb", "monitoring"]

GOOD_FORMS: dict[str, Any] = {
    "fastapi_app_name": "notes",
    "fastapi_app_user": "notes",
    "fastapi_app_group": "notes",
    "fastapi_app_release": "1.4.0-3f2a9c1",
    "fastapi_app_rollback_release": "",
    "fastapi_app_module": "app.main:app",
    "fastapi_app_workers": 4,
    "fastapi_app_limit_concurrency": 0,
    "fastapi_app_max_running": 16,
    "fastapi_app_queue_timeout": 0.5,
    "fastapi_app_request_deadline": 2.5,
    "fastapi_app_retry_after": 1,
    "nginx_upstream_max_conns": 128,
    "nginx_unavailable_retry_after": 2,
    "fastapi_app_keep_releases": 5,
    "fastapi_app_serial": "25%",
    "fastapi_app_timeout": 30,
    "fastapi_app_graceful_timeout": 20,
    "fastapi_app_health_timeout": 60,
    "fastapi_app_health_path": "/health/ready",
    "fastapi_app_rollback_health_path": "/health",
    "fastapi_app_port": 8000,
    "base_app_user": "notes",
    "base_app_port": 8000,
    "base_postgresql_port": 5432,
    "base_firewall_ssh_port": 22,
    "postgresql_port": 5432,
    "nginx_upstream_port": 8000,
    "nginx_upstream_fail_timeout": "1h30m",
    "nginx_proxy_connect_timeout": "500ms",
    "nginx_proxy_read_timeout": "60",
    "nginx_proxy_send_timeout": "60s",
    "nginx_client_max_body_size": "10m",
    "nginx_server_names": ["app.example.com", "www.example.com"],
    "certbot_domains": ["app.example.com"],
    "nginx_rate_limit_zones": [{"name": "perip", "rate": "10r/s", "size": "10m"}],
    "nginx_rate_limit_allowlist": ["192.0.2.7", "198.51.100.0/24", "2001:db8::/32"],
    "nginx_private_allowlist": ["192.0.2.7"],
    "nginx_upstream_servers": ["10.0.0.31:8000", "[2001:db8::1]:8000", "unix:/run/app/app.sock"],
    "certbot_email": "ops@example.com",
    "pgbackrest_stanza": "main",
    "pgbackrest_repo_path": "/var/lib/pgbackrest",
    "pgbackrest_retention_full": 2,
    "pgbackrest_retention_diff": 6,
    "pgbackrest_process_max": 2,
    "pgbackrest_restore_set": "20261204-203801F_20261204-210102I",
    "pgbackrest_before_migrate": False,
    "pgbackrest_before_migrate_type": "incr",
    "pgbackrest_restore_time": "2026-12-04 21:05:00.123+00",
    "monitoring_prometheus_listen_address": "127.0.0.1:9090",
    "monitoring_alertmanager_listen_address": "[::1]:9093",
    "monitoring_blackbox_listen_address": ":9115",
    "monitoring_scrape_interval": "15s",
    "monitoring_evaluation_interval": "1m30s",
    "monitoring_retention_time": "30d",
    "monitoring_retention_size": "10GB",
    "monitoring_alert_target_down_for": "2m",
    "monitoring_alert_app_health_for": "1m",
    "monitoring_alert_edge_window": "5m",
    "monitoring_alert_edge_5xx_for": "2m",
    "monitoring_alert_edge_p99_for": "10m",
    "monitoring_alert_edge_probe_for": "2m",
    "monitoring_alert_postgresql_down_for": "1m",
    "monitoring_alert_postgresql_connections_for": "5m",
    "monitoring_alert_disk_window": "6h",
    "monitoring_alert_disk_for": "30m",
    "monitoring_alert_edge_5xx_ratio": 0.05,
    "monitoring_alert_postgresql_connections_ratio": "0.8",
    "monitoring_alert_edge_p99_seconds": 1.0,
    "monitoring_alert_certificate_days": 14,
    "monitoring_alert_disk_full_hours": 24,
    "monitoring_alert_deploy_lock_seconds": 3600,
    "monitoring_alert_drained_seconds": 1800,
    "monitoring_alert_backup_age_hours": 36,
    "monitoring_node_exporter_port": 9100,
    "monitoring_postgres_exporter_port": 9187,
    "monitoring_nginx_exporter_port": 9113,
    "monitoring_edge_log_port": 3903,
    "monitoring_journal_port": 19532,
    "monitoring_journal_max_use": "20G",
    "monitoring_journal_max_age": "1month",
    "nginx_stub_status_port": 0,
}

BAD_FORMS: list[tuple[str, Any, str]] = [
    ("fastapi_app_name", "Notes App", "a service name"),
    ("fastapi_app_release", "../etc", "safe path segment"),
    ("fastapi_app_module", "app.main", "module:attribute"),
    ("fastapi_app_workers", 0, "an integer >= 1"),
    ("fastapi_app_limit_concurrency", -1, "an integer >= 0"),
    ("fastapi_app_max_running", "all", "an integer >= 0"),
    ("fastapi_app_queue_timeout", "1s", "a number >= 0"),
    ("fastapi_app_request_deadline", "10s", "a number >= 0"),
    ("fastapi_app_retry_after", 0, "an integer >= 1"),
    ("nginx_upstream_max_conns", "many", "an integer >= 0"),
    ("nginx_unavailable_retry_after", 0, "an integer >= 1"),
    ("fastapi_app_keep_releases", 1, "an integer >= 2"),
    ("fastapi_app_serial", "150%", "a percentage"),
    ("fastapi_app_health_path", "health", "a URL path"),
    ("fastapi_app_port", 70000, "a TCP port"),
    ("nginx_upstream_fail_timeout", "2 seconds", "an nginx time"),
    ("nginx_client_max_body_size", "10 MB", "an nginx size"),
    ("nginx_server_names", ["*.example.com"], "fully qualified domain names"),
    ("nginx_server_names", "app.example.com", "(not a list)"),
    ("certbot_domains", ["localhost"], "no wildcard"),
    ("nginx_rate_limit_allowlist", ["192.0.2.300"], "addresses or CIDR ranges"),
    ("nginx_upstream_servers", ["app1"], "host:port or unix:/path"),
    ("certbot_email", "ops", "contact address"),
    ("pgbackrest_stanza", "my stanza", "a name of letters"),
    ("pgbackrest_repo_path", "backups", "an absolute path"),
    ("pgbackrest_retention_full", 0, "an integer >= 1"),
    ("pgbackrest_restore_set", "latest", "a backup's label"),
    ("pgbackrest_before_migrate", "maybe", "true or false"),
    ("pgbackrest_before_migrate_type", "incremental", "full, diff or incr"),
    ("pgbackrest_restore_time", "2026-12-04 21:05", "a moment with its time zone"),
    ("monitoring_prometheus_listen_address", "localhost", "address:port"),
    ("monitoring_scrape_interval", "15", "a Prometheus duration"),
    ("monitoring_alert_target_down_for", "2 minutes", "a Prometheus duration"),
    ("monitoring_alert_edge_5xx_ratio", 5, "a ratio between 0 and 1"),
    ("monitoring_alert_certificate_days", "two weeks", "an integer >= 1"),
    ("monitoring_node_exporter_port", 0, "a TCP port"),
    ("monitoring_journal_max_age", "30 days", "a time span"),
    ("monitoring_retention_size", "10G", "a size with B, KB"),
    ("nginx_stub_status_port", 65536, "0 or a TCP port"),
]


def test_every_form_is_tested_with_a_good_value() -> None:
    assert {f.var for f in FORMS} == set(GOOD_FORMS)


def test_good_values_pass_every_form() -> None:
    assert form_problems(GOOD_FORMS, ALL) == []


@pytest.mark.parametrize(("var", "value", "words"), BAD_FORMS, ids=[b[0] for b in BAD_FORMS])
def test_a_bad_value_is_named_with_the_expected_form_and_what_was_got(
    var: str, value: Any, words: str
) -> None:
    problems = form_problems({**GOOD_FORMS, var: value}, ALL)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{var}: expected "), problems
    assert words in problems[0]
    assert "e.g." in problems[0]


def test_a_zone_is_checked_by_each_of_its_keys() -> None:
    zones = [{"name": "per ip", "rate": "10r/s"}, {"name": "burst", "rate": "10 per second"}]
    problems = form_problems({"nginx_rate_limit_zones": zones}, ["lb"])
    assert problems == [
        "nginx_rate_limit_zones (each name): expected zones named with letters, digits and _ "
        "(e.g. [{name: perip, rate: 10r/s, size: 10m}]); got 'per ip'",
        "nginx_rate_limit_zones (each rate): expected a rate in requests per second or minute "
        "(e.g. [{name: perip, rate: 10r/s}], or 30r/m); got '10 per second'",
    ]


def test_a_form_applies_only_on_the_hosts_of_its_group() -> None:
    bad = {"nginx_upstream_fail_timeout": "2 seconds", "fastapi_app_workers": 0}
    assert form_problems(bad, ["app"]) == [
        "fastapi_app_workers: expected an integer >= 1 (e.g. 4); got '0'"
    ]
    assert form_problems(bad, ["lb"])[0].startswith("nginx_upstream_fail_timeout: ")
    assert form_problems({"base_app_port": "http"}, [])[0].startswith("base_app_port: ")


class Vars:
    """What the action gives the rules: rendered variables, and which cannot be rendered."""

    def __init__(self, values: Mapping[str, Any], broken: tuple[str, ...] = ()) -> None:
        self.values = dict(values)
        self.broken = broken

    def problems(self, groups: list[str], app_hosts: list[str] | None = None) -> list[str]:
        return rule_problems(
            self.values.get,
            lambda var: var in self.values,
            groups,
            ["app1", "app2"] if app_hosts is None else app_hosts,
            lambda var: "undefined variable" if var in self.broken else None,
        )


GOOD_RULES: dict[str, Any] = {
    "fastapi_app_secret_env": {"DATABASE_URL": "postgresql+psycopg://notes:pw@db1:5432/notes"},
    "fastapi_app_env": {"LOG_LEVEL": "info"},
    "fastapi_app_action": "deploy",
    "fastapi_app_source": "notes==1.0",
    "fastapi_app_lock_host": "app1",
    "nginx_server_names": ["app.example.com"],
    "certbot_email": "ops@example.com",
    "postgresql_databases": [{"name": "notes", "owner": "notes", "password": "s3cret-db"}],
    "pgbackrest_cipher_pass": "a-repository-passphrase-of-some-length",
    "base_firewall_ssh_sources": ["198.51.100.0/24"],
    "nginx_upstream_servers": ["10.0.0.31:8000"],
    "nginx_rate_limit_zones": [{"name": "perip", "rate": "10r/s"}],
    "nginx_locations": [{"path": "/", "limit_req": [{"zone": "perip", "burst": 20}]}],
}


def test_good_values_pass_every_rule() -> None:
    assert Vars(GOOD_RULES).problems(ALL) == []


BAD_RULES: list[tuple[str, dict[str, Any], str]] = [
    ("database-url", {"fastapi_app_secret_env": {"DATABASE_URL": "mysql://u:pw@h/d"}},
     "fastapi_app_secret_env.DATABASE_URL (value not shown): expected postgresql://"),
    ("secret-in-env", {"fastapi_app_env": {"API_TOKEN": "abc", "SECRET_KEY": "x"}},
     "fastapi_app_env: expected no secret in it; API_TOKEN, SECRET_KEY looks like one"),
    ("no-source", {"fastapi_app_source": ""},
     "fastapi_app_source: expected what to deploy for a deploy"),
    ("missing-source", {"fastapi_app_source": "/nonexistent/project"},
     "got '/nonexistent/project', no such path"),
    ("lock-host", {"fastapi_app_lock_host": "db1"},
     "fastapi_app_lock_host: expected a host of the 'app' group (e.g. app1); got 'db1'"),
    ("server-names", {"nginx_server_names": []}, "nginx_server_names: expected the site's names"),
    ("certbot-email", {"certbot_email": ""}, "certbot_email: expected the ACME account's contact"),
    ("no-databases", {"postgresql_databases": []},
     "postgresql_databases: expected the app's database"),
    ("database-password", {"postgresql_databases": [{"name": "notes", "owner": "notes"}]},
     "incomplete: entry 1 (name notes) (passwords not shown)"),
    ("ssh-sources", {"base_firewall_ssh_sources": []},
     "base_firewall_ssh_sources: expected 'any' or a non-empty list"),
    ("no-upstream", {"nginx_upstream_servers": []},
     "nginx_upstream_servers: expected the app sockets"),
    ("unknown-zone", {"nginx_locations": [{"path": "/", "limit_req": [{"zone": "perhost"}]}]},
     "nginx_locations: expected rate-limit zones that nginx_rate_limit_zones defines "
     "(it has perip); got perhost"),
    ("constraints", {"fastapi_app_constraints": "/nonexistent/constraints.txt"},
     "fastapi_app_constraints: expected a file on the controller"),
    ("ca-bundle", {"certbot_ca_bundle": "/nonexistent/ca.pem"},
     "certbot_ca_bundle: expected a file on the controller"),
    ("env-key", {"fastapi_app_env": {"LOG LEVEL": "info"}},
     "fastapi_app_env: expected names of letters, digits and _ and one-line values (e.g. "
     "{LOG_LEVEL: INFO}); the key 'LOG LEVEL' is not an environment variable name"),
    ("env-newline", {"fastapi_app_env": {"BANNER": "one\ntwo"}},
     "the value of BANNER holds a newline, which an environment file cannot carry"),
    ("env-nested", {"fastapi_app_env": {"HOSTS": ["a", "b"]}},
     "the value of HOSTS is a list, expected a string or a number"),
    ("database-env-key", {"fastapi_app_database_env": {"1DB": "url"}},
     "fastapi_app_database_env: expected names"),
    ("database-env-part", {"fastapi_app_database_env": {"POSTGRES_SERVER": "hostname"}},
     "fastapi_app_database_env: expected each name mapped to one of url, scheme, host, port, "
     "name, user, password (e.g. {POSTGRES_SERVER: host}); got POSTGRES_SERVER: hostname"),
    ("app-database-password", {"fastapi_app_database": {"name": "shop"}},
     "fastapi_app_database: expected a password"),
    ("backup-passphrase", {"pgbackrest_cipher_pass": "short"},
     "pgbackrest_cipher_pass: expected the backups' repository passphrase on every db host"),
]  # fmt: skip


def test_a_database_without_backups_is_a_choice_the_inventory_states() -> None:
    unset = {k: v for k, v in GOOD_RULES.items() if k != "pgbackrest_cipher_pass"}
    assert any(p.startswith("pgbackrest_cipher_pass") for p in Vars(unset).problems(ALL))
    assert Vars({**unset, "pgbackrest_enabled": False}).problems(ALL) == []


@pytest.mark.parametrize(
    ("bad", "words"), [b[1:] for b in BAD_RULES], ids=[b[0] for b in BAD_RULES]
)
def test_a_broken_rule_is_named(bad: dict[str, Any], words: str) -> None:
    problems = Vars({**GOOD_RULES, **bad}).problems(ALL)
    assert len(problems) == 1, problems
    assert words in problems[0], problems


def test_a_rollback_needs_no_source() -> None:
    rollback = {**GOOD_RULES, "fastapi_app_action": "rollback", "fastapi_app_source": ""}
    assert Vars(rollback).problems(ALL) == []


def test_a_secret_is_tested_never_quoted() -> None:
    url = "mysql://notes:Wb3kQ7rT9xLm@db1/notes"
    problems = Vars({**GOOD_RULES, "fastapi_app_secret_env": {"DATABASE_URL": url}}).problems(ALL)
    assert problems and all("Wb3kQ7rT9xLm" not in p for p in problems)
    databases = [{"name": "notes", "owner": "Notes!", "password": "Wb3kQ7rT9xLm"}]
    problems = Vars({**GOOD_RULES, "postgresql_databases": databases}).problems(ALL)
    assert problems and all("Wb3kQ7rT9xLm" not in p for p in problems)


def test_a_secret_value_that_breaks_the_env_file_is_named_not_quoted() -> None:
    secret = {"DATABASE_URL": "postgresql://u:pw@h/d", "API_TOKEN": "Wb3kQ7rT9xLm\r"}
    problems = Vars({**GOOD_RULES, "fastapi_app_secret_env": secret}).problems(ALL)
    assert problems == [
        "fastapi_app_secret_env: expected names of letters, digits and _ and one-line values "
        "(e.g. {LOG_LEVEL: INFO}); the value of API_TOKEN holds a carriage return, which an "
        "environment file cannot carry"
    ]


def test_a_secret_env_that_cannot_be_rendered_is_named() -> None:
    problems = Vars(GOOD_RULES, broken=("fastapi_app_secret_env",)).problems(ALL)
    assert len(problems) == 1 and "cannot be rendered" in problems[0]


def test_rules_apply_by_group() -> None:
    bad = {"nginx_server_names": [], "postgresql_databases": [], "fastapi_app_source": ""}
    lb_only = Vars({**GOOD_RULES, **bad}).problems(["lb"])
    assert [p.split(":")[0] for p in lb_only] == ["nginx_server_names"]


def test_incomplete_databases_lists_each_entry() -> None:
    assert incomplete_databases("notes") == ["not a list"]
    assert incomplete_databases([{"name": "notes", "owner": "notes", "password": "x"}]) == []
    assert incomplete_databases([{"owner": "notes", "password": "x"}, "notes"]) == [
        "entry 1 (name missing)",
        "entry 2 (name missing)",
    ]


def test_for_role_keeps_the_problems_of_its_own_variables() -> None:
    problems = ["nginx_locations: expected ...", "fastapi_app_workers: expected ...", "groups: x"]
    assert for_role(problems, ["nginx_"]) == ["nginx_locations: expected ..."]
    assert for_role(problems, ["fastapi_app_", "nginx_"]) == problems[:2]


def test_groups_need_an_app_host_and_a_database() -> None:
    assert groups_problem({"app": ["app1"], "db": ["db1"]}, ["app1"]) is None
    assert groups_problem({"app": ["app1"], "db": []}, []) is None  # an external DATABASE_URL
    no_app = groups_problem({"app": [], "db": ["db1"]}, [])
    assert no_app is not None and no_app.startswith("groups: expected the servers")
    no_db = groups_problem({"app": ["app1", "app2"], "db": []}, ["app2"])
    assert no_db is not None and no_db.endswith("no DATABASE_URL on app2")
