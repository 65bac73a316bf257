"""The service's periodic chores on the loop's timers: the pod-status sync, pruning the
dedup memory and the change history (and trimming the C heap with it), counting stored
objects, the MQTT metrics snapshot."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from . import allocator
from .config import Config
from .envelope import now_ms
from .pipeline import Pipeline
from .routing import Outgoing
from .store import StoreError
from .timers import TimerQueue

log = logging.getLogger(__name__)

PRUNE_INTERVAL = 60.0
STORE_SAMPLE_INTERVAL = 15.0  # seconds between counts of the stored objects (metrics)


class Upkeep:
    """Arms each chore once (``start``); each re-arms itself when it runs."""

    def __init__(
        self,
        config: Config,
        pipeline: Pipeline,
        timers: TimerQueue,
        *,
        publish: Callable[[Outgoing, int], Any],
        figures: Callable[[], dict[str, Any]],
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.timers = timers
        self.publish = publish  # straight to the broker, QoS given: for the snapshot only
        self.figures = figures  # the in-memory collections the snapshot adds (issue 13)

    def start(self) -> None:
        self.timers.call_later(self.config.meta.sync.podstatus.interval, self.podstatus_sync)
        self.timers.call_later(PRUNE_INTERVAL, self.prune)
        self.timers.call_later(0, self.sample_store)
        if self.config.metrics.interval:
            self.timers.call_later(self.config.metrics.interval, self.publish_metrics)

    def podstatus_sync(self) -> None:
        ops = self.pipeline.ops
        self.pipeline.internal(ops.podstatus_sync, retry=False)  # the next interval retries
        self.timers.call_later(self.config.meta.sync.podstatus.interval, self.podstatus_sync)

    def prune(self) -> None:
        history = self.config.kube
        store = self.pipeline.outbox.store
        try:
            with self.pipeline.transaction():
                dropped = self.pipeline.ops.prune_dedup()
                store.prune_changes(history.history_changes, history.history_seconds)
        except StoreError as exc:
            log.error("dedup prune failed: %s", exc)
        else:
            if dropped:
                log.info("dedup: forgot %d old msg_ids", dropped)
        # The free pages the last minute's list replies left inside the heap go back to the
        # system (issue 13; docs/performance.md, "Where the memory went").
        allocator.trim()
        self.timers.call_later(PRUNE_INTERVAL, self.prune)

    def sample_store(self) -> None:
        self.timers.call_later(STORE_SAMPLE_INTERVAL, self.sample_store)
        store = self.pipeline.outbox.store
        try:
            with store.atomic():  # a read: nothing of the outbox's to write with it
                self.pipeline.metrics.sample_store(store)
        except StoreError as exc:
            log.error("metrics: cannot count objects: %s", exc)

    def publish_metrics(self) -> None:
        self.timers.call_later(self.config.metrics.interval, self.publish_metrics)
        snapshot = {
            **self.pipeline.metrics.snapshot(),
            **self.figures(),
            "timers": len(self.timers),
            "timestamp": now_ms(),
        }
        topic = self.pipeline.ops.topics.metrics
        out = Outgoing(topic, json.dumps(snapshot).encode(), retain=True)
        self.publish(out, 0)  # a snapshot: the next one replaces a lost one
