"""The edge scenario's sslyze judge (tests/helpers/tls.py) on real sslyze 6.3.1 scans.

The fixtures are scans of `openssl s_server` on loopback serving the nginx role's TLS settings,
trimmed to what the judge reads (fixtures/sslyze/regenerate.py makes them again).
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.tls import FFDHE2048_PRIME, compliance_verdict, sslyze_problems

FIXTURES = Path(__file__).parent / "fixtures" / "sslyze"
ROOT = Path(__file__).resolve().parents[2]
# Pebble's certificates last 5 years: the one criterion the lab may fail (as in test_edge.py).
LAB_ALLOWED = {"maximum_certificate_lifespan"}


def scan(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def judge(fixture: dict[str, Any], **kwargs: Any) -> list[str]:
    kwargs.setdefault("allowed_issues", LAB_ALLOWED)
    return sslyze_problems(fixture["json_out"], fixture["stdout"], fixture["returncode"], **kwargs)


def test_a_complete_scan_of_the_nginx_settings_passes() -> None:
    assert judge(scan("complete")) == []


def test_a_criterion_not_allowed_fails() -> None:
    problems = judge(scan("complete"), allowed_issues=())
    assert problems == [
        "not compliant with Mozilla's 'intermediate': {'maximum_certificate_lifespan':"
        " 'Certificate life span is 1825 days, should be less than 366.'}"
    ]


def test_a_scan_command_in_error_fails_though_sslyze_lists_no_criterion() -> None:
    fixture = scan("errored")
    # What the old check saw: a compliance section without a single "* criterion:" line.
    assert compliance_verdict(fixture["stdout"]) == ("ERROR", {})
    problems = judge(fixture)
    assert problems == [
        "scan command session_renegotiation: ERROR CLIENT_CERTIFICATE_NEEDED"
        " nassl.ssl_client.ClientCertificateRequested: Server requested a client certificate.",
        "sslyze: the scan did not run successfully, no compliance verdict",
    ]


def test_only_ecdhe_suites_where_dhe_is_configured_fails() -> None:
    # Every ECDHE name contains "DHE": the old `"DHE" in stdout` passed on this server.
    fixture = scan("ecdhe_only")
    assert compliance_verdict(fixture["stdout"])[0] == "FAILED"  # the lifespan only
    assert judge(fixture) == [
        "tls_1_2_cipher_suites: missing ['TLS_DHE_RSA_WITH_AES_128_GCM_SHA256',"
        " 'TLS_DHE_RSA_WITH_AES_256_GCM_SHA384', 'TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256'],"
        " unexpected []"
    ]


def test_an_unreachable_server_fails_though_sslyze_exits_0() -> None:
    fixture = scan("unreachable")
    assert fixture["returncode"] == 0
    problems = judge(fixture)
    assert problems[0].startswith("sslyze could not connect (connectivity_status=ERROR)")
    assert "the scan did not complete: scan_status=ERROR_NO_CONNECTIVITY" in problems
    assert "no scan command ran" in problems
    assert "no verdict against Mozilla's 'intermediate' configuration in sslyze's output" in (
        problems
    )


def test_a_needed_scan_command_not_run_fails() -> None:
    fixture = scan("complete")
    attempt = fixture["json_out"]["server_scan_results"][0]["scan_result"]["robot"]
    attempt.update(status="NOT_SCHEDULED", result=None)
    assert judge(fixture) == ["scan command robot: NOT_SCHEDULED"]


def test_a_dh_group_other_than_ffdhe2048_fails() -> None:
    fixture = copy.deepcopy(scan("complete"))
    suites = fixture["json_out"]["server_scan_results"][0]["scan_result"]
    for suite in suites["tls_1_2_cipher_suites"]["result"]["accepted_cipher_suites"]:
        if suite["cipher_suite"]["name"] == "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256":
            suite["ephemeral_key"]["prime"] = "AQ=="  # any other group
    assert judge(fixture) == [
        "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256: DH group is not ffdhe2048"
        " (type DH, 2048 bits, prime differs)"
    ]


@pytest.mark.parametrize("cut", ["COMPLIANCE AGAINST", "Checking results against", "FAILED"])
def test_a_console_output_without_the_verdict_fails(cut: str) -> None:
    fixture = scan("complete")
    fixture["stdout"] = fixture["stdout"].split(cut, 1)[0]
    assert "no verdict against Mozilla's 'intermediate' configuration in sslyze's output" in (
        judge(fixture)
    )


def test_an_exit_status_that_contradicts_the_verdict_fails() -> None:
    fixture = scan("complete")
    fixture["returncode"] = 2
    assert judge(fixture) == ["sslyze exited 2 with the verdict FAILED"]


def der_length(der: bytes, at: int) -> tuple[int, int]:
    """(length, offset of the content) of the DER element whose length byte is at ``at``."""
    if der[at] < 0x80:
        return der[at], at + 1
    n = der[at] & 0x7F
    return int.from_bytes(der[at + 1 : at + 1 + n], "big"), at + 1 + n


def test_the_judged_dh_prime_is_the_one_nginx_is_given() -> None:
    # DHParameter ::= SEQUENCE { prime INTEGER, base INTEGER } (PKCS #3)
    pem = (ROOT / "roles/nginx/files/ffdhe2048.pem").read_text()
    der = base64.b64decode("".join(line for line in pem.splitlines() if "-----" not in line))
    assert der[0] == 0x30
    _length, at = der_length(der, 1)
    assert der[at] == 0x02
    size, at = der_length(der, at + 1)
    assert int.from_bytes(der[at : at + size], "big") == FFDHE2048_PRIME
