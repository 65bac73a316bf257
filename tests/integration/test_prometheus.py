"""A real Prometheus (Debian's package) scrapes a running service, as docs/operations.md
says to configure it, and its query API then has the service's traffic."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import (
    CLOUD,
    HOST,
    Publisher,
    ServiceProcess,
    Watcher,
    envelope,
    free_port,
    port_open,
    reply_to,
    wait_until,
)

pytestmark = pytest.mark.integration

MakeService = Callable[..., ServiceProcess]
TOKEN = "scrape-token-for-the-test"


def prometheus_binary() -> str | None:
    return shutil.which("prometheus") or shutil.which("prometheus", path="/usr/bin")


@dataclass
class Prometheus:
    """A Prometheus on a free 127.0.0.1 port with its own storage, owned by a test."""

    workdir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self, targets: list[str], token_file: Path) -> None:
        binary = prometheus_binary()
        if binary is None:
            pytest.fail("prometheus is not installed: run scripts/test.sh as root")
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {
                    "job_name": "metamanager",
                    "static_configs": [{"targets": targets}],
                    "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                }
            ],
        }
        conf = self.workdir / "prometheus.yml"
        conf.write_text(yaml.safe_dump(config))
        log = open(self.workdir / "prometheus.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={conf}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={HOST}:{self.port}",
            ],
            stdout=log,
            stderr=log,
            cwd=self.workdir,
        )
        wait_until(lambda: self._alive() and port_open(self.port), 30, "prometheus to listen")

    def _alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.workdir / "prometheus.log").read_text(errors="replace")
            raise AssertionError(f"prometheus exited {self.proc.returncode}:\n{log[-3000:]}")
        return True

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"http://{HOST}:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    server = Prometheus(workdir, free_port())
    yield server
    server.stop()


def test_prometheus_scrapes_the_service_and_queries_its_inputs(
    make_service: MakeService,
    publisher: Publisher,
    watcher: Watcher,
    prometheus: Prometheus,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "metrics.token"
    token_file.write_text(TOKEN + "\n")
    svc = make_service(**{"http.token_file": str(token_file)})
    prometheus.start([f"{HOST}:{svc.http_port}"], token_file)
    count = 7
    for i in range(count):
        publisher.send(envelope("insert", f"default/pod/p{i}", {"i": i}, msg_id=f"p{i}"))
    for i in range(count):
        watcher.wait_for(CLOUD, reply_to(f"p{i}"))

    def stored_inputs() -> float | None:
        series = prometheus.query('metamanager_inputs_total{operation="insert",outcome="stored"}')
        values = [float(s["value"][1]) for s in series]
        return values[0] if values and values[0] >= count else None

    assert wait_until(stored_inputs, 60, "prometheus to have the inputs counter", 0.5) == count
    [up] = prometheus.query('up{job="metamanager"}')
    assert up["value"][1] == "1"
    # The dashboard's commit latency panel: it needs commits between two scrapes.
    p99 = "histogram_quantile(0.99, sum by (le) (rate(metamanager_commit_seconds_bucket[1m])))"
    more = iter(range(count, count + 100))

    def commit_p99() -> float | None:
        i = next(more)
        publisher.send(envelope("insert", f"default/pod/p{i}", {"i": i}, msg_id=f"p{i}"))
        values = [float(s["value"][1]) for s in prometheus.query(p99)]
        return values[0] if values and values[0] > 0 else None  # NaN: no rate yet

    assert 0 < wait_until(commit_p99, 40, "a commit latency p99", 0.3) <= 5
