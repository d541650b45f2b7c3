#!/usr/bin/env python3
"""The lab: local "bare servers" as podman containers running systemd, reached over SSH.

Usage: lab.py check | image | up [--apps N] | down | status | health

Everything it makes is named and labelled, so `up` and `down` are idempotent and cope
with stale podman records left behind by an earlier run or session (docs/lab.md).
`check` (run by `image` and `up` too) stops at once, naming the fix, when the machine
lacks what the lab needs; `up` then proves that every lab name resolves inside the hosts.
Only the standard library is used: this runs before the project's venv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "lab"
STATE = Path(os.environ.get("LAB_STATE_DIR", ROOT / ".lab"))
CONTAINERS_CONF = HERE / "containers.conf"

ROOTFS_IMAGE = "localhost/fastapi-metal-rootfs:bookworm"
# One variable names the host image: a user whose registry is reachable can point it at a
# stock systemd image that has sshd and python3 (e.g. a "debian-systemd" image).
HOST_IMAGE = os.environ.get("LAB_IMAGE", "localhost/fastapi-metal-host:bookworm")
ACME_IMAGE = os.environ.get("LAB_ACME_IMAGE", "localhost/fastapi-metal-acme:bookworm")
NETWORK = os.environ.get("LAB_NETWORK", "fastapi-metal-lab")
SUBNET_PREFIX = os.environ.get("LAB_SUBNET_PREFIX", "10.89.50")
SITE_NAME = os.environ.get("LAB_SITE_NAME", "app.lab.test")
# The three apps of the lab inventory (fastapi_metal_apps): the name each is served at, and
# a path and a piece of its answer that say it serves.
SITES = (
    (SITE_NAME, "/health", '"healthy"'),
    ("typical.lab.test", "/api/v1/utils/health-check/", "true"),
    ("tiny.lab.test", "/", '"hello": "lab"'),
)
LABEL = "io.fastapi-metal.lab"
MIRROR = os.environ.get("LAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBOOTSTRAP_INCLUDE = "systemd,systemd-sysv,dbus,python3,iproute2,procps,sudo,ca-certificates"
MAX_APPS = 8
# Bumped whenever run_host() changes how a host is started: `up` recreates older hosts.
HOST_SPEC = "4"
# Every lab host shares the machine's cores (each container is one CPU group of the kernel's
# scheduler, with equal weights by default). On real servers each host has its own cores:
# here the hosts that serve a request (the edge, the apps, the database) weigh more than
# the ones that only watch (monitoring) or stand in for the outside (acme), so that a busy
# monitoring host or a deploy's work there does not take the cores the apps serve with.
SERVING_CPU_SHARES = 2048
BACKGROUND_CPU_SHARES = 256


@dataclass(frozen=True)
class Host:
    name: str
    ip: str
    image: str
    aliases: tuple[str, ...] = ()
    cpu_shares: int = SERVING_CPU_SHARES


def hosts(apps: int) -> list[Host]:
    """The lab's hosts: fixed addresses so the inventory can be static."""
    p = SUBNET_PREFIX
    out = [
        Host("acme", f"{p}.5", ACME_IMAGE, ("acme.lab.test",), BACKGROUND_CPU_SHARES),
        Host("lb1", f"{p}.10", HOST_IMAGE, tuple(site for site, _path, _answer in SITES)),
        Host("db1", f"{p}.20", HOST_IMAGE),
        Host("mon1", f"{p}.40", HOST_IMAGE, cpu_shares=BACKGROUND_CPU_SHARES),
    ]
    out += [Host(f"app{i}", f"{p}.{30 + i}", HOST_IMAGE) for i in range(1, apps + 1)]
    return out


def log(msg: str) -> None:
    print(f"lab: {msg}", flush=True)


def podman(
    *args: str, check: bool = True, capture: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    proc = subprocess.run(
        ["podman", *args], env=env, text=True, capture_output=capture, check=False
    )
    if check and proc.returncode != 0:
        err = (proc.stderr or "").strip()
        raise SystemExit(f"lab: podman {' '.join(args)} failed ({proc.returncode}): {err}")
    return proc


# --- prerequisites ------------------------------------------------------------------------

SETUP_HINT = "`make setup` installs and configures all of it (docs/lab.md)"


def podman_info() -> dict[str, str]:
    """What podman will use for the lab: network backend, OCI runtime, cgroup version."""
    fmt = "{{.Host.NetworkBackend}}|{{.Host.OCIRuntime.Name}}|{{.Host.CgroupsVersion}}"
    out = podman("info", "--format", fmt, check=False)
    if out.returncode != 0:
        raise SystemExit(
            f"lab: podman cannot start with the lab's settings ({CONTAINERS_CONF}): "
            f"{out.stderr.strip()}\nFix: apt-get install podman runc netavark aardvark-dns; "
            f"{SETUP_HINT}"
        )
    backend, runtime, cgroups = [*out.stdout.strip().split("|"), "", "", ""][:3]
    return {"network_backend": backend, "runtime": runtime, "cgroups": cgroups}


def prerequisite_problems(info: dict[str, str], dns_helper: bool) -> list[str]:
    """Each thing the lab needs that this machine lacks, with the fix (empty: all there)."""
    problems = []
    if info["network_backend"] != "netavark":
        problems.append(
            f"podman's network backend is {info['network_backend']!r}, not 'netavark': lab hosts "
            "could not resolve each other's names (CNI has no DNS here). Fix: apt-get install "
            'netavark aardvark-dns, and network_backend = "netavark" in [network] of '
            f"{CONTAINERS_CONF} (exported as CONTAINERS_CONF)"
        )
    if not dns_helper:
        problems.append(
            "aardvark-dns is not installed (/usr/lib/podman/aardvark-dns): podman networks "
            "would answer no names. Fix: apt-get install aardvark-dns"
        )
    if info["runtime"] != "runc":
        problems.append(
            f"podman's OCI runtime is {info['runtime']!r}, not 'runc': crun refuses this "
            "machine's hybrid cgroup layout. Fix: apt-get install runc, and runtime = "
            f'"runc" in [engine] of {CONTAINERS_CONF}'
        )
    return problems


# The commands the lab runs (directly or through podman), and the package that has each.
TOOLS = {
    "podman": "podman",
    "runc": "runc",
    "iptables": "iptables (netavark sets up the network's NAT with it)",
    "debootstrap": "debootstrap",
    "ssh-keygen": "openssh-client",
    "openssl": "openssl",
    "curl": "curl",
}


def _which(tool: str) -> str | None:
    # runc, iptables and debootstrap live in /usr/sbin, which a non-root PATH may lack.
    return shutil.which(tool, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def missing_tools(
    which: Callable[[str], str | None] = _which, own_image: bool = False
) -> list[str]:
    """The packages to install for each command the lab needs that is not on PATH
    (debootstrap only when the lab builds its own image, i.e. LAB_IMAGE is not given)."""
    return [
        package
        for tool, package in TOOLS.items()
        if not which(tool) and not (tool == "debootstrap" and own_image)
    ]


def cmd_check(_args: argparse.Namespace) -> None:
    missing = missing_tools(own_image=bool(os.environ.get("LAB_IMAGE")))
    if missing:
        raise SystemExit(
            "lab: not installed: " + "; ".join(missing) + f". apt-get install them: {SETUP_HINT}"
        )
    info = podman_info()
    dns_helper = Path("/usr/lib/podman/aardvark-dns").exists() or bool(_which("aardvark-dns"))
    problems = prerequisite_problems(info, dns_helper)
    if problems:
        raise SystemExit(
            "lab: this machine cannot run the lab yet:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + f"\n{SETUP_HINT}"
        )
    log("podman: " + ", ".join(f"{k}={v}" for k, v in info.items()))


# Run inside a lab host: every name given, to the IPv4 addresses its resolver answers.
RESOLVE_PY = """
import json, socket, sys
out = {}
for n in sys.argv[1:]:
    try:
        out[n] = sorted({a[4][0] for a in socket.getaddrinfo(n, None, socket.AF_INET)})
    except OSError as e:
        out[n] = str(e)
print(json.dumps(out))
"""


def resolution_problems(asker: str, want: dict[str, str], seen: dict[str, object]) -> list[str]:
    """What `asker` got wrong: names it could not resolve, names at another address."""
    problems = []
    for name, ip in want.items():
        got = seen.get(name, "no answer")
        if isinstance(got, str):
            problems.append(f"{asker} cannot resolve {name} ({got}); expected {ip}")
        elif got != [ip]:
            problems.append(
                f"{asker} resolves {name} to {got}, expected [{ip}] (a stale container or "
                "network record: `lab.py down` and `lab.py up`)"
            )
    return problems


def dns_fix(problems: list[str], backend: str) -> str:
    """The fix to print for `problems`: the backend, or aardvark-dns not answering."""
    if backend != "netavark":
        return (
            f"podman's network backend is {backend}. Fix: apt-get install netavark "
            f'aardvark-dns, network_backend = "netavark" in {CONTAINERS_CONF}, then '
            "`lab.py down` and `lab.py up`"
        )
    if any("cannot resolve" in p for p in problems):
        return (
            "podman's network backend is netavark: its DNS server (aardvark-dns) did not "
            "answer. Fix: `lab.py down` and `lab.py up` (starts it again)"
        )
    return "Fix: `lab.py down` and `lab.py up`"


def check_dns(want: list[Host]) -> None:
    names = {h.name: h.ip for h in want}
    names.update({alias: h.ip for h in want for alias in h.aliases})
    asker = next(h.name for h in want if h.name != "acme")
    got = podman("exec", asker, "python3", "-c", RESOLVE_PY, *names, check=False)
    try:
        seen = json.loads(got.stdout) if got.returncode == 0 else None
    except json.JSONDecodeError:
        seen = None
    if not isinstance(seen, dict):
        raise SystemExit(
            f"lab: could not look names up inside {asker} (it needs python3): "
            f"{(got.stderr or got.stdout).strip()[-500:]}"
        )
    problems = resolution_problems(asker, names, seen)
    if problems:
        raise SystemExit(
            "lab: the lab's names do not resolve inside its hosts (certbot, the firewall "
            "and every test need them):\n"
            + "\n".join(f"  - {p}" for p in problems)
            + "\n  "
            + dns_fix(problems, podman_info()["network_backend"])
        )
    log(f"names resolve inside the hosts ({len(names)} checked from {asker})")


def image_exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0


def image_label(ref: str, key: str) -> str:
    out = podman("image", "inspect", ref, "--format", "{{json .Labels}}", check=False)
    if out.returncode != 0:
        return ""
    labels = json.loads(out.stdout or "null") or {}
    return str(labels.get(key, ""))


def _digest(*paths: Path, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for path in paths:
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def build_rootfs() -> None:
    if image_exists(ROOTFS_IMAGE):
        return
    target = STATE / "rootfs"
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    log(f"debootstrap bookworm into {target} (about a minute)")
    t0 = time.monotonic()
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={DEBOOTSTRAP_INCLUDE}",
            "bookworm",
            str(target),
            MIRROR,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    log(f"debootstrap took {time.monotonic() - t0:.0f} s; importing")
    tar = subprocess.Popen(["tar", "-C", str(target), "-c", "."], stdout=subprocess.PIPE)
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    subprocess.run(
        ["podman", "import", "-", ROOTFS_IMAGE],
        stdin=tar.stdout,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    tar.wait()
    shutil.rmtree(target)


def build_layer(ref: str, containerfile: Path, base: str, files: list[Path]) -> None:
    """Build a thin layer; rebuilt only when its inputs (or its base) change."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    digest = _digest(
        containerfile,
        *files,
        *([sources] if sources.exists() else []),
        extra=base + podman("image", "inspect", base, "--format", "{{.Id}}").stdout,
    )
    if image_exists(ref) and image_label(ref, "io.fastapi-metal.digest") == digest:
        return
    ctx = STATE / "build" / containerfile.name
    if ctx.exists():
        shutil.rmtree(ctx)
    ctx.mkdir(parents=True)
    for f in files:
        shutil.copy(f, ctx / f.name)
    if sources.exists():
        shutil.copy(sources, ctx / "debian.sources")
    else:  # a one-line sources.list style host: write the deb822 form the image expects
        (ctx / "debian.sources").write_text(
            f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm bookworm-updates\n"
            "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
    log(f"building {ref}")
    podman(
        "build",
        "-q",
        "-f",
        str(containerfile),
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--label",
        f"io.fastapi-metal.digest={digest}",
        "-t",
        ref,
        str(ctx),
        capture=False,
    )


def cmd_image(args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    cmd_check(args)
    if os.environ.get("LAB_IMAGE"):
        log(f"using {HOST_IMAGE} as given by LAB_IMAGE")
    else:
        build_rootfs()
        build_layer(HOST_IMAGE, HERE / "Containerfile", ROOTFS_IMAGE, [])
    build_layer(ACME_IMAGE, HERE / "Containerfile.acme", HOST_IMAGE, [HERE / "pebble.service"])
    # Scenarios that run their own pebble mount these too (molecule edge scenarios).
    ensure_ssh_key()
    ensure_pebble_pki()
    log(f"images ready in {time.monotonic() - t0:.1f} s")


def ensure_ssh_key() -> Path:
    key = STATE / "ssh" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        key.parent.chmod(0o700)
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "fastapi-metal-lab",
                "-f",
                str(key),
            ],
            check=True,
        )
    auth = STATE / "ssh" / "authorized_keys"
    auth.write_text(Path(f"{key}.pub").read_text())
    auth.chmod(0o600)
    return key


def ensure_pebble_pki() -> Path:
    """A CA and a listener certificate for pebble's ACME endpoint (Debian ships none)."""
    pki = STATE / "pebble"
    if (pki / "cert.pem").exists():
        return pki
    pki.mkdir(parents=True, exist_ok=True)

    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, cwd=pki, capture_output=True)

    ossl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=fastapi-metal lab pebble listener CA",
    )
    ossl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.csr",
        "-subj",
        "/CN=acme",
    )
    (pki / "san.ext").write_text(
        f"subjectAltName=DNS:acme,DNS:acme.lab.test,DNS:acme.dns.podman,DNS:localhost,"
        f"IP:{SUBNET_PREFIX}.5,IP:127.0.0.1\n"
    )
    ossl(
        "x509",
        "-req",
        "-in",
        "cert.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-extfile",
        "san.ext",
        "-out",
        "cert.pem",
    )
    (pki / "pebble-config.json").write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": "0.0.0.0:14000",
                    "managementListenAddress": "0.0.0.0:15000",
                    "certificate": "/etc/pebble/cert.pem",
                    "privateKey": "/etc/pebble/key.pem",
                    "httpPort": 80,
                    "tlsPort": 443,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            },
            indent=2,
        )
    )
    for f in ("key.pem", "ca.key"):
        (pki / f).chmod(0o644 if f == "key.pem" else 0o600)
    return pki


def ensure_network() -> None:
    subnet = f"{SUBNET_PREFIX}.0/24"
    out = podman("network", "inspect", NETWORK, check=False)
    if out.returncode == 0:
        info = json.loads(out.stdout)[0]
        have = [s.get("subnet") for s in info.get("subnets", [])]
        if subnet in have and info.get("dns_enabled"):
            return
        log(f"network {NETWORK} has subnets {have}; recreating with {subnet}")
        podman("network", "rm", "-f", NETWORK)
    podman("network", "create", "--subnet", subnet, "--label", f"{LABEL}=1", NETWORK)


def container_state(name: str) -> str:
    out = podman("inspect", name, "--format", "{{.State.Status}}", check=False)
    return out.stdout.strip() if out.returncode == 0 else "absent"


def run_host(host: Host, key_dir: Path, pki: Path) -> None:
    args = [
        "run",
        "-d",
        "--name",
        host.name,
        "--hostname",
        host.name,
        "--label",
        f"{LABEL}=1",
        "--label",
        f"{LABEL}.image={host.image}",
        "--network",
        NETWORK,
        "--ip",
        host.ip,
        "--systemd=always",
        "--stop-timeout",
        "3",
        "--cpu-shares",
        str(host.cpu_shares),
        # nftables (the base role's firewall) needs NET_ADMIN in the host's own netns
        "--cap-add",
        "NET_ADMIN",
        "--cap-add",
        "NET_RAW",
        "--cap-add",
        "AUDIT_WRITE",
        # systemd sandboxes a unit (ProtectSystem=, PrivateTmp=, ...) only with SYS_ADMIN in
        # the host's namespace; without it the app unit's hardening would silently not apply.
        "--cap-add",
        "SYS_ADMIN",
        "--label",
        f"{LABEL}.spec={HOST_SPEC}",
        "-v",
        f"{key_dir / 'authorized_keys'}:/root/.ssh/authorized_keys:ro",
    ]
    for alias in host.aliases:
        args += ["--network-alias", alias]
    if host.name == "acme":
        args += ["-v", f"{pki}:/etc/pebble:ro"]
    podman(*args, host.image, "/lib/systemd/systemd")


def wait_running(host: Host, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    state = "unknown"
    while time.monotonic() < deadline:
        out = podman("exec", host.name, "systemctl", "is-system-running", check=False)
        state = out.stdout.strip()
        if state in ("running", "degraded"):
            break
        time.sleep(0.5)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host.ip, 22), timeout=1) as s:
                banner = s.recv(4)
                if banner.startswith(b"SSH"):
                    return state
                last = f"answered {banner!r}, not an SSH banner"
        except OSError as e:  # refused while sshd starts; no route: the network is broken
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.3)
    raise SystemExit(
        f"lab: {host.name} ({host.ip}) did not open SSH within {timeout:.0f} s "
        f"(systemd: {state}; last attempt: {last})"
    )


def wanted_apps(args: argparse.Namespace) -> int:
    apps = int(args.apps)
    if not 1 <= apps <= MAX_APPS:
        raise SystemExit(f"lab: --apps must be between 1 and {MAX_APPS}, got {apps}")
    return apps


def cmd_up(args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    apps = wanted_apps(args)
    cmd_image(args)
    key = ensure_ssh_key()
    pki = ensure_pebble_pki()
    ensure_network()
    want = hosts(apps)
    names = {h.name for h in want}
    for name in lab_containers():
        if name not in names:
            log(f"removing {name} (not in a lab of {apps} app hosts)")
            podman("rm", "-f", "-t", "2", name, check=False)
    for host in want:
        state = container_state(host.name)
        current = podman("inspect", host.name, "--format", "{{.ImageName}}", check=False).stdout
        mounts = podman(
            "inspect", host.name, "--format", "{{range .Mounts}}{{.Source}} {{end}}", check=False
        ).stdout.split()
        # Another checkout's lab (its own key and pebble PKI) is not ours to reuse.
        spec = podman(
            "inspect",
            host.name,
            "--format",
            f'{{{{index .Config.Labels "{LABEL}.spec"}}}}',
            check=False,
        ).stdout.strip()
        ours = str(key.parent / "authorized_keys") in mounts and spec == HOST_SPEC
        if state == "running" and current.strip() == host.image and ours:
            continue
        if state != "absent":
            log(f"{host.name} is {state}: recreating it")
            podman("rm", "-f", "-t", "2", host.name, check=False)
        log(f"starting {host.name} ({host.ip})")
        run_host(host, key.parent, pki)
    states = {h.name: wait_running(h) for h in want}
    check_dns(want)
    write_inventory(want)
    for name, state in states.items():
        if state != "running":
            failed = podman(
                "exec", name, "systemctl", "--failed", "--no-legend", check=False
            ).stdout
            log(f"{name}: systemd is {state}; failed units: {failed.strip() or 'none'}")
    log(f"up in {time.monotonic() - t0:.1f} s: " + ", ".join(f"{h.name}={h.ip}" for h in want))


def lab_containers() -> list[str]:
    out = podman("ps", "-a", "--filter", f"label={LABEL}=1", "--format", "{{.Names}}", check=False)
    return [n for n in out.stdout.split() if n]


def write_inventory(want: list[Host]) -> None:
    """For a lab with other than two app hosts, write an inventory of its own.

    The committed inventories/lab/hosts.yml describes the default lab (two app hosts);
    --apps N writes .lab/inventory/hosts.yml with the same group_vars linked in.
    """
    apps = [h for h in want if h.name.startswith("app")]
    if len(apps) == 2:
        return
    inv = STATE / "inventory"
    inv.mkdir(parents=True, exist_ok=True)
    gv = inv / "group_vars"
    if not gv.exists():
        gv.symlink_to(ROOT / "inventories" / "lab" / "group_vars")
    lines = ["---", "all:", "  children:"]
    groups = (
        ("lb", ["lb1"]),
        ("db", ["db1"]),
        ("app", [h.name for h in apps]),
        ("monitoring", ["mon1"]),
    )
    for group, members in groups:
        lines += [f"    {group}:", "      hosts:"]
        for m in members:
            ip = next(h.ip for h in want if h.name == m)
            lines.append(f"        {m}: {{ansible_host: {ip}}}")
    (inv / "hosts.yml").write_text("\n".join(lines) + "\n")
    log(f"inventory for {len(apps)} app hosts: -i {inv}")


def cmd_down(_args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    names = lab_containers()
    if names:
        podman("rm", "-f", "-t", "2", *names, check=False)
    if podman("network", "exists", NETWORK, check=False).returncode == 0:
        podman("network", "rm", "-f", NETWORK, check=False)
    log(f"down in {time.monotonic() - t0:.1f} s ({len(names)} containers removed)")


def cmd_status(_args: argparse.Namespace) -> None:
    names = lab_containers()
    if not names:
        print("lab is down")
        return
    for name in sorted(names):
        state = container_state(name)
        sysstate = "-"
        if state == "running":
            sysstate = podman(
                "exec", name, "systemctl", "is-system-running", check=False
            ).stdout.strip()
        ip = podman(
            "inspect",
            name,
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            check=False,
        ).stdout
        print(f"{name:8} {state:10} systemd={sysstate:10} {ip.strip()}")


def cmd_health(_args: argparse.Namespace) -> None:
    """What a person checks after `make lab`: every app host, then the edge over HTTPS."""
    apps = [n for n in sorted(lab_containers()) if n.startswith("app")]
    bad = 0
    for name in apps:
        ip = podman(
            "inspect", name, "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        ).stdout.strip()
        # The app port admits only the lb hosts (the base role's firewall): ask from lb1.
        out = podman(
            "exec", "lb1", "curl", "-s", "-m", "3", f"http://{ip}:8000/health", check=False
        )
        bad += '"healthy"' not in out.stdout
        print(f"{name:6} http://{ip}:8000/health  {out.stdout.strip() or out.stderr.strip()}")
    roots = STATE / "pebble" / "issuing-roots.pem"
    got = subprocess.run(
        [
            "curl",
            "-s",
            "-m",
            "5",
            "--cacert",
            str(STATE / "pebble" / "ca.pem"),
            f"https://{SUBNET_PREFIX}.5:15000/roots/0",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    roots.write_text(got.stdout)
    for site, path, answer in SITES:
        edge = subprocess.run(
            ["curl", "-s", "-m", "5", "--cacert", str(roots),
             "--resolve", f"{site}:443:{SUBNET_PREFIX}.10", f"https://{site}{path}"],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        bad += answer not in edge.stdout
        print(f"edge   https://{site}{path}  {edge.stdout.strip() or edge.stderr.strip()}")
    print(f"       (certificate from the lab's pebble; its root is in {roots})")
    bad += monitoring_health()
    if bad:
        raise SystemExit(f"lab: {bad} health check(s) failed")


def monitoring_health(wait: float = 30) -> int:
    """Prometheus on mon1 (loopback only: asked from inside): every target up, waiting a
    few scrapes for targets the converge just started. The number of targets not up."""
    deadline = time.monotonic() + wait
    while True:
        out = podman(
            "exec", "mon1", "curl", "-s", "-m", "5", "http://127.0.0.1:9090/api/v1/targets",
            check=False,
        )  # fmt: skip
        try:
            targets = json.loads(out.stdout)["data"]["activeTargets"]
        except (ValueError, KeyError):
            targets = []
        down = [t for t in targets if t.get("health") != "up"]
        if (targets and not down) or time.monotonic() > deadline:
            break
        time.sleep(2)
    for t in down:
        labels = t.get("labels", {})
        where = f"{labels.get('job')} {labels.get('instance')}"
        print(f"mon1   {where}: {t.get('health')} {t.get('lastError', '')}")
    tunnel = f"ssh -i .lab/ssh/id_ed25519 -L 9090:127.0.0.1:9090 root@{SUBNET_PREFIX}.40"
    print(f"mon1   Prometheus: {len(targets) - len(down)} of {len(targets)} targets up ({tunnel})")
    return len(down) + (0 if targets else 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check", help="what the lab needs from this machine").set_defaults(
        func=cmd_check
    )
    sub.add_parser("image", help="build (or reuse) the lab images").set_defaults(func=cmd_image)
    up = sub.add_parser("up", help="bring the lab up (idempotent)")
    up.add_argument("--apps", default=os.environ.get("LAB_APPS", "2"), help="app hosts (1-8)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="remove the lab's containers and network").set_defaults(
        func=cmd_down
    )
    sub.add_parser("status", help="show the lab").set_defaults(func=cmd_status)
    sub.add_parser("health", help="ask every app host and the edge for /health").set_defaults(
        func=cmd_health
    )
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
