"""Exact expectations for a db host converged by the postgresql role, and the comparisons.

Pure functions (no database, no host, no pytest): the postgresql scenario's testinfra tests
(``molecule/postgresql/tests``) feed them what the server and the host report, and
``tests/roles/test_pg_expect.py`` feeds them a real PostgreSQL 15's answers on loopback, so
each comparison is shown to fail on a wrong server before it is trusted on the lab.

Security-relevant sets are compared for equality, never for inclusion: "the app host is
admitted" also holds when everyone is (``host all all 0.0.0.0/0``); "the app host's rule is
there" holds next to an extra one. :func:`assert_same` names what is missing and what is extra.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

# pg_hba.conf as the server parses it: one JSON array, one object per line (errors included).
# The view shows the file on disk, not the rules the server loaded: see HBA_FILE_LOADED_SQL.
HBA_RULES_SQL = (
    "SELECT coalesce(json_agg(json_build_object("
    "'line_number', line_number, 'type', type, 'database', database, 'user_name', user_name,"
    " 'address', address, 'netmask', netmask, 'auth_method', auth_method,"
    " 'options', options, 'error', error) ORDER BY line_number), '[]')"
    " FROM pg_hba_file_rules"
)
# 't' when the server (re)loaded its configuration after pg_hba.conf was last written, so
# that pg_hba_file_rules is also what the server enforces. pg_stat_file has 1 s resolution.
HBA_FILE_LOADED_SQL = (
    "SELECT pg_conf_load_time() >= (pg_stat_file(current_setting('hba_file'))).modification"
)


def database_acl_sql(database: str) -> str:
    """One JSON array: the privileges granted on ``database`` (grantee 0 is PUBLIC)."""
    name = database.replace("'", "''")
    return (
        "SELECT coalesce(json_agg(json_build_object("
        "'grantor', CASE a.grantor WHEN 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantor) END,"
        " 'grantee', CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,"
        " 'privilege', a.privilege_type, 'grantable', a.is_grantable)), '[]')"
        f" FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = '{name}'"
    )


def assert_same(what: str, actual: Iterable[Any], expected: Iterable[Any]) -> None:
    """Raise AssertionError unless ``actual`` and ``expected`` hold exactly the same items."""
    actual_set, expected_set = set(actual), set(expected)
    if actual_set == expected_set:
        return
    lines = [f"{what}: not the expected set"]
    lines += [f"  extra:   {item}" for item in sorted(map(str, actual_set - expected_set))]
    lines += [f"  missing: {item}" for item in sorted(map(str, expected_set - actual_set))]
    lines.append(f"  expected exactly: {sorted(map(str, expected_set))}")
    raise AssertionError("\n".join(lines))


# -- pg_hba -------------------------------------------------------------------------------
class HbaRule(NamedTuple):
    """One pg_hba rule: the address is a normalised network ("10.0.0.5/32"), "" for local."""

    type: str
    database: tuple[str, ...]
    user: tuple[str, ...]
    address: str
    method: str
    options: tuple[str, ...] = ()


def _prefix_length(netmask: str) -> int | None:
    """The prefix length of a contiguous netmask ("255.255.255.0" -> 24), else None."""
    mask = ipaddress.ip_address(netmask)
    bits, width = int(mask), mask.max_prefixlen
    length = bin(bits).count("1")
    contiguous = ((1 << width) - 1) ^ ((1 << (width - length)) - 1)
    return length if bits == contiguous else None


def _network(address: str | None, netmask: str | None) -> str:
    if address is None:
        return ""
    if netmask is None:
        # A keyword (all, samehost, samenet) or a host name: never one of our networks.
        return address
    length = _prefix_length(netmask)
    if length is None:
        return f"{address} mask {netmask}"
    # strict=False: "10.0.0.5/0" admits what "0.0.0.0/0" admits, and must compare so.
    return str(ipaddress.ip_network(f"{address}/{length}", strict=False))


def network(source: str) -> str:
    """A pg_hba source as the role writes it (a bare address is a /32 or /128), normalised."""
    if "/" not in source:
        source += "/128" if ":" in source else "/32"
    return str(ipaddress.ip_network(source, strict=False))


def hba_rules(rows: str | Sequence[Mapping[str, Any]]) -> set[HbaRule]:
    """pg_hba_file_rules (HBA_RULES_SQL's JSON, or its rows) as rules; a line in error raises.

    A line the server cannot parse is not in the view as a rule, and it keeps the server from
    loading the file at all on a reload: it must fail the check, not vanish from it.
    """
    if isinstance(rows, str):
        rows = json.loads(rows)
    errors = [f"line {row['line_number']}: {row['error']}" for row in rows if row.get("error")]
    if errors:
        raise AssertionError("pg_hba.conf has lines the server rejects: " + "; ".join(errors))
    return {
        HbaRule(
            type=row["type"],
            database=tuple(row["database"] or ()),
            user=tuple(row["user_name"] or ()),
            address=_network(row["address"], row["netmask"]),
            method=row["auth_method"],
            options=tuple(row["options"] or ()),
        )
        for row in rows
    }


def expected_hba_rules(
    databases: Iterable[tuple[str, str]], sources: Iterable[str], hba_type: str = "host"
) -> set[HbaRule]:
    """Exactly what roles/postgresql/templates/pg_hba.conf.j2 must produce.

    ``databases``: (name, owner) pairs; ``sources``: postgresql_hba_sources. Peer over the
    local socket; over TCP, each database's owner to it from each source with scram-sha-256.
    """
    rules = {
        HbaRule("local", ("all",), ("postgres",), "", "peer"),
        HbaRule("local", ("all",), ("all",), "", "peer"),
    }
    sources = list(sources)
    for name, owner in databases:
        for source in sources:
            rules.add(HbaRule(hba_type, (name,), (owner,), network(source), "scram-sha-256"))
    return rules


# -- privileges on a database ---------------------------------------------------------------
class Grant(NamedTuple):
    grantor: str
    grantee: str
    privilege: str
    grantable: bool = False


def grants(rows: str | Sequence[Mapping[str, Any]]) -> set[Grant]:
    """database_acl_sql()'s JSON (or rows) as grants. A NULL datacl (the default, which lets
    PUBLIC connect) has no rows: it never equals an owner-only expectation."""
    if isinstance(rows, str):
        rows = json.loads(rows)
    return {
        Grant(row["grantor"], row["grantee"], row["privilege"], bool(row["grantable"]))
        for row in rows
    }


def expected_owner_only_grants(owner: str) -> set[Grant]:
    """A database whose PUBLIC lost CONNECT and TEMPORARY (the role's postgresql_privs): only
    the owner's own privileges remain, explicit (``{owner=CTc/owner}``)."""
    return {Grant(owner, owner, privilege) for privilege in ("CREATE", "TEMPORARY", "CONNECT")}


# -- listening sockets --------------------------------------------------------------------
# Run on the server's host as ``python3 -c HOST_ADDRESSES_PY NAME...``: prints what each NAME
# resolves to (as the server resolves listen_addresses) and the host's own addresses, as JSON.
HOST_ADDRESSES_PY = """
import json, os, shutil, socket, subprocess, sys
resolved = {}
for name in sys.argv[1:]:
    try:
        infos = socket.getaddrinfo(
            name, None, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except socket.gaierror:
        infos = []
    resolved[name] = sorted({info[4][0] for info in infos})
ip = shutil.which("ip", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin")
out = subprocess.run([ip, "-j", "addr", "show"], capture_output=True, text=True, check=True)
local = sorted({a["local"] for link in json.loads(out.stdout) for a in link.get("addr_info", [])})
print(json.dumps({"resolved": resolved, "local": local}))
"""


def listening_addresses(ss_output: str) -> set[str]:
    """The local addresses in ``ss -Hltn 'sport = :PORT'`` output ("[::1]:5432" -> "::1")."""
    addresses = set()
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        address = fields[3].rsplit(":", 1)[0]
        if address.startswith("[") and address.endswith("]"):
            address = address[1:-1]
        addresses.add(address.split("%", 1)[0])
    return addresses


def expected_listening_addresses(
    listen_addresses: Iterable[str],
    resolved: Mapping[str, Iterable[str]],
    local_addresses: Iterable[str],
) -> set[str]:
    """Where a server with ``listen_addresses`` binds, as PostgreSQL does it.

    ``resolved``: each name's addresses (getaddrinfo, AI_PASSIVE, as the server asks);
    ``local_addresses``: the host's own addresses (binding to any other fails, and the server
    goes on without it). "*" is every address.
    """
    local = set(local_addresses)
    bound: set[str] = set()
    for entry in listen_addresses:
        entry = entry.strip()
        if entry == "*":
            bound |= {"0.0.0.0", "::"}
            continue
        try:
            candidates = {str(ipaddress.ip_address(entry))}
        except ValueError:
            candidates = {str(ipaddress.ip_address(a)) for a in resolved.get(entry, ())}
        bound |= candidates & local
    return bound


# -- nftables -----------------------------------------------------------------------------
def _values(right: Any) -> list[Any]:
    if isinstance(right, dict) and "set" in right:
        return list(right["set"])
    return [right]


def _source(value: Any) -> str:
    if isinstance(value, dict) and "prefix" in value:
        prefix = value["prefix"]
        return str(ipaddress.ip_network(f"{prefix['addr']}/{prefix['len']}", strict=False))
    if isinstance(value, str):
        try:
            return network(value)
        except ValueError:
            return value
    return json.dumps(value, sort_keys=True)


def _port_matches(value: Any, port: int) -> bool:
    if isinstance(value, dict) and "range" in value:
        low, high = value["range"]
        return int(low) <= port <= int(high)
    return isinstance(value, int) and value == port


# Matches nft may show for the protocol that a rule's ip/ip6 saddr and tcp dport imply.
IMPLICIT = [
    ({"meta": {"key": "nfproto"}}, "==", "ipv4"),
    ({"meta": {"key": "nfproto"}}, "==", "ipv6"),
    ({"meta": {"key": "l4proto"}}, "==", "tcp"),
]
# The base role's rules that accept without a port match and open no port (nft -j shapes):
# "iif "lo" accept" and "ct state established,related accept" (roles/base/templates/
# nftables.conf.j2). Recognised exactly, and nothing else that accepts every port.
ACCEPT = {"accept": None}
LOOPBACK = {"op": "==", "left": {"meta": {"key": "iif"}}, "right": "lo"}
ESTABLISHED = {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}
# Payload protocols of other transports: a rule matching one never matches TCP.
NOT_TCP = frozenset({"udp", "udplite", "sctp", "dccp", "icmp", "icmpv6"})
# Everyone, per the family of a rule without a source match.
EVERYONE = {"inet": {"0.0.0.0/0", "::/0"}, "ip": {"0.0.0.0/0"}, "ip6": {"::/0"}}
NFPROTO_EVERYONE = {"ipv4": "0.0.0.0/0", "ipv6": "::/0"}


ChainKey = tuple[str, str, str]  # family, table, name


def _chains(items: Iterable[Mapping[str, Any]]) -> tuple[set[ChainKey], set[ChainKey]]:
    """The chains the listing describes, and those of them hooked on input."""
    described: set[ChainKey] = set()
    hooked: set[ChainKey] = set()
    for item in items:
        chain = item.get("chain")
        if chain:
            key = (chain.get("family"), chain.get("table"), chain.get("name"))
            described.add(key)
            if chain.get("hook") == "input":
                hooked.add(key)
    return described, hooked


def tcp_port_accept_sources(ruleset: str | Mapping[str, Any], port: int) -> set[str]:
    """Who the input chain of ``nft -j list ...`` opens TCP ``port`` to, as networks.

    Every accept rule of a chain hooked on input counts (a rule of a chain the listing does
    not describe too: it may be one): one with a ``tcp``/``th dport`` match on ``port``, and
    one without any port match, which opens every port. Not counted: the base role's
    ``iif "lo" accept`` and ``ct state established,related accept`` (recognised exactly), and
    rules that match another transport (``udp dport``, ``meta l4proto { icmp, ipv6-icmp }``).

    A rule's sources are its ``ip``/``ip6 saddr`` networks; without a source match, everyone
    of its family ("0.0.0.0/0", "::/0"). A rule with another condition (an interface, a
    ``ct`` state, a ``jump``) is reported whole, so that it shows up in a comparison instead
    of being read as something else; so is an input chain whose policy is not drop.
    """
    data: Mapping[str, Any] = json.loads(ruleset) if isinstance(ruleset, str) else ruleset
    items = data.get("nftables", [])
    described, hooked = _chains(items)
    sources: set[str] = set()
    for item in items:
        chain = item.get("chain")
        if chain and chain.get("hook") == "input" and chain.get("policy", "accept") != "drop":
            sources.add(f"policy {chain.get('policy', 'accept')}: chain {chain.get('name')}")
        rule = item.get("rule")
        if not rule:
            continue
        key = (rule.get("family"), rule.get("table"), rule.get("chain"))
        if key in described and key not in hooked:
            continue
        exprs = list(rule.get("expr", []))
        verdicts = [e for e in exprs if {"accept", "jump", "goto"} & set(e)]
        if not verdicts:
            continue
        if exprs in ([{"match": LOOPBACK}, ACCEPT], [{"match": ESTABLISHED}, ACCEPT]):
            continue
        port_match: bool | None = None  # None: no port match (every port)
        tcp = True  # False: the rule matches another transport only
        rule_sources: set[str] | None = None
        nfproto: str | None = None
        other: list[Any] = []
        for expr in exprs:
            match = expr.get("match")
            if match is None:
                if "accept" not in expr and "counter" not in expr:
                    other.append(expr)
                continue
            left = match.get("left", {})
            payload = left.get("payload", {})
            values = _values(match.get("right"))
            if (left, match.get("op"), match.get("right")) in IMPLICIT:
                if left == {"meta": {"key": "nfproto"}}:
                    nfproto = match.get("right")
                continue
            if match.get("op") not in ("==", "in"):
                other.append(expr)
            elif left == {"meta": {"key": "l4proto"}}:
                tcp = tcp and "tcp" in values
            elif payload.get("protocol") in NOT_TCP:
                tcp = False
            elif payload.get("field") == "dport" and payload.get("protocol") in ("tcp", "th"):
                # Two port matches: the rule needs both.
                port_match = port_match is not False and any(_port_matches(v, port) for v in values)
            elif (
                payload.get("field") == "saddr"
                and payload.get("protocol") in ("ip", "ip6")
                and rule_sources is None
            ):
                rule_sources = {_source(v) for v in values}
            else:
                other.append(expr)
        if not tcp or port_match is False:
            continue
        if other:
            sources.add("rule with other conditions: " + json.dumps(exprs, sort_keys=True))
        elif rule_sources is not None:
            sources |= rule_sources
        elif nfproto in NFPROTO_EVERYONE:
            sources.add(NFPROTO_EVERYONE[nfproto])
        else:
            sources |= EVERYONE.get(rule.get("family"), {"0.0.0.0/0", "::/0"})
    return sources
