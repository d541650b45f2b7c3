# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""What an inventory must hold before any host is touched: the forms of the public variables
(each a regular expression with the expected form in words and an example) and the rules
across variables. Written once: the action fastapi_metal.stack.inventory_check applies them
on the controller, to the variables the inventory and the extra vars set. Every problem of
a host is reported at once, naming the variable, what was expected and what was got; a
secret is only ever tested, never quoted."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ansible_collections.fastapi_metal.stack.plugins.plugin_utils.systemd_env import env_problem

PORT = r"^([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
FQDN = (
    r"^(?=.{4,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
SEGMENT = r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63})?$"
ACCOUNT = r"^[a-z_][a-z0-9_-]{0,31}$"
SECONDS = r"^[1-9][0-9]*$"
# nginx's time and size syntax: "2s", "500ms", "1h30m", "60" (seconds); "10m", "512k".
NGINX_TIME = r"^([0-9]+(ms|[smhdwMy]))*[0-9]+(ms|[smhdwMy])?$"
NGINX_SIZE = r"^[0-9]+[kKmMgG]?$"
# An IPv4 or IPv6 address, or a CIDR range: what nginx's allow and nftables' saddr take.
IPV4 = r"((25[0-5]|2[0-4][0-9]|1?[0-9]{1,2})\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]{1,2})(/([0-9]|[12][0-9]|3[0-2]))?"
IPV6 = r"[0-9A-Fa-f]*:[0-9A-Fa-f:.]*(/([0-9]{1,2}|1[01][0-9]|12[0-8]))?"
ADDRESS = f"^({IPV4}|{IPV6})$"
PATH = r"^/\S*$"
# Names of environment variables that carry secrets.
SECRET_NAMES = r"(?i).*(passw|secret|token|credential|database_url|dsn|(^|_)key$)"  # noqa: S105
IDENTIFIER = r"^[a-z_][a-z0-9_]{0,62}$"
# A Prometheus duration ("15s", "1m30s", "30d") and a listen address ("127.0.0.1:9090").
PROM_DURATION = r"^([0-9]+(ms|s|m|h|d|w|y))+$"
PROM_DURATION_WORDS = "a Prometheus duration: digits with ms, s, m, h, d, w or y"
LISTEN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*):[0-9]{1,5}$"
RATIO = r"^(0(\.[0-9]+)?|1(\.0+)?)$"
NGINX_TIME_WORDS = "an nginx time: digits with ms, s, m, h or d"


@dataclass(frozen=True)
class Form:
    """On a host of ``group`` that sets ``var``: its value (with ``each`` every element of the
    list, with ``attr`` that key of every element) must match ``match``."""

    var: str
    group: str
    match: str
    expect: str
    each: bool = False
    attr: str | None = None


FORMS: tuple[Form, ...] = (
    Form("fastapi_app_name", "app", r"^[a-z][a-z0-9_-]{0,31}$",
         "a service name: lowercase letters, digits, - and _, starting with a letter (e.g. notes)"),
    Form("fastapi_app_user", "app", ACCOUNT, "a system account name (e.g. notes)"),
    Form("fastapi_app_group", "app", ACCOUNT, "a system group name (e.g. notes)"),
    Form("fastapi_app_release", "app", SEGMENT,
         "empty or a safe path segment: letters, digits, '.', '_' and '-', not starting with '.' or '-' "
         "(e.g. 1.4.0-3f2a9c1)"),
    Form("fastapi_app_rollback_release", "app", SEGMENT,
         "empty or the id of a release on disk, a safe path segment (e.g. 1.3.2-9c0d1e2)"),
    Form("fastapi_app_module", "app", r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.()]*$",
         "module:attribute (e.g. app.main:app)"),
    Form("fastapi_app_workers", "app", r"^[1-9][0-9]{0,3}$", "an integer >= 1 (e.g. 4)"),
    Form("fastapi_app_keep_releases", "app", r"^([2-9]|[1-9][0-9]+)$",
         "an integer >= 2, so that the previous release stays on disk for a rollback (e.g. 5)"),
    Form("fastapi_app_serial", "all", r"^([1-9][0-9]*|([1-9][0-9]?|100)%)$",
         "how many app hosts restart at a time: a number >= 1 or a percentage 1%-100% (e.g. 1 or 25%)"),
    Form("fastapi_app_timeout", "app", SECONDS, "seconds, an integer >= 1 (e.g. 30)"),
    Form("fastapi_app_graceful_timeout", "app", SECONDS, "seconds, an integer >= 1 (e.g. 20)"),
    Form("fastapi_app_health_timeout", "app", SECONDS, "seconds, an integer >= 1 (e.g. 60)"),
    Form("fastapi_app_health_path", "app", PATH, "a URL path starting with / (e.g. /health/ready)"),
    Form("fastapi_app_rollback_health_path", "app", PATH, "a URL path starting with / (e.g. /health)"),
    Form("fastapi_app_port", "app", PORT, "a TCP port, 1-65535 (e.g. 8000)"),
    Form("fastapi_app_limit_concurrency", "app", r"^[0-9]{1,6}$",
         "requests per worker, an integer >= 0 (0: no bound; e.g. 64)"),
    Form("fastapi_app_max_running", "app", r"^[0-9]{1,6}$",
         "requests per worker, an integer >= 0 (0: no bound; e.g. 5)"),
    Form("fastapi_app_queue_timeout", "app", r"^[0-9]{1,5}(\.[0-9]+)?$",
         "seconds, a number >= 0 (0: until the deadline; e.g. 0.5)"),
    Form("fastapi_app_request_deadline", "app", r"^[0-9]{1,5}(\.[0-9]+)?$",
         "seconds, a number >= 0 (0: no deadline; e.g. 10 or 2.5)"),
    Form("fastapi_app_retry_after", "app", SECONDS, "seconds, an integer >= 1 (e.g. 1)"),
    Form("base_app_user", "all", ACCOUNT, "a system account name (e.g. notes)"),
    Form("base_app_port", "all", PORT, "a TCP port, 1-65535 (e.g. 8000)"),
    Form("base_postgresql_port", "all", PORT, "a TCP port, 1-65535 (e.g. 5432)"),
    Form("base_firewall_ssh_port", "all", PORT, "a TCP port, 1-65535 (e.g. 22)"),
    Form("postgresql_port", "db", PORT, "a TCP port, 1-65535 (e.g. 5432)"),
    Form("nginx_upstream_port", "lb", PORT, "a TCP port, 1-65535 (e.g. 8000)"),
    Form("nginx_upstream_fail_timeout", "lb", NGINX_TIME, f"{NGINX_TIME_WORDS} (e.g. 2s)"),
    Form("nginx_upstream_max_conns", "lb", r"^[0-9]{1,6}$",
         "requests per app server, an integer >= 0 (0: no bound; e.g. 128)"),
    Form("nginx_unavailable_retry_after", "lb", SECONDS, "seconds, an integer >= 1 (e.g. 1)"),
    Form("nginx_proxy_connect_timeout", "lb", NGINX_TIME, f"{NGINX_TIME_WORDS} (e.g. 2s)"),
    Form("nginx_proxy_read_timeout", "lb", NGINX_TIME, f"{NGINX_TIME_WORDS} (e.g. 60s)"),
    Form("nginx_proxy_send_timeout", "lb", NGINX_TIME, f"{NGINX_TIME_WORDS} (e.g. 60s)"),
    Form("nginx_client_max_body_size", "lb", NGINX_SIZE,
         "an nginx size: digits, optionally with k, m or g (e.g. 10m)"),
    Form("nginx_server_names", "lb", FQDN,
         "a list of fully qualified domain names (e.g. [app.example.com, www.example.com])", each=True),
    Form("certbot_domains", "lb", FQDN,
         "a list of fully qualified domain names, no wildcard (e.g. [app.example.com])", each=True),
    Form("nginx_rate_limit_zones", "lb", r"^[A-Za-z0-9_]+$",
         "zones named with letters, digits and _ (e.g. [{name: perip, rate: 10r/s, size: 10m}])",
         each=True, attr="name"),
    Form("nginx_rate_limit_zones", "lb", r"^[1-9][0-9]*r/[sm]$",
         "a rate in requests per second or minute (e.g. [{name: perip, rate: 10r/s}], or 30r/m)",
         each=True, attr="rate"),
    Form("nginx_rate_limit_allowlist", "lb", ADDRESS,
         "addresses or CIDR ranges (e.g. [192.0.2.7, 198.51.100.0/24, '2001:db8::/32'])", each=True),
    Form("nginx_private_allowlist", "lb", ADDRESS,
         "addresses or CIDR ranges of the hosts that may read the private locations, e.g. the "
         "monitoring host ([192.0.2.7])", each=True),
    Form("nginx_upstream_servers", "lb", r"^(unix:/\S+|\[[0-9A-Fa-f:.]+\]:\d+|[A-Za-z0-9_.-]+:\d+)$",
         "upstream servers as host:port or unix:/path (e.g. ['10.0.0.31:8000', 'unix:/run/app/app.sock'])",
         each=True),
    Form("pgbackrest_stanza", "db", r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
         "a name of letters, digits, - and _ (e.g. main)"),
    Form("pgbackrest_repo_path", "db", r"^/\S*$", "an absolute path (e.g. /var/lib/pgbackrest)"),
    Form("pgbackrest_retention_full", "db", SECONDS, "an integer >= 1 (e.g. 2)"),
    Form("pgbackrest_retention_diff", "db", SECONDS, "an integer >= 1 (e.g. 6)"),
    Form("pgbackrest_process_max", "db", SECONDS, "an integer >= 1 (e.g. 2)"),
    Form("pgbackrest_before_migrate", "db", r"(?i)^(true|false|yes|no|on|off|1|0)$",
         "true or false (e.g. -e pgbackrest_before_migrate=false to deploy without the backup)"),
    Form("pgbackrest_before_migrate_type", "db", r"^(full|diff|incr)$",
         "the type of the backup before a migration: full, diff or incr (e.g. incr)"),
    Form("pgbackrest_restore_set", "db", r"^(\d{8}-\d{6}F(_\d{8}-\d{6}[DI])?)?$",
         "a backup's label as the audit line or `pgbackrest info` shows it "
         "(e.g. 20261204-203801F or 20261204-203801F_20261204-210102I)"),
    Form("pgbackrest_restore_time", "db",
         r"^(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}(:?\d{2})?|Z))?$",
         "a moment with its time zone (e.g. '2026-12-04 21:05:00+00')"),
    Form("monitoring_prometheus_listen_address", "monitoring", LISTEN, "address:port (e.g. 127.0.0.1:9090)"),
    Form("monitoring_alertmanager_listen_address", "monitoring", LISTEN, "address:port (e.g. 127.0.0.1:9093)"),
    Form("monitoring_blackbox_listen_address", "monitoring", LISTEN, "address:port (e.g. 127.0.0.1:9115)"),
    Form("monitoring_scrape_interval", "monitoring", PROM_DURATION, f"{PROM_DURATION_WORDS} (e.g. 15s)"),
    Form("monitoring_evaluation_interval", "monitoring", PROM_DURATION, f"{PROM_DURATION_WORDS} (e.g. 15s)"),
    Form("monitoring_retention_time", "monitoring", PROM_DURATION, f"{PROM_DURATION_WORDS} (e.g. 30d)"),
    Form("monitoring_retention_size", "monitoring", r"^[0-9]+(B|KB|MB|GB|TB|PB|EB)$",
         "a size with B, KB, MB, GB or TB (e.g. 10GB)"),
    *(Form(f"monitoring_alert_{name}", "monitoring", PROM_DURATION, f"{PROM_DURATION_WORDS} (e.g. 2m)")
      for name in ("target_down_for", "app_health_for", "edge_window", "edge_5xx_for", "edge_p99_for",
                   "edge_probe_for", "postgresql_down_for", "postgresql_connections_for", "disk_window",
                   "disk_for")),
    *(Form(f"monitoring_alert_{name}", "monitoring", RATIO, "a ratio between 0 and 1 (e.g. 0.05)")
      for name in ("edge_5xx_ratio", "postgresql_connections_ratio")),
    Form("monitoring_alert_edge_p99_seconds", "monitoring", r"^[0-9]+(\.[0-9]+)?$", "seconds (e.g. 1.0)"),
    *(Form(f"monitoring_alert_{name}", "monitoring", SECONDS, "an integer >= 1 (e.g. 14)")
      for name in ("certificate_days", "disk_full_hours", "deploy_lock_seconds", "drained_seconds",
                   "backup_age_hours")),
    *(Form(f"monitoring_{name}_port", "all", PORT, "a TCP port, 1-65535 (e.g. 9100)")
      for name in ("node_exporter", "postgres_exporter", "nginx_exporter", "edge_log", "journal")),
    Form("monitoring_journal_max_use", "monitoring", r"^[0-9]+[KMGT]?$", "a size with K, M, G or T (e.g. 20G)"),
    Form("monitoring_journal_max_age", "monitoring", r"^[0-9]+(s|min|h|d|w|month|year)$",
         "a time span with s, min, h, d, w, month or year (e.g. 30d)"),
    Form("nginx_stub_status_port", "lb", r"^(0|" + PORT[2:-2] + r")$", "0 or a TCP port, 1-65535 (e.g. 8298)"),
    Form("certbot_email", "lb", r"^([^@\s]+@[^@\s]+\.[^@\s]+)?$",
         "the ACME account's contact address, for expiry notices (e.g. ops@example.com)"),
)  # fmt: skip


def text(value: Any) -> str:
    """A value as Jinja's ``string`` filter shows it (True, None, 8000)."""
    return str(value)


def form_problems(variables: Mapping[str, Any], group_names: Iterable[str]) -> list[str]:
    """This host's problems with FORMS: "var: expected ...; got 'value'"."""
    groups = set(group_names)
    out: list[str] = []
    for form in FORMS:
        if not (form.group == "all" or form.group in groups) or form.var not in variables:
            continue
        value = variables[form.var]
        if value is None and not form.each:
            bad = [text(value)] if not re.match(form.match, "None") else []
        elif form.each and (isinstance(value, (str, Mapping)) or not isinstance(value, Iterable)):
            bad = [f"{text(value)} (not a list)"]
        elif form.each:
            bad = []
            for element in value:
                if form.attr is not None:
                    element = element.get(form.attr) if isinstance(element, Mapping) else None
                    element = "" if element in (None, "") else element
                if not re.match(form.match, text(element)):
                    bad.append(text(element))
        else:
            bad = [] if re.match(form.match, text(value)) else [text(value)]
        if bad:
            what = f" (each {form.attr})" if form.attr else ""
            got = "', '".join(dict.fromkeys(bad))
            out.append(f"{form.var}{what}: expected {form.expect}; got '{got}'")
    return out


Lookup = Callable[[str, Any], Any]


def incomplete_databases(databases: Any) -> list[str]:
    if isinstance(databases, (str, Mapping)):
        return ["not a list"]
    if not isinstance(databases, Iterable):
        return []
    bad = []
    for i, entry in enumerate(databases, start=1):
        ok = (
            isinstance(entry, Mapping)
            and re.match(IDENTIFIER, text(entry.get("name", "")))
            and re.match(IDENTIFIER, text(entry.get("owner", "")))
            and text(entry.get("password") or "") != ""
        )
        if not ok:
            name = (entry.get("name") if isinstance(entry, Mapping) else None) or "missing"
            bad.append(f"entry {i} (name {name})")
    return bad


def env_problems(get: Lookup, render_error: Callable[[str], str | None]) -> list[str]:
    """Every key and value of the app's environment must fit in its environment file."""
    out = []
    for var in ("fastapi_app_env", "fastapi_app_secret_env", "fastapi_app_database_env"):
        variables = {} if render_error(var) else get(var, {}) or {}
        if not isinstance(variables, Mapping):
            out.append(
                f"{var}: expected a mapping of names to values (e.g. {{APP_ENV: production}}); "
                f"got a {type(variables).__name__}"
            )
            continue
        for key, value in variables.items():
            if problem := env_problem(key, value):
                out.append(
                    f"{var}: expected names of letters, digits and _ and one-line values "
                    f"(e.g. {{LOG_LEVEL: INFO}}); {problem}"
                )
    return out


DATABASE_PARTS = ("url", "scheme", "host", "port", "name", "user", "password")


def database_problems(get: Lookup, render_error: Callable[[str], str | None]) -> list[str]:
    """fastapi_app_database needs a password; fastapi_app_database_env names known parts."""
    out = []
    database = {} if render_error("fastapi_app_database") else get("fastapi_app_database", {}) or {}
    if not isinstance(database, Mapping):
        out.append(
            "fastapi_app_database: expected a mapping of the database's parts (e.g. {password: "
            f"'{{{{ vault_shop_db_password }}}}'}}); got a {type(database).__name__} (value not shown)"
        )
    elif isinstance(database, Mapping) and database and not text(database.get("password") or ""):
        out.append(
            "fastapi_app_database: expected a password (e.g. {password: '{{ vault_shop_db_password }}'}); "
            "it has none (value not shown)"
        )
    names = get("fastapi_app_database_env", {}) or {}
    bad = (
        [f"{k}: {v}" for k, v in names.items() if v not in DATABASE_PARTS]
        if isinstance(names, Mapping)
        else []
    )
    if bad:
        out.append(
            f"fastapi_app_database_env: expected each name mapped to one of {', '.join(DATABASE_PARTS)} "
            f"(e.g. {{POSTGRES_SERVER: host}}); got {', '.join(bad)}"
        )
    return out


def rule_problems(
    get: Lookup,
    defined: Callable[[str], bool],
    group_names: Iterable[str],
    app_hosts: list[str],
    render_error: Callable[[str], str | None],
) -> list[str]:
    """This host's problems with the rules across variables. ``get(var, default)`` reads a
    rendered variable; ``render_error(var)`` says why one cannot be rendered (else None)."""
    groups = set(group_names)
    out: list[str] = []
    if "app" in groups:
        secret_env = (
            {}
            if render_error("fastapi_app_secret_env")
            else (get("fastapi_app_secret_env", {}) or {})
        )
        if render_error("fastapi_app_secret_env") or (
            "DATABASE_URL" in secret_env
            and not re.match(r"^postgres(ql)?(\+[a-z0-9]+)?://", text(secret_env["DATABASE_URL"]))
        ):
            out.append(
                "fastapi_app_secret_env.DATABASE_URL (value not shown): expected "
                "postgresql://USER:PASSWORD@HOST:5432/DB; it cannot be rendered (does it refer to a "
                "group or variable the inventory lacks?) or is not a PostgreSQL URL"
            )
        out.extend(env_problems(get, render_error))
        out.extend(database_problems(get, render_error))
        secret_keys = [k for k in (get("fastapi_app_env", {}) or {}) if re.match(SECRET_NAMES, k)]
        if secret_keys:
            out.append(
                f"fastapi_app_env: expected no secret in it; {', '.join(secret_keys)} looks like one - "
                "move it to fastapi_app_secret_env (written with no_log, never shown in --diff)"
            )
        source = text(get("fastapi_app_source", "") or "")
        action = get("fastapi_app_action", "")
        if defined("fastapi_app_action") and action != "rollback" and not source:
            out.append(
                f"fastapi_app_source: expected what to deploy for a {action} - a project directory, a "
                "wheel file or a PEP 508 requirement on the controller (e.g. /srv/notes, "
                "dist/notes-1.0-py3-none-any.whl, notes==1.0); it is empty"
            )
        if re.match(r"^[/~.]", source) and not Path(source).expanduser().exists():
            out.append(
                "fastapi_app_source: expected a project directory or a wheel file that exists on the "
                "controller, or a PEP 508 requirement (e.g. /srv/notes, dist/notes-1.0-py3-none-any.whl, "
                f"notes==1.0); got '{source}', no such path"
            )
        if defined("fastapi_app_lock_host") and get("fastapi_app_lock_host", "") not in app_hosts:
            first = app_hosts[0] if app_hosts else "app1"
            out.append(
                f"fastapi_app_lock_host: expected a host of the 'app' group (e.g. {first}); "
                f"got '{get('fastapi_app_lock_host', '')}'"
            )
    apps = get("fastapi_metal_apps", None)
    apps = apps if isinstance(apps, list) else []
    if "lb" in groups and not apps and not get("nginx_server_names", []):
        out.append(
            "nginx_server_names: expected the site's names on every lb host (e.g. nginx_server_names: "
            "[app.example.com]); it is empty or not set (or leave the 'lb' group empty)"
        )
    if "lb" in groups and not get("certbot_email", ""):
        out.append(
            "certbot_email: expected the ACME account's contact address where certbot runs, on every "
            "lb host (e.g. certbot_email: ops@example.com); it is not set"
        )
    if "db" in groups:
        databases = get("postgresql_databases", None)
        asked = [a for a in apps if isinstance(a, Mapping) and a.get("fastapi_app_database")]
        if not databases and not asked:
            out.append(
                "postgresql_databases: expected the app's database on every db host, e.g. "
                "postgresql_databases: [{name: notes, owner: notes, password: '<a vault_ variable>'}]; "
                "it is not set"
            )
        elif bad := incomplete_databases(databases):
            out.append(
                "postgresql_databases: expected entries with name and owner (lowercase identifiers) and "
                "a non-empty password, e.g. {name: notes, owner: notes, password: '<a vault_ variable>'}; "
                f"incomplete: {', '.join(bad)} (passwords not shown)"
            )
    if (
        "db" in groups
        and text(get("pgbackrest_enabled", True)).lower() not in ("false", "no", "0")
        and len(text(get("pgbackrest_cipher_pass", "") or "")) < 20
    ):
        out.append(
            "pgbackrest_cipher_pass: expected the backups' repository passphrase on every db host, at "
            "least 20 characters from the vault (e.g. pgbackrest_cipher_pass: '{{ "
            "vault_pgbackrest_cipher_pass }}'), or pgbackrest_enabled: false for a database without "
            "backups; it is shorter or not set (value not shown)"
        )
    if defined("base_firewall_ssh_sources"):
        sources = get("base_firewall_ssh_sources", "any")
        ok = sources == "any" or (
            not isinstance(sources, (str, Mapping)) and isinstance(sources, Iterable)
            and len(list(sources)) > 0 and all(re.match(ADDRESS, text(s)) for s in sources)
        )  # fmt: skip
        if not ok:
            import json

            out.append(
                "base_firewall_ssh_sources: expected 'any' or a non-empty list of addresses or CIDR "
                "ranges that includes the controller (e.g. [198.51.100.0/24]); got "
                f"{json.dumps(sources, default=str)}"
            )
    if (
        "lb" in groups
        and defined("nginx_upstream_servers")
        and not get("nginx_upstream_servers", [])
    ):
        out.append(
            "nginx_upstream_servers: expected the app sockets (e.g. ['10.0.0.31:8000', "
            "'unix:/run/app/app.sock']); it is empty (no host in the 'app' group?)"
        )
    if "lb" in groups and defined("nginx_locations"):
        zones = {
            z.get("name") for z in get("nginx_rate_limit_zones", []) or [] if isinstance(z, Mapping)
        }
        used = []
        for location in get("nginx_locations", []) or []:
            limits = location.get("limit_req", []) if isinstance(location, Mapping) else []
            for limit in limits if isinstance(limits, list) else [limits]:
                if isinstance(limit, Mapping) and limit.get("zone") not in zones:
                    used.append(text(limit.get("zone")))
        if used:
            out.append(
                f"nginx_locations: expected rate-limit zones that nginx_rate_limit_zones defines "
                f"(it has {', '.join(sorted(map(text, zones))) or 'none'}); got {', '.join(dict.fromkeys(used))} "
                "(e.g. nginx_rate_limit_zones: [{name: perip, rate: 10r/s}])"
            )
    for var, group in (("fastapi_app_constraints", "app"), ("certbot_ca_bundle", "lb")):
        path = text(get(var, "") or "") if group in groups else ""
        if path and not Path(path).expanduser().is_file():
            out.append(
                f"{var}: expected a file on the controller, or an empty string; got '{path}', no such file"
            )
    return out


EDGE_KEYS = ("nginx_server_names", "nginx_site")
SHAPE_VARS = ("fastapi_app_name", "fastapi_app_port", "fastapi_app_listen_unix")
# A host's own address: per host (host_vars), never one value for every host of an app.
HOST_ONLY = ("fastapi_app_bind_address",)
# What an app's nginx_site may change: its locations. Names, servers and certificate paths
# come from the entry (nginx_server_names, fastapi_app_port), which certbot reads too.
SITE_KEYS = ("locations", "rate_limit_exempt_locations", "private_locations")
RUN_VARS = ("fastapi_app_source", "fastapi_app_release", "fastapi_app_rollback_release")


def apps_problems(
    apps: Any,
    get: Lookup,
    defined: Callable[[str], bool],
    group_names: Iterable[str],
    app_hosts: list[str],
    inventory_keys: Iterable[str],
    extra_keys: Iterable[str],
    role_keys: Iterable[str],
) -> list[str]:
    """The problems of fastapi_metal_apps on this host: each entry is an app (a unique name,
    port and server names; role variables by name, checked like the inventory's own), and
    a key is set in one place only. ``inventory_keys``: what the inventory sets for this host
    (a fastapi_app_* there applies to every app and wins over the entries); ``extra_keys``:
    the extra vars (-e), which win over everything; ``role_keys``: the fastapi_app role's
    variables (its argument specs)."""
    known = set(role_keys) | set(EDGE_KEYS)
    groups = set(group_names)
    example = "e.g. [{fastapi_app_name: notes, fastapi_app_port: 8000, nginx_server_names: [notes.example.com]}]"
    if isinstance(apps, (str, Mapping)) or not isinstance(apps, list) or not apps:
        return [
            f"fastapi_metal_apps: expected a non-empty list of apps, {example}; got {text(apps)}"
        ]
    out: list[str] = []
    seen: dict[str, dict[str, str]] = {"name": {}, "port": {}, "server name": {}}
    names: list[str] = []
    for i, entry in enumerate(apps, start=1):
        if not isinstance(entry, Mapping):
            out.append(
                f"fastapi_metal_apps (entry {i}): expected a mapping of role variables, {example}; got {text(entry)}"
            )
            continue
        name = text(entry.get("fastapi_app_name", ""))
        label = f"fastapi_metal_apps[{name or i}]"
        if not re.match(FORMS[0].match, name):
            out.append(f"{label}.fastapi_app_name: expected {FORMS[0].expect}; got '{name}'")
        names.append(name)
        host_only = [k for k in HOST_ONLY if k in entry]
        if host_only:
            out.append(
                f"{label}: expected {', '.join(host_only)} per host (host_vars: each host has its own "
                "address, which nginx lists for every app), not in an app's entry"
            )
        site = entry.get("nginx_site", {})
        if not isinstance(site, Mapping) or set(map(text, site)) - set(SITE_KEYS):
            out.append(
                f"{label}.nginx_site: expected a mapping of {', '.join(SITE_KEYS)} (e.g. "
                "{rate_limit_exempt_locations: ['= /healthz']}); got "
                f"{text(site) if not isinstance(site, Mapping) else ', '.join(sorted(map(text, site)))}"
            )
        unknown = sorted(text(k) for k in entry if k not in known)
        if unknown:
            out.append(
                f"{label}: expected variables of the fastapi_app role (its README lists them), "
                f"nginx_server_names and nginx_site; got {', '.join(unknown)}"
            )
        both = sorted(k for k in entry if k in set(inventory_keys) and k not in set(extra_keys))
        if both:
            out.append(
                f"{label}: expected each setting in one place; {', '.join(both)} is also set for every app "
                "in the inventory (which wins over the entry): keep it in the entries, or only there"
            )
        server_names = entry.get("nginx_server_names") or []
        for kind, values in (
            ("name", [name]),
            ("port", [text(entry.get("fastapi_app_port", 8000))]),
            ("server name", server_names if isinstance(server_names, list) else []),
        ):
            for value in map(text, values):
                if value in seen[kind]:
                    out.append(
                        f"{label}: expected a {kind} of its own for each app; {value} is also "
                        f"the {kind} of entry {seen[kind][value]}"
                    )
                seen[kind].setdefault(value, f"{i} ({name})")
        if "lb" in groups and not server_names:
            out.append(
                f"{label}.nginx_server_names: expected the names the app is served at on the lb hosts "
                f"(e.g. [{name or 'app'}.example.com]); it is empty or not set"
            )

        def entry_get(var: str, default: Any, entry: Mapping[str, Any] = entry) -> Any:
            return entry[var] if var in entry else get(var, default)

        def entry_defined(var: str, entry: Mapping[str, Any] = entry) -> bool:
            return var in entry or defined(var)

        forms = {k: v for k, v in entry.items() if k.startswith("fastapi_app_")}
        found = form_problems(forms, ["app"]) + [
            p for p in rule_problems(entry_get, entry_defined, ["app"], app_hosts, lambda var: None)
            if p.startswith("fastapi_app_")
        ]  # fmt: skip
        out.extend(f"{label}.{p}" for p in dict.fromkeys(found) if "app" in groups)
        if "nginx_server_names" in entry:
            out.extend(
                f"{label}.{p}" for p in form_problems({"nginx_server_names": server_names}, ["lb"])
            )
    # What the other roles read from the entries (firewall, upstream): set for every app, or
    # with -e, it would move the apps but not their firewall opening or upstream.
    shaped = [v for v in SHAPE_VARS if v in set(inventory_keys) | set(extra_keys)]
    if shaped:
        out.append(
            f"{', '.join(shaped)}: expected in each entry of fastapi_metal_apps, where the firewall "
            "and the nginx upstream read it too; it is set for every app (inventory or -e), which "
            "would move the apps but not their firewall opening or upstream"
        )
    selected = text(get("fastapi_metal_app", "") or "")
    if selected and selected not in names:
        out.append(
            f"fastapi_metal_app: expected the name of an app of fastapi_metal_apps ({', '.join(names)}); got '{selected}'"
        )
    run_vars = [v for v in RUN_VARS if v in set(extra_keys)]
    if run_vars and len(apps) > 1 and not selected:
        out.append(
            f"fastapi_metal_app: expected the app {', '.join(run_vars)} is for when the inventory lists several "
            f"(e.g. -e fastapi_metal_app={names[0] or 'notes'}); it is not set, and the extra vars would apply "
            "to every app"
        )
    return out


def for_role(problems: list[str], prefixes: Iterable[str]) -> list[str]:
    """The problems about a role's own variables (each problem starts with the variable)."""
    wanted = tuple(prefixes)
    return [p for p in problems if p.startswith(wanted)]


def groups_problem(groups: Mapping[str, list[str]], database_url_missing: list[str]) -> str | None:
    """The groups the playbooks need: app, and db unless every app host names an external
    DATABASE_URL."""
    if not groups.get("app"):
        return (
            "groups: expected the servers that run the service under all.children.app.hosts; the "
            "inventory has no host in group 'app' (e.g. inventories/production/hosts.yml)"
        )
    if not groups.get("db") and database_url_missing:
        return (
            "groups: expected a database - a host in group 'db' (all.children.db.hosts), or an "
            "external database in fastapi_app_secret_env: {DATABASE_URL: "
            "'postgresql://USER:PASSWORD@HOST:5432/DB'} with the password from a vault_ variable; "
            f"the inventory has no 'db' host and no DATABASE_URL on {', '.join(database_url_missing)}"
        )
    return None
