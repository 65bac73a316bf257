"""The read API's parts as the service holds them: one object to start, wake after a
commit, and stop; and the gauges that show what it keeps in memory."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..config import KubeConfig
from .api import KubeAPI
from .feed import ChangeFeed
from .reader import StoreReader
from .served import ServedCache


class KubeServing:
    """Reads on connections of their own, a change feed the loop only wakes, and the
    cache of served JSON. Also a ``prometheus_client`` collector of their gauges."""

    def __init__(self, database: str, revision: int, config: KubeConfig) -> None:
        self.reader = StoreReader(database)
        self.feed = ChangeFeed(self.reader, revision)
        self.served = ServedCache(config.cache_bytes)
        self.api = KubeAPI(self.reader, self.feed, self.served)

    def start(self) -> None:
        self.feed.start()

    def committed(self, revision: int) -> None:
        """After committing ``revision``: watches follow the store (never waits on them)."""
        self.feed.notify(revision)

    def stop(self) -> None:
        self.feed.stop()
        self.reader.close()

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "metamanager_kube_watchers",
            "Kubernetes API watch streams open",
            value=self.feed.watchers,
        )
        yield GaugeMetricFamily(
            "metamanager_kube_served_cache_bytes",
            "Bytes of served object JSON kept for the Kubernetes API (at most kube.cache_bytes)",
            value=self.served.size,
        )
        yield GaugeMetricFamily(
            "metamanager_kube_served_cache_objects",
            "Objects whose served JSON is kept for the Kubernetes API",
            value=len(self.served),
        )
        reads = CounterMetricFamily(
            "metamanager_kube_served_reads",
            "Objects served by gets and lists, by whether their JSON was kept (hit) or made",
            labels=["cache"],
        )
        reads.add_metric(["hit"], self.served.hits)
        reads.add_metric(["miss"], self.served.misses)
        yield reads
