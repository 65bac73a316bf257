"""The service: wires config, store, operations and transport, and owns the loop.

The loop reads top to bottom: receive a batch -> decode -> handle -> commit (effects and
outbox in one transaction) -> publish -> ack. Inputs that arrive together share one
transaction and one fsync (group commit); each is acked only after that commit.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import tenacity

from . import intake
from .config import Config
from .envelope import now_ms
from .heapwatch import HeapWatch
from .http import endpoint_for
from .identity import AccessPolicy, Refused
from .kube.serving import KubeServing
from .ledger import UNLOGGED, PublishLedger
from .metrics import BRIDGE_STATE, ServiceMetrics
from .operations import Operations
from .outcome import Inbound, Result
from .remote_query import RemoteQueryPolicy
from .routing import Outgoing, Topics
from .store import OutboxEntry, Store, StoreError
from .timers import TimerQueue, backoff_delay
from .transport import Connected, Disconnected, Event, Published, Received, Transport, Wakeup

log = logging.getLogger(__name__)

IDLE_WAKE = 1.0
PRUNE_INTERVAL = 60.0
STORE_SAMPLE_INTERVAL = 15.0  # seconds between counts of the stored objects (metrics)
DRAIN_TIMEOUT = 5.0
INTERNAL_RETRY = 2.0
# Backpressure: while this many publishes await the broker's PUBACK, new inputs wait in
# memory, unacknowledged. Bounds what a crash sends twice (outbox rows not yet acked).
MAX_UNACKED_PUBLISHES = 512
INPUT_WINDOW_BATCHES = 2
STORE_RETRY = tenacity.wait_exponential(multiplier=0.5, max=30)


@dataclass(frozen=True)
class BridgeState:
    """The Mosquitto bridge's own 1/0 notification (``cloud.bridge_state_topic``)."""

    connected: bool


Admitted = Inbound | Refused | BridgeState


def _inbound_of(admitted: Admitted) -> Inbound | None:
    """Whom to tell about an input that failed after it was admitted."""
    if isinstance(admitted, Inbound):
        return admitted
    return admitted.inbound if isinstance(admitted, Refused) else None


def input_window(config: Config) -> int:
    """How many inputs may be held at once (received, not yet acked): two batches, so one
    can be read while the other commits. This, not the burst, bounds the memory inputs use."""
    return INPUT_WINDOW_BATCHES * config.database.batch_max


class Service:
    """One metamanager: start, run until stopped, stop cleanly."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.topics = Topics(config.mqtt.topic_prefix)
        self.access = AccessPolicy(
            self.topics,
            config.modules.local,
            config.security.operators,
            legacy_inbox=config.security.legacy_inbox,
        )
        self.store = Store(config.database.path)
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
        self.ledger = PublishLedger()
        self._held: deque[Received] = deque()  # inputs received, not yet taken
        self._failures: dict[int, int] = {}  # input mid -> store failures so far
        self._bridge_topic = config.cloud.bridge_state_topic
        self._stop = threading.Event()
        self._started_outbox = False
        self._heap = HeapWatch()

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
        self.timers.call_later(self.config.meta.sync.podstatus.interval, self._periodic_sync)
        self.timers.call_later(PRUNE_INTERVAL, self._prune)
        self.timers.call_later(0, self._sample_store)
        if self.config.metrics.interval:
            self.timers.call_later(self.config.metrics.interval, self._publish_metrics)
        try:
            while not self._stop.is_set():
                self.step(self.timers.next_delay(IDLE_WAKE))
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self.metrics.stopping()
        if self.ops.pending_queries:
            # Nobody will be waiting for the cloud's answer after we are gone: answer now.
            self._internal(self.ops.answer_pending_locally, retry=False)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while self.ledger.unacked and time.monotonic() < deadline:
            self._collect(0.1, handle_inputs=False)
        self._flush_outbox_removals()
        self.transport.stop()
        self.store.close()
        if self.http is not None:
            self.http.stop()
        if self.kube is not None:
            self.kube.stop()
        log.info(
            "stopped: %s unacked_publishes=%d max_held_inputs=%d",
            " ".join(f"{k}={v}" for k, v in self.metrics.totals().items()),
            self.ledger.unacked,
            self.transport.max_held,
        )

    # -- the loop ---------------------------------------------------------------------------

    def step(self, timeout: float) -> None:
        """One turn: take what has arrived (waiting up to ``timeout``), commit it, run timers."""
        self.metrics.heartbeat(self.ledger.rows_in_flight, self.ledger.oldest_sent_at)
        batch = self._collect(timeout, handle_inputs=True)
        if batch:
            self._process(batch)
        elif self.ledger.has_deletions:
            self._flush_outbox_removals()
        self.timers.run_due()

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
                self.ledger.acked(event.mid)
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
        return self.ledger.unacked >= MAX_UNACKED_PUBLISHES

    def _on_connected(self) -> None:
        # Our view of the cloud link replaces whatever an earlier run left retained.
        self.transport.publish(self.ops.connection_publish(), self.config.mqtt.qos)
        if not self._started_outbox:
            try:
                pending = self.store.outbox_pending()
            except StoreError as exc:
                log.error("outbox: cannot read what the last run left, next connect: %s", exc)
                return
            self._started_outbox = True
            # Inputs may have been applied on this run before ``Connected`` (the input link
            # reads the session's backlog before its SUBACK arrives): their rows are
            # published already, awaiting PUBACK or removal. Only the last run's are owed.
            ours = self.ledger.known_rows()
            pending = [e for e in pending if e.id not in ours]
            if pending:
                log.info("outbox: resending %d publishes left by the last run", len(pending))
            self._publish(pending)

    def _process(self, batch: list[Received]) -> None:
        self._commit([(received, self._admit(received)) for received in batch])

    def _admit(self, received: Received) -> Admitted:
        """Identify and decode one input (no store access): what the sender may have done."""
        if self._bridge_topic and received.topic == self._bridge_topic:
            return BridgeState(received.payload.strip() == b"1")
        return self.access.admit(
            received.topic,
            received.payload,
            response_topic=received.response_topic,
            correlation=received.correlation,
            max_payload=self.config.mqtt.max_payload,
        )

    def _commit(self, inputs: list[tuple[Received, Admitted]]) -> None:
        started = self.metrics.batch_started()
        try:
            with self.ops.undo_on_error(), self.store.atomic():
                done = [self._apply(received, admitted) for received, admitted in inputs]
                self.ledger.delete_acked(self.store)
        except StoreError as exc:
            if len(inputs) > 1:
                # One bad apple must not hold up the rest: retry each in its own transaction.
                for one in inputs:
                    self._commit([one])
                return
            self._store_failed(*inputs[0], exc)
            return
        except Exception as exc:  # a bug met by some input: that input must not stop the loop
            if len(inputs) > 1:
                for one in inputs:
                    self._commit([one])
                return
            self._unprocessable(*inputs[0], exc)
            return
        self.ledger.committed()
        self._committed()
        self.metrics.batch_committed(len(inputs), started)
        for received, entries, result in done:
            self._publish(entries)
            self._arm(result)
            self.transport.ack(received)
            self._failures.pop(received.mid, None)

    def _apply(
        self, received: Received, admitted: Admitted
    ) -> tuple[Received, list[OutboxEntry], Result]:
        started = time.perf_counter()
        changes = self.store.changes()
        if isinstance(admitted, BridgeState):
            result = self.ops.set_cloud_link(admitted.connected)
            self.metrics.input_handled(BRIDGE_STATE, result, started)
            self._log("-", "node/connection", "bridge", result)
            return received, self.store.outbox_add(result.publishes), result
        if isinstance(admitted, Refused):
            result = self._refusal(received, admitted)
            asked = admitted.inbound.message.operation if admitted.inbound else ""
            self.metrics.input_handled(asked, result, started, refused=admitted)
        else:
            result = self.ops.handle(admitted)
            self.metrics.input_handled(admitted.message.operation, result, started)
            msg = admitted.message
            self._log(msg.msg_id, msg.route.resource, msg.operation, result)
        return received, self._owed(result, changes), result

    def _refusal(self, received: Received, refused: Refused) -> Result:
        err = refused.error
        result = self.ops.refuse(refused, received.topic, received.payload)
        msg = refused.inbound.message if refused.inbound else None
        log.warning(
            "msg_id=%s resource=%s refused input from %s on %s: %d %s (%s)",
            msg.msg_id if msg and msg.msg_id else "-",
            msg.route.resource if msg and msg.route.resource else "-",
            refused.identity or "-",
            received.topic,
            err.code,
            err.reason,
            err.message,
        )
        return result

    def _owed(self, result: Result, changes_before: int) -> list[OutboxEntry]:
        """The outbox rows for what ``result`` publishes. An input that changed nothing and
        only answers (a local query, a redelivered duplicate, a 400) needs none: it is acked
        after its reply is published, so if that never happens the broker gives it again and
        it is answered again. No row means no write, so a batch of those needs no fsync."""
        if not result.forwards and not result.timers and self.store.changes() == changes_before:
            return [OutboxEntry(UNLOGGED, p) for p in result.replies]
        return self.store.outbox_add(result.publishes)

    def _log(self, msg_id: str, resource: str, operation: str, result: Result) -> None:
        # DEBUG: at thousands of inputs a second an INFO line each was a tenth of the loop's
        # CPU (docs/performance.md); the counters in the stop line and metrics keep totals.
        if not log.isEnabledFor(logging.DEBUG):
            return
        log.debug(
            "msg_id=%s op=%s resource=%s outcome=%s publishes=%d",
            msg_id,
            operation,
            resource,
            result.outcome,
            len(result.publishes),
        )

    def _unprocessable(self, received: Received, admitted: Admitted, exc: Exception) -> None:
        """An input that makes the code fail: nothing of it was applied (its transaction
        rolled back); answer 500, or dead-letter it, and ack it so it cannot come back and
        fail every start."""
        msg_id, resource = "-", "-"
        publishes: list[Outgoing] = []
        inbound = _inbound_of(admitted)
        if inbound is not None:
            msg_id, resource = inbound.message.msg_id, inbound.message.route.resource
            publishes = self.ops.internal_error(inbound, type(exc).__name__).publishes
        dead_letter = not publishes
        self.metrics.internal_error(inbound, dead_letter=dead_letter)
        if dead_letter:
            identity = inbound.identity if inbound else ""
            letter = intake.deadletter_payload(
                received.topic, received.payload, "internal_error", type(exc).__name__, identity
            )
            publishes = [Outgoing(self.topics.deadletter, letter)]
        log.exception("msg_id=%s resource=%s internal error, input dropped", msg_id, resource)
        for out in publishes:
            self.transport.publish(out, self.config.mqtt.qos)
        self.transport.ack(received)

    def _store_failed(self, received: Received, admitted: Admitted, exc: StoreError) -> None:
        """Tell the sender 503 once, keep the input unacked, and try it again later."""
        attempt = self._failures.get(received.mid, 0) + 1
        self._failures[received.mid] = attempt
        self.metrics.store_failed(_inbound_of(admitted), answered=attempt == 1)
        delay = backoff_delay(STORE_RETRY, attempt)
        log.error("store failure (attempt %d, retry in %.1fs): %s", attempt, delay, exc)
        inbound = _inbound_of(admitted)
        if attempt == 1 and inbound is not None:
            result = self.ops.store_unavailable(inbound, str(exc))
            for out in result.publishes:
                self.transport.publish(out, self.config.mqtt.qos)
        self.timers.call_later(delay, lambda: self._commit([(received, admitted)]))

    # -- outbox ------------------------------------------------------------------------------

    def _publish(self, entries: list[OutboxEntry]) -> None:
        for entry in entries:
            try:
                mid = self.transport.publish(entry.publish, self.config.mqtt.qos)
            except ValueError as exc:
                # paho refuses it (topic, size) and always will: kept, the row would crash
                # this loop again on every start. Dropped with the reason in the log.
                log.error("outbox row %d can never be sent, dropped: %s", entry.id, exc)
                self.metrics.dropped_unpublishable()
                self.ledger.dropped(entry.id)
                continue
            self.ledger.sent(mid, entry.id)

    def _flush_outbox_removals(self) -> None:
        try:
            with self.store.atomic():
                self.ledger.delete_acked(self.store)
        except StoreError as exc:
            log.error("outbox cleanup failed, will retry: %s", exc)
        else:
            self.ledger.committed()

    def _committed(self) -> None:
        """After a commit: Kubernetes watches follow the store (never waits on them)."""
        if self.kube is not None:
            self.kube.committed(self.store.revision)

    # -- timers ------------------------------------------------------------------------------

    def _arm(self, result: Result) -> None:
        for timer in result.timers:
            self.timers.call_later(timer.delay, functools.partial(self._timer_fired, timer.key))

    def _timer_fired(self, key: str) -> None:
        self._internal(functools.partial(self.ops.timer_fired, key))

    def _internal(self, work: Callable[[], Result], *, retry: bool = True) -> None:
        """Run work that is not an input (timers, syncs) with its publishes in the outbox.
        If the store fails, the work is rolled back whole and tried again later."""
        started = time.perf_counter()
        try:
            with self.ops.undo_on_error(), self.store.atomic():
                result = work()
                entries = self.store.outbox_add(result.publishes)
                self.ledger.delete_acked(self.store)
        except StoreError as exc:
            log.error("internal work failed%s: %s", ", will retry" if retry else "", exc)
            if retry:
                self.timers.call_later(INTERNAL_RETRY, functools.partial(self._internal, work))
            return
        self.ledger.committed()
        self._committed()
        self.metrics.internal_done(result, started)
        if result.outcome not in ("sync-skipped", "timer-stale"):
            log.info("internal outcome=%s publishes=%d", result.outcome, len(entries))
        self._publish(entries)
        self._arm(result)

    def _periodic_sync(self) -> None:
        self._internal(self.ops.podstatus_sync, retry=False)  # the next interval retries
        self.timers.call_later(self.config.meta.sync.podstatus.interval, self._periodic_sync)

    def _prune(self) -> None:
        history = self.config.kube
        try:
            with self.store.atomic():
                dropped = self.ops.prune_dedup()
                self.store.prune_changes(history.history_changes, history.history_seconds)
        except StoreError as exc:
            log.error("dedup prune failed: %s", exc)
        else:
            if dropped:
                log.info("dedup: forgot %d old msg_ids", dropped)
        self.timers.call_later(PRUNE_INTERVAL, self._prune)

    def _sample_store(self) -> None:
        self.timers.call_later(STORE_SAMPLE_INTERVAL, self._sample_store)
        try:
            with self.store.atomic():
                self.metrics.sample_store(self.store)
        except StoreError as exc:
            log.error("metrics: cannot count objects: %s", exc)

    def _publish_metrics(self) -> None:
        self.timers.call_later(self.config.metrics.interval, self._publish_metrics)
        snapshot = {
            **self.metrics.snapshot(),
            # The in-memory collections the soak watches (issue 13), each bounded by config.
            "outbox_inflight": self.ledger.unacked,
            "answered_query_ids": self.ops.answered_query_ids,
            "timers": len(self.timers),
            "store_retries": len(self._failures),
            "timestamp": now_ms(),
            **self._heap.figures(),
        }
        out = Outgoing(self.topics.metrics, json.dumps(snapshot).encode(), retain=True)
        self.transport.publish(out, 0)  # a snapshot: the next one replaces a lost one
