"""The service: wires config, store, operations and transport, and owns the loop.

The loop reads top to bottom: receive a batch -> the pipeline (admit -> handle -> stage ->
commit -> send -> ack) -> timers. Inputs that arrive together share one transaction and
one fsync (group commit); each is acked only after that commit.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import deque
from types import FrameType
from typing import Any

from . import allocator
from .config import Config
from .heapwatch import HeapWatch
from .http import endpoint_for
from .identity import AccessPolicy
from .kube.serving import KubeServing
from .linkevents import Connected, Disconnected, Event, Published, Received, Wakeup
from .metrics import ServiceMetrics
from .operations import Operations
from .outbox import Outbox
from .pipeline import Pipeline
from .remote_query import RemoteQueryPolicy
from .routing import Outgoing, Topics
from .store import Store
from .timers import TimerQueue
from .transport import Transport
from .upkeep import Upkeep

log = logging.getLogger(__name__)

IDLE_WAKE = 1.0
DRAIN_TIMEOUT = 5.0
# Backpressure: while this many publishes await the broker's PUBACK, new inputs wait in
# memory, unacknowledged. Bounds what a crash sends twice (outbox rows not yet acked).
MAX_UNACKED_PUBLISHES = 512
# And while this many payload bytes do: 512 list replies of a 2,000-pod namespace would be
# 800 MB. After a CPU stall the backlog's list replies piled up here (issue 13).
MAX_UNACKED_BYTES = 4 * 1024 * 1024
INPUT_WINDOW_BATCHES = 2
# And no more inputs are read once this many payload bytes are held: two batches of inputs
# at ``mqtt.max_payload`` (1 MiB by default) would be 256 MiB. Above ~32 KiB per input
# this, not the count, is the bound; one larger input is still read, and held alone.
INPUT_WINDOW_BYTES = 8 * 1024 * 1024


def input_window(config: Config) -> int:
    """How many inputs may be held at once (received, not yet acked): two batches, so one
    can be read while the other commits. This, not the burst, bounds the memory inputs use."""
    return INPUT_WINDOW_BATCHES * config.database.batch_max


class Service:
    """One metamanager: start, run until stopped, stop cleanly."""

    def __init__(self, config: Config) -> None:
        self.config = config
        allocator.tune(config.memory)  # before the heavy allocation: the store, the replies
        self.topics = Topics(config.mqtt.topic_prefix)
        self.access = AccessPolicy(
            self.topics,
            config.modules.local,
            config.security.operators,
            legacy_inbox=config.security.legacy_inbox,
        )
        self.store = Store(config.database.path, cache_kib=config.database.cache_kib)
        self.ops = Operations(
            self.store,
            self.topics,
            remote_query=RemoteQueryPolicy(
                config.meta.remote_query.timeout,
                config.meta.remote_query.retries,
                answered_memory=config.meta.remote_query.answered_memory,
            ),
            dedup_window=config.database.dedup_window,
        )
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        subscriptions = [*self.access.subscriptions, self.topics.edgehub_connection]
        if config.cloud.bridge_state_topic:
            subscriptions.append(config.cloud.bridge_state_topic)
        self.transport = Transport(
            config.mqtt,
            self.events,
            subscriptions=subscriptions,
            status_topic=self.topics.status,
            window=input_window(config),
            window_bytes=INPUT_WINDOW_BYTES,
        )
        self.timers = TimerQueue()
        self.metrics = ServiceMetrics(self.topics.deadletter)
        self.metrics.watch(self.store, self.transport, self.ops)
        self.kube: KubeServing | None = None
        if config.http.listen and config.kube.api:
            self.kube = KubeServing(config.database.path, self.store.revision, config.kube)
            self.metrics.registry.register(self.kube)
        self.http = endpoint_for(
            config.http, self.metrics, None if self.kube is None else self.kube.api
        )
        self.outbox = Outbox(self.store, self._publish, self.metrics.dropped_unpublishable)
        self.pipeline = Pipeline(
            self.access,
            self.ops,
            self.outbox,
            self.metrics,
            self.timers,
            ack=self._ack,
            max_payload=config.mqtt.max_payload,
            bridge_topic=config.cloud.bridge_state_topic,
            on_commit=self._committed,
        )
        self.upkeep = Upkeep(
            config,
            self.pipeline,
            self.timers,
            publish=lambda out, qos: self.transport.publish(out, qos),
            figures=self._figures,
        )
        self._held: deque[Received] = deque()  # inputs received, not yet taken
        self._stop = threading.Event()
        self._started_outbox = False
        self._heap = HeapWatch()
        self._trim = allocator.TrimAfterBursts()

    # -- lifecycle --------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %s: stopping", signal.Signals(signum).name)
            self.request_stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def request_stop(self) -> None:
        self._stop.set()
        self.events.put(Wakeup("stop"))

    def run(self) -> None:
        """Connect and serve until ``request_stop``; then drain and disconnect."""
        log.info(
            "starting: db=%s objects=%d broker=%s:%d",
            self.config.database.path,
            self.store.count(),
            self.config.mqtt.host,
            self.config.mqtt.port,
        )
        if self.kube is not None:
            self.kube.start()
        if self.http is not None:
            self.http.start()  # before the broker: /healthz and /readyz answer while it is away
        if not self.transport.start(cancel=self._stop):
            log.info("stopped before the broker was reachable")
            self.store.close()
            if self.http is not None:
                self.http.stop()
            if self.kube is not None:
                self.kube.stop()
            return
        self.upkeep.start()
        try:
            while not self._stop.is_set():
                self.step(self.timers.next_delay(IDLE_WAKE))
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self.metrics.stopping()
        if self.ops.pending_queries:
            # Nobody will be waiting for the cloud's answer after we are gone: answer now.
            self.pipeline.internal(self.ops.answer_pending_locally, retry=False)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while self.outbox.unacked and time.monotonic() < deadline:
            self._collect(0.1, handle_inputs=False)
        self.outbox.flush()
        self.transport.stop()
        self.store.close()
        if self.http is not None:
            self.http.stop()
        if self.kube is not None:
            self.kube.stop()
        log.info(
            "stopped: %s unacked_publishes=%d max_held_inputs=%d max_held_input_bytes=%d",
            " ".join(f"{k}={v}" for k, v in self.metrics.totals().items()),
            self.outbox.unacked,
            self.transport.window.max_held,
            self.transport.window.max_held_bytes,
        )

    # -- the loop ---------------------------------------------------------------------------

    def step(self, timeout: float) -> None:
        """One turn: take what has arrived (waiting up to ``timeout``), commit it, run timers."""
        self.metrics.heartbeat(self.outbox.rows_in_flight, self.outbox.oldest_sent_at)
        batch = self._collect(timeout, handle_inputs=True)
        with self.transport.writes_batched():
            if batch:
                self.pipeline.process(batch)
            elif self.outbox.has_deletions:
                self.outbox.flush()
            self.timers.run_due()
        if batch:  # after the batch's writes: a trim never delays its answers
            backlog = bool(self._held) or not self.events.empty()
            self._trim.worked(sum(len(r.payload) for r in batch), backlog=backlog)

    def _collect(self, timeout: float, *, handle_inputs: bool) -> list[Received]:
        """Wait for one event, then take what else is queued; return up to one batch of
        inputs, none while the broker is behind on acknowledging our publishes."""
        batch_max = self.config.database.batch_max
        if handle_inputs and self._held and not self._backpressured():
            timeout = 0
        try:
            event: Event | None = self.events.get(timeout=timeout)
        except queue.Empty:
            event = None
        while event is not None:
            if isinstance(event, Received):
                if handle_inputs:
                    self._held.append(event)
            elif isinstance(event, Published):
                self.outbox.acked(event.mid)
            elif isinstance(event, Connected):
                self._on_connected()
            elif isinstance(event, Disconnected):
                self.metrics.link_lost()
            if len(self._held) >= batch_max and not self._backpressured():
                break
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                event = None
        if not handle_inputs or self._backpressured():
            return []
        return [self._held.popleft() for _ in range(min(batch_max, len(self._held)))]

    def _backpressured(self) -> bool:
        outbox = self.outbox
        return outbox.unacked >= MAX_UNACKED_PUBLISHES or outbox.unacked_bytes >= MAX_UNACKED_BYTES

    def _on_connected(self) -> None:
        # Our view of the cloud link replaces whatever an earlier run left retained.
        self._publish(self.ops.connection_publish())
        if not self._started_outbox:
            self._started_outbox = self.outbox.resend_left_over()

    # -- the pipeline's and the chores' ends ---------------------------------------------------

    def _publish(self, out: Outgoing) -> int:
        return self.transport.publish(out, self.config.mqtt.qos)

    def _ack(self, received: Received) -> None:
        self.transport.ack(received)

    def _committed(self) -> None:
        """After a commit that changed objects: Kubernetes watches follow the store (never
        waits on them)."""
        if self.kube is not None:
            self.kube.committed(self.store.revision)

    def _figures(self) -> dict[str, Any]:
        """The in-memory collections the soak watches (issue 13), each bounded by config."""
        return {
            "outbox_inflight": self.outbox.unacked,
            "outbox_inflight_bytes": self.outbox.unacked_bytes,
            "answered_query_ids": self.ops.answered_query_ids,
            "store_retries": self.pipeline.retries.failing,
            **self._heap.figures(),
            **allocator.figures(),
        }
