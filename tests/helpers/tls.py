"""Judge an sslyze scan of the edge: complete, compliant, and negotiating what nginx offers.

Pure (no sslyze import: sslyze lives in a venv of its own, ``.venv-sslyze``), so that the molecule
edge scenario and the unit tests in ``tests/security`` judge with the same code. The inputs are
what ``sslyze --mozilla_config=intermediate --json_out=FILE TARGET`` leaves behind: the JSON
document, its console output and its exit status.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Collection, Mapping
from typing import Any

# The scan commands sslyze's Mozilla checker needs (SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER in
# sslyze 6): each must have run to the end, or the compliance verdict means nothing.
MOZILLA_CHECKER_COMMANDS = (
    "certificate_info",
    "ssl_2_0_cipher_suites",
    "ssl_3_0_cipher_suites",
    "tls_1_0_cipher_suites",
    "tls_1_1_cipher_suites",
    "tls_1_2_cipher_suites",
    "tls_1_3_cipher_suites",
    "heartbleed",
    "robot",
    "openssl_ccs_injection",
    "tls_fallback_scsv",
    "tls_compression",
    "session_renegotiation",
    "elliptic_curves",
    "tls_extended_master_secret",
)

# RFC 7919 ffdhe2048, the group of roles/nginx/files/ffdhe2048.pem (ssl_dhparam).
FFDHE2048_PRIME = int(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695A9E13641146433FBCC939DCE249B3EF9"
    "7D2FE363630C75D8F681B202AEC4617AD3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935"
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797ABC0AB182B324FB61D108A94BB2C8E3FB"
    "B96ADAB760D7F4681D4F42A3DE394DF4AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61"
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005C58EF1837D1683B2C6F34A26C1B2EFFA"
    "886B423861285C97FFFFFFFFFFFFFFFF",
    16,
)

# What nginx.conf.j2 accepts with an RSA certificate (ssl_ciphers: the *-RSA-* entries; the
# ECDSA ones need an ECDSA certificate), by IANA name as sslyze reports them. TLS 1.3: OpenSSL's
# default suites (nginx does not set ssl_conf_command Ciphersuites). Nothing before TLS 1.2.
NGINX_RSA_ACCEPTED_SUITES: Mapping[str, frozenset[str]] = {
    "ssl_2_0_cipher_suites": frozenset(),
    "ssl_3_0_cipher_suites": frozenset(),
    "tls_1_0_cipher_suites": frozenset(),
    "tls_1_1_cipher_suites": frozenset(),
    "tls_1_2_cipher_suites": frozenset(
        {
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        }
    ),
    "tls_1_3_cipher_suites": frozenset(
        {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
    ),
}

_VERDICT = re.compile(
    r"^\s*(?P<server>\S+): (?P<verdict>OK - Compliant\.|FAILED - Not compliant\."
    r"|ERROR - Scan did not run successfully)",
    re.M,
)
_ISSUE = re.compile(r"^\s+\* (?P<criterion>\w+): (?P<description>.*)$")


def compliance_verdict(stdout: str, config: str = "intermediate") -> tuple[str, dict[str, str]]:
    """("OK" | "FAILED" | "ERROR" | "MISSING", {criterion: description}) from sslyze's console."""
    _before, sep, section = stdout.partition("COMPLIANCE AGAINST TLS CONFIGURATION")
    if not sep or f'Checking results against Mozilla\'s "{config}" configuration' not in section:
        return "MISSING", {}
    verdicts = list(_VERDICT.finditer(section))
    if len(verdicts) != 1:
        return "MISSING", {}
    verdict = verdicts[0]["verdict"].split(" ", 1)[0]
    issues: dict[str, str] = {}
    if verdict == "FAILED":
        for line in section[verdicts[0].end() :].splitlines()[1:]:
            match = _ISSUE.match(line)
            if not match:
                break
            issues[match["criterion"]] = match["description"]
    return verdict, issues


def _suite_names(attempt: Mapping[str, Any]) -> set[str]:
    result = attempt.get("result") or {}
    return {s["cipher_suite"]["name"] for s in result.get("accepted_cipher_suites", [])}


def sslyze_problems(
    report: Mapping[str, Any],
    stdout: str,
    returncode: int,
    *,
    accepted_suites: Mapping[str, Collection[str]] = NGINX_RSA_ACCEPTED_SUITES,
    allowed_issues: Collection[str] = (),
    dh_prime: int | None = FFDHE2048_PRIME,
    config: str = "intermediate",
) -> list[str]:
    """Everything wrong with one server's scan; empty when the edge is as configured.

    - the scan is complete: one server, reached, and every scan command the Mozilla checker
      needs (and any other sslyze ran) COMPLETED, none in ERROR or left unscheduled;
    - sslyze's verdict against Mozilla's ``config``: compliant, or not compliant only on
      ``allowed_issues`` (and the exit status agrees with the verdict);
    - the accepted cipher suites, per protocol, are exactly ``accepted_suites`` (IANA names);
    - every accepted DHE suite uses a 2048-bit DH group whose prime is ``dh_prime``.
    """
    problems: list[str] = []
    if report.get("invalid_server_strings"):
        problems.append(f"sslyze could not use the target: {report['invalid_server_strings']}")
    servers = report.get("server_scan_results") or []
    if len(servers) != 1:
        return [*problems, f"expected the scan of one server, sslyze reports {len(servers)}"]
    server = servers[0]
    if server.get("connectivity_status") != "COMPLETED":
        trace = (server.get("connectivity_error_trace") or "").strip().splitlines()[-1:]
        problems.append(
            f"sslyze could not connect (connectivity_status={server.get('connectivity_status')}):"
            f" {' '.join(trace)}"
        )
    if server.get("scan_status") != "COMPLETED":
        problems.append(f"the scan did not complete: scan_status={server.get('scan_status')}")
    attempts: Mapping[str, Any] = server.get("scan_result") or {}
    needed = {*MOZILLA_CHECKER_COMMANDS, *accepted_suites}
    if not attempts:
        problems.append("no scan command ran")
    for name in sorted(needed | set(attempts) if attempts else ()):
        attempt = attempts.get(name) or {"status": "MISSING"}
        status = attempt.get("status")
        if status == "COMPLETED" or (status == "NOT_SCHEDULED" and name not in needed):
            continue
        reason = attempt.get("error_reason") or ""
        last = (attempt.get("error_trace") or "").strip().splitlines()[-1:]
        problems.append(f"scan command {name}: {status} {reason} {' '.join(last)}".rstrip())

    verdict, issues = compliance_verdict(stdout, config)
    unexpected = {k: v for k, v in issues.items() if k not in allowed_issues}
    if verdict == "MISSING":
        problems.append(f"no verdict against Mozilla's {config!r} configuration in sslyze's output")
    elif verdict == "ERROR":
        problems.append("sslyze: the scan did not run successfully, no compliance verdict")
    elif verdict == "FAILED" and not issues:
        problems.append("sslyze says not compliant but lists no criterion")
    elif unexpected:
        problems.append(f"not compliant with Mozilla's {config!r}: {unexpected}")
    expected_rc = {"OK": 0, "FAILED": 1, "ERROR": 1}.get(verdict)
    if expected_rc is not None and returncode != expected_rc:
        problems.append(f"sslyze exited {returncode} with the verdict {verdict}")

    for name, expected in accepted_suites.items():
        attempt = attempts.get(name) or {}
        if attempt.get("status") != "COMPLETED":
            continue  # reported above
        accepted = _suite_names(attempt)
        if accepted != set(expected):
            problems.append(
                f"{name}: missing {sorted(set(expected) - accepted)},"
                f" unexpected {sorted(accepted - set(expected))}"
            )
        if dh_prime is None:
            continue
        for suite in (attempt.get("result") or {}).get("accepted_cipher_suites", []):
            if not suite["cipher_suite"]["name"].startswith("TLS_DHE_"):
                continue
            key = suite.get("ephemeral_key") or {}
            prime = key.get("prime")
            got = int.from_bytes(base64.b64decode(prime), "big") if prime else None
            if key.get("type_name") != "DH" or key.get("size") != 2048 or got != dh_prime:
                problems.append(
                    f"{suite['cipher_suite']['name']}: DH group is not ffdhe2048"
                    f" (type {key.get('type_name')}, {key.get('size')} bits,"
                    f" prime {'matches' if got == dh_prime else 'differs'})"
                )
    return problems
