"""The capacity step test and the overload verdicts (tests/lab/capacity.py) on synthetic
runs: each verdict fails on the run it exists to catch (a collapse into timeouts, slow
refusals, no recovery, a starved generator) and passes on a graceful one."""

from __future__ import annotations

import itertools

from tests.lab.capacity import (
    P99_LIMIT,
    Capacity,
    judge,
    overload_figures,
    overload_problems,
    refusal_problems,
    step_test,
    zero_drop_problems,
)
from tests.lab.loadgen import LoadGenerator, LoadResult, Sample


def run(
    phases: list[tuple[float, float, float, int | None, str | None]],
) -> LoadResult:
    """A run of phases (seconds, rate, latency, status, error), requests on the timetable."""
    result = LoadResult(url="http://x", rate=1.0, timeout=2.0, started_at=0.0)
    start, index = 0.0, 0
    for seconds, rate, latency, status, error in phases:
        for i in range(int(seconds * rate)):
            due = start + i / rate
            result.samples.append(
                Sample(index, "list", due, due, latency, status, error, "r1", None)
            )
            index += 1
        start += seconds
    return result


def served_up_to(limit: float):  # type: ignore[no-untyped-def]
    def run_step(rate: float, seconds: float) -> LoadResult:
        latency = 0.01 if rate <= limit else 0.9
        return run([(seconds, rate, latency, 200, None)])

    return run_step


def test_the_step_test_finds_the_rate_where_p99_crosses_the_limit() -> None:
    capacity = step_test(served_up_to(200))
    assert 170 <= capacity.capacity <= 200, capacity.summary()
    assert [s.rate for s in capacity.steps if s.passed][-1] == capacity.capacity
    assert any(not step.passed for step in capacity.steps)
    assert capacity.rate(0.6) == int(capacity.capacity * 0.6)


def test_a_step_that_fails_once_is_run_again_and_a_second_failure_ends_the_climb() -> None:
    """One stall fails the 78/s step; run again, it passes and the climb goes on to the lab's
    real limit (200). The control: a step that fails twice ends it (the retry is used once)."""
    stalls = iter([True])
    served = served_up_to(200)

    def stalled_once(rate: float, seconds: float) -> LoadResult:
        if rate == 78 and next(stalls, False):
            return run([(seconds, rate, 0.9, 200, None)])
        return served(rate, seconds)

    capacity = step_test(stalled_once)
    assert 170 <= capacity.capacity <= 200, capacity.summary()
    assert [s.rate for s in capacity.steps].count(78) == 2, capacity.summary()
    limited = step_test(served_up_to(77))
    assert limited.capacity == 69, limited.summary()  # 78 twice over, then halfway back
    assert [s.rate for s in limited.steps] == [60, 78, 78, 69, 69], limited.summary()  # held


def test_the_rate_found_must_hold_for_longer_or_the_next_lower_one_is_the_capacity() -> None:
    """A lab that passes every 6 s step up to 200/s but sustains only 150/s over 18 s: the
    capacity is the highest rate of the climb that holds (131/s), not the 6 s figure (the
    control: a lab that sustains 200 measures 196)."""

    def bursts_only(rate: float, seconds: float) -> LoadResult:
        limit = 200 if seconds <= 6 else 150
        return served_up_to(limit)(rate, seconds)

    capacity = step_test(bursts_only)
    assert capacity.capacity == 131, capacity.summary()
    long_steps = [(s.rate, s.passed) for s in capacity.steps if s.sent > 10 * s.rate]
    assert long_steps == [(196, False), (170, False)], capacity.summary()
    assert step_test(served_up_to(200)).capacity == 196  # holds: the climb's figure stands


def test_measured_again_the_climb_starts_from_where_it_is_told_or_from_the_bottom() -> None:
    """A second measurement starts from half the first (fewer steps); a lab that has slowed
    below that start is measured again from START_RATE (the control: not capacity 0)."""
    again = step_test(served_up_to(400), start=200)
    assert again.steps[0].rate == 200 and 370 <= again.capacity <= 400, again.summary()
    slower = step_test(served_up_to(150), start=200)
    assert 120 <= slower.capacity <= 150, slower.summary()
    assert [s.rate for s in slower.steps][:3] == [200, 200, 60], slower.summary()


def test_a_step_fails_on_one_refusal_or_a_slow_p99() -> None:
    ok = run([(4, 100, 0.01, 200, None)])
    assert judge(ok, 100).passed
    refused = run([(4, 100, 0.01, 200, None), (0.02, 100, 0.001, 503, None)])
    assert not judge(refused, 100).passed
    slow = run([(4, 100, P99_LIMIT + 0.01, 200, None)])
    assert not judge(slow, 100).passed


def test_a_lab_that_serves_nothing_measures_zero() -> None:
    assert step_test(served_up_to(0)).capacity == 0


PROFILE = [(5.0, 50.0), (60.0, 200.0), (15.0, 50.0)]


def test_a_collapse_into_timeouts_fails_the_overload_verdict() -> None:
    collapsed = run([
        (5, 50, 0.01, 200, None), (60, 200, 2.0, None, "timeout"), (15, 50, 2.0, None, "timeout"),
    ])  # fmt: skip
    problems = overload_problems(overload_figures(collapsed, PROFILE), capacity=100)
    text = " ".join(problems)
    assert "goodput" in text and "timeout" in text and "not back" in text, problems


def test_a_graceful_overload_passes_and_slow_refusals_or_no_recovery_do_not() -> None:
    served, refused = (60, 90, 0.2, 200, None), (60, 110, 0.005, 503, None)
    graceful = run([(5, 50, 0.01, 200, None)])
    graceful.samples += run([served]).samples + run([refused]).samples
    for s in graceful.samples[250:]:
        s.due += 5
        s.sent += 5
    tail = run([(15, 50, 0.01, 200, None)])
    for s in tail.samples:
        s.due += 65
        s.sent += 65
    graceful.samples += tail.samples
    figures = overload_figures(graceful, PROFILE)
    assert overload_problems(figures, capacity=100) == [], figures
    assert figures["goodput"] == 90 and figures["recovered_after_s"] == 0

    refusals = [s for s in graceful.samples if s.status == 503]
    for s in refusals[:10]:
        s.latency = 1.9  # a few slow refusals, still before the client gave up: allowed
    figures = overload_figures(graceful, PROFILE)
    assert overload_problems(figures, capacity=100) == [], figures
    refusals[0].latency = 2.05  # one that came after its client's timeout
    figures = overload_figures(graceful, PROFILE)
    assert [p for p in overload_problems(figures, capacity=100) if "refusal took" in p]
    for s in refusals:
        s.latency = 1.6  # every refusal slow (under the maximum): the p99 fails
    figures = overload_figures(graceful, PROFILE)
    assert [p for p in overload_problems(figures, capacity=100) if "p99 was" in p]
    for s in tail.samples[:400]:
        s.latency = 0.6  # slow for 8 s after the spike, then back
    figures = overload_figures(graceful, PROFILE)
    assert figures["recovered_after_s"] == 8


def test_refusals_are_allowed_only_fast_and_nothing_else_is() -> None:
    fast = run([(10, 50, 0.01, 200, None), (1, 50, 0.01, 503, None)])
    assert refusal_problems(fast) == []
    slow = run([(10, 50, 0.01, 200, None), (1, 50, 1.6, 503, None)])
    assert [p for p in refusal_problems(slow) if "p99" in p]
    slowest = run([(10, 50, 0.01, 200, None), (1, 50, 0.01, 503, None)])
    slowest.samples[-1].latency = 2.05
    assert [p for p in refusal_problems(slowest) if "over 2 s" in p]
    timeout = run([(10, 50, 0.01, 200, None), (0.1, 50, 2.0, None, "timeout")])
    assert "timeout" in " ".join(refusal_problems(timeout))
    bad_gateway = run([(10, 50, 0.01, 200, None), (0.1, 50, 0.01, 502, None)])
    assert refusal_problems(bad_gateway)


def test_a_profile_changes_the_rate_at_each_phase() -> None:
    gen = LoadGenerator("http://127.0.0.1:9", profile=[(1.0, 10.0), (2.0, 100.0), (1.0, 10.0)])
    due = list(gen.due_times())
    assert len(due) == 10 + 200 + 10
    assert gen.duration == 4.0
    assert due[10] == 1.0 and due[210] == 3.0
    assert all(b > a for a, b in itertools.pairwise(due))


def test_a_generator_that_starved_fails_the_zero_drop_verdict_though_nothing_failed() -> None:
    """The review's case: every answer 200, but the generator's loop stalled 5 s (the server
    was not watched then): failed == 0 and enough sent, and still no proof."""
    starved = run([(30, 50, 0.005, 200, None)])
    for s in starved.samples:
        if 3 <= s.due < 8:
            s.sent = 8.0
    starved.rate = 50
    capacity = Capacity(capacity=80, steps=[])
    assert starved.failed == 0 and starved.sent >= 500
    problems = zero_drop_problems(starved, capacity, min_seconds=20, fraction=0.6)
    assert problems == ["the generator fell behind in seconds [8]"], problems
    kept = run([(30, 50, 0.005, 200, None)])
    kept.rate = 50
    assert zero_drop_problems(kept, capacity, min_seconds=20, fraction=0.6) == []
    assert zero_drop_problems(kept, capacity, min_seconds=40, fraction=0.6)  # too short
    assert zero_drop_problems(kept, Capacity(capacity=200, steps=[]), min_seconds=20, fraction=0.6)
