"""The postgresql scenario's exact checks (tests/helpers/pg_expect.py), shown to fail on a wrong
server before they are trusted on the lab: a real PostgreSQL 15 on loopback parses pg_hba.conf
files (the role's own template rendered, then broken) and holds the grants; what the lab's
hosts report (ss, nft) is exercised on recorded output."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
from ansible.plugins.filter.core import comment

from tests.helpers.pg import PgCluster
from tests.helpers.pg_expect import (
    HBA_FILE_LOADED_SQL,
    HBA_RULES_SQL,
    HOST_ADDRESSES_PY,
    HbaRule,
    assert_same,
    database_acl_sql,
    expected_hba_rules,
    expected_listening_addresses,
    expected_owner_only_grants,
    grants,
    hba_rules,
    listening_addresses,
    tcp_port_accept_sources,
)
from tests.roles.fixtures.nftables.record import render_db_host

TEMPLATE = Path(__file__).resolve().parents[2] / "roles/postgresql/templates/pg_hba.conf.j2"
APP = "10.89.0.5"
SIDE_EFFECT = "192.0.2.10"
DATABASES = [("notes", "notes")]
EXPECTED = expected_hba_rules(DATABASES, [APP, SIDE_EFFECT])


def render_role_hba(sources: list[str], hba_type: str = "host") -> str:
    """roles/postgresql/templates/pg_hba.conf.j2 as the template module renders it."""
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["comment"] = comment
    return env.from_string(TEMPLATE.read_text()).render(
        ansible_managed="Ansible managed",
        __postgresql_databases_public=[{"name": n, "owner": o} for n, o in DATABASES],
        postgresql_hba_sources=sources,
        postgresql_hba_type=hba_type,
    )


@pytest.fixture
def parse_hba(pg: PgCluster) -> Iterator[Callable[[str], str]]:
    """Write a pg_hba.conf into the session cluster and read pg_hba_file_rules back.

    The view parses the file on disk; nothing is reloaded, so the server keeps enforcing its
    own rules, and the original file is put back after the test.
    """
    hba = pg.data_dir / "pg_hba.conf"
    original = hba.read_text()

    def parse(text: str) -> str:
        hba.write_text(text)
        return pg.psql(HBA_RULES_SQL)

    try:
        yield parse
    finally:
        hba.write_text(original)


def test_the_role_template_parses_to_exactly_the_expected_rules(parse_hba) -> None:
    exact = render_role_hba([APP, SIDE_EFFECT])
    assert "0.0.0.0" not in exact
    assert_same("pg_hba rules", hba_rules(parse_hba(exact)), EXPECTED)


@pytest.mark.parametrize(
    ("change", "extra", "missing"),
    [
        # everyone admitted next to the app hosts: an inclusion check passes this
        (lambda t: t + "host all all 0.0.0.0/0 scram-sha-256\n", "0.0.0.0/0", None),
        # everyone admitted to the app's database as its owner, with its password: the
        # scenario's former check (database, user, method per line; app address included) passed
        (lambda t: t + "host notes notes 0.0.0.0/0 scram-sha-256\n", "0.0.0.0/0", None),
        # the app host's own line widened to every address
        (lambda t: t.replace(f"{APP}/32", f"{APP}/0"), "0.0.0.0/0", f"{APP}/32"),
        # the right address, without a password
        (lambda t: t.replace(f"{APP}/32  scram-sha-256", f"{APP}/32 trust"), "trust", None),
        # a database or a user beyond the app's own
        (lambda t: t.replace(f"notes  notes  {APP}", f"all  notes  {APP}"), "('all',)", None),
        # the side effect's address lost
        (
            lambda t: "".join(x for x in t.splitlines(True) if SIDE_EFFECT not in x),
            None,
            f"{SIDE_EFFECT}/32",
        ),
        # peer with an ident map
        (lambda t: t.replace("all            peer", "all  peer map=any"), "map=any", None),
    ],
    ids=[
        "extra-0.0.0.0/0",
        "extra-notes-0.0.0.0/0",
        "widened-prefix",
        "trust",
        "all-databases",
        "missing",
        "peer-map",
    ],
)
def test_any_other_rule_set_fails_the_comparison(parse_hba, change, extra, missing) -> None:
    exact = render_role_hba([APP, SIDE_EFFECT])
    broken = change(exact)
    assert broken != exact, "the change no longer applies to the role's template"
    with pytest.raises(AssertionError) as failure:
        assert_same("pg_hba rules", hba_rules(parse_hba(broken)), EXPECTED)
    message = str(failure.value)
    if extra:
        assert any(extra in line for line in message.splitlines() if "extra:" in line), message
    if missing:
        assert any(missing in line for line in message.splitlines() if "missing:" in line), message


def test_a_line_the_server_rejects_fails_instead_of_vanishing(parse_hba) -> None:
    text = render_role_hba([APP, SIDE_EFFECT]) + "host notes notes 10.89.0.6/33 scram-sha-256\n"
    rows = json.loads(parse_hba(text))
    assert [r for r in rows if r["error"]], rows
    with pytest.raises(AssertionError, match=r'invalid CIDR mask in address "10.89.0.6/33"'):
        hba_rules(rows)


def test_keywords_and_host_names_never_equal_a_network(parse_hba) -> None:
    text = render_role_hba([APP, SIDE_EFFECT]) + "host notes notes samenet scram-sha-256\n"
    with pytest.raises(AssertionError, match=r"extra: .*'samenet'"):
        assert_same("pg_hba rules", hba_rules(parse_hba(text)), EXPECTED)


def test_the_file_is_known_enforced_only_after_a_reload(pg: PgCluster) -> None:
    hba = pg.data_dir / "pg_hba.conf"
    now = time.time()
    try:
        os.utime(hba, (now + 3600, now + 3600))  # written after the last (re)load
        assert pg.psql(HBA_FILE_LOADED_SQL) == "f"
    finally:
        os.utime(hba, (now - 60, now - 60))
    pg.psql("SELECT pg_reload_conf()")  # the same rules, re-read
    deadline = time.monotonic() + 10
    while pg.psql(HBA_FILE_LOADED_SQL) != "t":
        assert time.monotonic() < deadline, "the reload did not show in pg_conf_load_time()"
        time.sleep(0.1)


# -- grants ---------------------------------------------------------------------------------
@pytest.fixture
def owned_database(pg: PgCluster) -> Iterator[str]:
    """A role and its database, as the role creates them (template0), before any revoke."""
    name = f"fm_acl_{secrets.token_hex(4)}"
    pg.execute(f"CREATE ROLE {name} LOGIN")
    pg.execute(f"CREATE DATABASE {name} OWNER {name} TEMPLATE template0")
    try:
        yield name
    finally:
        pg.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        pg.execute(f"DROP ROLE IF EXISTS {name}")


def test_owner_only_grants_hold_after_the_roles_revoke_and_only_then(
    pg: PgCluster, owned_database: str
) -> None:
    name = owned_database
    expected = expected_owner_only_grants(name)
    # Before the revoke: datacl is NULL, PUBLIC may connect. No rows, never equal.
    with pytest.raises(AssertionError, match="missing"):
        assert_same("grants", grants(pg.psql(database_acl_sql(name))), expected)
    # What the role's postgresql_privs task runs (as the superuser).
    pg.execute(f"REVOKE CONNECT, TEMPORARY ON DATABASE {name} FROM PUBLIC")
    assert_same("grants", grants(pg.psql(database_acl_sql(name))), expected)
    # One more grantee (here PUBLIC again, CONNECT only) is caught.
    pg.execute(f"GRANT CONNECT ON DATABASE {name} TO PUBLIC")
    with pytest.raises(AssertionError, match=rf"extra: +Grant\(grantor='{name}', grantee='PUBLIC'"):
        assert_same("grants", grants(pg.psql(database_acl_sql(name))), expected)


# -- listening sockets ------------------------------------------------------------------------
SS_LAB = """\
LISTEN 0      200       10.89.0.3:5432      0.0.0.0:*
LISTEN 0      200       127.0.0.1:5432      0.0.0.0:*
LISTEN 0      200           [::1]:5432         [::]:*
"""
LAB_HOST = {
    "resolved": {"localhost": ["127.0.0.1", "::1"]},
    "local": ["10.89.0.3", "127.0.0.1", "::1", "fe80::1"],
}


def test_listening_addresses_equal_what_listen_addresses_binds() -> None:
    expected = expected_listening_addresses(
        ["10.89.0.3", "localhost"], LAB_HOST["resolved"], LAB_HOST["local"]
    )
    assert expected == {"10.89.0.3", "127.0.0.1", "::1"}
    assert_same("listening", listening_addresses(SS_LAB), expected)
    # Without IPv6 on lo the server cannot bind ::1 and is not expected to.
    assert expected_listening_addresses(
        ["10.89.0.3", "localhost"], LAB_HOST["resolved"], ["10.89.0.3", "127.0.0.1"]
    ) == {"10.89.0.3", "127.0.0.1"}
    wildcard = SS_LAB + "LISTEN 0      200         0.0.0.0:5432      0.0.0.0:*\n"
    with pytest.raises(AssertionError, match=r"extra: +0\.0\.0\.0"):
        assert_same("listening", listening_addresses(wildcard), expected)


def test_listening_addresses_of_the_local_server(pg: PgCluster) -> None:
    """The whole path on this machine: SHOW listen_addresses, HOST_ADDRESSES_PY, ss."""
    configured = pg.psql("SHOW listen_addresses").split(",")
    host = json.loads(
        subprocess.run(
            [sys.executable, "-c", HOST_ADDRESSES_PY, *configured],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    ss = subprocess.run(
        ["ss", "-Hltn", f"sport = :{pg.port}"], capture_output=True, text=True, check=True
    ).stdout
    expected = expected_listening_addresses(configured, host["resolved"], host["local"])
    assert expected == {"127.0.0.1"}
    assert_same("listening", listening_addresses(ss), expected)
    assert socket.create_connection(("127.0.0.1", pg.port), timeout=3)


# -- nftables -------------------------------------------------------------------------------
# What nft -j prints for the base role's table on a db host, and for rules added to its input
# chain: recorded by tests/roles/fixtures/nftables/record.py in a private network namespace.
NFT = Path(__file__).resolve().parent / "fixtures/nftables"
ROLE_TABLE: dict[str, Any] = json.loads((NFT / "db.json").read_text())
RECORDED_RULES: dict[str, list[dict[str, Any]]] = json.loads((NFT / "rules.json").read_text())
CONTROLLER = "10.89.50.1"  # record.py's SSH source; its 5432 source is APP


def _rule(*expr: dict[str, Any], chain: str = "input") -> dict[str, Any]:
    return {
        "rule": {"family": "inet", "table": "fastapi_metal", "chain": chain, "expr": list(expr)}
    }


def _match(protocol: str, field: str, right: object) -> dict[str, Any]:
    return {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": protocol, "field": field}},
            "right": right,
        }
    }


def _opens_5432(item: dict[str, Any]) -> bool:
    return "rule" in item and _match("tcp", "dport", 5432) in item["rule"]["expr"]


ACCEPT = {"accept": None}
# The role's table without its 5432 rule: the tests below add their own.
BASE = [item for item in ROLE_TABLE["nftables"] if not _opens_5432(item)]


def _ruleset(*rules: dict[str, Any]) -> str:
    return json.dumps({"nftables": [*BASE, *rules]})


def _role_table_with(*items: dict[str, Any]) -> dict[str, Any]:
    return {"nftables": [*ROLE_TABLE["nftables"], *items]}


def test_the_recorded_table_is_the_role_template_rendered() -> None:
    # The recording is only evidence while the template renders what was recorded.
    assert render_db_host() == (NFT / "db.nft").read_text(), (
        "roles/base/templates/nftables.conf.j2 changed: run"
        " tests/roles/fixtures/nftables/record.py as root to record it again"
    )
    assert len(BASE) == len(ROLE_TABLE["nftables"]) - 1


def test_the_role_table_opens_5432_to_the_app_ssh_to_the_controller_and_nothing_else() -> None:
    # Loopback, established/related and ICMP accept without a port match: recognised, not
    # read as opening every port.
    assert tcp_port_accept_sources(ROLE_TABLE, 5432) == {f"{APP}/32"}
    assert tcp_port_accept_sources(ROLE_TABLE, 22) == {f"{CONTROLLER}/32"}
    assert tcp_port_accept_sources(ROLE_TABLE, 8000) == set()


EVERYONE = {"0.0.0.0/0", "::/0"}


@pytest.mark.parametrize(
    ("rule", "extra"),
    [
        # No port match: every port, 5432 included.
        ("ip saddr 0.0.0.0/0 accept", {"0.0.0.0/0"}),
        ("accept", EVERYONE),
        ("ip6 saddr ::/0 accept", {"::/0"}),
        ("ip saddr 10.0.0.0/8 counter accept", {"10.0.0.0/8"}),
        ("meta nfproto ipv4 accept", {"0.0.0.0/0"}),
        # th dport and tcp dport alike (nft 1.0.6 prints the first as "tcp dport").
        ("meta l4proto tcp th dport 5432 accept", EVERYONE),
        ("th dport 5432 accept", EVERYONE),
        ("meta l4proto { tcp, udp } th dport 5432 accept", EVERYONE),
        ("tcp dport 5000-6000 accept", EVERYONE),
        # Not the base role's rules, though close to them: reported whole.
        ('iifname "eth0" accept', {"rule with other conditions"}),
        ("ct state established accept", {"rule with other conditions"}),
    ],
)
def test_any_accept_rule_reaching_5432_is_counted(rule: str, extra: set[str]) -> None:
    listing = _role_table_with(_rule(*RECORDED_RULES[rule]))
    found = {
        "rule with other conditions" if s.startswith("rule with other conditions: ") else s
        for s in tcp_port_accept_sources(listing, 5432)
    }
    assert found == {f"{APP}/32"} | extra
    with pytest.raises(AssertionError, match="extra: "):
        assert_same("5432 opened to", tcp_port_accept_sources(listing, 5432), {f"{APP}/32"})


def test_meta_l4proto_tcp_beside_th_dport_is_read_as_tcp_dport() -> None:
    # How an nft that keeps the two apart prints "meta l4proto tcp th dport 5432 accept".
    l4proto_tcp = {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}
    listing = _role_table_with(_rule(l4proto_tcp, _match("th", "dport", 5432), ACCEPT))
    assert tcp_port_accept_sources(listing, 5432) == {f"{APP}/32"} | EVERYONE


@pytest.mark.parametrize(
    "rule", ["udp dport 5432 accept", "meta l4proto udp accept", "tcp dport 22 accept"]
)
def test_a_rule_for_another_transport_or_port_does_not_open_5432(rule: str) -> None:
    listing = _role_table_with(_rule(*RECORDED_RULES[rule]))
    assert tcp_port_accept_sources(listing, 5432) == {f"{APP}/32"}


def test_only_the_input_chain_counts_and_its_policy_must_be_drop() -> None:
    output = {
        "chain": {
            "family": "inet",
            "table": "fastapi_metal",
            "name": "output",
            "handle": 9,
            "type": "filter",
            "hook": "output",
            "prio": 0,
            "policy": "accept",
        }
    }
    listing = _role_table_with(output, _rule(ACCEPT, chain="output"))
    assert tcp_port_accept_sources(listing, 5432) == {f"{APP}/32"}
    # A rule of a chain the listing does not describe may be in the input chain: counted.
    listing = _role_table_with(_rule(ACCEPT, chain="elsewhere"))
    assert tcp_port_accept_sources(listing, 5432) == {f"{APP}/32"} | EVERYONE
    # An input chain that accepts what no rule drops.
    listing = json.loads(json.dumps(ROLE_TABLE))
    chain = next(i["chain"] for i in listing["nftables"] if "chain" in i)
    chain["policy"] = "accept"
    assert tcp_port_accept_sources(listing, 5432) == {f"{APP}/32", "policy accept: chain input"}


def test_a_jump_from_the_input_chain_is_reported_whole() -> None:
    listing = _role_table_with(_rule(_match("tcp", "dport", 5432), {"jump": {"target": "x"}}))
    (jump,) = tcp_port_accept_sources(listing, 5432) - {f"{APP}/32"}
    assert jump.startswith("rule with other conditions: ") and '"jump"' in jump


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([_rule(_match("ip", "saddr", APP), _match("tcp", "dport", 5432), ACCEPT)], {f"{APP}/32"}),
        (
            [
                _rule(
                    _match("ip", "saddr", {"set": [APP]}),
                    _match("tcp", "dport", {"set": [5432]}),
                    {"counter": {"packets": 0, "bytes": 0}},
                    ACCEPT,
                )
            ],
            {f"{APP}/32"},
        ),
    ],
    ids=["scalar", "sets"],
)
def test_nft_5432_sources_equal_the_app_hosts(rules: list[dict], expected: set[str]) -> None:
    assert_same("5432 opened to", tcp_port_accept_sources(_ruleset(*rules), 5432), expected)


@pytest.mark.parametrize(
    ("rules", "extra"),
    [
        ([_rule(_match("tcp", "dport", 5432), ACCEPT)], "0.0.0.0/0"),
        (
            [
                _rule(
                    _match(
                        "ip", "saddr", {"set": [APP, {"prefix": {"addr": "10.0.0.0", "len": 8}}]}
                    ),
                    _match("tcp", "dport", 5432),
                    ACCEPT,
                )
            ],
            "10.0.0.0/8",
        ),
        (
            [
                _rule(
                    _match("ip", "saddr", APP),
                    _match("tcp", "dport", {"range": [5000, 6000]}),
                    ACCEPT,
                ),
                _rule(
                    _match("ip6", "saddr", "::/0"),
                    _match("tcp", "dport", {"set": [22, 5432]}),
                    ACCEPT,
                ),
            ],
            "::/0",
        ),
    ],
    ids=["no-source", "wider-prefix", "ip6-everyone"],
)
def test_nft_any_other_5432_opening_fails(rules: list[dict], extra: str) -> None:
    with pytest.raises(AssertionError, match=rf"extra: +{re.escape(extra)}"):
        assert_same(
            "5432 opened to", tcp_port_accept_sources(_ruleset(*rules), 5432), {f"{APP}/32"}
        )


def test_hba_rule_tuple_shape() -> None:
    # (type, database, user, address, method, options): what the scenario's test compares.
    assert HbaRule("host", ("notes",), ("notes",), f"{APP}/32", "scram-sha-256") in EXPECTED
    assert len(EXPECTED) == 4
