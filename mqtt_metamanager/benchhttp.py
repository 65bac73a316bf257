"""``bench --kube``'s HTTP clients of the Kubernetes read API: timed GETs, the store
revision of now, watch streams, and a crowd of idle and busy watchers in a process of its
own."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import threading
import time
from typing import Any

from .benchkit import LOOPBACK
from .benchnet import BenchError

IDLE_WATCHERS, BUSY_WATCHERS = 100, 10
READ_BLOCK = 1 << 16  # bytes a busy watcher reads per call


def timed_gets(port: int, path: str, count: int) -> list[float]:
    """Seconds each of ``count`` GETs of ``path`` took, one after another on one connection."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    samples = []
    try:
        for _ in range(count):
            start = time.monotonic()
            conn.request("GET", path)
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                raise BenchError(f"GET {path}: HTTP {answer.status}")
            samples.append(time.monotonic() - start)
    finally:
        conn.close()
    return samples


def revision(port: int) -> str:
    """The store's revision of now: where a watch starts, as after a list."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    try:
        conn.request("GET", "/api/v1/configmaps?limit=1")
        return str(json.loads(conn.getresponse().read())["metadata"]["resourceVersion"])
    finally:
        conn.close()


class Stream:
    """One watch stream on a connection of its own, read by a thread of its own."""

    def __init__(self, port: int, path: str) -> None:
        self.conn = http.client.HTTPConnection(LOOPBACK, port, timeout=120)
        self.conn.request("GET", path)
        self.response = self.conn.getresponse()
        if self.response.status != 200:
            raise BenchError(f"watch {path}: HTTP {self.response.status}")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.conn.close()


class Watcher(Stream):
    """Notes when each object arrives."""

    def __init__(self, port: int, path: str) -> None:
        self.arrived: dict[str, float] = {}
        super().__init__(port, path)

    def _read(self) -> None:
        try:
            for line in self.response:
                event = json.loads(line)
                self.arrived[event["object"]["metadata"]["name"]] = time.monotonic()
        except (OSError, ValueError, http.client.HTTPException):
            return


class Counter(Stream):
    """Only counts its events, as a busy client that is not timed. It reads what arrives
    in blocks and counts the newlines (one per event: JSON text holds none of its own).
    Iterating the response line by line costs 3.4-5.4 µs of CPU per event in http.client's
    chunked reader, against 1.2 µs reading blocks (measured with 1.1 KB events): ten such
    readers spent ~40 µs per insert on the two cores the service is measured on, an eighth
    of what the service spends on the insert itself."""

    def __init__(self, port: int, path: str) -> None:
        self.events = 0
        super().__init__(port, path)

    def _read(self) -> None:
        try:
            while block := self.response.read1(READ_BLOCK):
                self.events += block.count(b"\n")
        except (OSError, http.client.HTTPException):
            return


def _hold_watches(
    port: int, pods: str, since: str, events: int, ready: Any, stop: Any, seen: Any
) -> None:
    """In a process of its own, as real watchers are (in the bench's process they would
    share its GIL with the load client and slow the very bursts the bench times): holds
    the idle and busy watches open and reads them; once told to stop, says how many events
    the busy watcher that read fewest had (a dropped one falls short)."""
    idle = f"/api/v1/configmaps?watch=true&resourceVersion={since}"
    busy = f"{pods}?watch=true&resourceVersion={since}"
    idle_ones = [Counter(port, idle) for _ in range(IDLE_WATCHERS)]
    busy_ones = [Counter(port, busy) for _ in range(BUSY_WATCHERS)]
    ready.set()
    stop.wait(600)
    deadline = time.monotonic() + 30
    while min(w.events for w in busy_ones) < events and time.monotonic() < deadline:
        time.sleep(0.05)
    seen.put(min(w.events for w in busy_ones))
    for w in idle_ones + busy_ones:
        w.close()


class WatchCrowd:
    """100 idle and 10 busy watchers from the store revision of now, in a child process;
    each busy one is to read ``events`` events (the burst it watches)."""

    def __init__(self, port: int, pods: str, events: int) -> None:
        spawn = multiprocessing.get_context("spawn")
        self.expected = events
        self.ready, self.stop, self.seen = spawn.Event(), spawn.Event(), spawn.Queue()
        self.process = spawn.Process(target=_hold_watches, daemon=True, args=(
            port, pods, revision(port), events, self.ready, self.stop, self.seen))  # fmt: skip

    def __enter__(self) -> WatchCrowd:
        self.process.start()
        if not self.ready.wait(60):
            raise BenchError("the watchers did not start within 60 s")
        return self

    def check_every_event_arrived(self) -> None:
        self.stop.set()
        events = self.seen.get(timeout=60)
        if events < self.expected:
            raise BenchError(f"a busy watcher read {events} of {self.expected} events: dropped?")

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
