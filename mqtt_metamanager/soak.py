"""``mqtt-metamanager bench --soak SECONDS``: hours of an edge box's mixed traffic, measured.

The service runs on its own broker (or a given one) with a store of ``--pods`` pods and is
sent ``--rate`` inputs a second of the mix in ``soakload.MIX``, while the cloud link flaps
every 30 s. Every ``--interval`` seconds a row: inputs/s, reply latency, backlog, the
service's RSS, its Python heap (``--tracemalloc``), the SQLite file and WAL. At the end: the
inputs never answered, those answered twice, and SQLite's integrity check of the store.

Bounded: the count is rate x seconds (capped), sending stops if the backlog passes
``MAX_BACKLOG``, and the drain after the last input has a deadline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import config as config_mod
from .benchkit import free_port, session, stop_process
from .benchnet import BenchError, Login
from .envelope import Resource
from .routing import Topics
from .soakload import MAX_LISTS, NAMESPACE, SoakClient, pod_value, schedule
from .soakmeter import SoakMeter, integrity
from .store import Store

MAX_SECONDS = 24 * 3600
MAX_RATE = 5000
MAX_BACKLOG = 50_000
SAMPLE_EVERY = 5.0
FLAP_EVERY = 30.0
METRICS_EVERY = 15.0
START_TIMEOUT = 30.0
TICK = 0.005
REMOTE_TIMEOUT, REMOTE_RETRIES = 5.0, 2
# After the last input: the slowest reply is a remote query's last attempt timing out.
DRAIN_SECONDS = REMOTE_TIMEOUT * (REMOTE_RETRIES + 1) + 30


@dataclass(frozen=True)
class SoakOptions:
    seconds: float
    rate: int = 200
    pods: int = 2000
    payload_size: int = 1024
    interval: float = 60.0
    lists: int = 1  # namespace lists per 200 inputs (8: the contended case, 4 %)
    tracemalloc: bool = False
    host: str | None = None
    port: int | None = None
    login: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if not 1 <= self.seconds <= MAX_SECONDS:
            raise ValueError(f"--soak must be 1 to {MAX_SECONDS} seconds, got {self.seconds}")
        if not 1 <= self.rate <= MAX_RATE:
            raise ValueError(f"--rate must be 1 to {MAX_RATE} inputs/s, got {self.rate}")
        if not 0 <= self.lists <= MAX_LISTS:
            raise ValueError(
                f"--soak-lists must be 0 to {MAX_LISTS} per 200 inputs, got {self.lists}"
            )
        if not 1 <= self.pods <= 100_000:
            raise ValueError(f"--pods must be 1 to 100000, got {self.pods}")
        if not 64 <= self.payload_size <= 256 * 1024:
            raise ValueError(f"--payload-size must be 64 to 262144, got {self.payload_size}")
        if not 1 <= self.interval <= 3600:
            raise ValueError(f"--interval must be 1 to 3600 seconds, got {self.interval}")
        if (self.host is None) != (self.port is None):
            raise ValueError("--host and --port go together")


class Soak:
    def __init__(
        self,
        options: SoakOptions,
        host: str,
        port: int,
        workdir: Path,
        on_row: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.options = options
        self.host, self.port, self.workdir = host, port, workdir
        self.topics = Topics(f"soak-{os.urandom(4).hex()}")
        self.login = Login.of(config_mod.from_mapping({"mqtt": options.login}, environ={}).mqtt)
        self.db = workdir / "meta.db"
        self.meter = SoakMeter(self.db, on_row)
        self.proc: subprocess.Popen[bytes] | None = None

    def run(self) -> dict[str, Any]:
        self._preload()
        load = SoakClient(
            self.host,
            self.port,
            self.topics,
            self.login,
            pods=self.options.pods,
            size=self.options.payload_size,
        )
        try:
            load.set_cloud_link(True)
            self.proc = self._spawn()
            self._wait_online(load)
            sent, flaps, stopped_early = self._drive(load)
            drained = self._drain(load)
            load.clear_retained()
        finally:
            load.close()
            if self.proc is not None:
                stop_process(self.proc)
        exit_code = self.proc.returncode if self.proc is not None else None
        return {
            "rows": self.meter.rows,
            "samples": self.meter.samples,
            "totals": {
                "sent": sent,
                "answered": sent - load.backlog,
                "missing": load.backlog,
                "missing_by_kind": load.missing(),
                "duplicates": load.duplicates,
                "unexpected_replies": load.unexpected,
                "link_flaps": flaps,
                "stopped_early": stopped_early,
                "drain_s": drained,
            },
            "service": self.meter.service(exit_code, load.metrics),
            "integrity": integrity(self.db),
        }

    def _preload(self) -> None:
        store = Store(str(self.db))
        try:
            with store.atomic():
                for i in range(self.options.pods):
                    name = f"pod-{i}"
                    store.put(
                        Resource(NAMESPACE, "pod", name),
                        pod_value(name, self.options.payload_size, 1),
                    )
        finally:
            store.close()

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("METAMANAGER_")}
        if self.options.tracemalloc:
            # The service then adds its traced heap and what grew most to its metrics.
            env["PYTHONTRACEMALLOC"] = "1"
        conf = self.workdir / "edge.yaml"
        conf.write_text(yaml.safe_dump(self._service_config()))
        with open(self.workdir / "service.log", "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "mqtt_metamanager", "run", "-c", str(conf)],
                stdout=log,
                stderr=log,
                env=env,
                cwd=self.workdir,
            )

    def _service_config(self) -> dict[str, Any]:
        return {
            "mqtt": {
                "host": self.host,
                "port": self.port,
                "client_id": f"{self.topics.prefix}-service",
                "topic_prefix": self.topics.prefix,
                "session_expiry": 0,
                **self.options.login,
            },
            "database": {"path": str(self.db)},
            # A port of its own: the default one may be a running service's, or another
            # soak's (two soaks side by side compare code; the second failed to start).
            "http": {"listen": f"127.0.0.1:{free_port()}"},
            "meta": {"remote_query": {"timeout": REMOTE_TIMEOUT, "retries": REMOTE_RETRIES}},
            "security": {"operators": [self.login.identity]},
            "metrics": {"interval": METRICS_EVERY},
        }

    def _wait_online(self, load: SoakClient) -> None:
        # Its retained connection state says the loop runs and has taken edgehub's connect.
        deadline = time.monotonic() + START_TIMEOUT
        while not load.link_up.is_set():
            self._alive()
            if time.monotonic() > deadline:
                raise BenchError(f"service not serving within {START_TIMEOUT}s")
            load.link_up.wait(0.05)

    def _alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            log = self.workdir / "service.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise BenchError(f"the service exited with {self.proc.returncode}:\n{tail}")

    def _drive(self, load: SoakClient) -> tuple[int, int, bool]:
        """Send the mix at the rate for the time; sample and report on the way."""
        opts = self.options
        total = int(opts.rate * opts.seconds)
        kinds = schedule(seed=opts.rate, lists=opts.lists)
        start = time.monotonic()
        next_sample, next_row, next_flap = start, start + opts.interval, start + FLAP_EVERY
        assert self.proc is not None
        self.meter.begin(self.proc.pid, start)
        sent = flaps = 0
        connected = True
        while sent < total:
            now = time.monotonic()
            if now - start > opts.seconds + 60:
                break  # the sender itself cannot keep up: stop, and say so in the totals
            due = min(total, int((now - start) * opts.rate) + 1)
            while sent < due:
                load.send(sent, kinds[sent % len(kinds)])
                sent += 1
            if now >= next_flap:
                connected = not connected
                load.set_cloud_link(connected)
                flaps, next_flap = flaps + 1, next_flap + FLAP_EVERY
            if now >= next_sample:
                self._sample(load, now - start)
                next_sample += SAMPLE_EVERY
            if now >= next_row:
                self.meter.row(load, now)
                next_row += opts.interval
            if load.backlog > MAX_BACKLOG:
                return sent, flaps, True
            time.sleep(TICK)
        if not connected:
            load.set_cloud_link(True)
        return sent, flaps, False

    def _drain(self, load: SoakClient) -> float:
        start = time.monotonic()
        deadline = start + DRAIN_SECONDS
        while load.backlog and time.monotonic() < deadline:
            self._alive()
            time.sleep(0.1)
        samples = self.meter.samples
        self._sample(load, samples[-1]["t"] + time.monotonic() - start if samples else 0)
        self.meter.row(load, time.monotonic())
        return time.monotonic() - start

    def _sample(self, load: SoakClient, t: float) -> None:
        self._alive()
        self.meter.sample(load, t)


def run_soak(
    options: SoakOptions, on_row: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run one soak and return the report (what ``--json`` prints); ``on_row`` sees each
    interval's row as it is made."""
    options.check()
    with session(options.host, options.port, "mm-soak-") as (workdir, broker):
        report = Soak(options, broker.host, broker.port, workdir, on_row).run()
    return {"broker": str(broker), "options": asdict(options), **report}
