"""The postgresql role on the db host: server, listen address, scram, pg_hba, one DB per app."""

from __future__ import annotations

import json
import shlex

import pytest

from conftest import (
    PASSWORD,
    SIDE_EFFECT_HBA_SOURCE,
    connect,
    ipv4,
    journal,
    psql,
    superuser_sql,
)
from tests.helpers.pg_expect import (
    HBA_FILE_LOADED_SQL,
    HBA_RULES_SQL,
    HOST_ADDRESSES_PY,
    assert_same,
    database_acl_sql,
    expected_hba_rules,
    expected_listening_addresses,
    expected_owner_only_grants,
    grants,
    hba_rules,
    listening_addresses,
    network,
    tcp_port_accept_sources,
)

CONFIG = "/etc/postgresql/15/main"
# molecule.yml's postgresql_databases: (name, owner).
DATABASES = [("notes", "notes")]


@pytest.fixture(scope="module")
def db_address(host) -> str:
    return ipv4(host)


@pytest.fixture(scope="module")
def app_address(app) -> str:
    return ipv4(app)


def test_cluster_is_running_and_enabled(host):
    service = host.service("postgresql@15-main")
    if not service.is_running:
        pytest.fail(journal(host, "postgresql@15-main"))
    assert service.is_enabled
    assert host.package("postgresql-15").is_installed


def test_listens_on_exactly_its_private_address_and_localhost(host, db_address):
    # molecule.yml: postgresql_listen_addresses = [default_ipv4.address, localhost]
    configured = superuser_sql(host, "SHOW listen_addresses")
    assert configured == f"{db_address},localhost"
    names = configured.split(",")
    report = host.check_output(
        "python3 -c " + " ".join(shlex.quote(arg) for arg in [HOST_ADDRESSES_PY, *names])
    )
    addresses = json.loads(report)
    expected = expected_listening_addresses(names, addresses["resolved"], addresses["local"])
    # Whatever localhost resolves to here (::1 or not), the private address and 127.0.0.1.
    assert {db_address, "127.0.0.1"} <= expected, addresses
    listening = host.check_output("ss -Hltn 'sport = :5432'")
    assert_same("addresses listening on 5432", listening_addresses(listening), expected)


def test_pg_hba_is_exactly_the_app_hosts_and_the_side_effects_address(host, app_address):
    hba = host.file(f"{CONFIG}/pg_hba.conf")
    assert (hba.user, hba.group, hba.mode) == ("postgres", "postgres", 0o640)
    # pg_hba_file_rules parses the file on disk: it is what the server enforces only if the
    # server loaded its configuration after the file was last written.
    assert superuser_sql(host, HBA_FILE_LOADED_SQL) == "t", (
        "pg_hba.conf was written after the server last loaded its configuration"
    )
    # Every rule the server parses (a line in error fails): peer locally, and over TCP the
    # notes role to notes with scram-sha-256 from exactly the app host and the address that
    # side_effect.yml added. Nothing else: no 0.0.0.0/0, no trust, no other database.
    expected = expected_hba_rules(DATABASES, [app_address, SIDE_EFFECT_HBA_SOURCE])
    parsed = hba_rules(superuser_sql(host, HBA_RULES_SQL))
    assert_same("pg_hba rules (pg_hba_file_rules)", parsed, expected)


def test_passwords_are_scram_sha_256_only(host):
    assert superuser_sql(host, "SHOW password_encryption") == "scram-sha-256"
    stored = superuser_sql(host, "SELECT rolpassword FROM pg_authid WHERE rolname = 'notes'")
    assert stored.startswith("SCRAM-SHA-256$")


def test_app_role_has_no_power_and_owns_only_its_database(host):
    flags = superuser_sql(
        host,
        "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls"
        " FROM pg_roles WHERE rolname = 'notes'",
    )
    assert flags == "t|f|f|f|f|f"
    owned = superuser_sql(
        host,
        "SELECT datname FROM pg_database"
        " WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = 'notes')",
    )
    assert_same("databases owned by notes", owned.splitlines(), {"notes"})
    encoding = superuser_sql(
        host, "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'notes'"
    )
    assert encoding == "UTF8"


def test_login_roles_and_superusers_are_exactly_the_expected_ones(host):
    # Debian's postgres, and one login role per app database (molecule.yml: notes).
    login = superuser_sql(host, "SELECT rolname FROM pg_roles WHERE rolcanlogin")
    assert_same("login roles", login.splitlines(), {"postgres", *(db[1] for db in DATABASES)})
    superusers = superuser_sql(host, "SELECT rolname FROM pg_roles WHERE rolsuper")
    assert_same("superusers", superusers.splitlines(), {"postgres"})


def test_only_the_owner_may_connect_to_the_app_database(host):
    # Exactly {notes=CTc/notes}: PUBLIC lost CONNECT and TEMPORARY (a NULL datacl, the
    # default that lets PUBLIC in, has no rows and fails), and nobody else was granted any.
    for name, owner in DATABASES:
        acl = grants(superuser_sql(host, database_acl_sql(name)))
        assert_same(f"privileges on database {name}", acl, expected_owner_only_grants(owner))


def test_app_host_connects_with_its_password(app):
    out = psql(app, "SELECT current_user || ' ' || current_database()")
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == "notes notes"


def test_app_host_is_refused_a_wrong_password_and_other_databases(app):
    wrong = psql(app, "SELECT 1", password=PASSWORD + "-wrong")
    assert wrong.rc != 0
    assert "password authentication failed" in wrong.stderr
    elsewhere = psql(app, "SELECT 1", dbname="postgres")
    assert elsewhere.rc != 0
    assert "no pg_hba.conf entry" in elsewhere.stderr


def test_host_outside_app_cannot_reach_5432(other, app):
    # Positive controls first: "other" reaches the db host (ssh answers) and 5432 answers an
    # app host, so a timeout below is the firewall dropping the packets, not a wrong name, a
    # missing route or a server that is down.
    assert connect(other, 22) == "open"
    assert connect(app, 5432) == "open"
    # The firewall drops the packets: no answer at all, not even a refusal.
    assert connect(other, 5432) == "timeout"


def test_pg_hba_rejects_an_address_outside_app_even_past_the_firewall(host, db_address):
    # From the db host itself (loopback is never filtered) over its private address.
    out = psql(host, "SELECT 1", host=db_address)
    assert out.rc != 0
    assert "no pg_hba.conf entry" in out.stderr, out.stderr


def test_firewall_admits_ssh_and_drops_the_rest(host, other, app_address):
    table = host.check_output("nft list table inet fastapi_metal")
    assert "policy drop" in table
    # 5432 is opened to exactly the app host (base_firewall_app_addresses), nobody else.
    ruleset = host.check_output("nft -j list table inet fastapi_metal")
    assert_same(
        "sources the firewall opens 5432 to",
        tcp_port_accept_sources(ruleset, 5432),
        {network(app_address)},
    )
    assert connect(other, 22) == "open"
