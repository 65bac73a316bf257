"""What the service counts (SPEC §12): every counter and histogram in the registry, and the
calls the loop makes to move them.

What an input did is read from the typed fields of its ``Result.outcome`` (``readings.py``).
An input's counts are staged while its transaction runs and added once it commits
(``batch_committed``), so a batch that fails and is retried one input at a time counts each
input once.

Apart from ``metrics.py``, which adds the state read when scraped (the loop, the links, the
process) and the sums reported from both (``totals``, ``snapshot``): a ``ServiceMetrics`` is
its ``Counters`` and more.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from .readings import Reading, operation_label, read

if TYPE_CHECKING:
    from .identity import Refused
    from .outcome import Inbound, Result

# 0.1 ms to 5 s: a local query takes well under a millisecond, an fsync on an SD card can
# take a second.
LATENCY_BUCKETS = tuple(round(m * 10.0**e, 6) for e in range(-4, 1) for m in (1, 2.5, 5))
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 10_000)


@dataclass
class _Staged:
    operation: str
    result: Result
    seconds: float
    refusal: tuple[int, str] | None  # (code, reason) of a refused input


class Counters:
    """Every counter and histogram of SPEC §12 in one registry, and the calls the loop makes
    to move them."""

    def __init__(self, registry: CollectorRegistry, deadletter_topic: str) -> None:
        self.deadletter_topic = deadletter_topic
        self.inputs = Counter(
            "metamanager_inputs",
            "Inputs handled, by operation and outcome (error_NNN: answered with that code)",
            ["operation", "outcome"],
            registry=registry,
        )
        self.handle_seconds = Histogram(
            "metamanager_handle_seconds",
            "Time to apply one input inside its transaction, by operation",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "metamanager_commit_seconds",
            "Time of one batch's transaction, inputs and fsync included",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_inputs = Histogram(
            "metamanager_batch_inputs",
            "Inputs per committed transaction (group commit)",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.dedup_hits = Counter(
            "metamanager_dedup_hits",
            "Redelivered inputs (a msg_id applied before) answered again, not applied again",
            registry=registry,
        )
        self.refusals = Counter(
            "metamanager_refusals",
            "Inputs refused before they were applied, by code (400, 403) and reason",
            ["code", "reason"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "metamanager_dead_letters",
            "Dead letters published, by reason",
            ["reason"],
            registry=registry,
        )
        self.store_failures = Counter(
            "metamanager_store_failures",
            "Transactions the store failed (inputs answered 503 and retried)",
            registry=registry,
        )
        self.internal_errors = Counter(
            "metamanager_internal_errors",
            "Inputs that met a bug: answered 500 or dead-lettered, not applied",
            registry=registry,
        )
        self.unpublishable = Counter(
            "metamanager_unpublishable",
            "Outbox rows the MQTT client refused for good, dropped",
            registry=registry,
        )
        self.disconnects = Counter(
            "metamanager_mqtt_disconnects",
            "Losses of an MQTT link (input or output) to the local broker",
            registry=registry,
        )
        self.cloud_link_changes = Counter(
            "metamanager_cloud_link_changes",
            "Changes of the cloud link, by the state it changed to",
            ["state"],
            registry=registry,
        )
        self.remote_queries = Counter(
            "metamanager_remote_queries",
            "Queries asked of the cloud, by how they ended: cloud (its answer), cloud_error,"
            " local_fallback (timed out, answered from the store), timeout (504)",
            ["result"],
            registry=registry,
        )
        self.remote_attempts = Counter(
            "metamanager_remote_query_attempts",
            "Queries sent to the cloud, retries included",
            registry=registry,
        )
        self.syncs = Counter(
            "metamanager_podstatus_syncs",
            "Pod-status syncs, by result (sent, or skipped while the cloud link is down)",
            ["result"],
            registry=registry,
        )
        self.sync_seconds = Histogram(
            "metamanager_podstatus_sync_seconds",
            "Time of the work that ran a pod-status sync",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.sync_statuses = Counter(
            "metamanager_podstatus_sync_statuses",
            "Pod statuses sent to the cloud by syncs",
            registry=registry,
        )
        self.sync_orphans = Counter(
            "metamanager_podstatus_sync_orphans_purged",
            "Statuses of vanished pods deleted by syncs",
            registry=registry,
        )
        self._staged: list[_Staged] = []
        # Labelled children by label values: ``labels()`` on every input costs more.
        self._inputs: dict[tuple[str, str], Any] = {}
        self._handle: dict[str, Any] = {}

    # -- the loop's calls --------------------------------------------------------------------

    def batch_started(self) -> float:
        """A transaction of inputs begins: forget what a failed one staged."""
        self._staged.clear()
        return time.perf_counter()

    def input_handled(
        self, operation: str, result: Result, started: float, refused: Refused | None = None
    ) -> None:
        """One input applied (or refused) inside the running transaction: staged."""
        refusal = (refused.error.code, refused.error.reason) if refused else None
        seconds = time.perf_counter() - started
        self._staged.append(_Staged(operation, result, seconds, refusal))

    def batch_committed(self, size: int, started: float) -> None:
        """The transaction committed: count its inputs."""
        self.commit_seconds.observe(time.perf_counter() - started)
        self.batch_inputs.observe(size)
        for staged in self._staged:
            self._count_input(staged)
        self._staged.clear()

    def internal_done(self, result: Result, started: float) -> None:
        """Work that is not an input (a timer, a periodic sync) committed."""
        seconds = time.perf_counter() - started
        self._count_effects(read(result), seconds)

    def store_failed(self, inbound: Inbound | None, *, answered: bool) -> None:
        """A transaction failed in the store; ``answered``: its input was told 503."""
        self.store_failures.inc()
        if answered and inbound is not None:
            self._input(operation_label(inbound.message.operation), "error_503").inc()

    def internal_error(self, inbound: Inbound | None, *, dead_letter: bool) -> None:
        """An input met a bug: answered 500 or, with nobody to tell, a dead letter."""
        self.internal_errors.inc()
        operation = operation_label(inbound.message.operation) if inbound else "other"
        self._input(operation, "error_500").inc()
        if dead_letter:
            self.dead_letters.labels("internal_error").inc()

    def link_lost(self) -> None:
        self.disconnects.inc()

    def dropped_unpublishable(self) -> None:
        self.unpublishable.inc()

    # -- counting ------------------------------------------------------------------------------

    def _input(self, operation: str, outcome: str) -> Any:
        child = self._inputs.get((operation, outcome))
        if child is None:
            child = self._inputs[(operation, outcome)] = self.inputs.labels(operation, outcome)
        return child

    def _count_input(self, staged: _Staged) -> None:
        operation = operation_label(staged.operation)
        result = staged.result
        reading = read(result)
        self._input(operation, reading.label).inc()
        handle = self._handle.get(operation)
        if handle is None:
            handle = self._handle[operation] = self.handle_seconds.labels(operation)
        handle.observe(staged.seconds)
        if reading.label == "duplicate":
            self.dedup_hits.inc()
        if staged.refusal is not None:
            code, reason = staged.refusal
            self.refusals.labels(str(code), reason).inc()
            if any(p.topic == self.deadletter_topic for p in result.forwards):
                self.dead_letters.labels(reason).inc()
        if reading.link:
            self.cloud_link_changes.labels(reading.link).inc()
        if reading.has_effects:
            self._count_effects(reading, staged.seconds)

    def _count_effects(self, reading: Reading, seconds: float) -> None:
        """Remote query results and syncs, wherever they happened (an input, a timer, a
        link change); a sync's time is that of the work that ran it."""
        for remote in reading.remote_results:
            self.remote_queries.labels(remote).inc()
        if reading.remote_attempts:
            self.remote_attempts.inc(reading.remote_attempts)
        for sync in reading.syncs:
            self.syncs.labels("skipped" if sync is None else "sent").inc()
            if sync is not None:
                self.sync_seconds.observe(seconds)
                self.sync_statuses.inc(sync.statuses)
                self.sync_orphans.inc(sync.dropped)
