"""MetaSync: the pod statuses the cloud is sent when the link comes up (and periodically)."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Iterator

from .envelope import Message
from .outcome import Result, Synced
from .routing import METAMANAGER, Outgoing, Topics
from .store import Store

POD = "pod"
PODSTATUS = "podstatus"


def podstatus_sync(store: Store, topics: Topics) -> Result:
    """Drop the statuses of vanished pods, send the rest to the cloud, one message per
    namespace. The stored JSON goes out as it is: decoding 10,000 statuses (and a model
    object per row) to encode them again was ~20 MB at the peak (docs/performance.md). Each
    message is written as its rows are read, so no namespace's statuses are held at once.

    The messages are snapshots: the next sync (a minute later, or at the next reconnect)
    supersedes one that a crash lost, so they are not logged in the outbox. Logging them
    wrote each (~600 KB for 10,000 statuses) to the disk every minute, and its copies in
    SQLite were the service's peak memory (issue 10)."""
    result = Result()
    orphans: list[str] = []
    sent = 0

    def owned(rows: Iterable[tuple[str, str, bytes, bool]]) -> Iterator[bytes]:
        for key, _namespace, text, has_pod in rows:
            if has_pod:
                yield text
            else:
                orphans.append(key)

    rows = store.texts_with_owner(PODSTATUS, POD)  # by namespace
    for namespace, group in itertools.groupby(rows, key=operator.itemgetter(1)):
        sync = Message.new(
            source=METAMANAGER,
            group="resource",
            operation="update",
            resource=f"{namespace}/{PODSTATUS}",
            content=None,
        )
        payload, count = sync.encode_with_array(owned(group))
        if count:
            result.snapshots.append(Outgoing(topics.cloud, payload))
            sent += count
    for key in orphans:  # after the read: the rows are not deleted under its cursor
        store.delete(key)
    result.outcome = Synced(len(result.snapshots), sent, len(orphans))
    return result
