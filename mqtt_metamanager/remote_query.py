"""Remote queries: which types the cloud is asked for, and the queries waiting on it.

A query may be sent several times (retries); each attempt has its own cloud msg_id, and a
``response`` to any of them completes the query.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

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


@dataclass(frozen=True)
class PendingQuery:
    """A query sent on to the cloud, waiting for its ``response``; one cloud msg_id per
    attempt, the latest last."""

    request: Inbound
    resource: Resource
    cloud_ids: tuple[str, ...] = ()

    @property
    def attempts(self) -> int:
        return len(self.cloud_ids)


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
    """The queries waiting on the cloud, found by the msg_id of any of their attempts.

    Changes are staged while a transaction runs and take effect only when it commits
    (``commit``); a rolled-back transaction's are dropped (``discard``). Nothing is copied
    to be undone: reads see the committed state with the staged changes over it.
    """

    def __init__(self, answered_memory: int = ANSWERED_MEMORY) -> None:
        self._by_cloud_id: dict[str, PendingQuery] = {}
        # Attempt ids of queries already answered, newest last, to recognise late answers.
        self._answered: OrderedDict[str, None] = OrderedDict()
        self._answered_memory = answered_memory
        self._count = 0  # committed queries waiting; read by metrics from another thread
        # Staged: a cloud id's new query, or None once answered; ids answered.
        self._staged: dict[str, PendingQuery | None] = {}
        self._staged_answered: list[str] = []

    def add_attempt(self, pending: PendingQuery, cloud_id: str) -> PendingQuery:
        """Stage one more attempt of ``pending``; returns the query with it."""
        query = replace(pending, cloud_ids=(*pending.cloud_ids, cloud_id))
        for known in query.cloud_ids:
            self._staged[known] = query
        return query

    def get(self, cloud_id: str) -> PendingQuery | None:
        if self._staged and cloud_id in self._staged:
            return self._staged[cloud_id]
        return self._by_cloud_id.get(cloud_id)

    def __contains__(self, cloud_id: str) -> bool:
        return self.get(cloud_id) is not None

    def forget(self, pending: PendingQuery) -> None:
        """Stage that the query is answered: dropped, its attempt ids remembered a while."""
        for cloud_id in pending.cloud_ids:
            self._staged[cloud_id] = None
        self._staged_answered.extend(pending.cloud_ids)

    def was_answered(self, cloud_id: str) -> bool:
        return cloud_id in self._answered or cloud_id in self._staged_answered

    def commit(self) -> None:
        """The transaction committed: its staged changes take effect."""
        if not self._staged:
            return
        for cloud_id, query in self._staged.items():
            if query is None:
                self._by_cloud_id.pop(cloud_id, None)
            else:
                self._by_cloud_id[cloud_id] = query
        for cloud_id in self._staged_answered:
            self._answered[cloud_id] = None
        while len(self._answered) > self._answered_memory:
            self._answered.popitem(last=False)
        self.discard()
        self._count = len({id(p) for p in self._by_cloud_id.values()})

    def discard(self) -> None:
        """The transaction rolled back: its staged changes are dropped."""
        self._staged = {}
        self._staged_answered = []

    @property
    def answered_count(self) -> int:
        return len(self._answered)

    @property
    def committed_count(self) -> int:
        """Queries waiting as of the last commit (safe to read from any thread)."""
        return self._count

    def __iter__(self) -> Iterator[PendingQuery]:
        """Each waiting query once, staged changes included (a snapshot: forgetting while
        iterating is fine)."""
        view: dict[str, PendingQuery | None] = {**self._by_cloud_id, **self._staged}
        return iter({id(p): p for p in view.values() if p is not None}.values())

    def __len__(self) -> int:
        return sum(1 for _ in self)
