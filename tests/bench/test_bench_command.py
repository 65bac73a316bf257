"""Keeps ``mqtt-metamanager bench`` working: small counts, every figure present, no targets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import mosquitto_binary

pytestmark = pytest.mark.bench

FIGURES = {
    "inserts_per_s",
    "query_p50_ms",
    "query_p99_ms",
    "peak_rss_mb",
    "start_to_online_s",
    "cpu_us_per_insert",
}


def test_bench_json_has_every_figure() -> None:
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed: run scripts/test.sh as root")
    argv = ["--count", "200", "--objects", "500", "--rounds", "1", "--queries", "50", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "mqtt_metamanager", "bench", *argv],
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    report = json.loads(done.stdout)
    assert report["options"]["count"] == 200
    (one_round,) = report["rounds"]
    for kind in ("echo", "service"):
        assert set(one_round[kind]) == FIGURES
        assert set(report["summary"][kind]) == FIGURES
        # CPU time comes in 10 ms ticks: 200 inserts may take fewer than one.
        timed = {k: v for k, v in one_round[kind].items() if k != "cpu_us_per_insert"}
        assert all(value > 0 for value in timed.values()), one_round[kind]
        assert one_round[kind]["cpu_us_per_insert"] >= 0
    assert set(report["summary"]["ratios"]) == {
        "inserts_per_s",
        "query_p50_ms",
        "query_p99_ms",
        "cpu_us_per_insert",
    }
    targets = report["summary"]["targets"]
    assert len(targets) == 4
    assert all({"target", "value", "limit", "met"} <= set(t) for t in targets)


def test_bench_refuses_bad_counts() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mqtt_metamanager", "bench", "--count", "0"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert b"--count" in done.stderr
