"""The benchmark's table for the README (tests/lab/bench.py, ``--table``), from a record of
the bench's own shape: each figure comes from the record, and what failed is named."""

from __future__ import annotations

from typing import Any

from tests.lab.bench import table


def run(sent: int, failed: int, statuses: dict[str, int], errors: dict[str, int]) -> dict[str, Any]:
    half = {"by_status": statuses, "by_error": errors}
    return {
        "rc": 0, "seconds": 71.2, "rate": 300,
        "totals": {"sent": sent, "failed": failed, "latency": {"p99_ms": 412.5}},
        "protocols": {"http/1.1": half, "h2": {"by_status": {"200": 5}, "by_error": {}}},
    }  # fmt: skip


RECORD: dict[str, Any] = {
    "when": "2026-12-07T21:05:09+00:00", "commit": "929ef32", "fraction": 0.75,
    "machine": {"summary": "2 cores, 24 GiB"},
    "capacity": {"capacity": 400, "p99_limit_ms": 250.0},
    "overload": {
        "spike_rate": 800, "spike_seconds": 60.0, "sent_in_spike": 48000, "goodput": 390.5,
        "served_p99_ms": 1100.0, "refused": 24100, "refusal_p99_ms": 1090.0,
        "other_failures": {}, "recovered_after_s": 1.0,
    },
    "ours": run(21360, 0, {"200": 15000, "201": 6360}, {}),
    "baseline": run(2100, 650, {"200": 1450, "502": 600}, {"timeout": 50}),
}  # fmt: skip


def test_the_table_quotes_the_record() -> None:
    text = table(RECORD, "2026-12-07-2105.json")
    assert "`2026-12-07-2105.json`: 2 cores, 24 GiB, 2026-12-07 21:05 UTC, commit 929ef32" in text
    assert "capacity **400 req/s**" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    overload, ours, naive = rows[1:]
    assert "800/s" in overload and "48,000" in overload and "24,100 refused" in overload
    assert "390.5/s served" in overload and "0 other" in overload
    assert "| 300/s (75%) | 21,360 | 0 | 412.5 ms | - |" in ours
    assert "| 2,100 | 650 |" in naive and "600 x 502" in naive and "50 x timeout" in naive
