"""lab.py's prerequisite checks: a machine that lacks what the lab needs is told the fix at
once, instead of failing minutes later (certbot, a firewall probe) on names that never resolve."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

LAB_PY = Path(__file__).resolve().parents[2] / "lab" / "lab.py"


@pytest.fixture(scope="module")
def lab() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastapi_metal_lab", LAB_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


GOOD = {"network_backend": "netavark", "runtime": "runc", "cgroups": "v1"}


def test_a_machine_with_everything_has_no_problem(lab: ModuleType) -> None:
    assert lab.prerequisite_problems(GOOD, dns_helper=True) == []
    assert lab.missing_tools(lambda tool: f"/usr/bin/{tool}") == []


def test_cni_without_dns_is_refused_naming_the_packages_and_the_setting(lab: ModuleType) -> None:
    (problem,) = lab.prerequisite_problems({**GOOD, "network_backend": "cni"}, dns_helper=True)
    assert "'cni'" in problem and "netavark aardvark-dns" in problem
    assert 'network_backend = "netavark"' in problem and "containers.conf" in problem


def test_a_missing_dns_helper_and_crun_are_each_named(lab: ModuleType) -> None:
    problems = lab.prerequisite_problems({**GOOD, "runtime": "crun"}, dns_helper=False)
    assert len(problems) == 2
    assert "apt-get install aardvark-dns" in problems[0]
    assert "'crun'" in problems[1] and 'runtime = "runc"' in problems[1]


def test_missing_commands_name_their_packages(lab: ModuleType) -> None:
    def which(tool: str) -> str | None:
        return None if tool in {"iptables", "ssh-keygen"} else f"/usr/bin/{tool}"

    assert lab.missing_tools(which) == [
        "iptables (netavark sets up the network's NAT with it)",
        "openssh-client",
    ]


def test_debootstrap_is_not_needed_with_an_image_of_ones_own(lab: ModuleType) -> None:
    def which(tool: str) -> str | None:
        return None if tool == "debootstrap" else f"/usr/sbin/{tool}"

    assert lab.missing_tools(which) == ["debootstrap"]
    assert lab.missing_tools(which, own_image=True) == []


WANT = {"app1": "10.89.50.31", "app.lab.test": "10.89.50.10"}


def test_names_that_resolve_to_their_addresses_are_no_problem(lab: ModuleType) -> None:
    seen = {"app1": ["10.89.50.31"], "app.lab.test": ["10.89.50.10"]}
    assert lab.resolution_problems("lb1", WANT, seen) == []


def test_an_unresolved_name_blames_the_dns_server_or_the_backend(lab: ModuleType) -> None:
    seen = {"app1": "[Errno -2] Name or service not known", "app.lab.test": ["10.89.50.10"]}
    problems = lab.resolution_problems("lb1", WANT, seen)
    assert problems == [
        "lb1 cannot resolve app1 ([Errno -2] Name or service not known); expected 10.89.50.31"
    ]
    assert "(aardvark-dns) did not answer" in lab.dns_fix(problems, "netavark")
    assert "apt-get install netavark aardvark-dns" in lab.dns_fix(problems, "cni")


def test_a_name_at_another_address_is_a_stale_record_not_a_dead_dns(lab: ModuleType) -> None:
    seen = {"app1": ["10.89.50.99"]}  # and app.lab.test not answered at all
    problems = lab.resolution_problems("lb1", WANT, seen)
    assert problems[0].startswith("lb1 resolves app1 to ['10.89.50.99'], expected [10.89.50.31]")
    assert "stale" in problems[0]
    assert problems[1] == "lb1 cannot resolve app.lab.test (no answer); expected 10.89.50.10"
    assert lab.dns_fix(problems[:1], "netavark") == "Fix: `lab.py down` and `lab.py up`"
