"""Keeps ``mqtt-metamanager bench --scale`` working: tiny sizes, every figure at every size,
the targets judged, and the chart written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import mosquitto_binary

pytestmark = pytest.mark.bench

SERVICE = {
    "start_to_online_s",
    "peak_rss_mb",
    "query_p50_ms",
    "query_p99_ms",
    "list_p50_ms",
    "list_p99_ms",
    "inserts_per_s",
    "sync_100_s",
    "sync_300_s",
    "peak_rss_before_syncs_mb",
}
ECHO = {"start_to_online_s", "peak_rss_mb", "query_p50_ms", "query_p99_ms", "inserts_per_s"}


def test_scale_json_has_every_figure_at_every_size_and_the_chart(tmp_path: Path) -> None:
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed: run scripts/test.sh as root")
    plot = tmp_path / "scale.svg"
    argv = ["--scale", "--scale-sizes", "1000,100", "--scale-syncs", "300,100", "--count", "200"]
    argv += ["--queries", "50", "--lists", "20", "--rounds", "2", "--json", "--plot", str(plot)]
    done = subprocess.run(
        [sys.executable, "-m", "mqtt_metamanager", "bench", *argv],
        capture_output=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    report = json.loads(done.stdout)
    assert [entry["objects"] for entry in report["sizes"]] == [100, 1000]  # smallest first
    for entry in report["sizes"]:
        assert set(entry["service"]) == SERVICE
        assert set(entry["echo"]) == ECHO
        for figures in (entry["service"], entry["echo"]):
            assert all(value > 0 for value in figures.values()), figures
        assert set(entry["ratios"]) == {"inserts_per_s", "query_p99_ms"}
        assert [set(r) for r in entry["rounds"]] == [{"echo", "service"}] * 2
        worst = max(r["service"]["peak_rss_mb"] for r in entry["rounds"])
        assert entry["service"]["peak_rss_mb"] == worst
        assert entry["db_mb"] > 0 and entry["preload_s"] > 0
    targets = report["targets"]
    assert len(targets) == 10  # five per size; no sync of 1,000 asked for
    assert all({"objects", "target", "value", "limit", "met"} <= set(t) for t in targets)
    first = [t for t in targets if t["objects"] == 100 and "smallest" in t["target"]]
    assert [t["value"] for t in first] == [1.0, 1.0]
    chart = plot.read_text()
    assert chart.startswith("<svg") and chart.count("<polyline") >= 5
    assert "1,000" in chart


def test_scale_refuses_bad_sizes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mqtt_metamanager", "bench", "--scale", "--scale-sizes", "10"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert b"--scale-sizes" in done.stderr
