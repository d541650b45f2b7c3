"""The HTTPS edge as a client and an operator see it, checked from other containers.

Runs after side_effect.yml, which drained and undrained an app host, had a broken
configuration refused, and reissued the certificate for [app.lab.test, www.app.lab.test]
with an RSA key.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import testinfra

# The judge of the sslyze scan is shared with the unit tests (tests/security/test_tls_judge.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.helpers.tls import sslyze_problems

SITE = "app.lab.test"
SECOND_NAME = "www.app.lab.test"
URL = f"https://{SITE}"
# pebble's issuing root, copied into the client containers (a path inside them)
ROOT = "/tmp/pebble-root.pem"  # noqa: S108
CURL = f"curl -sS --cacert {ROOT}"


def host(name: str) -> testinfra.host.Host:
    return testinfra.get_host(f"podman://{name}")


@pytest.fixture(scope="module")
def lb() -> testinfra.host.Host:
    return host("fm-edge-lb")


@pytest.fixture(scope="module")
def client1() -> testinfra.host.Host:
    return host("fm-edge-app1")


@pytest.fixture(scope="module")
def client2() -> testinfra.host.Host:
    return host("fm-edge-app2")


@pytest.fixture(scope="module")
def pebble_root() -> str:
    """Pebble's issuing root (it makes a new one at every start), given to the clients."""
    root = host("fm-edge-acme").check_output(
        "curl -sS --cacert /etc/pebble/ca.pem https://localhost:15000/roots/0"
    )
    assert "BEGIN CERTIFICATE" in root
    for name in ("fm-edge-app1", "fm-edge-app2"):
        host(name).check_output(f"printf '%s\\n' {shlex.quote(root)} > {ROOT}")
    return root


def journal(h: testinfra.host.Host, unit: str) -> str:
    return h.run(f"journalctl -u {unit} --no-pager -n 40").stdout


def nginx_log(lb: testinfra.host.Host) -> str:
    return journal(lb, "nginx") + lb.run("tail -n 20 /var/log/nginx/error.log").stdout


def served_certificate(h: testinfra.host.Host, name: str = SITE) -> str:
    return h.check_output(
        f"openssl s_client -connect {SITE}:443 -servername {name} </dev/null 2>/dev/null"
        " | openssl x509 -noout -serial -issuer -ext subjectAltName -text"
    )


def serial(h: testinfra.host.Host) -> str:
    return h.check_output(
        f"openssl s_client -connect {SITE}:443 -servername {SITE} </dev/null 2>/dev/null"
        " | openssl x509 -noout -serial"
    )


def workers(lb: testinfra.host.Host) -> set[str]:
    return set(lb.check_output('pgrep -P "$(cat /run/nginx.pid)"').split())


def test_nginx_and_renewal_timer_run(lb):
    nginx = lb.service("nginx")
    if not nginx.is_running:
        pytest.fail(nginx_log(lb))
    assert nginx.is_enabled
    assert lb.socket("tcp://0.0.0.0:80").is_listening
    assert lb.socket("tcp://0.0.0.0:443").is_listening
    assert lb.run("nginx -t -q").rc == 0
    conf = lb.file("/etc/nginx/nginx.conf")
    assert (conf.user, conf.mode) == ("root", 0o644)
    key = lb.file("/etc/nginx/tls/app.lab.test/privkey.pem")
    assert key.is_symlink
    assert key.linked_to.startswith("/etc/letsencrypt/archive/app.lab.test/")
    assert lb.file(key.linked_to).mode == 0o600
    timer = lb.run("systemctl is-enabled certbot.timer; systemctl is-active certbot.timer")
    assert timer.stdout.split() == ["enabled", "active"], journal(lb, "certbot.timer")


def test_certificate_is_issued_by_pebble_and_verifies(client1, pebble_root):
    check = client1.run(
        f"openssl s_client -connect {SITE}:443 -servername {SITE} -CAfile {ROOT}"
        f" -verify_return_error -verify_hostname {SITE} </dev/null"
    )
    assert check.rc == 0, check.stderr
    assert "Verify return code: 0 (ok)" in check.stdout
    cert = served_certificate(client1)
    assert "Pebble Intermediate CA" in cert
    assert f"DNS:{SITE}" in cert
    answer = client1.run(f"{CURL} -o /dev/null -w '%{{http_code}}' {URL}/")
    assert answer.stdout == "200", answer.stderr


def test_changed_name_list_was_reissued_with_an_rsa_key(client1, pebble_root):
    cert = served_certificate(client1, SECOND_NAME)
    assert f"DNS:{SITE}" in cert
    assert f"DNS:{SECOND_NAME}" in cert
    assert "rsaEncryption" in cert and "Public-Key: (2048 bit)" in cert
    answer = client1.run(
        f"{CURL} --resolve {SECOND_NAME}:443:$(getent hosts {SITE} | cut -d' ' -f1)"
        f" -o /dev/null -w '%{{http_code}}' https://{SECOND_NAME}/"
    )
    assert answer.stdout == "200", answer.stderr


def test_http_redirects_to_https(client1):
    answer = client1.check_output(
        f"curl -sS -o /dev/null -w '%{{http_code}} %{{redirect_url}}' http://{SITE}/notes/7?page=2"
    )
    assert answer == f"301 https://{SITE}/notes/7?page=2"


def test_acme_challenge_is_served_on_port_80(lb, client1):
    token = f"probe-{time.time_ns()}"
    path = f"/var/www/acme/.well-known/acme-challenge/{token}"
    lb.check_output(f"echo {token}-content > {path}")
    try:
        answer = client1.run(
            f"curl -sS -w ' %{{http_code}}' http://{SITE}/.well-known/acme-challenge/{token}"
        )
    finally:
        lb.run(f"rm -f {path}")
    assert answer.stdout == f"{token}-content\n 200"


def test_unknown_names_get_no_answer(lb, client1):
    address = client1.check_output(f"getent hosts {SITE} | cut -d' ' -f1")
    # curl 52: empty reply (nginx closed the connection: 444); 35: TLS handshake refused
    plain = client1.run(f"curl -sS -H 'Host: unknown.test' http://{SITE}/")
    assert plain.rc == 52, plain.stdout
    by_address = client1.run(f"curl -sS http://{address}/")
    assert by_address.rc == 52, by_address.stdout
    tls = client1.run(f"curl -sSk --resolve unknown.test:443:{address} https://unknown.test/")
    assert tls.rc == 35, tls.stdout
    assert "unrecognized name" in tls.stderr
    wrong_host = client1.run(f"curl -sSk --http1.1 -H 'Host: unknown.test' {URL}/")
    assert wrong_host.rc == 52, wrong_host.stdout


def headers_of(output: str) -> dict[str, str]:
    lines = output.replace("\r", "").split("\n")
    return {
        k.lower(): v.strip() for k, _c, v in (ln.partition(":") for ln in lines[1:] if ":" in ln)
    }


SECURITY_HEADERS = {
    "strict-transport-security": "max-age=63072000",
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
}


def test_hsts_and_security_headers(client1, pebble_root):
    headers = headers_of(client1.check_output(f"{CURL} -D - -o /dev/null {URL}/"))
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, (name, headers)
    assert "server" in headers and headers["server"] == "nginx"  # no version


def test_forwarded_headers_and_request_id(client1, pebble_root):
    address = client1.check_output("hostname -I").split()[0]
    echo = json.loads(client1.check_output(f"{CURL} -H 'X-Request-ID: trace-42' {URL}/echo"))
    sent = echo["headers"]
    assert sent["x-forwarded-for"] == address
    assert sent["x-forwarded-proto"] == "https"
    assert sent["x-forwarded-host"] == SITE
    assert sent["host"] == SITE
    assert sent["x-request-id"] == "trace-42"
    # ... and comes back once, whether or not the app echoes it too
    answer = client1.check_output(
        f"{CURL} -D - -o /dev/null -H 'X-Request-ID: trace-42' {URL}/echo"
    )
    ids = [line for line in answer.lower().splitlines() if line.startswith("x-request-id:")]
    assert [line.split(":", 1)[1].strip() for line in ids] == ["trace-42"], answer
    # a forged X-Forwarded-For is replaced, a malformed request id is replaced by a new one
    echo = json.loads(
        client1.check_output(
            f"{CURL} -H 'X-Forwarded-For: 6.6.6.6' -H 'X-Request-ID: bad id;' {URL}/echo"
        )
    )
    assert echo["headers"]["x-forwarded-for"] == address
    assert re.fullmatch(r"[0-9a-f]{32}", echo["headers"]["x-request-id"])


def test_burst_above_the_rate_gets_429_with_retry_after(client1, pebble_root):
    # zone perip: 5r/s, burst 5, nodelay; 30 back-to-back requests take well under 1 s.
    # The earlier tests' requests from this client drain from the zone within 1 s.
    time.sleep(1.5)
    script = (
        "for i in $(seq 30); do"
        f" code=$({CURL} -D /tmp/rl.head -o /tmp/rl.body -w '%{{http_code}}' {URL}/);"
        ' echo "$code";'
        ' [ "$code" = 429 ] && cp /tmp/rl.head /tmp/429.head && cp /tmp/rl.body /tmp/429.body;'
        " done; true"
    )
    codes = client1.check_output(script).split()
    assert codes[:6] == ["200"] * 6, codes  # the rate's first request plus the burst of 5
    assert codes.count("429") >= 15, codes
    assert set(codes) == {"200", "429"}, codes
    headers = headers_of(client1.check_output("cat /tmp/429.head"))
    assert headers["retry-after"] == "1"
    assert headers["content-type"] == "application/json"
    assert headers["strict-transport-security"] == "max-age=63072000"
    assert json.loads(client1.check_output("cat /tmp/429.body")) == {"detail": "Too Many Requests"}


def test_client_below_the_rate_gets_no_429(client2, pebble_root):
    script = (
        f"for i in $(seq 8); do {CURL} -o /dev/null -w '%{{http_code}}\\n' {URL}/; sleep 0.4; done"
    )
    assert client2.check_output(script).split() == ["200"] * 8


# The rate limit (zone perip: 5r/s, burst 5) turns away n requests sent within t seconds only
# when n > 1 + 5 + 5 t: a "never limited" loop slower than that would pass limited or not.
TIMED = "s=$(date +%s%N); {loop}; echo elapsed_ms=$(( ($(date +%s%N) - s) / 1000000 ))"


def codes_and_seconds(output: str) -> tuple[list[str], float]:
    *codes, elapsed = output.split()
    assert elapsed.startswith("elapsed_ms="), output
    return codes, int(elapsed.removeprefix("elapsed_ms=")) / 1000


def test_health_is_never_limited(client1, pebble_root):
    loop = (
        "for i in $(seq 30); do"
        f" {CURL} -o /dev/null -w '%{{http_code}}\\n' {URL}/health;"
        f" {CURL} -o /dev/null -w '%{{http_code}}\\n' {URL}/health/ready;"
        " done"
    )
    codes, seconds = codes_and_seconds(client1.check_output(TIMED.format(loop=loop)))
    assert codes == ["200"] * 60
    assert 6 + 5 * seconds < 60, f"60 requests in {seconds:.1f} s: too slow to exceed the rate"


def test_allowlisted_address_is_never_limited(lb):
    loop = (
        "for i in $(seq 30); do"
        f" curl -sSk --resolve {SITE}:443:127.0.0.1 -o /dev/null -w '%{{http_code}}\\n' {URL}/;"
        " done"
    )
    codes, seconds = codes_and_seconds(lb.check_output(TIMED.format(loop=loop)))
    assert codes == ["200"] * 30
    assert 6 + 5 * seconds < 30, f"30 requests in {seconds:.1f} s: too slow to exceed the rate"


def test_access_log_is_json_with_request_id_and_upstream(lb, client1, pebble_root):
    client1.check_output(f"{CURL} -o /dev/null -H 'X-Request-ID: log-probe-1' {URL}/health")
    lines = lb.check_output("grep log-probe-1 /var/log/nginx/access.log").splitlines()
    entry = json.loads(lines[-1])
    assert entry["request_id"] == "log-probe-1"
    assert entry["status"] == 200
    assert entry["upstream"].endswith(":8000")
    assert float(entry["upstream_response_time"]) >= 0
    assert entry["uri"] == "/health"


# One request of the renewal's client loop, as an HTTP/2 client must make it (RFC 9113, 6.8):
# a GOAWAY whose last stream id is below the request's says the server did not process it,
# and the request is sent again on a new connection. nginx's old workers send exactly that
# (GOAWAY, NO_ERROR, last_stream=0) on a connection they accepted just before a reload: curl
# 7.88 reports it as "(16) Error in the HTTP2 framing layer" instead of retrying (seen here: 4
# of 2,000 requests over 150 reloads; browsers and Go's client retry). The loop marks such a
# request "unprocessed" and sends it once more; anything else that is not a 200, and a second
# GOAWAY, is a failure.
REQUEST = (
    f'code=$({CURL} -v -o /dev/null -w "%{{http_code}}" {URL}/health 2>/tmp/req.err)'
    " || { grep -q 'GOAWAY, error=0, last_stream=0' /tmp/req.err"
    " && echo unprocessed >>/tmp/loop.log"
    f' && code=$({CURL} -o /dev/null -w "%{{http_code}}" {URL}/health 2>/tmp/req.err); }}'
    ' || code="failed:$(tail -n 1 /tmp/req.err | tr " " _)";'
    ' echo "$code" >>/tmp/loop.log'
)


def test_forced_renewal_reloads_nginx_with_no_failed_request(lb, client2, pebble_root):
    before = serial(client2)
    workers_before = workers(lb)
    # A client loop on a path with no rate limit, a new TLS connection per request.
    client2.check_output(
        "rm -f /tmp/loop.log /tmp/loop.stop; setsid -f sh -c "
        + shlex.quote(f"while [ ! -e /tmp/loop.stop ]; do {REQUEST}; done; touch /tmp/loop.done")
        + " >/dev/null 2>&1"
    )
    time.sleep(1)
    renew = lb.run(
        "env $(systemctl show certbot.service -p Environment --value)"
        " certbot renew --force-renewal --no-random-sleep-on-renew --cert-name app.lab.test"
    )
    deadline = time.monotonic() + 10
    while serial(client2) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    client2.run(
        "touch /tmp/loop.stop; for i in $(seq 50); do [ -e /tmp/loop.done ] && break;"
        " sleep 0.1; done"
    )
    results = client2.check_output("cat /tmp/loop.log").split()
    assert renew.rc == 0, renew.stdout + renew.stderr
    assert "ran with error output" not in renew.stdout + renew.stderr
    log = lb.check_output("cat /var/log/letsencrypt/letsencrypt.log")
    hook = "/etc/letsencrypt/renewal-hooks/deploy/fastapi-metal-reload"
    assert f"Running deploy-hook command: {hook}" in log
    assert serial(client2) != before, "the renewed certificate is not served"
    assert not workers(lb) & workers_before, "nginx was not reloaded"
    answered = [r for r in results if r != "unprocessed"]
    assert len(answered) >= 20, results
    failed = [r for r in answered if r != "200"]
    assert not failed, f"{len(failed)} of {len(answered)} requests failed: {failed[:5]}"
    # The GOAWAY is the race of a connection accepted just before the reload: 4 in 2,000
    # requests over 150 reloads when measured (e74577c), so 0 or 1 in this test's one reload.
    # More says the reload turns away connections at large (a regression that GOAWAYs every
    # new connection for a while), which retrying must not hide.
    unprocessed = len(results) - len(answered)
    assert unprocessed <= 2, f"{unprocessed} of {len(answered)} requests were sent a GOAWAY"
    print(f"\n{len(answered)} requests, {unprocessed} sent again after a GOAWAY")


def sslyze() -> str:
    path = os.environ.get("SSLYZE") or shutil.which("sslyze")
    if not path:
        pytest.fail("sslyze not found: install it (a dev dependency) or set SSLYZE=<path>")
    return path


def test_tls_complies_with_mozilla_intermediate(pebble_root, tmp_path):
    """sslyze from the controller, which reaches the lb's address on the podman network."""
    address = subprocess.run(
        [
            "podman",
            "inspect",
            "fm-edge-lb",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    root = tmp_path / "pebble-root.pem"
    root.write_text(pebble_root)
    report = tmp_path / "sslyze.json"
    scan = subprocess.run(
        [
            sslyze(),
            "--mozilla_config=intermediate",
            f"--certinfo_ca_file={root}",
            f"--json_out={report}",
            f"{SITE}:443{{{address}}}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert report.exists(), (
        f"sslyze wrote no report (exit {scan.returncode}): {scan.stderr[-2000:]}"
    )
    # Complete (every scan command sslyze needed finished without error), compliant with
    # Mozilla's intermediate, and accepting exactly what nginx.conf.j2 offers an RSA
    # certificate: the TLS_DHE_RSA_* suites included, on ffdhe2048. Pebble 2.4 issues
    # certificates valid for 5 years (not configurable); Let's Encrypt's last 90 days: the
    # one criterion allowed to fail.
    problems = sslyze_problems(
        json.loads(report.read_text()),
        scan.stdout,
        scan.returncode,
        allowed_issues={"maximum_certificate_lifespan"},
    )
    assert not problems, "\n".join(problems) + "\n" + scan.stdout[-3000:]
