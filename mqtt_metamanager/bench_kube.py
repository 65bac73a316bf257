"""``mqtt-metamanager bench --kube``: the Kubernetes read API's figures (SPEC §12, issue
12's targets): list and get latency, how soon a change made over MQTT reaches a watcher,
and what 100 idle and 10 busy watchers cost the MQTT inserts and the service's memory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .benchhttp import BUSY_WATCHERS, IDLE_WATCHERS, WatchCrowd, Watcher, revision, timed_gets
from .benchkit import (
    LOOPBACK,
    NAMESPACE,
    START_TIMEOUT,
    cpu_seconds,
    envelope,
    free_port,
    object_value,
    own_broker,
    peak_rss_mb,
    percentile,
    preload,
    stop_process,
)
from .benchnet import BenchError, LoadClient, Login
from .routing import Topics

OBJECTS = 1000  # pods in the listed namespace
LISTS, GETS, WATCHED_INSERTS = 100, 1000, 200
BURST = 5000
ROUNDS = 2  # alone/watched burst pairs
TARGETS = [
    ("list of 1,000 pods p99 (ms)", "list_p99_ms", 50.0),
    ("get p99 (ms)", "get_p99_ms", 2.0),
    ("MQTT change to watcher p99 (ms)", "watch_p99_ms", 50.0),
    ("inserts with watchers (x without)", "insert_ratio", 0.9),
    ("RSS added by watchers (MB)", "watcher_rss_mb", 10.0),
]


def _inserts(load: LoadClient, tag: str, count: int) -> float:
    payloads = [
        envelope(
            "insert",
            f"{NAMESPACE}/pod/{tag}-{i}",
            object_value(f"{tag}-{i}", 1024, i + 1),
            "edgecontroller",
        )
        for i in range(count)
    ]
    return count / load.burst(payloads, 120.0)


def run_kube_bench() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mm-kube-bench-") as tmp:
        workdir = Path(tmp)
        db = workdir / "meta.db"
        preload(db, OBJECTS, 1024)
        with own_broker(workdir) as (host, port):
            return _measure(workdir, db, host, port)


def _measure(workdir: Path, db: Path, host: str, port: int) -> dict[str, Any]:
    topics = Topics(f"bench-{uuid.uuid4().hex[:8]}")
    login = Login()
    http_port = free_port()
    conf = workdir / "edge.yaml"
    conf.write_text(yaml.safe_dump({
        "mqtt": {"host": host, "port": port, "topic_prefix": topics.prefix, "session_expiry": 0},
        "database": {"path": str(db)},
        "security": {"operators": [login.identity]},
        "http": {"listen": f"{LOOPBACK}:{http_port}"},
    }))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAMANAGER_")}
    with open(workdir / "service.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mqtt_metamanager", "run", "-c", str(conf)],
                                stdout=log, stderr=log, env=env, cwd=workdir)  # fmt: skip
    load = LoadClient(host, port, topics, 1, login)
    try:
        load.wait_online(time.monotonic(), START_TIMEOUT, proc.poll)
        pods = f"/api/v1/namespaces/{NAMESPACE}/pods"
        lists = timed_gets(http_port, pods, LISTS)
        gets = timed_gets(http_port, f"{pods}/obj-7", GETS)
        # One watcher; each insert's latency from its publish to its event.
        # Watches start where a list left off, as client reflectors do.
        watcher = Watcher(http_port, f"{pods}?watch=true&resourceVersion={revision(http_port)}")
        sent: dict[str, float] = {}
        aside = Properties(PacketTypes.PUBLISH)
        aside.ResponseTopic = load.reply_topic
        for i in range(WATCHED_INSERTS):
            name = f"w-{i}"
            sent[name] = time.monotonic()
            # Its reply goes to a Response Topic, so it is not counted in the bursts below.
            payload = envelope("insert", f"{NAMESPACE}/pod/{name}",
                               object_value(name, 1024, i + 1), "edgecontroller")  # fmt: skip
            load.client.publish(load.inbox, payload, qos=1, properties=aside)
            time.sleep(0.005)  # a steady trickle, not a burst: latency, not throughput
        deadline = time.monotonic() + 30
        while len([n for n in sent if n in watcher.arrived]) < len(sent):
            if time.monotonic() > deadline:
                raise BenchError("not every change reached the watcher within 30 s")
            time.sleep(0.05)
        latency = [watcher.arrived[n] - t for n, t in sent.items()]
        watcher.close()
        # Alternating, as the main bench's rounds do: the store grows with every burst,
        # and neither side should get all the later ones.
        alone_rates, watched_rates, alone_cpu, watched_cpu = [], [], [], []
        rss_before = 0.0
        for round_ in range(ROUNDS):
            cpu = cpu_seconds(proc.pid)
            alone_rates.append(_inserts(load, f"alone{round_}", BURST))
            alone_cpu.append(cpu_seconds(proc.pid) - cpu)
            rss_before = rss_before or peak_rss_mb(proc.pid)
            with WatchCrowd(http_port, pods, BURST) as crowd:
                cpu = cpu_seconds(proc.pid)
                watched_rates.append(_inserts(load, f"watched{round_}", BURST))
                watched_cpu.append(cpu_seconds(proc.pid) - cpu)
                rss_after = peak_rss_mb(proc.pid)
                crowd.check_every_event_arrived()
    finally:
        load.close()
        stop_process(proc)
    alone, watched = sum(alone_rates) / ROUNDS, sum(watched_rates) / ROUNDS
    figures = {
        "list_p50_ms": percentile(lists, 50) * 1000,
        "list_p99_ms": percentile(lists, 99) * 1000,
        "get_p50_ms": percentile(gets, 50) * 1000,
        "get_p99_ms": percentile(gets, 99) * 1000,
        "watch_p50_ms": percentile(latency, 50) * 1000,
        "watch_p99_ms": percentile(latency, 99) * 1000,
        "inserts_alone_per_s": alone,
        "inserts_watched_per_s": watched,
        "insert_ratio": watched / alone,
        "service_cpu_us_per_insert_alone": sum(alone_cpu) / (ROUNDS * BURST) * 1e6,
        "service_cpu_us_per_insert_watched": sum(watched_cpu) / (ROUNDS * BURST) * 1e6,
        "peak_rss_before_mb": rss_before,
        "peak_rss_after_mb": rss_after,
        "watcher_rss_mb": rss_after - rss_before,
    }
    ratios = [w / a for w, a in zip(watched_rates, alone_rates, strict=True)]
    return {"figures": figures, "insert_ratio_per_round": ratios, "targets": _verdicts(figures)}


def _verdicts(figures: dict[str, float]) -> list[dict[str, Any]]:
    out = []
    for name, key, limit in TARGETS:
        higher_is_better = key == "insert_ratio"
        value = figures[key]
        met = value >= limit if higher_is_better else value <= limit
        out.append({"target": name, "value": round(value, 3), "limit": limit, "met": met})
    return out


def render_kube(report: dict[str, Any]) -> str:
    f = report["figures"]
    lines = [
        f"list of {OBJECTS} pods: p50 {f['list_p50_ms']:.1f} ms  p99 {f['list_p99_ms']:.1f} ms",
        f"get of one pod:    p50 {f['get_p50_ms']:.2f} ms  p99 {f['get_p99_ms']:.2f} ms",
        f"MQTT -> watcher:   p50 {f['watch_p50_ms']:.1f} ms  p99 {f['watch_p99_ms']:.1f} ms",
        f"inserts/s: {f['inserts_alone_per_s']:.0f} alone, {f['inserts_watched_per_s']:.0f} with "
        f"{IDLE_WATCHERS} idle + {BUSY_WATCHERS} busy watchers ({f['insert_ratio']:.2f}x)",
        f"  per round: {', '.join(f'{r:.2f}x' for r in report['insert_ratio_per_round'])}; "
        f"service CPU per insert {f['service_cpu_us_per_insert_alone']:.0f} us alone, "
        f"{f['service_cpu_us_per_insert_watched']:.0f} us watched",
        f"peak RSS: {f['peak_rss_before_mb']:.1f} MB before the watchers, "
        f"{f['peak_rss_after_mb']:.1f} MB with them",
        "",
    ]
    for t in report["targets"]:
        mark = "met" if t["met"] else "MISSED"
        lines.append(f"  {t['target']:<36} {t['value']:>8}  (limit {t['limit']})  {mark}")
    return "\n".join(lines)
