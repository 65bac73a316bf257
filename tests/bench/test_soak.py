"""Keeps ``mqtt-metamanager bench --soak`` working: a short soak at a low rate, every input
answered exactly once, the store intact, every figure and the chart present."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import mosquitto_binary

pytestmark = pytest.mark.bench

ROW = {
    "inputs_per_s",
    "answered_per_s",
    "p50_ms",
    "p99_ms",
    "list_p50_ms",
    "backlog",
    "cpu_s",
    "cpu_ms_per_input",
    "load1",
    "rss_mb",
    "rss_low_mb",
    "heap_mb",
    "db_mb",
    "wal_mb",
}


def test_short_soak_answers_every_input_once(tmp_path: Path) -> None:
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed: run scripts/test.sh as root")
    plot = tmp_path / "soak.svg"
    argv = ["--soak", "20", "--rate", "40", "--pods", "200", "--interval", "5"]
    done = subprocess.run(
        [sys.executable, "-m", "mqtt_metamanager", "bench", *argv, "--plot", str(plot), "--json"],
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    report = json.loads(done.stdout)
    totals = report["totals"]
    assert totals["sent"] == 800
    assert totals["missing"] == 0, totals["missing_by_kind"]
    assert totals["duplicates"] == 0
    assert totals["unexpected_replies"] == 0
    assert not totals["stopped_early"]
    assert report["integrity"] == "ok"
    assert report["service"]["exit_code"] == 0
    assert len(report["rows"]) >= 4
    assert all(set(row) >= ROW for row in report["rows"])
    assert all(row["rss_mb"] > 0 and row["db_mb"] > 0 for row in report["rows"])
    # The service's own CPU per row (user + system), so shared-machine rows compare.
    assert all(row["cpu_s"] > 0 for row in report["rows"])
    assert report["service"]["cpu_s"] == pytest.approx(sum(r["cpu_s"] for r in report["rows"]))
    # The service's in-memory collections are in its metrics, with their sizes.
    metrics = report["service"]["metrics"]
    assert {"held_inputs", "outbox_inflight", "remote_queries", "timers"} <= set(metrics)
    assert {"answered_query_ids", "store_retries"} <= set(metrics)
    if platform.libc_ver()[0] == "glibc":  # glibc's own account of the C heap
        assert metrics["malloc_free_bytes"] < metrics["malloc_heap_bytes"]
    assert plot.read_text().startswith("<svg") and "<polyline" in plot.read_text()


def test_soak_refuses_bad_rate() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mqtt_metamanager", "bench", "--soak", "10", "--rate", "0"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert b"--rate" in done.stderr


def test_lists_take_their_share_from_the_one_object_queries() -> None:
    from mqtt_metamanager.soakload import schedule

    default, contended = schedule(7), schedule(7, lists=8)
    assert len(default) == len(contended) == 200
    assert default.count("query_list") == 1 and contended.count("query_list") == 8
    assert contended.count("query_one") == default.count("query_one") - 7
    with pytest.raises(ValueError, match="--soak-lists"):
        schedule(7, lists=40)
