# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""Graceful nginx operations for fastapi-metal, each returning once it has taken effect.

Used by the modules nginx_upstream (drain one upstream server, or put it back) and
nginx_live (nginx runs the file on disk; no answering server is left drained), and by the
operator command the nginx role installs on lb hosts, /usr/local/sbin/fastapi-metal-nginx:

  fastapi-metal-nginx reload                  nginx -t, then a graceful reload
  fastapi-metal-nginx upstream SERVER down|up [--check]
  fastapi-metal-nginx drained                 the drained upstream servers, one per line
  fastapi-metal-nginx converge [--check]      what nginx_live does (prints its JSON result)
  fastapi-metal-nginx undrain-all [--check]   every drained server back in service

How a host:port server is drained: without reloading nginx. A reload makes the old workers
close their idle client keep-alive connections, and a client request racing that close gets
no answer (measured: a few per thousand during a rollout). Instead, the address and port go
into an nftables set on this host (table inet fastapi_metal_drain) whose output rule refuses
new connections to them with a TCP reset. nginx sees "connection refused" before it has sent
anything, so it passes every request, POST included, to the next server
(proxy_next_upstream error); requests already on the server finish (its graceful restart
waits for them). nginx marks a refusing server failed for fail_timeout, and after that lets
one request at a time probe it: an undrain returns only once a request sent through nginx (to
its loopback probe listener) was answered by the server, so nginx counts it healthy again in
every worker (the upstream has a shared zone) and draining the next server cannot leave
nginx with none ("no live upstreams", 502). This needs the upstream without
`keepalive` (a cached connection would bypass the refusal) - the role's default.
A unix:/path server cannot be refused that way: it is marked `down` in nginx.conf and nginx
reloads gracefully (the old behaviour, for an app on the lb host itself).
The drain state lives in the kernel: a reboot or `undrain-all` clears it.

Which configuration runs: nginx cannot tell, so every reload and start made here records
the sha256 of the nginx.conf it loaded (LOADED, kept across reboots: nginx loads the same
file at boot). A file that differs from that record is not live yet.

Standard library only: the same file runs inside a module and as the operator command.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import NoReturn

CONF = os.environ.get("FASTAPI_METAL_NGINX_CONF", "/etc/nginx/nginx.conf")
# What the nginx role tells these operations about the configuration it wrote, as JSON:
# {"probe": "127.0.0.1:8299"}, the loopback listener an undrain probes the upstream through.
SETTINGS = os.environ.get("FASTAPI_METAL_NGINX_SETTINGS", "/etc/nginx/fastapi-metal.json")
PIDFILE = "/run/nginx.pid"
LOCK = os.environ.get("FASTAPI_METAL_NGINX_LOCK", "/run/fastapi-metal-nginx.lock")
NFT = "/usr/sbin/nft"
TABLE = "fastapi_metal_drain"
# nginx keeps a failure's time in whole seconds: a server marked failed at second S is
# tried again once the clock reaches S + fail_timeout + 1.
CLOCK_GRAIN = 1.0
NGINX = "/usr/sbin/nginx"
RELOAD_TIMEOUT = 15.0
LOADED = os.environ.get("FASTAPI_METAL_NGINX_LOADED", "/var/lib/fastapi-metal/nginx-loaded.sha256")
# How long a drained server may take to answer a direct request before a converge keeps it
# drained (the upstream's own connect timeout is 2 s by default).
ANSWER_TIMEOUT = 3.0
# Since when each server is drained: kept here, and published for the node exporter's
# textfile collector (when its directory exists) so that an alert finds a server left drained.
DRAINS = os.environ.get("FASTAPI_METAL_DRAINS", "/var/lib/fastapi-metal/drained-since.json")
TEXTFILE_DIR = os.environ.get("FASTAPI_METAL_TEXTFILE_DIR", "/var/lib/prometheus/node-exporter")
DRAIN_METRIC = "fastapi_metal_edge_drained_since_timestamp_seconds"


class NginxOpsError(Exception):
    """An operation that could not be done; ``code`` is the operator command's exit status."""

    def __init__(self, msg: str, code: int = 1) -> None:
        super().__init__(msg)
        self.code = code


def fail(msg: str, code: int = 1) -> NoReturn:
    raise NginxOpsError(msg, code)


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """One change at a time on this host: drains of several app hosts may run in parallel."""
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def nginx_test(conf: str) -> None:
    proc = subprocess.run(
        [NGINX, "-t", "-q", "-c", conf], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        fail(f"nginx -t refused {conf}:\n{proc.stderr.strip()}")


def workers(master: int) -> set[int]:
    """The master's children: its worker (and cache helper) processes."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # the command name may hold spaces: the parent pid follows the last ")"
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == master:
            out.add(int(entry))
    return out


def is_active() -> bool:
    return (
        subprocess.run(["systemctl", "is-active", "--quiet", "nginx"], check=False).returncode == 0
    )


def conf_digest() -> str:
    with open(CONF, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def loaded_digest() -> str:
    try:
        with open(LOADED) as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def record_loaded(digest: str) -> None:
    os.makedirs(os.path.dirname(LOADED), exist_ok=True)
    tmp = f"{LOADED}.tmp"
    with open(tmp, "w") as f:
        f.write(digest + "\n")
    os.replace(tmp, LOADED)


def stale() -> bool:
    """True when nginx runs with a configuration other than the file on disk (as far as the
    record of the last load made here knows)."""
    return is_active() and loaded_digest() != conf_digest()


def reload() -> str:
    """nginx -t, then a graceful reload (or a start); what happened, once it took effect."""
    digest = conf_digest()
    if not is_active():
        nginx_test(CONF)
        subprocess.run(["systemctl", "start", "nginx"], check=True)
        record_loaded(digest)
        return "nginx was not running: started"
    nginx_test(CONF)
    with open(PIDFILE) as f:
        master = int(f.read().strip())
    before = workers(master)
    t0 = time.monotonic()
    subprocess.run(["systemctl", "reload", "nginx"], check=True)
    # The master starts new workers only once it has read the new configuration and
    # opened its sockets; from then on only they accept connections.
    while time.monotonic() - t0 < RELOAD_TIMEOUT:
        if workers(master) - before:
            record_loaded(digest)
            return f"nginx reloaded: new workers serving after {time.monotonic() - t0:.2f} s"
        time.sleep(0.02)
    fail(
        f"nginx started no new workers within {RELOAD_TIMEOUT:.0f} s of the reload; see "
        "journalctl -u nginx and /var/log/nginx/error.log"
    )


def server_line(server: str) -> re.Pattern[str]:
    """ "server <entry> [params];" inside an upstream block; the entry is matched exactly."""
    return re.compile(
        r"^(?P<head>\s*server\s+" + re.escape(server) + r")(?P<params>(?:\s+[^;\s]+)*?)"
        r"(?P<down>\s+down)?\s*;(?P<tail>.*)$"
    )


def upstream_params() -> dict[str, dict[str, str]]:
    """Every upstream server of nginx.conf with its parameters (max_fails=1 -> {...})."""
    out: dict[str, dict[str, str]] = {}
    with open(CONF) as f:
        for text in f:
            m = re.match(r"^\s*server\s+(\S+?)((?:\s+[^;\s]+)*)\s*;", text)
            if m and not text.lstrip().startswith("#"):
                params = dict(p.partition("=")[::2] for p in m[2].split())
                out[m[1]] = params
    return out


def upstream_keepalive() -> bool:
    """True when nginx.conf keeps idle connections to the upstream (`keepalive N;`)."""
    with open(CONF) as f:
        return any(re.match(r"^\s*keepalive\s+[1-9]\d*\s*;", text) for text in f)


def seconds(value: str) -> float:
    """nginx time syntax (10, 10s, 500ms, 1m) in seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", value or "")
    if not m:
        return 10.0
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2] or "s"]


def fail_window(params: dict[str, str]) -> float:
    """How long after its last refused connection nginx may still skip a server."""
    if params.get("max_fails", "1") == "0":
        return 0.0
    return seconds(params.get("fail_timeout", "10s")) + CLOCK_GRAIN


def addresses(server: str) -> list[tuple[int, str, int]]:
    """(family, address, port) of a host:port server, resolved as nginx resolves it."""
    host, _colon, port = server.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        fail(f"{server}: expected host:port or unix:/path", 2)
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        fail(f"{server}: {host} does not resolve on this host ({exc})", 3)
    return sorted({(info[0], str(info[4][0]), int(port)) for info in infos})


def nft(script: str) -> None:
    proc = subprocess.run(
        [NFT, "-f", "-"], input=script, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        fail(f"nft refused:\n{script}\n{proc.stderr.strip()}")


def ensure_table() -> None:
    """The drain table: two sets and the rule refusing new connections to their members."""
    probe = subprocess.run([NFT, "list", "table", "inet", TABLE], capture_output=True, check=False)
    if probe.returncode == 0:
        return
    nft(f"""table inet {TABLE} {{
    set drained_v4 {{ type ipv4_addr . inet_service; }}
    set drained_v6 {{ type ipv6_addr . inet_service; }}
    chain output {{
        type filter hook output priority filter; policy accept;
        ct state new ip daddr . tcp dport @drained_v4 counter reject with tcp reset
        ct state new ip6 daddr . tcp dport @drained_v6 counter reject with tcp reset
    }}
}}
""")


def drained_elements() -> set[tuple[int, str, int]]:
    proc = subprocess.run(
        [NFT, "-j", "list", "table", "inet", TABLE], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return set()
    out: set[tuple[int, str, int]] = set()
    for item in json.loads(proc.stdout).get("nftables", []):
        st = item.get("set")
        if not st or st.get("table") != TABLE:
            continue
        family = socket.AF_INET if st["name"] == "drained_v4" else socket.AF_INET6
        for elem in st.get("elem", []):
            address, port = elem["concat"]
            out.add((family, str(address), int(port)))
    return out


def element_script(verb: str, elements: list[tuple[int, str, int]]) -> str:
    lines = []
    for family, address, port in elements:
        name = "drained_v4" if family == socket.AF_INET else "drained_v6"
        lines.append(f"{verb} element inet {TABLE} {name} {{ {address} . {port} }}")
    return "\n".join(lines) + "\n"


def probe_address() -> str | None:
    """The loopback listener ("127.0.0.1:8299") the nginx role configured for the probe, as
    its settings file says; None when there is none (a configuration older than the probe)."""
    try:
        with open(SETTINGS) as f:
            settings = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        fail(f"{SETTINGS} cannot be read as JSON ({exc}); rerun the nginx role to rewrite it")
    probe = settings.get("probe") if isinstance(settings, dict) else None
    if not isinstance(probe, str) or not re.fullmatch(r"127\.0\.0\.1:\d{1,5}", probe):
        fail(f'{SETTINGS}: expected a probe listener like "127.0.0.1:8299"; got {probe!r}')
    return probe


def answered_by(upstream_addr: str, upstream_status: str) -> tuple[str, str] | None:
    """The upstream server that answered (nginx's last attempt) and its status, unless nginx
    answered itself (no server left, or the last attempt failed: 502/504)."""
    addrs = [a.strip() for a in upstream_addr.replace(" : ", ", ").split(",") if a.strip()]
    statuses = [s.strip() for s in upstream_status.replace(" : ", ", ").split(",") if s.strip()]
    if not addrs or not statuses or not statuses[-1].isdigit() or statuses[-1] in ("502", "504"):
        return None
    return addrs[-1], statuses[-1]


def wait_until_served(server: str, params: dict[str, str]) -> float:
    """After an undrain, nginx still skips the server for fail_timeout (it refused
    connections), and then sends one probe request at a time until one succeeds. Return
    once a request through nginx was answered by the server: from then on nginx counts it
    healthy (the upstream's zone shares that with every worker), so draining another server
    next cannot leave nginx with none."""
    probe = probe_address()
    if probe is None:  # a configuration older than the probe listener
        time.sleep(fail_window(params))
        return fail_window(params)
    wanted = {
        f"{address}:{port_}" if family == socket.AF_INET else f"[{address}]:{port_}"
        for family, address, port_ in addresses(server)
    }
    deadline = time.monotonic() + fail_window(params) + 10.0
    t0 = time.monotonic()
    last = "no answer"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    while time.monotonic() < deadline:
        try:
            # The probe listener passes the request to the upstream of the site this server
            # belongs to (several apps: an upstream each).
            request = urllib.request.Request(
                f"http://{probe}/", headers={"X-Fastapi-Metal-Server": server}
            )
            with direct.open(request, timeout=5) as answer:
                headers = answer.headers
        except urllib.error.HTTPError as exc:  # the app's 4xx/5xx are answers too
            headers = exc.headers
        except OSError as exc:
            last = str(exc)
            time.sleep(0.1)
            continue
        got = answered_by(
            headers.get("X-Fastapi-Metal-Upstream", ""),
            headers.get("X-Fastapi-Metal-Upstream-Status", ""),
        )
        if got and got[0] in wanted:
            return round(time.monotonic() - t0, 2)
        last = f"answered by {got[0]} ({got[1]})" if got else "answered by nginx itself"
        time.sleep(0.05)
    fail(
        f"{server} is back in the upstream but nginx sent it no request that it answered "
        f"within {deadline - t0:.0f} s (last probe: {last}); see /var/log/nginx/error.log"
    )


def upstream(server: str, state: str, check: bool) -> dict[str, object]:
    """Drain (down) or undrain (up) one upstream server. The result: changed, previous
    ("down" or "up") and, after an undrain, waited_s (until nginx used the server again)."""
    if state not in ("up", "down"):
        fail(f"state must be up or down, not {state!r}", 2)
    params = upstream_params()
    if server not in params:
        fail(f"{server} is not an upstream server in {CONF}", 3)
    if server.startswith("unix:"):
        return upstream_by_reload(server, state, check)
    if state == "down" and upstream_keepalive():
        fail(
            f"cannot drain {server}: the upstream keeps idle connections (keepalive), and "
            "nginx would go on sending requests over them past the drain. Set "
            "nginx_upstream_keepalive: 0 (the role's default) and run the nginx role.",
            4,
        )
    wanted = addresses(server)
    drained = drained_elements()
    previous = "down" if drained & set(wanted) else "up"
    todo = [e for e in wanted if (e in drained) != (state == "down")]
    result: dict[str, object] = {"changed": bool(todo), "previous": previous, "state": state}
    if not todo or check:
        return result
    ensure_table()
    if state == "down":
        nft(element_script("add", todo))
        publish_drains()
    else:
        nft(element_script("delete", todo))
        publish_drains()
        result["waited_s"] = wait_until_served(server, params[server])
    return result


def _replace(path: str, text: str) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def publish_drains() -> dict[str, float]:
    """Record since when each drained server is drained (DRAINS) and write the metric
    (one sample per drained server, its value that moment); returns what was written."""
    now = time.time()
    try:
        with open(DRAINS) as f:
            known = json.load(f)
    except (OSError, ValueError):
        known = {}
    since = {
        s: float(known.get(s, now)) if isinstance(known, dict) else now for s in list_drained()
    }
    _replace(DRAINS, json.dumps(since, sort_keys=True) + "\n")
    if os.path.isdir(TEXTFILE_DIR):
        lines = [
            f"# HELP {DRAIN_METRIC} Since when an app server is drained at this edge.",
            f"# TYPE {DRAIN_METRIC} gauge",
            *(f'{DRAIN_METRIC}{{server="{s}"}} {t:.0f}' for s, t in sorted(since.items())),
        ]
        _replace(os.path.join(TEXTFILE_DIR, "fastapi_metal_drains.prom"), "\n".join(lines) + "\n")
    return since


def list_drained() -> list[str]:
    """The upstream servers (as nginx.conf names them) that are drained now."""
    drained = drained_elements()
    out = []
    for server, params in upstream_params().items():
        if server.startswith("unix:"):
            if "down" in params:
                out.append(server)
        elif drained & set(addresses(server)):
            out.append(server)
    return out


def undrain_all(check: bool) -> dict[str, object]:
    """Every drained server back in service (answering or not), waiting for each."""
    servers = list_drained()
    for server in servers:
        if not check:
            upstream(server, "up", check)
    leftovers = drained_elements()
    if leftovers and not check:
        # members that are no upstream server any more
        nft(element_script("delete", sorted(leftovers)))
    return {"changed": bool(servers or leftovers), "undrained": servers, "check": check}


def answers(server: str) -> str | None:
    """None when the server answers an HTTP request directly (any status below 500), else
    why not. Asked before a converge undrains a server: nginx would otherwise send clients
    to a server whose workers never boot, each waiting for proxy_read_timeout."""
    family, address, port = addresses(server)[0]
    host = address if family == socket.AF_INET else f"[{address}]"
    conn = http.client.HTTPConnection(host, port, timeout=ANSWER_TIMEOUT)
    try:
        conn.request("GET", "/", headers={"User-Agent": "fastapi-metal-nginx"})
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return f"no answer from {server}: {exc or type(exc).__name__}"
    finally:
        conn.close()
    return None if status < 500 else f"{server} answered {status}"


def converge(check: bool) -> dict[str, object]:
    """Running configuration = the file; every drained server that answers back in service."""
    result: dict[str, object] = {"reloaded": False, "undrained": [], "kept_drained": {}}
    if stale():
        result["reloaded"] = True
        if not check:
            result["reload"] = reload()
    undrained: list[str] = []
    kept: dict[str, str] = {}
    for server in list_drained():
        why = None if server.startswith("unix:") else answers(server)
        if why:
            kept[server] = why
            continue
        undrained.append(server)
        if not check:
            upstream(server, "up", check)
    known = {e for s in upstream_params() if not s.startswith("unix:") for e in addresses(s)}
    leftovers = sorted(drained_elements() - known)  # members that are no upstream server now
    if leftovers and not check:
        nft(element_script("delete", leftovers))
    if not check:  # also what a reboot cleared
        publish_drains()
    result.update(
        undrained=undrained,
        kept_drained=kept,
        removed=[f"{a}:{p}" for _family, a, p in leftovers],
        changed=bool(result["reloaded"] or undrained or leftovers),
        check=check,
    )
    return result


def upstream_by_reload(server: str, state: str, check: bool) -> dict[str, object]:
    """Mark a server `down` (or not) in nginx.conf and reload: for unix: servers."""
    line = server_line(server)
    with open(CONF) as f:
        lines = f.read().split("\n")
    found = 0
    for i, text in enumerate(lines):
        m = line.match(text)
        if not m:
            continue
        found += 1
        down = " down" if state == "down" else ""
        lines[i] = f"{m['head']}{m['params']}{down};{m['tail']}"
    if not found:
        fail(f"{server} is not an upstream server in {CONF}", 3)
    new = "\n".join(lines)
    with open(CONF) as f:
        old = f.read()
    previous = "down" if "down" in upstream_params()[server] else "up"
    result: dict[str, object] = {"changed": old != new, "previous": previous, "state": state}
    if old == new or check:
        return result
    st = os.stat(CONF)
    fd, tmp = tempfile.mkstemp(prefix=".nginx.conf.", dir=os.path.dirname(CONF))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(new)
        os.chmod(tmp, st.st_mode & 0o7777)
        os.chown(tmp, st.st_uid, st.st_gid)
        nginx_test(tmp)
        os.replace(tmp, CONF)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    reload()
    publish_drains()
    return result
