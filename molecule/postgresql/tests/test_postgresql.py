"""The postgresql role on the db host: server, listen address, scram, pg_hba, one DB per app."""

from __future__ import annotations

import pytest
from conftest import PASSWORD, connect, journal, psql, superuser_sql

CONFIG = "/etc/postgresql/15/main"


@pytest.fixture(scope="module")
def db_address(host) -> str:
    return host.interface("eth0").addresses[0]


def test_cluster_is_running_and_enabled(host):
    service = host.service("postgresql@15-main")
    if not service.is_running:
        pytest.fail(journal(host, "postgresql@15-main"))
    assert service.is_enabled
    assert host.package("postgresql-15").is_installed


def test_listens_on_the_private_address_and_localhost_only(host, db_address):
    assert host.socket(f"tcp://{db_address}:5432").is_listening
    assert host.socket("tcp://127.0.0.1:5432").is_listening
    assert not host.socket("tcp://0.0.0.0:5432").is_listening
    listening = host.check_output("ss -Hltn 'sport = :5432'")
    assert "0.0.0.0:5432" not in listening and "*:5432" not in listening, listening


def test_pg_hba_has_no_trust_and_admits_the_app_hosts_only(host, app):
    hba = host.file(f"{CONFIG}/pg_hba.conf")
    assert (hba.user, hba.group, hba.mode) == ("postgres", "postgres", 0o640)
    rules = [
        line.split()
        for line in hba.content_string.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert rules, "pg_hba.conf has no rules"
    assert not [r for r in rules if "trust" in r], rules
    # What the server parses (pg_hba_file_rules): no trust, no error, TCP only for notes.
    parsed = superuser_sql(
        host,
        "SELECT type, array_to_string(database, ','), array_to_string(user_name, ','),"
        " coalesce(address, ''), auth_method, coalesce(error, '') FROM pg_hba_file_rules",
    ).splitlines()
    app_address = app.interface("eth0").addresses[0]
    for line in parsed:
        kind, database, user, _address, method, error = line.split("|")
        assert not error and method != "trust", line
        if kind != "local":
            assert (database, user, method) == ("notes", "notes", "scram-sha-256"), line
    tcp = {line.split("|")[3] for line in parsed if not line.startswith("local")}
    assert app_address in tcp, parsed


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
        "SELECT string_agg(datname, ',') FROM pg_database"
        " WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = 'notes')",
    )
    assert owned == "notes"
    encoding = superuser_sql(
        host, "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'notes'"
    )
    assert encoding == "UTF8"


def test_public_may_not_connect_to_the_app_database(host):
    # datacl NULL would mean the default: CONNECT and TEMPORARY for PUBLIC (grantee 0).
    acl = superuser_sql(
        host,
        "SELECT datacl IS NOT NULL, (SELECT count(*) FROM aclexplode(datacl) WHERE grantee = 0)"
        " FROM pg_database WHERE datname = 'notes'",
    )
    assert acl == "t|0"


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


def test_host_outside_app_cannot_reach_5432(other):
    # The firewall drops the packets: no answer at all, not even a refusal.
    assert connect(other, 5432) == "timeout"


def test_pg_hba_rejects_an_address_outside_app_even_past_the_firewall(host, db_address):
    # From the db host itself (loopback is never filtered) over its private address.
    out = psql(host, "SELECT 1", host=db_address)
    assert out.rc != 0
    assert "no pg_hba.conf entry" in out.stderr, out.stderr


def test_firewall_admits_ssh_and_drops_the_rest(host, other):
    table = host.check_output("nft list table inet fastapi_metal")
    assert "policy drop" in table
    assert "tcp dport 5432 accept" in table
    assert connect(other, 22) == "open"
