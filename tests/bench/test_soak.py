"""Keeps ``mqtt-metamanager bench --soak`` working: a short soak at a low rate, every input
answered exactly once, the store intact, every figure and the chart present."""

from __future__ import annotations

import contextlib
import json
import platform
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from mqtt_metamanager.soakload import schedule
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
    argv = ["--soak", "20", "--rate", "40", "--pods", "200", "--interval", "5", "--json"]
    argv += ["--plot", str(plot)]
    with contextlib.ExitStack() as held:
        # The default HTTP port taken, as by a service running on the box: the soak's
        # service must listen elsewhere (it did not, and failed to start).
        default_port = held.enter_context(socket.socket())
        with contextlib.suppress(OSError):  # already taken: as good
            default_port.bind(("127.0.0.1", 10550))
            default_port.listen()
        done = subprocess.run(
            [sys.executable, "-m", "mqtt_metamanager", "bench", *argv],
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


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [("--rate", "0", b"--rate"), ("--soak-lists", "40", b"--soak-lists must be 0 to 31")],
)
def test_soak_refuses_bad_options(option: str, value: str, said: bytes) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mqtt_metamanager", "bench", "--soak", "10", option, value],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert said in done.stderr


def test_the_lists_share_of_a_cycle_comes_out_of_the_one_object_queries() -> None:
    default = Counter(schedule(seed=1))
    contended = Counter(schedule(seed=1, lists=8))  # the 4 %
    assert sum(default.values()) == sum(contended.values()) == 200
    assert (default["query_list"], contended["query_list"]) == (1, 8)
    assert contended["query_one"] == default["query_one"] - 7
    assert {k: v for k, v in contended.items() if not k.startswith("query_")} == {
        k: v for k, v in default.items() if not k.startswith("query_")
    }
    with pytest.raises(ValueError, match="lists per cycle"):
        schedule(seed=1, lists=32)
