"""What the message loop publishes for other threads: its heartbeat and outbox position
(``LoopState``), the parts of the service that can be read safely from any thread
(``Watched``), and the gauges computed from both when /metrics is scraped (``LiveState``).

The HTTP threads only read: plain attributes, each replaced whole by its one writer (the
loop, or paho's threads for the links), so a reader needs no lock and never waits.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from .operations import Operations
    from .store import Store
    from .transport import Transport

MAX_TYPES = 32  # stored-object types shown one by one; the rest are summed as "other"
STARTING, RUNNING, STOPPING = "starting", "running", "stopping"
# TEST HOOK, for tests/integration/test_http.py only: while the file this variable names
# exists, the message loop blocks at its next turn, as a loop stuck in a bug would.
TEST_WEDGE_ENV = "MQTT_METAMANAGER_TEST_WEDGE_FILE"
WEDGE_POLL = 0.05


@dataclass
class LoopState:
    """Plain attributes the loop sets and the HTTP threads only read (no lock needed: each
    is replaced whole)."""

    phase: str = STARTING
    last_turn: float = field(default_factory=time.monotonic)
    outbox_rows: int = 0
    outbox_oldest_at: float | None = None  # time.monotonic() the oldest row was sent
    objects_by_type: dict[str, int] = field(default_factory=dict)
    wedge_file: str = field(default_factory=lambda: os.environ.get(TEST_WEDGE_ENV, ""))

    def turned(self, outbox_rows: int, outbox_oldest_at: float | None) -> None:
        self.phase = RUNNING
        self.last_turn = time.monotonic()
        self.outbox_rows = outbox_rows
        self.outbox_oldest_at = outbox_oldest_at
        if self.wedge_file:
            self._wait_while_wedged()

    def _wait_while_wedged(self) -> None:
        # TEST HOOK (TEST_WEDGE_ENV): never set outside tests.
        while os.path.exists(self.wedge_file):
            time.sleep(WEDGE_POLL)


@dataclass(frozen=True)
class Watched:
    """The service's parts that metrics and readiness read when asked."""

    store: Store
    transport: Transport
    ops: Operations


def _database_bytes(path: str) -> int:
    total = 0
    for name in (path, f"{path}-wal"):
        with contextlib.suppress(OSError):  # no WAL file between checkpoints
            total += os.stat(name).st_size
    return total


class LiveState:
    """A collector of the gauges, computed at scrape time from ``LoopState`` and ``Watched``."""

    def __init__(self, state: LoopState, watched: Callable[[], Watched | None]) -> None:
        self.state = state
        self.watched = watched

    def collect(self) -> Iterable[Metric]:
        state, watched = self.state, self.watched()
        now = time.monotonic()
        yield GaugeMetricFamily(
            "metamanager_loop_turn_age_seconds",
            "Seconds since the message loop last turned (it turns at least every second)",
            value=now - state.last_turn,
        )
        yield GaugeMetricFamily(
            "metamanager_outbox_rows",
            "Outbox rows sent to the broker and not acknowledged yet",
            value=state.outbox_rows,
        )
        oldest = state.outbox_oldest_at
        yield GaugeMetricFamily(
            "metamanager_outbox_oldest_age_seconds",
            "Age of the oldest outbox row not acknowledged by the broker (0: none)",
            value=0.0 if oldest is None else now - oldest,
        )
        objects = GaugeMetricFamily(
            "metamanager_stored_objects",
            f"Objects in the store by type (the {MAX_TYPES} largest; the rest as 'other')",
            labels=["type"],
        )
        for type_, n in state.objects_by_type.items():
            objects.add_metric([type_], n)
        yield objects
        if watched is None:
            return
        yield GaugeMetricFamily(
            "metamanager_database_bytes",
            "Size of the SQLite database file and its write-ahead log",
            value=_database_bytes(watched.store.path),
        )
        window = watched.transport.window
        yield GaugeMetricFamily(
            "metamanager_held_inputs",
            "Inputs received and not yet acknowledged (bounded by the input window)",
            value=window.held,
        )
        yield GaugeMetricFamily(
            "metamanager_held_inputs_max", "The most inputs held at once", value=window.max_held
        )
        yield GaugeMetricFamily(
            "metamanager_input_window", "How many inputs may be held at once", value=window.size
        )
        yield GaugeMetricFamily(
            "metamanager_held_input_bytes",
            "Payload bytes of the inputs held (bounded by the input window's bytes)",
            value=window.held_bytes,
        )
        yield GaugeMetricFamily(
            "metamanager_input_window_bytes",
            "No more inputs are read while this many payload bytes are held",
            value=window.max_bytes,
        )
        links = GaugeMetricFamily(
            "metamanager_mqtt_link_up",
            "1 while an MQTT link is connected (input: and subscribed)",
            labels=["link"],
        )
        links.add_metric(["input"], float(watched.transport.input_ready))
        links.add_metric(["output"], float(watched.transport.output_ready))
        yield links
        link = watched.ops.link
        yield GaugeMetricFamily(
            "metamanager_cloud_link_up", "1 while the cloud link is up", value=float(link.connected)
        )
        yield GaugeMetricFamily(
            "metamanager_cloud_link_since_timestamp_seconds",
            "When the cloud link took its present state (Unix time)",
            value=link.since / 1000,
        )
        yield GaugeMetricFamily(
            "metamanager_remote_queries_pending",
            "Queries waiting for the cloud's answer",
            value=watched.ops.pending_queries,
        )
