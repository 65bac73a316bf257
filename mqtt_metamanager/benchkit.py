"""What every bench uses: its work directory and broker (a mosquitto of its own, or the one
given), the processes it starts and stops, their figures from /proc, and the objects and
envelopes it sends. What a bench starts listens on 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .benchnet import BenchError
from .envelope import Resource
from .store import Store

LOOPBACK = "127.0.0.1"
NAMESPACE = "bench"
SBIN = "/usr/sbin:/usr/local/sbin"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

BROKER_CONF = """listener {port} 127.0.0.1
allow_anonymous true
set_tcp_nodelay true
persistence false
max_queued_messages 100000
max_inflight_messages 1000
"""


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile of ``samples`` (not empty)."""
    ordered = sorted(samples)
    rank = max(1, round(pct / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def peak_rss_mb(pid: int) -> float:
    """The process's high-water resident set (VmHWM) in MiB, 0.0 when unreadable."""
    return _status_mb(pid, "VmHWM:")


def rss_mb(pid: int) -> float:
    """The process's resident set (VmRSS) in MiB, 0.0 when unreadable."""
    return _status_mb(pid, "VmRSS:")


def _status_mb(pid: int, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def file_mb(path: Path) -> float:
    try:
        return path.stat().st_size / 1024 / 1024
    except OSError:
        return 0.0


def cpu_seconds(pid: int) -> float:
    """The process's CPU time so far (user + system, from /proc), 0.0 when unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # After the command name's ")": the state is field 3, utime and stime fields 14 and 15.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def object_value(name: str, size: int, version: int) -> dict[str, Any]:
    """A pod-like object whose JSON is about ``size`` bytes."""
    value: dict[str, Any] = {
        "metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": str(version)},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}], "pad": ""},
    }
    pad = size - len(json.dumps(value)) - 180  # the envelope around it
    value["spec"]["pad"] = "x" * max(0, pad)
    return value


def envelope(operation: str, resource: str, content: Any, source: str) -> bytes:
    return json.dumps(
        {
            "header": {"msg_id": str(uuid.uuid4()), "timestamp": int(time.time() * 1000)},
            "route": {
                "source": source,
                "group": "resource",
                "operation": operation,
                "resource": resource,
            },
            "content": content,
        },
        separators=(",", ":"),
    ).encode()


def preload(path: Path, objects: int, size: int) -> None:
    store = Store(str(path))
    try:
        with store.atomic():
            for i in range(objects):
                name = f"obj-{i}"
                store.put(Resource(NAMESPACE, "pod", name), object_value(name, size, i + 1))
    finally:
        store.close()


@contextmanager
def own_broker(workdir: Path) -> Iterator[tuple[str, int]]:
    """A mosquitto on a free 127.0.0.1 port with TCP_NODELAY, stopped on exit."""
    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path=SBIN)
    if binary is None:
        raise BenchError("mosquitto is not installed; give --host and --port of a broker")
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(BROKER_CONF.format(port=port))
    with open(workdir / "mosquitto.log", "ab") as log:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((LOOPBACK, port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"mosquitto did not listen on {port}") from None
                time.sleep(0.02)
        yield LOOPBACK, port
    finally:
        stop_process(proc)


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    own: bool  # started by the bench

    def __str__(self) -> str:
        return f"{self.host}:{self.port} ({'own mosquitto' if self.own else 'given'})"


@contextmanager
def session(host: str | None, port: int | None, prefix: str) -> Iterator[tuple[Path, Broker]]:
    """A work directory and the broker (``host:port`` if given, else one of our own), gone on
    exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        workdir = Path(tmp)
        if host is not None and port is not None:
            yield workdir, Broker(host, port, own=False)
            return
        with own_broker(workdir) as (own_host, own_port):
            yield workdir, Broker(own_host, own_port, own=True)


def copy_database(template: Path, target: Path) -> None:
    """The preloaded database where the service will open it, written out to the disk: the
    copy is not part of start-up (a large one's writeback fell into the first fsync)."""
    shutil.copyfile(template, target)
    with open(target, "rb+") as copied:
        os.fsync(copied.fileno())


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
