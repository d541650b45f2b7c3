"""Rolling upgrades that drop nothing, on the converged lab, with load running through the
edge over HTTPS: the A->B upgrade, a broken release, a failing and a destructive migration,
a rollback, the deploy lock and the audit log. Tests run in file order and build on each
other (A is what site.yml deployed; B..E are variants of this tree, tests/lab/releases.py).

Per-second load figures go to .lab/results/*.json (the benchmark reuses them); the zero-drop
verdicts read only what this session measured, never those files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.role_defaults import role_defaults
from tests.lab.ansible_run import ROOT, PlaybookRun, lab_exec, run_playbook, start_playbook
from tests.lab.capacity import Capacity, refusal_problems, zero_drop_problems
from tests.lab.cluster.conftest import (
    CONVERGE_FRACTION,
    ROLLOUT_FRACTION,
    edge,
    edge_json,
    latest_capacity,
)
from tests.lab.edge import edge_load
from tests.lab.loadgen import LoadGenerator, LoadResult
from tests.lab.releases import make_release, read_release_info
from tests.lab.topology import APP_HOSTS

RESULTS = ROOT / ".lab" / "results"
LOCK = "/var/lib/fastapi-metal/notes/deploy.lock"
AUDIT = "/var/log/fastapi-metal/notes-deploys.jsonl"
# The reference app, one of the lab's three apps: these tests deploy and roll back it alone.
NOTES: dict[str, object] = {"fastapi_metal_app": "notes"}
# Every run under load goes at ROLLOUT_FRACTION of the capacity measured before it (the
# `capacity` fixture, tests/lab/capacity.py), the converge's too: a fixed rate proved
# something only on a machine with that much headroom (at a fixed 200 req/s a 2-core VM with
# ~20 % to spare went to 100 % timeouts).
# The A->B run keeps the load going at least this long, whatever the rollout takes: the
# rollout is never slowed down to collect more.
MIN_LOAD_SECONDS = 55
# Each run under load: how many seconds of requests it must have sent for its zero-drop
# verdict to mean anything, and the fraction of the capacity it runs at.
RUNS = {
    "rolling-a-to-b": (50, ROLLOUT_FRACTION), "rolling-broken-c": (15, ROLLOUT_FRACTION),
    "rollback-b-to-a": (15, ROLLOUT_FRACTION), "site-broken-c": (15, CONVERGE_FRACTION),
}  # fmt: skip
# The staging tasks (a release unpacked and its venv built on hosts that are serving).
STAGING_TASKS = ("wheelhouse is unpacked", "venv holds the app")
# The runs under load measured by this session (the zero-drop verdicts read these only), and
# the capacity each was sized by.
MEASURED: dict[str, LoadResult] = {}
SIZED_BY: dict[str, Capacity] = {}
SESSION = f"{time.time():.0f}-{id(MEASURED)}"


def current_release(host: str) -> str:
    return lab_exec(host, "readlink -f /opt/notes/current/release").stdout.strip().rsplit("/")[-1]


def main_pid_since(host: str) -> str:
    """When the service's main process started: changes with every restart."""
    return lab_exec(
        host, "systemctl show -p ExecMainStartTimestampMonotonic --value notes"
    ).stdout.strip()


def db_revision() -> str:
    return lab_exec(
        "db1", "runuser -u postgres -- psql -tAc 'select version_num from alembic_version' notes"
    ).stdout.strip()


def audit_lines(host: str) -> list[dict[str, Any]]:
    out = lab_exec(host, f"cat {AUDIT}", check=False).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def head_of(release: dict[str, object]) -> str:
    return read_release_info(Path(str(release["fastapi_app_source"]))).head


def healthy_after(run: PlaybookRun) -> dict[str, float]:
    """Each host's restart-to-healthy time, from the health gate's message."""
    return {
        m[1]: float(m[2])
        for m in re.finditer(
            r"(app\d+) serves \S+: healthy ([\d.]+) s after its restart", run.output
        )
    }


def build(source: Path) -> dict[str, object]:
    """Build a release the way the role does (the release_build action), before any load runs:
    deploys then name it (fastapi_app_release) and find it built, as when CI builds once."""
    defaults = role_defaults("fastapi_app")
    cmd = [
        sys.executable, str(ROOT / "plugins/plugin_utils/release_build.py"),
        "--name", "notes", "--source", str(source),
        "--cache", str(Path(defaults["fastapi_app_build_cache"]).expanduser()),
        "--constraints", str(ROOT / "constraints.txt"),
        *(f"--server={req}" for req in defaults["fastapi_app_server_requirements"]),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    built = json.loads(out.stdout)
    return {**NOTES, "fastapi_app_source": str(source), "fastapi_app_release": built["release"]}


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    """B..E as extra vars of a deploy: source and the release id it was built as."""
    base = tmp_path_factory.mktemp("releases")
    return {
        "B": build(make_release(base / "b", "additive", "0.2.0")),
        "C": build(make_release(base / "c", ["additive", "broken-health"], "0.3.0")),
        "D": build(make_release(base / "d", ["additive", "failing-migration"], "0.4.0")),
        "E": build(make_release(base / "e", ["additive", "destructive"], "0.5.0")),
    }


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    """What earlier tests learned (release ids, run ids), for the later ones."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    return {"A": current_release("app1")}


def _steady_load(pebble_roots: Path, rate: int) -> Iterator[LoadGenerator]:
    # Many clients, not one pool: up to rate x timeout connections, so a server hiccup is
    # measured as latency instead of being amplified by a client-side connection queue.
    # HTTP/1.1: httpx's HTTP/2 client mishandles nginx's GOAWAY every 1,000 requests.
    with edge_load(pebble_roots, rate=rate) as gen:
        gen.wait_for(rate * 3, timeout=30)  # steady traffic before anything starts
        yield gen


@pytest.fixture
def load(pebble_roots: Path, capacity: Capacity) -> Iterator[LoadGenerator]:
    yield from _steady_load(pebble_roots, capacity.rate(ROLLOUT_FRACTION))


@pytest.fixture
def converge_load(pebble_roots: Path, capacity: Capacity) -> Iterator[LoadGenerator]:
    yield from _steady_load(pebble_roots, capacity.rate(CONVERGE_FRACTION))


def finish(
    load: LoadGenerator,
    name: str,
    min_seconds: float = 0.0,
    after: float = 5.0,
    run: PlaybookRun | None = None,
) -> LoadResult:
    """Keep the load on `after` s more (and `min_seconds` in all), stop it, record it, with
    the worst second while `run` staged its release on the serving hosts."""
    done = time.monotonic()
    while time.monotonic() - done < after or load.sent < min_seconds * load.rate:
        if time.monotonic() - done > 240:  # a generator that stalled must not hang the suite
            break
        time.sleep(0.5)
    result = load.stop()
    assert result is not None
    MEASURED[name] = result
    SIZED_BY[name] = latest_capacity()
    path = result.write_json(RESULTS / f"{name}.json")
    data = json.loads(path.read_text())
    data["session"] = SESSION
    staging = run.window(*STAGING_TASKS) if run is not None else None
    if run is not None:
        assert staging is not None, f"no staging task ({STAGING_TASKS}) in the run's output"
    if staging is not None:
        worst = result.worst_second(*staging)
        data["staging"] = {"start": staging[0], "end": staging[1], "worst_second": worst}
        print(f"staging {staging[1] - staging[0]:.0f} s; worst second then: {worst}")
    path.write_text(json.dumps(data) + "\n")
    print(f"\n--- load during {name} ---\n{result.summary()}")
    return result


def test_a_rolling_upgrade_a_to_b_under_load_drops_nothing(
    releases: dict[str, dict[str, object]],
    state: dict[str, Any],
    pebble_roots: Path,
    load: LoadGenerator,
) -> None:
    run = run_playbook("rolling_upgrade.yml", extra=releases["B"])
    result = finish(load, "rolling-a-to-b", min_seconds=MIN_LOAD_SECONDS, run=run)
    assert run.rc == 0, run.tail()
    state["B"] = b = str(releases["B"]["fastapi_app_release"])
    print(f"rollout {run.seconds:.1f} s; restart-to-healthy per host: {healthy_after(run)}")

    # The answers switched from A to B (A first, then B; nothing else ever answered), and
    # the edge serves B.
    assert [row["release"] for row in result.releases()] == [state["A"], b], result.summary()
    assert result.per_second()[-1]["releases"] == [b], result.per_second()[-1]
    assert edge_json("/health", pebble_roots)["release"] == b

    # The migration ran once, from the new release, before any restart.
    assert run.output.count('"event":"migrate"') == 1, "the migration must run exactly once"
    assert re.search(r'"event":"migrate".*"changed":true', run.output)
    assert db_revision() == head_of(releases["B"])
    for host in APP_HOSTS:
        assert current_release(host) == b
        kept = lab_exec(host, "ls /opt/notes/releases").stdout.split()
        assert state["A"] in kept and b in kept
        previous = lab_exec(host, "readlink -f /opt/notes/previous/release").stdout.strip()
        assert previous.endswith(f"/releases/{state['A']}"), previous


def test_b_broken_release_stops_at_the_first_host_which_goes_back(
    releases: dict[str, dict[str, object]], state: dict[str, Any], load: LoadGenerator
) -> None:
    before_app2 = main_pid_since("app2")
    # A short gate: the broken host is known broken after 15 s, not the default 60.
    run = run_playbook(
        "rolling_upgrade.yml", extra={**releases["C"], "fastapi_app_health_timeout": 15}
    )
    result = finish(load, "rolling-broken-c", run=run)
    assert run.rc != 0, "a release that fails its health gate must stop the run"
    state["C"] = c = str(releases["C"]["fastapi_app_release"])
    first = next(iter(APP_HOSTS))
    assert f"stopped at {first}" in run.output
    flat = " ".join(run.output.split())
    assert c in flat and "last health answer: 503" in flat
    assert "the journal of notes.service ends:" in flat, "a failed gate says why"
    assert current_release("app1") == state["B"], "the failed host is back on B"
    assert current_release("app2") == state["B"]
    assert main_pid_since("app2") == before_app2, "the second host was never touched"
    assert {row["release"] for row in result.releases()} == {state["B"]}, "C never answered"
    previous = lab_exec("app1", "readlink -f /opt/notes/previous/release").stdout.strip()
    assert previous.endswith(f"/releases/{state['A']}"), "previous is as it was"


def test_c_failing_migration_restarts_nothing(
    releases: dict[str, dict[str, object]], state: dict[str, Any]
) -> None:
    started = {host: main_pid_since(host) for host in APP_HOSTS}
    run = run_playbook("rolling_upgrade.yml", extra=releases["D"])
    assert run.rc != 0
    state["D"] = releases["D"]["fastapi_app_release"]
    flat = " ".join(run.output.split())
    assert f"The migration of {state['D']} failed" in flat, run.tail()
    assert {host: main_pid_since(host) for host in APP_HOSTS} == started, "no host restarted"
    assert db_revision() == head_of(releases["B"]), "schema still at B's head"
    assert all(current_release(host) == state["B"] for host in APP_HOSTS)


def test_d_destructive_migration_is_refused_without_the_flag(
    releases: dict[str, dict[str, object]], state: dict[str, Any]
) -> None:
    started = {host: main_pid_since(host) for host in APP_HOSTS}
    run = run_playbook("rolling_upgrade.yml", extra=releases["E"])
    assert run.rc != 0
    state["E"] = releases["E"]["fastapi_app_release"]
    flat = " ".join(run.output.split())
    assert "migrates the schema destructively" in flat and "DROP COLUMN" in flat
    assert "fastapi_app_allow_destructive_migrations=true" in flat
    assert {host: main_pid_since(host) for host in APP_HOSTS} == started
    assert db_revision() == head_of(releases["B"])

    # A converge declaring the same release is refused the same way (site.yml migrates too).
    converge = run_playbook("site.yml", extra=releases["E"])
    assert converge.rc != 0
    flat = " ".join(converge.output.split())
    assert "migrates the schema destructively" in flat and "DROP COLUMN" in flat
    assert {host: main_pid_since(host) for host in APP_HOSTS} == started
    assert db_revision() == head_of(releases["B"])
    assert all(current_release(host) == state["B"] for host in APP_HOSTS)


def test_e_rollback_to_the_previous_release_drops_nothing(
    state: dict[str, Any], pebble_roots: Path, load: LoadGenerator
) -> None:
    revision = db_revision()
    run = run_playbook("rollback.yml", extra=NOTES)
    result = finish(load, "rollback-b-to-a")
    assert run.rc == 0, run.tail()
    print(f"rollback {run.seconds:.1f} s; restart-to-healthy per host: {healthy_after(run)}")
    assert all(current_release(host) == state["A"] for host in APP_HOSTS)
    assert [row["release"] for row in result.releases()] == [state["B"], state["A"]]
    assert edge_json("/health", pebble_roots)["release"] == state["A"]
    assert db_revision() == revision, "a rollback does not touch the schema"


def test_f_a_concurrent_deploy_is_refused_by_the_lock(
    releases: dict[str, dict[str, object]], state: dict[str, Any]
) -> None:
    first = start_playbook(
        "rolling_upgrade.yml",
        extra={**releases["B"], "fastapi_app_keep_releases": 2},
    )
    try:
        deadline = time.monotonic() + 120
        # The holder, read while the lock is held: the file is created, then its JSON line
        # written (deploy_lock), so a line ending in a newline is the whole holder.
        held = lab_exec("app1", f"cat {LOCK}", check=False).stdout
        while not held.endswith("\n"):
            assert first.poll() is None, "the first deploy ended before taking the lock"
            assert time.monotonic() < deadline, "the first deploy never took the lock"
            time.sleep(0.2)
            held = lab_exec("app1", f"cat {LOCK}", check=False).stdout
        holder = json.loads(held)
        second = run_playbook("rollback.yml", extra=NOTES)
        assert second.rc != 0
        flat = " ".join(second.output.split())
        assert "Another deploy holds the lock" in flat and "fastapi_app_break_lock=true" in flat
        assert holder["action"] == "deploy" and f"deploy by {holder['who']} " in flat, holder
    finally:
        out, _err = first.communicate(timeout=600)
    assert first.returncode == 0, out[-4000:]
    assert all(current_release(host) == state["B"] for host in APP_HOSTS)
    lab_exec("app1", f"test ! -e {LOCK}")  # the lock is released (a failed exec raises too)

    # keep_releases=2: the newest two, plus the live (B) and previous (A) ones, are kept.
    for host in APP_HOSTS:
        kept = set(lab_exec(host, "ls /opt/notes/releases").stdout.split())
        assert {state["A"], state["B"]} <= kept, kept
        assert len(kept) <= 4 and state["C"] not in kept, kept


def test_f_site_yml_refuses_to_converge_while_a_deploy_holds_the_lock() -> None:
    """A converge would put drained hosts back on the lb (and may restart app hosts): under a
    running rollout it must stop before touching anything, naming the holder."""
    holder = {
        "who": "ops@elsewhere", "action": "rollback", "started": "2026-11-25T00:00:00Z",
        "release": "0.0.9-held",
    }  # fmt: skip
    drained = f"{APP_HOSTS['app2']}:8000"
    lab_exec("app1", f"mkdir -p {Path(LOCK).parent}")
    lab_exec("app1", f"printf '%s\\n' '{json.dumps(holder)}' > {LOCK}")
    lab_exec("lb1", f"fastapi-metal-nginx upstream {drained} down")
    try:
        run = run_playbook("site.yml")
        assert run.rc != 0, run.tail()
        flat = " ".join(run.output.split())
        assert "Another deploy holds the lock" in flat, run.tail()
        assert "rollback by ops@elsewhere" in flat and "0.0.9-held" in flat
        assert run.changed == 0, run.recap
        # The nginx role never ran: app2 is still drained on the lb.
        assert lab_exec("lb1", "fastapi-metal-nginx drained").stdout.split() == [drained]
    finally:
        lab_exec("app1", f"rm -f {LOCK}")
        lab_exec("lb1", "fastapi-metal-nginx undrain-all")


def test_f_a_batch_of_every_app_host_is_restarted_without_a_drain(
    state: dict[str, Any], pebble_roots: Path
) -> None:
    """serial 100%: no host is left to take the traffic, so none is drained (the lb would
    refuse every connection: 503s); the systemd sockets hold new connections through the
    restarts instead. That costs latency, not errors: a patient client (10 s) sees none. Its
    own low rate (every host restarts at once: nothing serves for seconds, whatever the
    capacity), judged as every other run under load but for the fraction."""
    gen = edge_load(pebble_roots, rate=50, timeout=10.0)
    with gen:
        gen.wait_for(100, timeout=30)
        run = run_playbook("rollback.yml", extra={**NOTES, "fastapi_app_serial": "100%"})
        result = finish(gen, "rollback-whole-batch", after=3.0)
    assert run.rc == 0, run.tail()
    print(f"whole-batch rollback {run.seconds:.1f} s; healthy after: {healthy_after(run)}")
    assert all(current_release(host) == state["A"] for host in APP_HOSTS)
    # Its rate is its own (50/s), not a fraction of the capacity.
    problems = zero_drop_problems(result, Capacity(0.0, []), min_seconds=10, fraction=0.0)
    assert not problems, f"{problems}\n{result.summary()}"
    assert result.per_second()[-1]["releases"] == [state["A"]]


def test_g_the_audit_log_has_a_line_for_every_run(state: dict[str, Any]) -> None:
    for host in APP_HOSTS:
        lines = audit_lines(host)
        outcomes = [(line["action"], line["to_release"], line["outcome"]) for line in lines]
        print(f"{host} audit: {outcomes}")
        assert ("deploy", state["B"], "success") in outcomes
        assert ("deploy", state["C"], "reverted" if host == "app1" else "untouched") in outcomes
        assert ("deploy", state["D"], "untouched") in outcomes
        assert ("deploy", state["E"], "untouched") in outcomes
        assert ("rollback", state["A"], "success") in outcomes
        for line in lines:
            assert {"who", "started", "finished", "duration_s", "from_release"} <= set(line)
    controller = Path("~/.local/state/fastapi-metal/deploys.jsonl").expanduser()
    assert controller.exists()
    summary = [json.loads(x) for x in controller.read_text().splitlines() if x.strip()]
    assert any(s["to_release"] == state["C"] and s["outcome"] == "failed" for s in summary)


def drained_on_lb() -> list[str]:
    return lab_exec("lb1", "fastapi-metal-nginx drained").stdout.split()


def test_h_site_yml_reverts_a_host_that_fails_its_gate_like_a_rollout(
    releases: dict[str, dict[str, object]],
    state: dict[str, Any],
    converge_load: LoadGenerator,
    pebble_roots: Path,
    capacity: Capacity,
) -> None:
    """A converge activates through the rolling upgrade's own path: a release that fails its
    health gate on the first host is reverted there, the host goes back on the lb, the run
    stops before the next host, and no request fails meanwhile. Then a rerun to the declared
    state under the same load: the converge's own work on the serving hosts may cost
    requests only as fast refusals (503), never a client left waiting (before the bounds,
    such a rerun collapsed the lab into timeouts). That a rerun on a converged lab changes
    nothing is test_15's (from the installed collection, every host changed=0)."""
    assert all(current_release(host) == state["A"] for host in APP_HOSTS)
    before_app2 = main_pid_since("app2")
    run = run_playbook("site.yml", extra={**releases["C"], "fastapi_app_health_timeout": 15})
    result = finish(converge_load, "site-broken-c", run=run)
    assert run.rc != 0, "a release that fails its health gate must stop the converge"
    flat = " ".join(run.output.split())
    assert f"stopped at {next(iter(APP_HOSTS))}" in flat and "last health answer: 503" in flat
    assert "is back on " + state["A"] in flat, run.tail()
    assert all(current_release(host) == state["A"] for host in APP_HOSTS)
    assert main_pid_since("app2") == before_app2, "the second host was never touched"
    assert drained_on_lb() == [], "the reverted host is back in the upstream"
    assert {row["release"] for row in result.releases()} == {state["A"]}, "C never answered"

    # The declared state again (this checkout's release, which the hosts already serve): the
    # run finishes what the stopped one left undone.
    with edge_load(pebble_roots, rate=capacity.rate(CONVERGE_FRACTION)) as full:
        full.wait_for(full.rate * 3, timeout=30)
        rerun = run_playbook("site.yml")
    assert rerun.rc == 0, rerun.tail()
    result = full.result
    result.write_json(RESULTS / "site-rerun-under-load.json")
    print(f"\n--- load during a site.yml rerun ---\n{result.summary()}")
    problems = refusal_problems(result)
    assert not problems, f"{problems}\n{result.summary()}"
    assert result.sent >= 30 * result.rate, result.summary()


@pytest.mark.drill
def test_i_site_yml_heals_a_host_left_drained_and_down() -> None:
    """What a deploy killed mid-host leaves: the host drained on the lb, its app down. The
    nginx role keeps it drained (it does not answer: undraining would send clients to it)
    instead of failing the run, and the host's own roll brings it back and undrains it."""
    server = f"{APP_HOSTS['app1']}:8000"
    lab_exec("lb1", f"fastapi-metal-nginx upstream {server} down")
    lab_exec("app1", "systemctl stop notes.socket notes.service")
    assert drained_on_lb() == [server]
    run = run_playbook("site.yml")
    assert run.rc == 0, run.tail()
    assert "Kept drained" in run.output and server in run.output, "the edge kept it drained"
    assert drained_on_lb() == [], "the host's roll put it back"
    assert lab_exec("app1", "systemctl is-active notes.socket notes.service").stdout.split() == [
        "active", "active",
    ]  # fmt: skip
    out = lab_exec("lb1", f"curl -s -m 3 http://{server}/health").stdout
    assert json.loads(out)["status"] == "healthy", out


def test_j_a_config_written_but_never_loaded_goes_live_on_the_next_run(
    pebble_roots: Path,
) -> None:
    """A run that wrote nginx.conf and died before reloading (here: the step that reloads
    skipped) leaves the file on disk not live; the next run must load it even though it
    writes nothing."""
    defaults = role_defaults("nginx")
    marker = f"fm-{SESSION}"
    headers = {**defaults["nginx_security_headers"], "X-Fastapi-Metal-Test": marker}
    extra = {"nginx_security_headers": headers}

    def served() -> str:
        out = edge("/health", pebble_roots, "-D", "-", "-o", "/dev/null")
        assert out.returncode == 0, out.stderr
        return out.stdout.lower()

    try:
        cut = run_playbook(
            "site.yml", "--tags", "nginx", "--skip-tags", "nginx_converge", extra=extra
        )
        assert cut.rc == 0, cut.tail()
        assert marker in lab_exec("lb1", "cat /etc/nginx/nginx.conf").stdout, "file written"
        assert marker not in served(), "the cut run must leave the file unloaded (control)"
        rerun = run_playbook("site.yml", "--tags", "nginx", extra=extra)
        assert rerun.rc == 0, rerun.tail()
        assert rerun.changed >= 1, rerun.recap  # the reload, though no file changed
        assert f"x-fastapi-metal-test: {marker}" in served()
        again = run_playbook("site.yml", "--tags", "nginx", extra=extra)
        assert again.rc == 0 and again.changed == 0, again.recap
    finally:
        restored = run_playbook("site.yml", "--tags", "nginx")
    assert restored.rc == 0, restored.tail()
    assert marker not in served()


@pytest.mark.drill
def test_k_a_host_failing_its_gate_on_the_release_it_serves_is_left_as_it_is() -> None:
    """A converge that finds a host unhealthy on the release it already serves (here: app1
    cannot reach the database) has nothing to go back to: it stops there, says so, restarts
    nothing and leaves the host in the upstream (it was never drained)."""
    releases = {host: current_release(host) for host in APP_HOSTS}
    started = {host: main_pid_since(host) for host in APP_HOSTS}
    # A table of the test's own (the base role's table is left alone): app1 -> 5432 dropped.
    cut = "inet fm_test_cut"
    lab_exec("app1", f"nft add table {cut} && nft add chain {cut} out "
             "'{ type filter hook output priority 0; }' && "
             f"nft add rule {cut} out tcp dport 5432 drop")  # fmt: skip
    try:
        # No migration (it would fail first, from app1): the gate is what this is about.
        run = run_playbook("site.yml", extra={
            **NOTES, "fastapi_app_health_timeout": 5, "fastapi_app_migrate_command": "",
            "fastapi_app_migrate_plan_command": "",
        })  # fmt: skip
    finally:
        lab_exec("app1", f"nft delete table {cut}")
    assert run.rc != 0, "a host failing its gate stops the converge"
    flat = " ".join(run.output.split())
    assert "which it already served before this run" in flat, run.tail()
    assert "no answer from the database" in flat, "the gate failed for the cut, not another reason"
    assert "was not restarted: it stays in the upstream" in flat, run.tail()
    assert {host: current_release(host) for host in APP_HOSTS} == releases
    assert {host: main_pid_since(host) for host in APP_HOSTS} == started, "nothing restarted"
    assert drained_on_lb() == []
    deadline = time.monotonic() + 30
    server = f"{APP_HOSTS['app1']}:8000"
    while True:  # the database is back: the host answers healthy again on its own
        out = lab_exec("lb1", f"curl -s -m 3 http://{server}/health").stdout
        if '"healthy"' in out or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert json.loads(out)["status"] == "healthy", out


# The zero-drop claim, per run under load: 0 failed requests (no connection error, no timeout
# at 2 s, every answer 2xx) at ROLLOUT_FRACTION of the capacity measured before it in this
# session (a converge's run at CONVERGE_FRACTION),
# from a generator that kept its timetable in every second (a little late in every second
# adds up: the run's share of late requests counts too), over a run measured by this session
# (a result file left by an earlier run proves nothing).
@pytest.mark.zero_drop
@pytest.mark.parametrize("run", list(RUNS))
def test_zero_drop(run: str) -> None:
    result = MEASURED.get(run)
    if result is None:
        pytest.fail(f"{run}: no rollout under load ran in this session: nothing to judge")
    capacity = SIZED_BY[run]
    totals = result.totals()
    print(
        f"{run}: {totals['sent']} sent at {result.rate:g}/s "
        f"({result.rate / capacity.capacity:.0%} of {capacity.capacity:g}), "
        f"{totals['failed']} failed"
    )
    min_seconds, fraction = RUNS[run]
    problems = zero_drop_problems(result, capacity, min_seconds=min_seconds, fraction=fraction)
    assert not problems, f"{run}: {problems}\n{result.summary()}"
