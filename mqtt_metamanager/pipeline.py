"""The one path every input takes: admit -> handle -> stage -> commit -> send -> ack.

``Pipeline.process`` takes a batch of received inputs. Each is admitted (decoded and its
sender identified: ``AccessPolicy.admit``), handled (``Operations``: applied, or refused
with 400/403), and what it owes is staged in the outbox; the batch commits as one
transaction (one fsync), then its publishes are sent and its inputs acked, in order.

The error paths end the same way. A transaction that fails is retried input by input, so
one bad input cannot hold up the rest. An input the store fails is answered 503 and
retried on a timer, ahead of any later input for its key (``inputs.StoreRetries``). An
input that meets a bug is rolled back, answered 500 (or dead-lettered) and acked, so it
cannot come back and fail every start. Work that is no input (timers, syncs) commits and
sends through the same transaction (``internal``).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import tenacity

from .identity import AccessPolicy, Refused
from .inputs import BridgeState, Handled, StoreRetries
from .ledger import OutboxEntry
from .linkevents import Received
from .metrics import ServiceMetrics
from .operations import Operations
from .outbox import Outbox
from .outcome import Inbound, Kind, OperationError, Result, TimerEvent
from .readings import BRIDGE_STATE
from .store import StoreError
from .timers import TimerQueue, backoff_delay

log = logging.getLogger(__name__)

INTERNAL_RETRY = 2.0
STORE_RETRY = tenacity.wait_exponential(multiplier=0.5, max=30)
QUIET_INTERNAL = (Kind.SYNC_SKIPPED, Kind.TIMER_STALE)  # not worth an INFO line each


class Pipeline:
    """Inputs and internal work through one transaction each, then out to the broker."""

    def __init__(
        self,
        access: AccessPolicy,
        ops: Operations,
        outbox: Outbox,
        metrics: ServiceMetrics,
        timers: TimerQueue,
        *,
        ack: Callable[[Received], None],
        max_payload: int,
        bridge_topic: str = "",
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.access = access
        self.ops = ops
        self.outbox = outbox
        self.metrics = metrics
        self.timers = timers
        self.ack = ack
        self.max_payload = max_payload
        self.bridge_topic = bridge_topic
        self.on_commit = on_commit  # after a commit that changed objects (the change feed)
        self.retries = StoreRetries()

    def process(self, batch: Iterable[Received]) -> list[Handled]:
        """One batch through the pipeline; returns each input as handled (an input held
        behind a store failure is handled later, its result ``inputs.NOT_HANDLED``)."""
        inputs = [Handled(received, self.admit(received)) for received in batch]
        self._commit(self.retries.ready(inputs))
        return inputs

    def admit(self, received: Received) -> Inbound | Refused | BridgeState:
        """Decode and identify one input (no store access): what the sender may do."""
        if self.bridge_topic and received.topic == self.bridge_topic:
            return BridgeState(received.payload.strip() == b"1")
        return self.access.admit(
            received.topic,
            received.payload,
            response_topic=received.response_topic,
            correlation=received.correlation,
            max_payload=self.max_payload,
        )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A store transaction (with the outbox's deletions); the in-memory state the
        operations staged in it holds only if it commits."""
        revision = self.outbox.store.revision
        try:
            with self.outbox.transaction():
                yield
        except BaseException:
            self.ops.discard()
            raise
        self.ops.commit()
        if self.outbox.store.revision != revision:
            self.on_commit()  # only a change of an object is news to the change feed

    def internal(self, work: Callable[[], Result], *, retry: bool = True) -> None:
        """Run work that is not an input (timers, syncs) with its publishes in the outbox.
        If the store fails, the work is rolled back whole and tried again later."""
        started = time.perf_counter()
        try:
            with self.transaction():
                result = work()
                entries = self.outbox.stage(result)
        except StoreError as exc:
            log.error("internal work failed%s: %s", ", will retry" if retry else "", exc)
            if retry:
                self.timers.call_later(INTERNAL_RETRY, functools.partial(self.internal, work))
            return
        self.metrics.internal_done(result, started)
        if result.outcome not in QUIET_INTERNAL:
            log.info("internal outcome=%s publishes=%d", result.outcome, len(entries))
        self._send(entries, result)

    # -- inputs ------------------------------------------------------------------------------

    def _commit(self, inputs: list[Handled]) -> None:
        if not inputs:
            return
        started = self.metrics.batch_started()
        try:
            with self.transaction():
                for handled in inputs:
                    self._handle(handled)
        except Exception as exc:  # a store failure, or a bug some input met
            if len(inputs) > 1:
                # One bad apple must not hold up the rest: each in its own transaction.
                for handled in inputs:
                    self._commit(self.retries.ready([handled]))
            elif isinstance(exc, StoreError):
                self._store_failed(inputs[0], exc)
            else:
                self._unprocessable(inputs[0], exc)
            return
        self.metrics.batch_committed(len(inputs), started)
        released: list[Handled] = []
        for handled in inputs:
            self._send(handled.entries, handled.result)
            self._ack(handled, released)
        self._commit(released)

    def _handle(self, handled: Handled) -> None:
        """Apply (or refuse) one input inside the running transaction, and stage what it
        owes in the outbox."""
        started = time.perf_counter()
        changes = self.outbox.store.changes()
        admitted = handled.admitted
        if isinstance(admitted, Inbound):
            result = self.ops.handle(admitted)
            self.metrics.input_handled(admitted.message.operation, result, started)
            self._log(admitted.message.msg_id, admitted.message.route.resource, result)
        elif isinstance(admitted, Refused):
            received = handled.received
            result = self.ops.refuse(admitted, received.topic, received.payload)
            asked = admitted.inbound.message.operation if admitted.inbound else ""
            self.metrics.input_handled(asked, result, started, refused=admitted)
            _log_refusal(received, admitted)
        else:
            result = self.ops.set_cloud_link(admitted.connected)
            self.metrics.input_handled(BRIDGE_STATE, result, started)
            self._log("-", "bridge", result)
        handled.result = result
        handled.entries = self.outbox.stage_answer(result, changes)

    def _send(self, entries: list[OutboxEntry], result: Result) -> None:
        self.outbox.send(entries)
        for timer in result.timers:
            self.timers.call_later(timer.delay, functools.partial(self._timer_fired, timer.event))

    def _ack(self, handled: Handled, released: list[Handled]) -> None:
        """Ack an input whose answer is sent; the inputs held behind it, if any, go to
        ``released`` (to apply next)."""
        self.ack(handled.received)
        if handled.store_failures:
            released.extend(self.retries.settled(handled))

    def _store_failed(self, handled: Handled, exc: StoreError) -> None:
        """Tell the sender 503 once, keep the input unacked, and try it again later, before
        any later input for its key."""
        self.retries.failed(handled)
        attempt = handled.store_failures
        inbound = handled.inbound
        self.metrics.store_failed(inbound, answered=attempt == 1)
        delay = backoff_delay(STORE_RETRY, attempt)
        log.error("store failure (attempt %d, retry in %.1fs): %s", attempt, delay, exc)
        if attempt == 1 and inbound is not None:
            # The store is failing, so the 503 cannot be logged in the outbox: it is sent
            # at most once, and only if this process lives to send it. Nothing is lost if it
            # is not: the input stays unacked, so the broker gives it again after a crash,
            # and its retry answers it for real.
            handled.result = self.ops.store_unavailable(inbound, str(exc))
            self._send(self.outbox.unlogged(handled.result.publishes), handled.result)
        self.timers.call_later(delay, functools.partial(self._commit, [handled]))

    def _unprocessable(self, handled: Handled, exc: Exception) -> None:
        """An input that makes the code fail: nothing of it was applied (its transaction
        rolled back). It is answered 500, or dead-lettered when nobody can be told, and
        acked so it cannot come back and fail every start."""
        inbound = handled.inbound
        admitted = handled.admitted
        identity = admitted.identity if isinstance(admitted, Inbound | Refused) else ""
        error = OperationError(500, "internal_error", type(exc).__name__)
        received = handled.received
        handled.result = self.ops.refuse(
            Refused(error, inbound, identity), received.topic, received.payload
        )
        self.metrics.internal_error(inbound, dead_letter=bool(handled.result.forwards))
        msg = inbound.message if inbound else None
        log.error(
            "msg_id=%s resource=%s internal error, input dropped",
            msg.msg_id if msg else "-",
            msg.route.resource if msg else "-",
            exc_info=exc,
        )
        try:
            with self.transaction():  # a fresh one: the answer is logged like any other
                handled.entries = self.outbox.stage(handled.result)
        except StoreError:
            handled.entries = self.outbox.unlogged(handled.result.publishes)
        self._send(handled.entries, handled.result)
        released: list[Handled] = []
        self._ack(handled, released)
        self._commit(released)

    def _timer_fired(self, event: TimerEvent) -> None:
        self.internal(functools.partial(self.ops.timer_fired, event))

    def _log(self, msg_id: str, resource: str, result: Result) -> None:
        # DEBUG: at thousands of inputs a second an INFO line each was a tenth of the loop's
        # CPU (docs/performance.md); the counters in the stop line and metrics keep totals.
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "msg_id=%s resource=%s outcome=%s publishes=%d",
                msg_id,
                resource,
                result.outcome,
                len(result.publishes),
            )


def _log_refusal(received: Received, refused: Refused) -> None:
    err = refused.error
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
