"""Several apps on the same hosts: the filters that turn the inventory's fastapi_metal_apps into
what each role takes (plugins/filter/apps.py, nginx.py) and the preflight rules of the list
(plugins/plugin_utils/inventory_rules.py: apps_problems). Each rule has its passing case."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.fastapi_metal.stack.plugins.filter.apps import (
    app_databases,
    apps,
    monitored_apps,
)
from ansible_collections.fastapi_metal.stack.plugins.filter.nginx import nginx_sites
from ansible_collections.fastapi_metal.stack.plugins.plugin_utils.inventory_rules import (
    apps_problems,
)

ROLE_KEYS = [
    "fastapi_app_name", "fastapi_app_port", "fastapi_app_source", "fastapi_app_env",
    "fastapi_app_database", "fastapi_app_release",
]  # fmt: skip
NOTES = {
    "fastapi_app_name": "notes",
    "fastapi_app_port": 8000,
    "nginx_server_names": ["notes.example.com"],
    "fastapi_app_database": {"password": "s3cret"},
}
SHOP = {
    "fastapi_app_name": "shop",
    "fastapi_app_port": 8001,
    "nginx_server_names": ["shop.example.com", "www.shop.example.com"],
}


def problems(
    entries: Any,
    host: Mapping[str, Any] | None = None,
    groups: tuple[str, ...] = ("all", "app", "lb"),
    inventory: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
) -> list[str]:
    variables = dict(host or {})
    return apps_problems(
        entries,
        variables.get,
        lambda var: var in variables,
        groups,
        ["app1", "app2"],
        inventory,
        extra,
        ROLE_KEYS,
    )


# --- the filter apps: what the playbooks loop over -----------------------------------------


def test_apps_without_a_list_is_the_one_app_of_the_role_variables() -> None:
    assert apps(None) == [{}]
    assert apps([]) == [{}]


def test_apps_returns_every_entry_or_the_one_named() -> None:
    assert apps([NOTES, SHOP]) == [NOTES, SHOP]
    assert apps([NOTES, SHOP], "shop") == [SHOP]


@pytest.mark.parametrize(
    ("entries", "only", "message"),
    [
        ([NOTES, SHOP], "blog", r"\(notes, shop\); got 'blog'"),
        (None, "shop", "the inventory lists no apps"),
        ({"fastapi_app_name": "notes"}, "", "expected a list of apps"),
    ],
)
def test_apps_names_what_is_wrong(entries: Any, only: str, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        apps(entries, only)


def test_app_databases_follow_the_apps_that_ask_for_one() -> None:
    named = {**SHOP, "fastapi_app_database": {"name": "shopdb", "user": "shopper", "password": "p"}}
    assert app_databases([NOTES, SHOP, named]) == [
        {"name": "notes", "owner": "notes", "password": "s3cret"},
        {"name": "shopdb", "owner": "shopper", "password": "p"},
    ]


# --- the filter nginx_sites ------------------------------------------------------------------


def site(name: str, *names: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "server_names": list(names), "servers": ["10.0.0.31:8000"], **more}


def test_nginx_sites_fills_in_upstream_certificates_and_locations() -> None:
    got = nginx_sites(
        [site("notes", "notes.example.com"), site("my-shop", "shop.example.com", locations=[])],
        [{"path": "/"}], ["= /health"], ["= /metrics"],
    )  # fmt: skip
    assert [s["upstream"] for s in got] == ["fastapi_metal_notes", "fastapi_metal_my_shop"]
    assert got[0]["certificate"] == "/etc/nginx/tls/notes.example.com/fullchain.pem"
    assert got[1]["certificate_key"] == "/etc/nginx/tls/shop.example.com/privkey.pem"
    assert got[0]["locations"] == [{"path": "/"}] and got[1]["locations"] == []
    assert got[0]["rate_limit_exempt_locations"] == ["= /health"]


@pytest.mark.parametrize(
    ("sites", "message"),
    [
        ([], "expected a non-empty list of sites"),
        ([site("Notes", "a.example.com")], "expected each site to have a name"),
        ([site("notes")], "expected the names site notes answers to"),
        ([{**site("notes", "a.example.com"), "servers": []}], "expected the upstream servers"),
        ([site("a", "x.example.com"), site("b", "x.example.com")], "x.example.com is in a and b"),
        ([site("a", "x.example.com"), site("a", "y.example.com")], "a is twice"),
        (
            [{**site("notes", "a.example.com"), "servers": ["10.0.0.31"]}],
            "expected the servers of site notes as upstream servers as host:port or unix:/path",
        ),
    ],
)
def test_nginx_sites_names_what_is_wrong(sites: list[Any], message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        nginx_sites(sites, [], [], [])


# --- the preflight rules of fastapi_metal_apps ---------------------------------------------


def test_a_good_list_passes() -> None:
    assert problems([NOTES, SHOP]) == []


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ({"fastapi_app_name": "notes"}, "fastapi_metal_apps: expected a non-empty list of apps"),
        ([NOTES, {**SHOP, "fastapi_app_name": "notes"}],
         "fastapi_metal_apps[notes]: expected a name of its own for each app; notes is also the "
         "name of entry 1 (notes)"),
        ([NOTES, {**SHOP, "fastapi_app_port": 8000}],
         "fastapi_metal_apps[shop]: expected a port of its own for each app; 8000"),
        ([NOTES, {**SHOP, "nginx_server_names": ["notes.example.com"]}],
         "fastapi_metal_apps[shop]: expected a server name of its own for each app; "
         "notes.example.com"),
        ([NOTES, {**SHOP, "fastapi_app_sauce": 1}],
         "fastapi_metal_apps[shop]: expected variables of the fastapi_app role (its README lists "
         "them), nginx_server_names and nginx_site; got fastapi_app_sauce"),
        ([NOTES, {**SHOP, "nginx_server_names": []}],
         "fastapi_metal_apps[shop].nginx_server_names: expected the names the app is served at"),
        ([NOTES, {**SHOP, "fastapi_app_port": 70000}],
         "fastapi_metal_apps[shop].fastapi_app_port: expected a TCP port, 1-65535 (e.g. 8000); "
         "got '70000'"),
        ([NOTES, {**SHOP, "fastapi_app_env": {"BAD KEY": "x"}}],
         "fastapi_metal_apps[shop].fastapi_app_env: expected names of letters, digits and _"),
        ([{**NOTES, "fastapi_app_database": {"user": "notes"}}],
         "fastapi_metal_apps[notes].fastapi_app_database: expected a password"),
    ],
)  # fmt: skip
def test_each_entry_is_checked_as_an_app(entries: Any, expected: str) -> None:
    found = problems(entries)
    assert any(p.startswith(expected) for p in found), found


def test_a_setting_in_an_entry_and_in_the_inventory_is_refused_unless_it_is_an_extra_var() -> None:
    entries = [NOTES, {**SHOP, "fastapi_app_release": "1.0"}]
    found = problems(entries, inventory=("fastapi_app_release",))
    assert found == [
        "fastapi_metal_apps[shop]: expected each setting in one place; fastapi_app_release is also "
        "set for every app in the inventory (which wins over the entry): keep it in the entries, "
        "or only there"
    ]
    # -e wins over both on purpose (a deploy names its release): no conflict then.
    extra = ("fastapi_app_release", "fastapi_metal_app")
    host = {"fastapi_metal_app": "shop"}
    assert problems(entries, host, inventory=extra, extra=extra) == []


def test_extra_vars_for_one_app_need_its_name_when_there_are_several() -> None:
    found = problems([NOTES, SHOP], extra=("fastapi_app_source",))
    assert found and found[0].startswith(
        "fastapi_metal_app: expected the app fastapi_app_source is for"
    ), found
    assert (
        problems([NOTES, SHOP], {"fastapi_metal_app": "shop"}, extra=("fastapi_app_source",)) == []
    )
    assert problems([NOTES], extra=("fastapi_app_source",)) == []  # one app: no doubt
    found = problems([NOTES, SHOP], {"fastapi_metal_app": "blog"})
    assert found == [
        "fastapi_metal_app: expected the name of an app of fastapi_metal_apps (notes, shop); "
        "got 'blog'"
    ]


def test_server_names_are_needed_only_where_there_is_an_edge() -> None:
    bare = [{k: v for k, v in NOTES.items() if k != "nginx_server_names"}]
    assert problems(bare, groups=("all", "app")) == []
    assert problems(bare, groups=("all", "lb"))


@pytest.mark.parametrize("where", ["inventory", "extra"])
def test_the_port_an_edge_reads_is_set_in_the_entries_only(where: str) -> None:
    keys = ("fastapi_app_port",)
    found = problems([NOTES, SHOP], **{where: keys})  # type: ignore[arg-type]
    assert any(
        p.startswith("fastapi_app_port: expected in each entry of fastapi_metal_apps")
        for p in found
    ), found
    assert problems([NOTES, SHOP], **{where: ("fastapi_app_workers",)}) == []  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"fastapi_app_bind_address": "10.0.0.31"},
         "fastapi_metal_apps[shop]: expected fastapi_app_bind_address per host (host_vars"),
        ({"nginx_site": "oops"},
         "fastapi_metal_apps[shop].nginx_site: expected a mapping of locations"),
        ({"nginx_site": {"certificate": "/x.pem"}},
         "fastapi_metal_apps[shop].nginx_site: expected a mapping of locations, "
         "rate_limit_exempt_locations, private_locations (e.g. {rate_limit_exempt_locations: "
         "['= /healthz']}); got certificate"),
        ({"fastapi_app_database": "pw"},
         "fastapi_metal_apps[shop].fastapi_app_database: expected a mapping of the database's "
         "parts"),
    ],
)  # fmt: skip
def test_what_the_edge_and_the_database_read_has_one_shape(
    entry: dict[str, Any], expected: str
) -> None:
    keys = (*ROLE_KEYS, "fastapi_app_bind_address")
    found = apps_problems(
        [NOTES, {**SHOP, **entry}], {}.get, lambda var: False, ("all", "app", "lb"),
        ["app1"], (), (), keys,
    )  # fmt: skip
    assert any(p.startswith(expected) for p in found), found
    good = {**SHOP, "nginx_site": {"rate_limit_exempt_locations": ["= /healthz"]}}
    assert (
        apps_problems(
            [NOTES, good], {}.get, lambda var: False, ("all", "app", "lb"), ["app1"], (), (), keys
        )
        == []
    )


def test_monitored_apps_read_each_entry_then_the_fallback() -> None:
    """What Prometheus watches per app: an entry's own values, else the variables every app
    shares (FALLBACK); an entry's own health path is its liveness path unless it names one."""
    fallback = {"fastapi_app_port": 8000, "fastapi_app_health_path": "/health",
                "fastapi_app_rollback_health_path": "/livez",
                "fastapi_app_metrics_path": "/metrics", "nginx_server_names": []}  # fmt: skip
    entries = [
        {"fastapi_app_name": "notes", "fastapi_app_health_path": "/health/ready",
         "fastapi_app_rollback_health_path": "/health", "nginx_server_names": ["app.example.com"]},
        {"fastapi_app_name": "typical", "fastapi_app_port": 8001, "fastapi_app_metrics_path": "",
         "fastapi_app_health_path": "/api/v1/utils/health-check/",
         "nginx_server_names": "t.example.com"},
        {"fastapi_app_name": "tiny", "fastapi_app_port": 8002},
    ]  # fmt: skip
    got = {a["name"]: a for a in monitored_apps(entries, fallback)}
    notes = {"name": "notes", "port": 8000, "live_path": "/health", "metrics_path": "/metrics"}
    assert got["notes"] == {**notes, "server_names": ["app.example.com"]}
    assert got["typical"]["live_path"] == "/api/v1/utils/health-check/"
    assert got["typical"]["metrics_path"] == "" and got["typical"]["server_names"] == [
        "t.example.com"
    ]
    assert got["tiny"]["live_path"] == "/livez" and got["tiny"]["port"] == 8002
    # No fastapi_metal_apps: the one app the fastapi_app_* variables describe.
    one = monitored_apps(None, {**fallback, "fastapi_app_name": "api"})
    assert [(a["name"], a["port"], a["live_path"]) for a in one] == [("api", 8000, "/livez")]
