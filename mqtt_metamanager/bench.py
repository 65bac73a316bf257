"""``mqtt-metamanager bench``: the service against a bare paho echo over the same broker.

The echo is the baseline: a process doing exactly the MQTT hops the service does per input
(insert: one forward to edged and one reply; query: one reply to the Response Topic), with
the same QoS and manual acks sent after its publishes, and no storage. Rounds alternate
echo, service, echo, service... so both see the same machine load; the report gives each
run's figures and the service/echo ratios of the medians. The service runs with its HTTP
listener on and is scraped once per run, so peak RSS covers /metrics too.

Everything is bounded: counts are capped, every wait has a deadline, and the broker the
bench starts listens on 127.0.0.1 only. All topics live under a fresh prefix, so a
metamanager already on a given broker is never disturbed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import config as config_mod
from .bench_report import RunFigures, summarize
from .benchkit import (
    LOOPBACK,
    NAMESPACE,
    START_TIMEOUT,
    copy_database,
    cpu_seconds,
    envelope,
    free_port,
    object_value,
    peak_rss_mb,
    percentile,
    preload,
    session,
    stop_process,
)
from .benchnet import BenchError, LoadClient, Login
from .routing import Topics

__all__ = ["BenchError", "BenchOptions", "run_bench"]

MAX_COUNT = 1_000_000
MAX_OBJECTS = 1_000_000
MAX_ROUNDS = 20
MAX_PAYLOAD = 256 * 1024
QUERY_WARMUP = 20


@dataclass(frozen=True)
class BenchOptions:
    host: str | None = None
    port: int | None = None
    count: int = 10_000
    payload_size: int = 1024
    qos: int = 1
    rounds: int = 2
    objects: int = 10_000
    queries: int = 1000
    timeout: float = 120.0
    # The mqtt.* login keys (username, password_file, tls) every bench client uses.
    login: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        limits = [
            ("count", self.count, 1, MAX_COUNT),
            ("payload-size", self.payload_size, 64, MAX_PAYLOAD),
            ("qos", self.qos, 0, 2),
            ("rounds", self.rounds, 1, MAX_ROUNDS),
            ("objects", self.objects, 0, MAX_OBJECTS),
            ("queries", self.queries, 1, MAX_COUNT),
        ]
        for name, value, low, high in limits:
            if not low <= value <= high:
                raise ValueError(f"--{name} must be {low} to {high}, got {value}")
        if not 1 <= self.timeout <= 3600:
            raise ValueError(f"--timeout must be 1 to 3600 seconds, got {self.timeout}")
        if (self.host is None) != (self.port is None):
            raise ValueError("--host and --port go together")


class Bench:
    """One bench session: a broker, a load client, and alternating echo/service runs."""

    def __init__(self, options: BenchOptions, host: str, port: int, workdir: Path) -> None:
        self.options = options
        self.host, self.port = host, port
        self.workdir = workdir
        self.topics = Topics(f"bench-{uuid.uuid4().hex[:8]}")
        self.login = Login.of(config_mod.from_mapping({"mqtt": options.login}, environ={}).mqtt)
        self.load = LoadClient(host, port, self.topics, options.qos, self.login)
        self.template = workdir / "template.db"
        self.http_port = free_port()
        self.extra_config: dict[str, Any] = {}  # more top-level config keys for the service

    def close(self) -> None:
        self.load.close()

    def run(self) -> list[dict[str, RunFigures]]:
        preload(self.template, self.options.objects, self.options.payload_size)
        rounds = []
        for r in range(1, self.options.rounds + 1):
            rounds.append({"echo": self._run("echo", r), "service": self._run("service", r)})
        return rounds

    def spawn(self, kind: str, rundir: Path) -> subprocess.Popen[bytes]:
        """Start the echo or the service on ``rundir`` (the service's database already
        copied there: the copy is not part of its start-up)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("METAMANAGER_")}
        log = open(rundir / f"{kind}.log", "ab")  # noqa: SIM115 - closed below, child keeps it
        try:
            db = rundir / "meta.db"
            conf = rundir / "edge.yaml"
            conf.write_text(yaml.safe_dump(self._service_config(db, rundir.name)))
            if kind == "echo":
                argv = ["-m", "mqtt_metamanager.benchnet", str(conf)]
            else:
                argv = ["-m", "mqtt_metamanager", "run", "-c", str(conf)]
            return subprocess.Popen(
                [sys.executable, *argv], stdout=log, stderr=log, env=env, cwd=rundir
            )
        finally:
            log.close()

    def _service_config(self, db: Path, name: str) -> dict[str, Any]:
        return {
            "mqtt": {
                "host": self.host,
                "port": self.port,
                "client_id": f"{self.topics.prefix}-{name}",
                "topic_prefix": self.topics.prefix,
                "qos": self.options.qos,
                # No session left behind to collect the next runs' input.
                "session_expiry": 0,
                **self.options.login,
            },
            "database": {"path": str(db)},
            # The load client sends inserts as the cloud would, from its own identity.
            "security": {"operators": [self.login.identity]},
            # The HTTP listener on (its own port: 10550 may be taken), scraped once per run.
            "http": {"listen": f"{LOOPBACK}:{self.http_port}"},
            **self.extra_config,
        }

    def _run(self, kind: str, round_no: int) -> RunFigures:
        rundir = self.workdir / f"{kind}-{round_no}"
        rundir.mkdir()
        if kind == "service":
            copy_database(self.template, rundir / "meta.db")
        self.load.clear_status()
        started = time.monotonic()
        proc = self.spawn(kind, rundir)
        try:
            online = self.load.wait_online(started, START_TIMEOUT, proc.poll)
            cpu = cpu_seconds(proc.pid)
            rate = self.inserts(round_no)
            cpu = cpu_seconds(proc.pid) - cpu
            samples = self._queries()
            if kind == "service":
                self.scrape()
            if proc.poll() is not None:
                raise BenchError(f"{kind} exited with {proc.returncode} during the run")
            rss = peak_rss_mb(proc.pid)
        except BenchError as exc:
            raise BenchError(f"{kind} round {round_no}: {exc} (log: {rundir}/{kind}.log)") from None
        finally:
            stop_process(proc)
        return RunFigures(
            inserts_per_s=rate,
            query_p50_ms=percentile(samples, 50) * 1000,
            query_p99_ms=percentile(samples, 99) * 1000,
            peak_rss_mb=rss,
            start_to_online_s=online,
            cpu_us_per_insert=cpu / self.options.count * 1e6,
        )

    def inserts(self, round_no: int) -> float:
        n, size = self.options.count, self.options.payload_size
        payloads = [
            envelope(
                "insert",
                f"{NAMESPACE}/pod/r{round_no}-{i}",
                object_value(f"r{round_no}-{i}", size, i + 1),
                "edgecontroller",
            )
            for i in range(n)
        ]
        return n / self.load.burst(payloads, self.options.timeout)

    def scrape(self) -> None:
        """One /metrics scrape, as Prometheus would do it: part of what peak RSS covers."""
        url = f"http://{LOOPBACK}:{self.http_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
        except OSError as exc:
            raise BenchError(f"{url}: {exc}") from None
        if "metamanager_inputs_total" not in text:
            raise BenchError(f"{url}: no metamanager_inputs_total in the scrape")

    def _queries(self) -> list[float]:
        objects = max(1, self.options.objects)
        samples = []
        for i in range(QUERY_WARMUP + self.options.queries):
            resource = f"{NAMESPACE}/pod/obj-{i % objects}"
            took = self.load.request(envelope("query", resource, None, "bench"), 10.0)
            if i >= QUERY_WARMUP:
                samples.append(took)
        return samples


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run the whole bench and return the report (what ``--json`` prints)."""
    options.check()
    with session(options.host, options.port, "mm-bench-") as (workdir, broker):
        bench = Bench(options, broker.host, broker.port, workdir)
        try:
            rounds = bench.run()
        finally:
            bench.close()
    return {
        "broker": str(broker),
        "options": asdict(options),
        "rounds": [{k: asdict(v) for k, v in r.items()} for r in rounds],
        "summary": summarize(rounds, options.objects),
    }
