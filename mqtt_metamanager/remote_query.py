"""Remote queries: which types the cloud is asked for, and the queries waiting on it.

A query may be sent several times (retries); each attempt has its own cloud msg_id, and a
``response`` to any of them completes the query.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import tenacity

from .envelope import Resource
from .outcome import Inbound
from .timers import backoff_delay

REMOTE_QUERYABLE = frozenset(
    {
        "configmap",
        "secret",
        "endpoints",
        "persistentvolume",
        "persistentvolumeclaim",
        "volumeattachment",
        "node",
        "serviceaccounttoken",
    }
)
ALWAYS_REMOTE = frozenset({"node", "volumeattachment"})
ANSWERED_MEMORY = 10_000


@dataclass
class PendingQuery:
    """A query sent on to the cloud, waiting for its ``response``."""

    request: Inbound
    resource: Resource
    attempts: int = 0
    cloud_ids: list[str] = field(default_factory=list)

    def __deepcopy__(self, memo: dict[int, Any]) -> PendingQuery:
        # The request and resource are immutable: only the attempts are state to restore.
        return PendingQuery(self.request, self.resource, self.attempts, list(self.cloud_ids))


@dataclass(frozen=True)
class RemoteQueryPolicy:
    timeout: float = 5.0
    retries: int = 2
    # How many answered attempt ids are remembered to drop late cloud answers.
    answered_memory: int = ANSWERED_MEMORY
    backoff: tenacity.wait.wait_base = field(
        default_factory=lambda: tenacity.wait_exponential(multiplier=0.2, max=5)
    )

    def backoff_before(self, attempt: int) -> float:
        """Seconds to wait before re-sending attempt number ``attempt`` (1-based)."""
        return backoff_delay(self.backoff, attempt)


class PendingQueries:
    """The queries waiting on the cloud, found by the msg_id of any of their attempts."""

    def __init__(self, answered_memory: int = ANSWERED_MEMORY) -> None:
        self._by_cloud_id: dict[str, PendingQuery] = {}
        # Attempt ids of queries already answered, newest last, to recognise late answers.
        self._answered: OrderedDict[str, None] = OrderedDict()
        self._answered_memory = answered_memory

    def __deepcopy__(self, memo: dict[int, Any]) -> PendingQueries:
        """A copy to restore after a rollback. The answered ids are shared, not copied:
        copying 10,000 of them took ~13 ms per transaction once the memory was full
        (issue 13), and an id left there by a rolled-back answer is harmless, since a
        query still pending is looked up before the answered ids are."""
        clone = PendingQueries(self._answered_memory)
        clone._by_cloud_id = copy.deepcopy(self._by_cloud_id, memo)
        clone._answered = self._answered
        return clone

    def add_attempt(self, pending: PendingQuery, cloud_id: str) -> None:
        pending.attempts += 1
        pending.cloud_ids.append(cloud_id)
        self._by_cloud_id[cloud_id] = pending

    def get(self, cloud_id: str) -> PendingQuery | None:
        return self._by_cloud_id.get(cloud_id)

    def __contains__(self, cloud_id: str) -> bool:
        return cloud_id in self._by_cloud_id

    def forget(self, pending: PendingQuery) -> None:
        """The query is answered: drop it, remembering its attempt ids for a while."""
        for cloud_id in pending.cloud_ids:
            self._by_cloud_id.pop(cloud_id, None)
            self._answered[cloud_id] = None
        while len(self._answered) > self._answered_memory:
            self._answered.popitem(last=False)

    def was_answered(self, cloud_id: str) -> bool:
        return cloud_id in self._answered

    @property
    def answered_count(self) -> int:
        return len(self._answered)

    def __iter__(self) -> Iterator[PendingQuery]:
        """Each waiting query once (a snapshot: forgetting while iterating is fine)."""
        return iter({id(p): p for p in self._by_cloud_id.values()}.values())

    def __len__(self) -> int:
        return len({id(p) for p in self._by_cloud_id.values()})
