"""Keeps ``mqtt-metamanager bench --kube`` working: every figure present and plausible, the
busy watchers fed every event (the bench fails otherwise); no target asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import mosquitto_binary

pytestmark = pytest.mark.bench


def test_bench_kube_json_has_every_figure() -> None:
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed: run scripts/test.sh as root")
    done = subprocess.run(
        [sys.executable, "-m", "mqtt_metamanager", "bench", "--kube", "--json"],
        capture_output=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    report = json.loads(done.stdout)
    figures = report["figures"]
    assert all(value > 0 for value in figures.values()), figures
    assert figures["list_p50_ms"] <= figures["list_p99_ms"]
    assert figures["peak_rss_after_mb"] >= figures["peak_rss_before_mb"]
    assert len(report["insert_ratio_per_round"]) == 2
    assert {t["target"] for t in report["targets"]} >= {"get p99 (ms)"}
    assert all(isinstance(t["met"], bool) for t in report["targets"])
