"""MetaSync: the pod statuses the cloud is sent when the link comes up (and periodically)."""

from __future__ import annotations

from collections import defaultdict

from .envelope import JSONText, Message
from .outcome import Result, Synced
from .routing import METAMANAGER, Outgoing, Topics
from .store import Store

POD = "pod"
PODSTATUS = "podstatus"


def podstatus_sync(store: Store, topics: Topics) -> Result:
    """Drop the statuses of vanished pods, send the rest to the cloud, one message per
    namespace. The stored JSON goes out as it is: decoding 10,000 statuses (and a model
    object per row) to encode them again was ~20 MB at the peak (docs/performance.md)."""
    result = Result()
    by_namespace: dict[str, list[bytes]] = defaultdict(list)
    orphans = []
    for key, namespace, text, has_pod in store.texts_with_owner(PODSTATUS, POD):
        if has_pod:
            by_namespace[namespace].append(text)
        else:
            orphans.append(key)
    for key in orphans:
        store.delete(key)
    for namespace, statuses in sorted(by_namespace.items()):
        sync = Message.new(
            source=METAMANAGER,
            group="resource",
            operation="update",
            resource=f"{namespace}/{PODSTATUS}",
            content=JSONText.array(statuses),
        )
        result.forwards.append(Outgoing.of(topics.cloud, sync))
    sent = sum(len(batch) for batch in by_namespace.values())
    result.outcome = Synced(len(by_namespace), sent, len(orphans))
    return result
