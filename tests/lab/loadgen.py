"""An open-loop load generator: the proof that a rolling upgrade drops no request.

It sends requests at a steady rate on a fixed timetable (request ``i`` is due ``i / rate``
seconds after the start) whatever the server does: a slow answer never delays the next request
(open loop). Requests that are late because the generator itself fell behind are sent at once
and their lateness is recorded as *lag*, so a slow generator is not mistaken for a slow server.

The mix hits the notes API, which reads and writes PostgreSQL: by default 35 % ``GET
/notes?limit=5``, 35 % ``GET /notes/{id}`` of a note this run created (a list until one
exists), 30 % ``POST /notes``; for another app, ``paths`` lists the GET paths to send. Every
request has a total time limit (default 2 s). A failure is any status outside 2xx, a connection
error, a TLS error or a timeout.

Recorded per request: when it was due and sent, its latency, its status (or error kind) and
the ``X-App-Release`` header. ``LoadResult`` adds up totals, releases in order of first
appearance and when the traffic switched between them, and one row per second (sent, ok,
failed, p50/p90/p99/max latency, the releases seen and how often); ``write_json()`` keeps all
of it, raw samples included, for the benchmark; ``summary()`` is a few printable lines.

TLS is verified against ``cafile`` (the lab passes pebble's chain). ``resolve`` maps a host
name to the address to connect to (``{"app.lab.test": "10.89.50.10"}``) at the socket level:
the URL, the ``Host`` header, SNI and the certificate check all keep the name.

Three ways to run it::

    # blocking, in this thread
    result = LoadGenerator("https://app.lab.test", rate=200, duration=60,
                           cafile=ca, resolve={"app.lab.test": "10.89.50.10"}).run()

    # in a background thread while something else happens (a rolling upgrade)
    with LoadGenerator("https://app.lab.test", rate=200, cafile=ca, resolve=...) as load:
        run_playbook("rolling_upgrade.yml")
    load.result.write_json(tmp / "load.json"); print(load.result.summary())

    # command line (exit status 1 when a request failed)
    python -m tests.lab.loadgen --url https://app.lab.test --rate 200 --duration 60 \\
        --cafile ca.pem --resolve app.lab.test:10.89.50.10 --out load.json

Concurrency: one asyncio loop (uvloop when installed) with an HTTP/1.1 keep-alive pool of at
most ``max_connections`` connections (or, with ``http2=True``, HTTP/2 streams multiplexed on
a few TLS connections: tests/lab/http2.py) (tests/lab/http1.py: O(1) per request, no retry, so a
stalled server cannot make the generator itself melt down); requests beyond that wait for a
connection inside their time limit. At most ``max_in_flight`` requests are pending at once (a
safety net far above what ``rate x timeout`` needs); when it is reached the timetable waits and
the delay shows as lag.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import signal
import ssl
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from tests.lab.http1 import Pool, RequestError
from tests.lab.http2 import Pool as H2Pool

RELEASE_HEADER = "X-App-Release"
DEFAULT_MIX: Mapping[str, float] = {"list": 0.35, "get": 0.35, "create": 0.30}
#: Lag above this counts a request as "late" in the totals (and in each second's row).
LATE_THRESHOLD = 0.050
#: The generator fell behind its timetable, so that it measured itself rather than the
#: server, in a second where more than BEHIND_SHARE of the requests (and more than one) were
#: sent over BEHIND_LAG late: a gap in the timeline that long (5 % of the 2 s client timeout,
#: 20 requests at 200/s) is time in which the server was not watched. Judged per second, so a
#: stall is never averaged away over a long run; and over the whole run, more than
#: BEHIND_SHARE_RUN of the requests over LATE_THRESHOLD late is behind too (a little late in
#: every second adds up).
BEHIND_LAG = 0.100
BEHIND_SHARE = 0.10
BEHIND_SHARE_RUN = 0.01
#: How many failures are kept with their details (all are counted).
FAILURE_DETAILS = 500


def parse_resolve(values: Iterable[str]) -> dict[str, str]:
    """``HOST:ADDRESS`` (or curl's ``HOST:PORT:ADDRESS``, port ignored) -> ``{HOST: ADDRESS}``."""
    mapping: dict[str, str] = {}
    for value in values:
        host, sep, rest = value.partition(":")
        if not sep or not rest:
            raise ValueError(f"--resolve {value!r}: expected HOST:ADDRESS")
        port, sep2, address = rest.partition(":")
        if sep2 and port.isdigit() and address:
            rest = address
        mapping[host] = rest.strip("[]")
    return mapping


def classify_error(exc: BaseException) -> str:
    """A short, stable name for why a request got no answer."""
    if isinstance(exc, RequestError):
        return exc.kind
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return "tls_error"
    return f"other:{type(exc).__name__}"


# -- results ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Sample:
    """One request. Times are seconds since the run's start (``LoadResult.started_at``)."""

    index: int
    route: str  # "list", "get" or "create"
    due: float
    sent: float
    latency: float
    status: int | None = None
    error: str | None = None
    release: str | None = None
    detail: str | None = None
    # Why the app's worker refused it (its X-Refused header: "busy" or "late"); None for
    # anything else, a 503 from the edge itself included.
    refused: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def lag(self) -> float:
        return max(0.0, self.sent - self.due)

    @property
    def outcome(self) -> str:
        """The status ("503 busy" when the worker refused it, "503" from the edge) or error."""
        if self.status is None:
            return self.error or "unknown"
        return f"{self.status} {self.refused}" if self.refused else str(self.status)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of ``values`` (need not be sorted); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def _latency_stats(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "p50_ms": _ms(percentile(values, 50)),
        "p90_ms": _ms(percentile(values, 90)),
        "p99_ms": _ms(percentile(values, 99)),
        "max_ms": _ms(max(values) if values else None),
    }


@dataclass
class LoadResult:
    """Everything one run recorded, and the numbers derived from it."""

    url: str
    rate: float
    timeout: float
    started_at: float  # wall clock (epoch seconds) of t=0
    duration: float = 0.0  # seconds from t=0 to the last answer
    samples: list[Sample] = field(default_factory=list)
    max_connections: int = 0
    resolve: dict[str, str] = field(default_factory=dict)
    connections_opened: int = 0  # TCP (and TLS) handshakes the run made
    priority: str = "none"  # the generator thread's CPU priority: "rr", "nice" or "none"
    protocol: str = "http/1.1"  # or "h2"

    @property
    def sent(self) -> int:
        return len(self.samples)

    @property
    def failed(self) -> int:
        return sum(1 for s in self.samples if not s.ok)

    @property
    def ok(self) -> int:
        return self.sent - self.failed

    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    def totals(self) -> dict[str, Any]:
        samples = self.samples
        lags = [s.lag for s in samples]
        send_span = (samples[-1].sent - samples[0].sent) if len(samples) > 1 else 0.0
        by_route: dict[str, dict[str, int]] = {}
        for s in samples:
            row = by_route.setdefault(s.route, {"sent": 0, "failed": 0})
            row["sent"] += 1
            row["failed"] += 0 if s.ok else 1
        late = sum(1 for lag in lags if lag > LATE_THRESHOLD)
        behind = self.behind_seconds()
        return {
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "by_status": dict(Counter(str(s.status) for s in samples if s.status is not None)),
            "by_error": dict(Counter(s.error for s in samples if s.error is not None)),
            "by_route": by_route,
            "target_rate": self.rate,
            # Requests per second over the span in which they were sent.
            "achieved_rate": round((self.sent - 1) / send_span, 2) if send_span > 0 else None,
            "duration_s": round(self.duration, 3),
            "connections_opened": self.connections_opened,
            "latency": _latency_stats([s.latency for s in samples]),
            "lag": {
                "p50_ms": _ms(percentile(lags, 50)),
                "p99_ms": _ms(percentile(lags, 99)),
                "max_ms": _ms(max(lags) if lags else None),
                "late": late,
                "late_threshold_ms": LATE_THRESHOLD * 1000,
            },
            # The generator, not the server, could not keep its timetable in these seconds.
            "behind_seconds": behind,
            "generator_behind": bool(behind) or late > max(1, BEHIND_SHARE_RUN * self.sent),
        }

    def behind_seconds(self) -> list[int]:
        """The seconds in which the generator itself fell behind its timetable."""
        return [
            row["second"]
            for row in self.per_second()
            if row["behind"] > max(1, BEHIND_SHARE * row["sent"])
        ]

    def worst_second(self, start: float, end: float) -> dict[str, Any] | None:
        """The row with the highest p99 latency among the seconds that overlap [start, end)
        (epoch seconds: e.g. a playbook phase); None if no request was sent then."""
        rows = [
            row
            for row in self.per_second()
            if row["sent"] and row["time"] < end and row["time"] + 1 > start
        ]
        return max(rows, key=lambda row: row["p99_ms"] or 0.0, default=None)

    def releases(self) -> list[dict[str, Any]]:
        """Each ``X-App-Release`` seen, in order of first appearance, with when and how often."""
        seen: dict[str, dict[str, Any]] = {}
        for s in sorted(self.samples, key=lambda s: s.sent + s.latency):
            if s.release is None:
                continue
            answered = round(s.sent + s.latency, 3)
            row = seen.get(s.release)
            if row is None:
                seen[s.release] = {
                    "release": s.release,
                    "count": 1,
                    "first_seen": answered,
                    "last_seen": answered,
                }
            else:
                row["count"] += 1
                row["last_seen"] = answered
        return list(seen.values())

    def switches(self) -> list[dict[str, Any]]:
        """From one release to the next (in order of first appearance): when the new one first
        answered, when the old one last did, and how long both answered (``overlap_s``)."""
        rows = self.releases()
        return [
            {
                "from": old["release"],
                "to": new["release"],
                "first_new": new["first_seen"],
                "last_old": old["last_seen"],
                "overlap_s": round(old["last_seen"] - new["first_seen"], 3),
            }
            for old, new in itertools.pairwise(rows)
        ]

    def switch_time(self) -> float | None:
        """Seconds from the start until the last release to appear first answered."""
        rows = self.releases()
        return rows[-1]["first_seen"] if len(rows) > 1 else None

    def per_second(self) -> list[dict[str, Any]]:
        """One row per second of sending (by the second a request was sent in)."""
        buckets: dict[int, list[Sample]] = {}
        for s in self.samples:
            buckets.setdefault(int(s.sent), []).append(s)
        rows = []
        for second in range(max(buckets) + 1 if buckets else 0):
            samples = buckets.get(second, [])
            answered = sorted(samples, key=lambda s: s.sent + s.latency)
            failed = [s for s in samples if not s.ok]
            rows.append(
                {
                    "second": second,
                    "time": round(self.started_at + second, 3),
                    "sent": len(samples),
                    "ok": len(samples) - len(failed),
                    "failed": len(failed),
                    **_latency_stats([s.latency for s in samples]),
                    "lag_max_ms": _ms(max((s.lag for s in samples), default=None)),
                    "late": sum(1 for s in samples if s.lag > LATE_THRESHOLD),
                    "behind": sum(1 for s in samples if s.lag > BEHIND_LAG),
                    # In order of first answer within the second; "-": no release header.
                    "releases": list(
                        dict.fromkeys(s.release for s in answered if s.release is not None)
                    ),
                    "release_counts": dict(Counter(s.release or "-" for s in answered)),
                    "failures": dict(Counter(s.outcome for s in failed)),
                }
            )
        return rows

    def to_dict(self, *, include_samples: bool = True) -> dict[str, Any]:
        failures = self.failures()
        data: dict[str, Any] = {
            "config": {
                "url": self.url,
                "rate": self.rate,
                "timeout_s": self.timeout,
                "max_connections": self.max_connections,
                "resolve": self.resolve,
                "priority": self.priority,
                "protocol": self.protocol,
            },
            "started_at": self.started_at,
            "totals": self.totals(),
            "releases": self.releases(),
            "switches": self.switches(),
            "switch_time": self.switch_time(),
            "per_second": self.per_second(),
            "failures": [
                {
                    "index": s.index,
                    "route": s.route,
                    "sent": round(s.sent, 4),
                    "latency_ms": _ms(s.latency),
                    "status": s.status,
                    "error": s.error,
                    "release": s.release,
                    "detail": s.detail,
                }
                for s in failures[:FAILURE_DETAILS]
            ],
        }
        if include_samples:
            # Columnar: about 60 bytes per request.
            data["samples"] = {
                "route": [s.route for s in self.samples],
                "due": [round(s.due, 4) for s in self.samples],
                "sent": [round(s.sent, 4) for s in self.samples],
                "latency_ms": [_ms(s.latency) for s in self.samples],
                "status": [s.status for s in self.samples],
                "error": [s.error for s in self.samples],
                "release": [s.release for s in self.samples],
            }
        return data

    def write_json(self, path: Path | str, *, include_samples: bool = True) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(include_samples=include_samples)) + "\n")
        return path

    def summary(self) -> str:
        t = self.totals()
        lat, lag = t["latency"], t["lag"]
        lines = [
            f"{self.url} ({self.protocol}): {t['sent']} sent in {t['duration_s']} s "
            f"(target {self.rate:g}/s, achieved {t['achieved_rate']}/s), "
            f"{t['ok']} ok, {t['failed']} failed",
            f"latency p50 {lat['p50_ms']} ms, p90 {lat['p90_ms']} ms, p99 {lat['p99_ms']} ms, "
            f"max {lat['max_ms']} ms; generator ({self.priority}) lag p99 {lag['p99_ms']} ms, "
            f"max {lag['max_ms']} ms, {lag['late']} late"
            + (
                f" (GENERATOR FELL BEHIND: in seconds {t['behind_seconds'][:20]}, "
                f"{lag['late']} of {t['sent']} late)"
                if t["generator_behind"]
                else ""
            ),
        ]
        late_seconds = {row["second"]: row["late"] for row in self.per_second() if row["late"]}
        if late_seconds:  # reported whether or not it amounts to falling behind
            lines.append(f"late requests by second: {dict(list(late_seconds.items())[:30])}")
        if t["failed"]:
            kinds = dict(Counter(s.outcome for s in self.samples if not s.ok))
            bad_seconds = [row["second"] for row in self.per_second() if row["failed"]]
            lines.append(f"failures: {kinds} in seconds {bad_seconds[:20]}")
        releases = ", ".join(
            f"{r['release']} x{r['count']} ({r['first_seen']}-{r['last_seen']} s)"
            for r in self.releases()
        )
        lines.append(f"releases: {releases or 'none'}")
        if self.switch_time() is not None:
            lines.append(f"switch: {self.switches()}")
        return "\n".join(lines)


# -- the generator ---------------------------------------------------------------------------


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


# The client stands in for other machines, which have CPUs of their own: on the lab's two
# shared cores its thread runs under the real-time round-robin policy at the lowest real-time
# priority (as root), so it is on a core as soon as a request is due or an answer arrives,
# ahead of every lab host and of the controller. A busy second is then measured as the
# servers' latency, not lost as the generator's own lateness. Under nice -5 alone the
# five lab hosts' answers, arriving together after a stall, kept it off the cores for
# 100-300 ms. The servers get less CPU for it, never more; the kernel still leaves 5 % of
# each core to the others (kernel.sched_rt_runtime_us). Where the policy is refused (not
# root, or a cgroup without a real-time budget) it falls back to nice -5, and where that is
# refused too, the lag is still measured and judged.
CLIENT_RT_PRIORITY = 1
CLIENT_NICE = -5


def _keep_the_timetable() -> str:
    """Raise this thread's CPU priority; returns what it got ("rr", "nice" or "none")."""
    tid = threading.get_native_id()
    with contextlib.suppress(PermissionError, AttributeError, OSError):
        os.sched_setscheduler(tid, os.SCHED_RR, os.sched_param(CLIENT_RT_PRIORITY))
        return "rr"
    with contextlib.suppress(PermissionError, AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, tid, CLIENT_NICE)
        return "nice"
    return "none"


class LoadGenerator:
    """Open-loop load on the notes API at ``rate`` requests per second.

    ``duration`` None runs until ``stop()``. ``resolve`` maps host names to addresses;
    ``cafile`` is the CA bundle to verify TLS against (``verify=False`` turns checks off).
    ``mix`` weighs the routes ``list``, ``get`` and ``create``; ``seed`` makes the sequence of
    routes reproducible.
    """

    def __init__(
        self,
        url: str,
        *,
        rate: float = 200.0,
        duration: float | None = None,
        cafile: Path | str | None = None,
        verify: bool = True,
        resolve: Mapping[str, str] | None = None,
        timeout: float = 2.0,
        max_connections: int = 50,
        max_in_flight: int = 2000,
        mix: Mapping[str, float] = DEFAULT_MIX,
        paths: Sequence[str] = (),
        seed: int | None = 0,
        user_agent: str = "fastapi-metal-loadgen",
        profile: Sequence[tuple[float, float]] = (),
        http2: bool = False,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if any(seconds <= 0 or phase_rate <= 0 for seconds, phase_rate in profile):
            raise ValueError(f"profile: (seconds, rate) pairs, both positive, expected: {profile}")
        unknown = set(mix) - set(DEFAULT_MIX)
        if unknown or not any(weight > 0 for weight in mix.values()):
            raise ValueError(f"mix: weights for {sorted(DEFAULT_MIX)} expected, got {dict(mix)}")
        self.url = url.rstrip("/")
        self.rate = float(rate)
        # Phases of (seconds, rate) in order: the timetable changes rate at each boundary
        # (a step test, an overload spike) and ends with the last phase; `rate` and
        # `duration` are then ignored.
        self.profile = [(float(seconds), float(r)) for seconds, r in profile]
        self.duration = sum(p[0] for p in self.profile) if self.profile else duration
        self.cafile = Path(cafile) if cafile is not None else None
        self.verify = verify
        self.resolve = dict(resolve or {})
        self.timeout = timeout
        self.max_connections = max_connections
        self.max_in_flight = max_in_flight
        self.routes = list(mix)
        self.weights = [mix[name] for name in self.routes]
        # Another app than notes: GET these paths in turn instead of the notes mix.
        self.paths = list(paths)
        self.rng = random.Random(seed)
        self.user_agent = user_agent
        # HTTP/2 (tests/lab/http2.py: streams multiplexed on few TLS connections) instead of
        # HTTP/1.1 keep-alive connections (tests/lab/http1.py).
        self.http2 = http2
        self.run_id = f"{int(time.time()):x}"

        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._note_ids: deque[int] = deque(maxlen=1000)
        self._result: LoadResult | None = None
        self.priority = "none"
        # Live counters (read from other threads; plain ints are fine under the GIL).
        self.sent = 0
        self.failed = 0

    # -- control ----------------------------------------------------------------------------

    @property
    def result(self) -> LoadResult:
        if self._result is None:
            raise RuntimeError("the load generator has not run yet")
        return self._result

    def stop(self, *, wait: bool = True) -> LoadResult | None:
        """Stop sending; with ``wait``, wait for the answers in flight and return the result."""
        self._stop.set()
        if wait and self._thread is not None:
            self._thread.join(timeout=self.timeout + 30)
            if self._thread.is_alive():  # pragma: no cover
                raise RuntimeError("the load generator did not stop")
            if self._error is not None:
                raise RuntimeError(f"the load generator failed: {self._error!r}") from self._error
        return self._result

    def start(self) -> LoadGenerator:
        """Run in a background thread; returns once the first request is due."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._thread_main, name="loadgen", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout=30) or self._error is not None:
            self._stop.set()
            raise RuntimeError(f"the load generator did not start: {self._error!r}")
        return self

    def wait_for(self, requests: int, timeout: float = 30.0) -> None:
        """Block until ``requests`` have been sent (load is flowing before a test goes on)."""
        deadline = time.monotonic() + timeout
        while self.sent < requests:
            if time.monotonic() > deadline or self._error is not None:
                raise TimeoutError(f"only {self.sent} of {requests} requests sent: {self._error!r}")
            time.sleep(0.02)

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def run_in_thread(self) -> LoadResult:
        """Run in a background thread (with its CPU priority, as under ``start()``) until
        ``duration`` is over, and return the result."""
        if self.duration is None:
            raise ValueError("run_in_thread() needs a duration or a profile")
        self.start()
        assert self._thread is not None
        self._thread.join(timeout=self.duration + self.timeout + 60)
        result = self.stop()
        assert result is not None
        return result

    def due_times(self) -> Iterator[float]:
        """When each request is due, in seconds from the start: ``i / rate``, or phase by
        phase along the profile."""
        if not self.profile:
            yield from (i / self.rate for i in itertools.count())
            return
        start = 0.0
        for seconds, phase_rate in self.profile:
            for i in itertools.count():
                due = start + i / phase_rate
                if due >= start + seconds:
                    break
                yield due
            start += seconds

    def run(self) -> LoadResult:
        """Run in this thread until ``duration`` is over or ``stop()`` is called."""
        with asyncio.Runner(loop_factory=_new_event_loop) as runner:
            return runner.run(self.run_async())

    def _thread_main(self) -> None:
        self.priority = _keep_the_timetable()
        try:
            self.run()
        except BaseException as exc:
            self._error = exc
            self._started.set()

    # -- the work ---------------------------------------------------------------------------

    def _pool(self) -> Pool | H2Pool:
        url = urlsplit(self.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"url must be http(s)://host[:port], not {self.url!r}")
        context: ssl.SSLContext | None = None
        if url.scheme == "https":
            context = ssl.create_default_context(
                cafile=str(self.cafile) if self.cafile is not None else None
            )
            if not self.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        if self.http2:
            return H2Pool(
                url.scheme,
                url.hostname,
                url.port or 443,
                connect_to=self.resolve.get(url.hostname),
                ssl_context=context,
                headers={"User-Agent": self.user_agent},
            )
        return Pool(
            url.scheme,
            url.hostname,
            url.port or (443 if url.scheme == "https" else 80),
            connect_to=self.resolve.get(url.hostname),
            ssl_context=context,
            max_connections=self.max_connections,
            headers={"User-Agent": self.user_agent},
        )

    async def run_async(self) -> LoadResult:
        # perf_counter, not loop.time(): uvloop's clock has millisecond steps.
        clock = time.perf_counter
        pool = self._pool()
        try:
            t0 = clock()
            result = LoadResult(
                url=self.url,
                rate=self.rate,
                timeout=self.timeout,
                started_at=time.time(),
                max_connections=self.max_connections,
                resolve=self.resolve,
                priority=self.priority,
                protocol="h2" if self.http2 else "http/1.1",
            )
            self._result = result
            in_flight: set[asyncio.Task[None]] = set()
            slots = asyncio.Semaphore(self.max_in_flight)
            self._started.set()
            index = 0
            timetable = self.due_times()
            due = next(timetable)
            while not self._stop.is_set():
                if self.duration is not None and due >= self.duration:
                    break
                wait = due - (clock() - t0)
                if wait > 0:
                    # Short naps so stop() is noticed quickly even at low rates.
                    await asyncio.sleep(min(wait, 0.05))
                    continue
                await slots.acquire()
                task = asyncio.create_task(self._request(pool, result, t0, index, due, slots))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                index += 1
                due = next(timetable, math.inf)
                if wait < -0.001 and index % 50 == 0:
                    await asyncio.sleep(0)  # catching up: let answers in between bursts
            if in_flight:
                await asyncio.wait(set(in_flight))
            result.duration = clock() - t0
            result.samples.sort(key=lambda s: s.index)
            result.connections_opened = pool.opened
        finally:
            pool.close()
        return result

    def _pick(self) -> tuple[str, str, str, dict[str, Any] | None]:
        if self.paths:
            return "get", "GET", self.paths[self.rng.randrange(len(self.paths))], None
        route = self.rng.choices(self.routes, self.weights)[0]
        if route == "get" and self._note_ids:
            note_id = self._note_ids[self.rng.randrange(len(self._note_ids))]
            return route, "GET", f"/notes/{note_id}", None
        if route == "create":
            return route, "POST", "/notes", {"title": "loadgen", "body": "open-loop load"}
        return "list" if route == "get" else route, "GET", "/notes?limit=5", None

    async def _request(
        self,
        pool: Pool | H2Pool,
        result: LoadResult,
        t0: float,
        index: int,
        due: float,
        slots: asyncio.Semaphore,
    ) -> None:
        route, method, path, body = self._pick()
        sent = time.perf_counter() - t0
        status: int | None = None
        error: str | None = None
        release: str | None = None
        detail: str | None = None
        refused: str | None = None
        headers = {"X-Request-ID": f"lg-{self.run_id}-{index}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with asyncio.timeout(self.timeout):
                response = await pool.request(
                    method,
                    path,
                    body=None if body is None else json.dumps(body).encode(),
                    headers=headers,
                )
            status = response.status
            release = response.headers.get(RELEASE_HEADER.lower())
            if status == 201 and route == "create":
                note_id = json.loads(response.body).get("id")
                if isinstance(note_id, int):
                    self._note_ids.append(note_id)
            elif not 200 <= status < 300:
                detail = response.body[:200].decode("utf-8", "replace")
                refused = response.headers.get("x-refused")
        except Exception as exc:
            error = classify_error(exc)
            detail = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            slots.release()
        latency = time.perf_counter() - t0 - sent
        sample = Sample(index, route, due, sent, latency, status, error, release, detail, refused)
        result.samples.append(sample)
        self.sent += 1
        if not sample.ok:
            self.failed += 1


# -- command line ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.lab.loadgen",
        description="Open-loop load on the notes API; exits 1 if any request failed.",
    )
    parser.add_argument("--url", required=True, help="base URL, e.g. https://app.lab.test")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds; 0 = until SIGINT/SIGTERM"
    )
    parser.add_argument("--cafile", type=Path, help="CA bundle to verify TLS against")
    parser.add_argument("--insecure", action="store_true", help="do not verify TLS")
    parser.add_argument(
        "--resolve",
        action="append",
        default=[],
        metavar="HOST:ADDRESS",
        help="connect to ADDRESS for HOST (repeatable; curl's HOST:PORT:ADDRESS works too)",
    )
    parser.add_argument("--timeout", type=float, default=2.0, help="per request, total")
    parser.add_argument("--connections", type=int, default=50, help="keep-alive pool size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--http2", action="store_true", help="HTTP/2 (ALPN h2) over TLS")
    parser.add_argument("--out", type=Path, help="write the full result as JSON here")
    parser.add_argument("--no-samples", action="store_true", help="leave raw samples out of --out")
    args = parser.parse_args(argv)

    generator = LoadGenerator(
        args.url,
        rate=args.rate,
        duration=args.duration or None,
        cafile=args.cafile,
        verify=not args.insecure,
        resolve=parse_resolve(args.resolve),
        timeout=args.timeout,
        max_connections=args.connections,
        seed=args.seed,
        http2=args.http2,
    )
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: generator.stop(wait=False))
    generator.priority = _keep_the_timetable()  # this process is the generator alone
    result = generator.run()
    if args.out is not None:
        result.write_json(args.out, include_samples=not args.no_samples)
    print(result.summary())
    return 1 if result.failed or not result.sent else 0


if __name__ == "__main__":
    sys.exit(main())
