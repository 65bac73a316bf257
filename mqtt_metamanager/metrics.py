"""The service's numbers: one ``prometheus_client`` registry that the message loop feeds.

It is the one source of numbers: ``/metrics`` serves it (SPEC §12), and the retained MQTT
snapshot and the stop line are summed from it (``totals``, ``snapshot``).

What happened is counted, when the transaction it happened in commits (``counters.py``).
What is a state rather than a count (the outbox, the links, held inputs, stored objects)
is read when scraped, from plain attributes that the loop and paho's threads keep
(``loopstate.py``): a scrape never waits on the loop.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    ProcessCollector,
    disable_created_metrics,
)

from .counters import Counters
from .loopstate import MAX_TYPES, STOPPING, LiveState, LoopState, Watched

if TYPE_CHECKING:
    from .operations import Operations
    from .store import Store
    from .transport import Transport


class ServiceMetrics(Counters):
    """Every metric of SPEC §12 in one registry: the counters (``Counters``), the state the
    loop reports for scrapes to read, and the sums of both."""

    def __init__(self, deadletter_topic: str) -> None:
        # One series less per counter and histogram: the _created timestamps are noise here.
        disable_created_metrics()
        self.registry = r = CollectorRegistry()
        self.state = LoopState()
        self.watched: Watched | None = None
        super().__init__(r, deadletter_topic)
        r.register(LiveState(self.state, lambda: self.watched))
        ProcessCollector(registry=r)

    def watch(self, store: Store, transport: Transport, ops: Operations) -> None:
        self.watched = Watched(store, transport, ops)

    # -- the loop's calls --------------------------------------------------------------------

    def heartbeat(self, outbox_rows: int, outbox_oldest_at: float | None) -> None:
        """Every turn of the loop: it is alive, and where the outbox stands."""
        self.state.turned(outbox_rows, outbox_oldest_at)

    def stopping(self) -> None:
        self.state.phase = STOPPING

    def sample_store(self, store: Store) -> None:
        """Count the stored objects by type (a periodic query on the loop's thread)."""
        counts = sorted(store.count_by_type().items(), key=lambda kv: (-kv[1], kv[0]))
        shown = dict(counts[:MAX_TYPES])
        rest = sum(n for _t, n in counts[MAX_TYPES:])
        if rest:
            shown["other"] = shown.get("other", 0) + rest
        self.state.objects_by_type = shown

    # -- sums for the stop line and the MQTT snapshot -----------------------------------------

    def totals(self) -> dict[str, int]:
        """Counts by outcome and by kind of trouble, summed over operations and reasons."""
        out: Tally[str] = Tally()
        for sample in _samples(self.inputs):
            out[sample.labels["outcome"]] += int(sample.value)
        for sample in _samples(self.refusals):
            out["rejected" if sample.labels["code"] == "400" else "refused"] += int(sample.value)
        for name, metric in (
            ("dead_letters", self.dead_letters),
            ("dedup_hits", self.dedup_hits),
            ("store_failures", self.store_failures),
            ("internal_errors", self.internal_errors),
            ("unpublishable", self.unpublishable),
            ("disconnects", self.disconnects),
        ):
            out[name] += int(sum(s.value for s in _samples(metric)))
        return {key: n for key, n in sorted(out.items()) if n}

    def snapshot(self) -> dict[str, Any]:
        """The retained MQTT metrics snapshot: ``totals`` plus the present state."""
        state, watched = self.state, self._watched()
        oldest = state.outbox_oldest_at
        snapshot: dict[str, Any] = {
            **self.totals(),
            "objects": sum(state.objects_by_type.values()),
            "outbox_rows": state.outbox_rows,
            "outbox_oldest_age_seconds": 0.0 if oldest is None else time.monotonic() - oldest,
            "held_inputs": watched.transport.window.held,
            "max_held_inputs": watched.transport.window.max_held,
            "input_window": watched.transport.window.size,
            "held_input_bytes": watched.transport.window.held_bytes,
            "remote_queries": watched.ops.pending_queries,
            "cloud_connected": watched.ops.link.connected,
        }
        return snapshot

    def _watched(self) -> Watched:
        if self.watched is None:
            raise RuntimeError("ServiceMetrics.watch was not called")
        return self.watched


def _samples(metric: Counter) -> Iterable[Any]:
    """A counter's ``_total`` samples (not its ``_created`` ones, if enabled)."""
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                yield sample
