"""``mqtt-metamanager bench --scale``: the bench's figures as the store grows.

For each size N (1,000, 100,000 and 1,000,000 objects by default) the bench preloads a
database through ``Store.load`` (not over MQTT), then runs the echo and the service on the
same broker as ``bench`` does. The service is measured on that store: start to a fresh
``online`` (the database copied before the clock starts), one-object queries of random
stored keys, lists of a namespace of 1,000 pods, an insert burst (against the echo's in the
same run), and pod-status syncs: the bench stores pods and their statuses over MQTT, tells
the service the cloud link came up (edgehub's connect, the sync's trigger at a reconnect),
and times that to the last status a subscriber on ``P/edgehub/in`` received. Peak RSS
(VmHWM) is read after all of it. Bounded: sizes and counts capped, every wait has a deadline.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .bench import MAX_PAYLOAD, MAX_ROUNDS, Bench, BenchOptions
from .benchkit import (
    NAMESPACE,
    START_TIMEOUT,
    copy_database,
    envelope,
    object_value,
    peak_rss_mb,
    percentile,
    session,
    stop_process,
)
from .benchnet import BenchError, CloudSide
from .envelope import Resource
from .scale_report import verdicts
from .store import Store

SIZES = (1_000, 100_000, 1_000_000)
SYNCS = (1_000, 10_000)
SCALE_PAYLOAD = 256  # bytes per object's insert message; ~150 bytes of stored JSON
MIN_SIZE, MAX_SIZE, MAX_SIZES = 100, 2_000_000, 8
MAX_SYNC = 50_000
MAX_COUNT = 100_000
LIST_PODS = 1_000  # the listed namespace's pods, part of each size (all of a smaller one)
LIST_NAMESPACE = "scale-list"
SYNC_NAMESPACE = "scale-sync"
FIXTURE_BURST = 1000
SEED = 10  # the queried keys: the same at every size's runs


@dataclass(frozen=True)
class ScaleOptions:
    sizes: tuple[int, ...] = SIZES
    syncs: tuple[int, ...] = SYNCS
    payload_size: int = SCALE_PAYLOAD
    count: int = 10_000
    queries: int = 1000
    lists: int = 200
    rounds: int = 3  # echo and service runs per size, alternating
    timeout: float = 300.0
    host: str | None = None
    port: int | None = None
    login: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if not 1 <= len(self.sizes) <= MAX_SIZES or len(set(self.sizes)) != len(self.sizes):
            raise ValueError(f"--scale-sizes: 1 to {MAX_SIZES} different sizes")
        if not all(MIN_SIZE <= n <= MAX_SIZE for n in self.sizes):
            raise ValueError(f"--scale-sizes: each {MIN_SIZE} to {MAX_SIZE}")
        if not 1 <= len(self.syncs) <= 4 or not all(1 <= n <= MAX_SYNC for n in self.syncs):
            raise ValueError(f"--scale-syncs: 1 to 4 counts, each 1 to {MAX_SYNC}")
        limits = [
            ("payload-size", self.payload_size, 64, MAX_PAYLOAD),
            ("count", self.count, 1, MAX_COUNT),
            ("queries", self.queries, 1, MAX_COUNT),
            ("lists", self.lists, 1, 10_000),
            ("rounds", self.rounds, 1, MAX_ROUNDS),
        ]
        for name, value, low, high in limits:
            if not low <= value <= high:
                raise ValueError(f"--{name} must be {low} to {high}, got {value}")
        BenchOptions(host=self.host, port=self.port, timeout=self.timeout).check()

    def bench_options(self) -> BenchOptions:
        return BenchOptions(
            host=self.host,
            port=self.port,
            count=self.count,
            payload_size=self.payload_size,
            rounds=1,
            queries=self.queries,
            timeout=self.timeout,
            login=self.login,
        )


def stored_keys(size: int) -> Iterator[tuple[str, str]]:
    """(namespace, name) of each preloaded object: the listed namespace first."""
    listed = min(LIST_PODS, size)
    for i in range(listed):
        yield LIST_NAMESPACE, f"l-{i}"
    for i in range(size - listed):
        yield NAMESPACE, f"obj-{i}"


def preload_scale(path: Path, size: int, payload_size: int) -> float:
    """A database of ``size`` pods through ``Store.load``; seconds it took."""
    started = time.monotonic()
    store = Store(str(path))
    try:
        store.load(
            (Resource(ns, "pod", name), object_value(name, payload_size, i + 1))
            for i, (ns, name) in enumerate(stored_keys(size))
        )
    finally:
        store.close()
    return time.monotonic() - started


def combined(runs: list[dict[str, float]]) -> dict[str, float]:
    """Several rounds' figures as one: the median of each, but the worst start-up and
    peak RSS (as ``bench`` reports them)."""
    worst = {"start_to_online_s", "peak_rss_mb", "peak_rss_before_syncs_mb"}
    return {
        key: max(run[key] for run in runs)
        if key in worst
        else statistics.median(run[key] for run in runs)
        for key in runs[0]
    }


class ScaleBench:
    """Per size: a preloaded template, one echo run and one service run."""

    def __init__(self, options: ScaleOptions, host: str, port: int, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.bench = Bench(options.bench_options(), host, port, workdir)
        # No periodic sync in the middle of a measurement: only the ones the bench starts.
        self.bench.extra_config = {"meta": {"sync": {"podstatus": {"interval": 3600}}}}
        self.load = self.bench.load
        self.cloud = CloudSide(host, port, self.bench.topics, self.bench.login)

    def close(self) -> None:
        self.cloud.close()
        self.bench.close()

    def run(self) -> list[dict[str, Any]]:
        results = []
        for size in sorted(self.options.sizes):
            template = self.workdir / f"template-{size}.db"
            preload_s = preload_scale(template, size, self.options.payload_size)
            self.bench.template = template
            rounds = []
            for r in range(1, self.options.rounds + 1):  # alternating: both see the same load
                rounds.append({kind: self._run(kind, size, r) for kind in ("echo", "service")})
            echo = combined([r["echo"] for r in rounds])
            service = combined([r["service"] for r in rounds])
            results.append(
                {
                    "objects": size,
                    "preload_s": preload_s,
                    "db_mb": template.stat().st_size / 2**20,
                    "echo": echo,
                    "service": service,
                    "rounds": rounds,
                    "ratios": {
                        "inserts_per_s": service["inserts_per_s"] / echo["inserts_per_s"],
                        "query_p99_ms": service["query_p99_ms"] / echo["query_p99_ms"],
                    },
                }
            )
            template.unlink()
        return results

    def _run(self, kind: str, size: int, index: int) -> dict[str, float]:
        rundir = self.workdir / f"{kind}-{size}-{index}"
        rundir.mkdir()
        if kind == "service":
            copy_database(self.bench.template, rundir / "meta.db")  # before the clock
        self.load.clear_status()
        started = time.monotonic()
        proc = self.bench.spawn(kind, rundir)
        try:
            online = self.load.wait_online(started, START_TIMEOUT, proc.poll)
            queries = self._timed(self._query_payloads(size))
            figures = {
                "start_to_online_s": online,
                "query_p50_ms": percentile(queries, 50) * 1000,
                "query_p99_ms": percentile(queries, 99) * 1000,
                "inserts_per_s": self.bench.inserts(index),
            }
            if kind == "service":
                lists = self._timed([self._list_payload()] * self.options.lists)
                figures["list_p50_ms"] = percentile(lists, 50) * 1000
                figures["list_p99_ms"] = percentile(lists, 99) * 1000
                figures["peak_rss_before_syncs_mb"] = peak_rss_mb(proc.pid)
                figures.update(self._syncs())
                self.bench.scrape()
            if proc.poll() is not None:
                raise BenchError(f"{kind} exited with {proc.returncode} during the run")
            figures["peak_rss_mb"] = peak_rss_mb(proc.pid)
        except BenchError as exc:
            raise BenchError(f"{kind} at {size}: {exc} (log: {rundir}/{kind}.log)") from None
        finally:
            stop_process(proc)
            (rundir / "meta.db").unlink(missing_ok=True)
        return figures

    def _query_payloads(self, size: int) -> list[bytes]:
        """Random stored keys, so a large store is not read from a few cached pages."""
        pick = random.Random(SEED)
        keys = list(stored_keys(size)) if size <= LIST_PODS else None
        out = []
        for _ in range(self.options.queries):
            i = pick.randrange(size)
            if keys is not None:
                ns, name = keys[i]
            elif i < LIST_PODS:
                ns, name = LIST_NAMESPACE, f"l-{i}"
            else:
                ns, name = NAMESPACE, f"obj-{i - LIST_PODS}"
            out.append(envelope("query", f"{ns}/pod/{name}", None, "bench"))
        return out

    def _list_payload(self) -> bytes:
        return envelope("query", f"{LIST_NAMESPACE}/pod", None, "bench")

    def _timed(self, payloads: list[bytes]) -> list[float]:
        for payload in payloads[:20]:  # warm-up
            self.load.request(payload, 10.0)
        return [self.load.request(payload, 10.0) for payload in payloads]

    def _syncs(self) -> dict[str, float]:
        """Pods and their statuses stored over MQTT, then a sync of each count timed."""
        out, stored = {}, 0
        for want in sorted(self.options.syncs):
            self._store_statuses(stored, want)
            stored = want
            took = self.cloud.timed_sync(want, lambda: self._link(True), self.options.timeout)
            out[f"sync_{want}_s"] = took
            self._link(False)
        return out

    def _store_statuses(self, start: int, end: int) -> None:
        payloads = []
        for i in range(start, end):
            name = f"s-{i}"
            pod = object_value(name, self.options.payload_size, 1)
            pod["metadata"]["namespace"] = SYNC_NAMESPACE
            status = {"metadata": {"name": name}, "status": {"phase": "Running"}}
            for kind, value in (("pod", pod), ("podstatus", status)):
                resource = f"{SYNC_NAMESPACE}/{kind}/{name}"
                payloads.append(envelope("insert", resource, value, "edgecontroller"))
        # In bursts no larger than the measured one's: a burst's held inputs are its peak
        # RSS (docs/performance.md), and these only set the syncs up.
        step = min(self.options.count, FIXTURE_BURST)
        for first in range(0, len(payloads), step):
            self.load.burst(payloads[first : first + step], self.options.timeout)

    def _link(self, up: bool) -> None:
        """edgehub's connect message: the cloud link went up (a sync at once) or down."""
        content = "cloud_connected" if up else "cloud_disconnected"
        payload = envelope("connect", "node/connection", content, "edgehub")
        self.load.client.publish(self.bench.topics.edgehub_connection, payload, qos=1)


def run_scale(options: ScaleOptions) -> dict[str, Any]:
    """The whole scale bench; the report ``--json`` prints."""
    options.check()
    with session(options.host, options.port, "mm-scale-") as (workdir, broker):
        bench = ScaleBench(options, broker.host, broker.port, workdir)
        try:
            sizes = bench.run()
        finally:
            bench.close()
    return {
        "broker": str(broker),
        "options": asdict(options),
        "sizes": sizes,
        "targets": verdicts(sizes),
    }
