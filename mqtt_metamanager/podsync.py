"""MetaSync: the pod statuses the cloud is sent when the link comes up (and periodically)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .envelope import Message
from .outcome import Result, Synced
from .routing import METAMANAGER, Outgoing, Topics
from .store import Store

POD = "pod"
PODSTATUS = "podstatus"


def podstatus_sync(store: Store, topics: Topics) -> Result:
    """Drop the statuses of vanished pods, send the rest to the cloud, one message per
    namespace."""
    result = Result()
    by_namespace: dict[str, list[Any]] = defaultdict(list)
    dropped = 0
    for record in store.objects(type_=PODSTATUS):
        if store.get(f"{record.namespace}/{POD}/{record.name}") is None:
            store.delete(record.key)
            dropped += 1
        else:
            by_namespace[record.namespace].append(record.value)
    for namespace, statuses in sorted(by_namespace.items()):
        sync = Message.new(
            source=METAMANAGER,
            group="resource",
            operation="update",
            resource=f"{namespace}/{PODSTATUS}",
            content=statuses,
        )
        result.forwards.append(Outgoing.of(topics.cloud, sync))
    sent = sum(len(batch) for batch in by_namespace.values())
    result.outcome = Synced(len(by_namespace), sent, dropped)
    return result
