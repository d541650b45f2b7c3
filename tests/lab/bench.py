"""The benchmark (``make bench``): capacity, overload, and a rolling upgrade beside the naive
baseline, on the converged lab, written to ``bench/results/<date>.json`` and a PNG timeline.

    python -m tests.lab.bench [--out-dir bench/results] [--fraction 0.75] [--overload-seconds 60]
    python -m tests.lab.bench --table bench/results/<date>.json   # the README's table, in Markdown

In order, on the machine it runs on:

* ``capacity``: the step test of the cluster suite (tests/lab/capacity.py);
* ``overload``: twice the capacity for ``--overload-seconds``, half of it before and after,
  with its verdict (goodput, fast refusals, recovery);
* ``ours``: ``rolling_upgrade.yml`` to a new release of the reference app (release B: the
  same code, another version, built first as CI would) under open-loop load at
  ``--fraction`` of the capacity, through the edge (drain, restart, health gate, undrain,
  host by host), half of it from HTTP/1.1 clients and half from HTTP/2 clients;
* ``baseline``: the naive way on the same hosts and the same code: a plain Gunicorn service
  (no socket activation, the stock uvicorn worker) behind an nginx upstream with nginx's
  defaults (``max_fails=1 fail_timeout=10s``, no bound), restarted ``serial: 1`` with
  ``systemctl restart`` and ``wait_for`` the port, under the same load. It is set up beside
  the real deployment (port 9000 on the app hosts, 8443 on the edge) and removed afterwards;
  the firewall rules it adds go when ``/etc/nftables.conf`` is loaded again at the end.

Each run keeps its totals, its per-second rows and when each host was drained, restarted and
put back; the PNG shows requests/s, failures/s and p99 per second, ours above the baseline.
Nothing here is a test: ``make test`` asserts the same properties (tests/lab/cluster); this
writes the numbers down for people.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.lab.ansible_run import ROOT, PlaybookRun, lab_exec, run_playbook
from tests.lab.capacity import (
    Capacity,
    overload_figures,
    overload_problems,
    overload_profile,
    step_test,
)
from tests.lab.cluster.test_20_rolling import build
from tests.lab.edge import SITE, edge_load, fetch_pebble_roots
from tests.lab.loadgen import LoadResult
from tests.lab.releases import make_release
from tests.lab.topology import APP_HOSTS, GROUPS, LAB_VARS, LB_IP

NOTES: dict[str, object] = {"fastapi_metal_app": "notes"}
NAIVE_PORT = 9000
NAIVE_EDGE_PORT = 8443
LB_HOSTS = tuple(GROUPS["lb"])
CONTROLLER = LAB_VARS["base_firewall_ssh_sources"][0]  # the network's gateway: the load's source
# Marks on the timeline: the roll's task names (roles/fastapi_app/tasks) and the baseline's.
MARKS = {
    "state on every lb is drained": "drain",
    "Restart the service on the release": "restart",
    "state on every lb is serving": "undrain",
    "Restart the naive service": "restart",
    "Wait for the naive port": "port open",
}
NAIVE_PLAY = f"""- name: Naive rollout (the benchmark's baseline)
  hosts: app
  serial: 1
  gather_facts: false
  tasks:
    - name: Restart the naive service
      ansible.builtin.systemd_service:
        name: bench-naive.service
        state: restarted
    - name: Wait for the naive port
      ansible.builtin.wait_for:
        host: "{{{{ ansible_host }}}}"
        port: {NAIVE_PORT}
        timeout: 60
"""
NAIVE_UNIT = """[Unit]
Description=The benchmark's naive baseline: Gunicorn on its own port, no socket activation
[Service]
User=notes
Group=notes
WorkingDirectory=/opt/notes/current/release
EnvironmentFile=/opt/notes/current/env
RuntimeDirectory=bench-naive
ExecStart=/opt/notes/current/release/venv/bin/gunicorn -k uvicorn_worker.UvicornWorker -w 2 \\
  -b {address}:{port} --control-socket /run/bench-naive/gunicorn.ctl app.main:app
"""
NAIVE_SITE = """upstream bench_naive {{
{servers}
}}
server {{
    listen {edge_port} ssl http2;
    server_name {site};
    ssl_certificate /etc/nginx/tls/{site}/fullchain.pem;
    ssl_certificate_key /etc/nginx/tls/{site}/privkey.pem;
    location / {{
        proxy_pass http://bench_naive;
        proxy_set_header Host $host;
    }}
}}
"""


def marks(run: PlaybookRun, started_at: float) -> list[dict[str, Any]]:
    """When each host was drained, restarted, put back (seconds since the load's start)."""
    seen: dict[str, int] = {}
    out = []
    hosts = list(APP_HOSTS)
    for task, when in run.task_starts():
        for pattern, label in MARKS.items():
            if pattern in task:
                n = seen.get(label, 0)
                seen[label] = n + 1
                host = hosts[n] if n < len(hosts) else "?"
                out.append({"at": round(when - started_at, 1), "host": host, "what": label})
    return out


PROTOCOLS = {"http/1.1": False, "h2": True}


def merged_seconds(results: list[LoadResult]) -> list[dict[str, Any]]:
    """Per second, the protocols' requests added up; p99 the worse of theirs."""
    rows: dict[int, dict[str, Any]] = {}
    for result in results:
        offset = round(result.started_at - results[0].started_at)
        for row in result.per_second():
            into = rows.setdefault(row["second"] + offset, {
                "second": row["second"] + offset, "sent": 0, "ok": 0, "failed": 0,
                "p99_ms": None, "failures": {},
            })  # fmt: skip
            for key in ("sent", "ok", "failed"):
                into[key] += row[key]
            into["p99_ms"] = max(into["p99_ms"] or 0, row["p99_ms"] or 0) or None
            for kind, n in row["failures"].items():
                into["failures"][kind] = into["failures"].get(kind, 0) + n
    return [rows[k] for k in sorted(rows)]


def under_load(roots: Path, rate: int, port: int, playbook: str, extra: Any) -> dict[str, Any]:
    """Run a playbook under open-loop load, half HTTP/1.1 and half HTTP/2 clients; the run,
    each protocol's load, the two added up per second, and the marks."""
    loads = [edge_load(roots, port, rate=rate / 2, http2=h2) for h2 in PROTOCOLS.values()]
    for load in loads:
        load.start()
    try:
        for load in loads:
            load.wait_for(int(rate * 1.5), timeout=30)
        run = run_playbook(playbook, extra=extra)
        for load in loads:  # five seconds after the end
            load.wait_for(load.sent + int(rate * 2.5), timeout=60)
    finally:
        for load in loads:
            load.stop()
    results: list[LoadResult] = [load.result for load in loads]
    by_protocol = {name: r.totals() for name, r in zip(PROTOCOLS, results, strict=True)}
    return {
        "rc": run.rc,
        "seconds": round(run.seconds, 1),
        "rate": rate,
        "totals": {
            "sent": sum(t["sent"] for t in by_protocol.values()),
            "failed": sum(t["failed"] for t in by_protocol.values()),
            "latency": {"p99_ms": max(t["latency"]["p99_ms"] or 0 for t in by_protocol.values())},
        },
        "protocols": by_protocol,
        "per_second": merged_seconds(results),
        "marks": marks(run, results[0].started_at),
    }


def naive_setup() -> None:
    servers = "\n".join(f"    server {addr}:{NAIVE_PORT};" for addr in APP_HOSTS.values())
    for host, address in APP_HOSTS.items():
        unit = NAIVE_UNIT.format(address=address, port=NAIVE_PORT)
        lab_exec(host, f"cat > /etc/systemd/system/bench-naive.service <<'EOF'\n{unit}EOF\n"
                 f"nft insert rule inet fastapi_metal input ip saddr {LB_IP} "
                 f"tcp dport {NAIVE_PORT} accept && "
                 "systemctl daemon-reload && systemctl restart bench-naive.service")  # fmt: skip
    site = NAIVE_SITE.format(servers=servers, edge_port=NAIVE_EDGE_PORT, site=SITE)
    edge = (
        f"cat > /etc/nginx/conf.d/bench-naive.conf <<'EOF'\n{site}EOF\n"
        f"nft insert rule inet fastapi_metal input ip saddr {CONTROLLER} "
        f"tcp dport {NAIVE_EDGE_PORT} accept && nginx -t -q && systemctl reload nginx"
    )
    lab_exec(LB_HOSTS[0], edge)
    # Every naive server answers before the load starts (else the baseline's first seconds
    # would measure its start, not its rollout).
    for address in APP_HOSTS.values():
        url = f"http://{address}:{NAIVE_PORT}/health"
        lab_exec(LB_HOSTS[0], f"for i in $(seq 60); do curl -sf -o /dev/null {url} && exit 0; "
                 "sleep 0.5; done; exit 1")  # fmt: skip


def naive_teardown() -> None:
    for host in APP_HOSTS:
        lab_exec(host, "systemctl stop bench-naive.service; rm -f "
                 "/etc/systemd/system/bench-naive.service; systemctl daemon-reload; "
                 "nft -f /etc/nftables.conf", check=False)  # fmt: skip
    for host in LB_HOSTS:
        lab_exec(host, "rm -f /etc/nginx/conf.d/bench-naive.conf && nginx -t -q && "
                 "systemctl reload nginx; nft -f /etc/nftables.conf", check=False)  # fmt: skip


def timeline(data: dict[str, Any], path: Path) -> None:
    """The PNG: for ours and the baseline, requests/s served, failures/s and p99 per second,
    each host's drain, restart and undrain marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [("ours", data["ours"]), ("baseline (naive)", data["baseline"])]
    fig, axes = plt.subplots(len(runs), 1, figsize=(12, 7), sharex=True)
    for ax, (title, run) in zip(axes, runs, strict=True):
        rows = run["per_second"]
        seconds = [row["second"] for row in rows]
        ax.plot(seconds, [row["ok"] for row in rows], color="tab:green", label="2xx / s")
        ax.bar(seconds, [row["failed"] for row in rows], color="tab:red", label="failed / s")
        ax.set_ylabel("requests / s")
        p99 = ax.twinx()
        p99.plot(seconds, [row["p99_ms"] or 0 for row in rows], color="tab:blue", lw=0.8,
                 label="p99 ms")  # fmt: skip
        p99.set_ylabel("p99 (ms)")
        p99.set_yscale("symlog", linthresh=10)
        for mark in run["marks"]:
            style = {"drain": ":", "restart": "-", "undrain": "--", "port open": "--"}
            ax.axvline(mark["at"], color="grey", ls=style.get(mark["what"], "-"), lw=0.8)
            ax.annotate(f"{mark['host']} {mark['what']}", (mark["at"], ax.get_ylim()[1]),
                        rotation=90, va="top", fontsize=7)  # fmt: skip
        t = run["totals"]
        ax.set_title(f"{title}: {t['sent']} sent at {run['rate']}/s, {t['failed']} failed, "
                     f"p99 {t['latency']['p99_ms']} ms")  # fmt: skip
        ax.legend(loc="lower left", fontsize=8)
    axes[-1].set_xlabel("seconds since the load started")
    capacity = data["capacity"]["capacity"]
    fig.suptitle(
        f"rolling upgrade at {data['fraction']:.0%} of the capacity ({capacity:g} req/s), "
        f"{data['machine']['summary']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine() -> dict[str, Any]:
    cores = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    gib = round(int(mem) / 2**20)
    return {"cores": cores, "memory_gib": gib, "kernel": platform.release(),
            "summary": f"{cores} cores, {gib} GiB"}  # fmt: skip


def table(data: dict[str, Any], source: str) -> str:
    """The README's performance table (Markdown) from one record of the bench."""
    capacity = data["capacity"]["capacity"]
    o = data["overload"]
    lines = [
        f"`{source}`: {data['machine']['summary']}, {data['when'][:16].replace('T', ' ')} UTC, "
        f"commit {data['commit']}; capacity **{capacity:g} req/s** (p99 <= "
        f"{data['capacity']['p99_limit_ms']:g} ms).",
        "",
        "| run | offered | requests | failed | p99 | what failed |",
        "|---|---|---|---|---|---|",
        f"| overload ({o['spike_seconds']:g} s) | {o['spike_rate']:g}/s | {o['sent_in_spike']:,} "
        f"| {o['refused']:,} refused (p99 {o['refusal_p99_ms']} ms), "
        f"{sum(o['other_failures'].values()):,} other | served p99 {o['served_p99_ms']} ms "
        f"| {o['goodput']:g}/s served; back after {o['recovered_after_s']} s |",
    ]
    for name, key in (("ours: rolling upgrade", "ours"), ("naive: restart, serial 1", "baseline")):
        run = data[key]
        t = run["totals"]
        statuses = {
            status: n for proto in run["protocols"].values()
            for status, n in proto["by_status"].items() if not status.startswith("2")
        }  # fmt: skip
        errors = {
            error: n for proto in run["protocols"].values()
            for error, n in proto["by_error"].items()
        }  # fmt: skip
        what = ", ".join(f"{n:,} x {k}" for k, n in {**statuses, **errors}.items()) or "-"
        lines.append(
            f"| {name} ({run['seconds']:g} s, HTTP/1.1 + HTTP/2) | {run['rate']}/s "
            f"({data['fraction']:.0%}) | {t['sent']:,} | {t['failed']:,} "
            f"| {t['latency']['p99_ms']} ms | {what} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench/results")
    parser.add_argument("--fraction", type=float, default=0.75)
    parser.add_argument("--overload-seconds", type=float, default=60.0)
    parser.add_argument("--table", type=Path, help="print the README's table of this record")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text()), args.table.name))
        return 0
    when = datetime.now(UTC)
    data: dict[str, Any] = {
        "when": when.isoformat(timespec="seconds"),
        "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True, check=False).stdout.strip(),
        "machine": machine(),
        "fraction": args.fraction,
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        roots = fetch_pebble_roots(tmp / "roots.pem")
        capacity: Capacity = step_test(
            lambda rate, seconds: edge_load(roots, rate=rate, duration=seconds).run_in_thread()
        )
        data["capacity"] = capacity.to_dict()
        print(capacity.summary())

        profile = overload_profile(capacity.capacity, args.overload_seconds)
        spike = edge_load(roots, profile=profile).run_in_thread()
        figures = overload_figures(spike, profile)
        data["overload"] = {**figures, "problems": overload_problems(figures, capacity.capacity)}
        print(f"overload: {data['overload']}")

        rate = capacity.rate(args.fraction)
        b = build(make_release(tmp / "b", "base", "98.0.0"))
        data["ours"] = under_load(roots, rate, 443, "rolling_upgrade.yml", b)
        print(f"ours: {data['ours']['totals']}")
        run_playbook("rolling_upgrade.yml", extra=NOTES)  # back to the checkout's release

        naive_play = ROOT / "playbooks" / f".bench-naive-{when:%H%M%S}.yml"
        naive_play.write_text(NAIVE_PLAY)
        try:
            naive_setup()
            data["baseline"] = under_load(roots, rate, NAIVE_EDGE_PORT, naive_play.name, None)
        finally:
            naive_play.unlink()
            naive_teardown()
        print(f"baseline: {data['baseline']['totals']}")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"{when:%Y-%m-%d-%H%M}"
    stem.with_suffix(".json").write_text(json.dumps(data) + "\n")
    timeline(data, stem.with_suffix(".png"))
    print(f"written: {stem}.json, {stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
