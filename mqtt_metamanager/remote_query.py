"""Remote queries: which types the cloud is asked for, asking it, and the queries waiting.

A query may be sent several times (retries); each attempt has its own cloud msg_id, and a
``response`` to any of them completes the query. Unanswered after the last attempt, it is
answered from the store, or 504 when the store has nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import tenacity

from .answered import AnsweredIds
from .envelope import Message, Resource
from .outcome import (
    CLOUD_TIMEOUT,
    Asked,
    Inbound,
    Kind,
    OperationError,
    QueryExpired,
    QueryResend,
    Result,
    Side,
    Timer,
    TimerEvent,
    error_result,
    reply,
)
from .routing import METAMANAGER, Outgoing, Topics
from .store import Store
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
        self._answered = AnsweredIds(answered_memory)
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
            self._answered.add(cloud_id)
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


def _name_of(value: Any) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("metadata"), dict):
        name = value["metadata"].get("name")
        if isinstance(name, str) and name and "/" not in name:
            return name
    return None


class RemoteQueries:
    """Asks the cloud for what the store lacks, and answers the asker when the cloud does,
    or when it does not in time. The waiting queries change with the transaction
    (``pending``: the caller commits or discards them)."""

    def __init__(self, store: Store, topics: Topics, policy: RemoteQueryPolicy) -> None:
        self.store = store
        self.topics = topics
        self.policy = policy
        self.pending = PendingQueries(policy.answered_memory)

    def should_ask(self, inbound: Inbound, resource: Resource, *, has_local: bool) -> bool:
        """Whether a query goes to the cloud (the link being up): SPEC §5, Query."""
        if resource.type not in REMOTE_QUERYABLE:
            return False
        # A cloud asking us is answered from what we have; asking it back makes no sense.
        if inbound.side is Side.CLOUD:
            return False
        return resource.type in ALWAYS_REMOTE or not has_local

    def ask(self, inbound: Inbound, resource: Resource) -> Result:
        return self._send(PendingQuery(inbound, resource))

    def waits_for(self, cloud_id: str) -> bool:
        """Whether a message whose parent is ``cloud_id`` answers a query waiting here."""
        return cloud_id in self.pending

    def answer(self, msg: Message) -> Result | None:
        """The cloud's ``response`` or ``error`` to one of our queries, passed on to the
        asker; None when it answers none of ours."""
        parent = msg.header.parent_msg_id
        pending = self.pending.get(parent)
        if pending is not None:
            return self._complete(pending, msg)
        if self.pending.was_answered(parent):
            # The asker already had its answer (an earlier attempt, a fallback or a 504):
            # it must not get a response it never asked for.
            return Result(outcome=Kind.LATE_ANSWER)
        return None

    def timer_fired(self, event: TimerEvent) -> Result:
        pending = self.pending.get(event.cloud_id)
        if pending is None or pending.cloud_ids[-1] != event.cloud_id:
            return Result(outcome=Kind.TIMER_STALE)  # answered, or a later attempt is out
        if isinstance(event, QueryResend):
            return self._send(pending)
        if pending.attempts <= self.policy.retries:
            delay = self.policy.backoff_before(pending.attempts)
            return Result(timers=[Timer(delay, QueryResend(event.cloud_id))], outcome=Kind.BACKOFF)
        return self._finish_locally(pending)

    def answer_all_locally(self) -> Result:
        """Every query still waiting on the cloud is answered from the store now."""
        result = Result(outcome=Kind.ANSWERED_LOCALLY)
        for pending in self.pending:
            result.extend(self._finish_locally(pending))
        return result

    def _send(self, pending: PendingQuery) -> Result:
        request = pending.request.message
        ask = Message.new(
            source=METAMANAGER,
            group=request.route.group or "resource",
            operation="query",
            resource=request.route.resource,
            content=request.content,
        )
        pending = self.pending.add_attempt(pending, ask.msg_id)
        return Result(
            forwards=[Outgoing.of(self.topics.cloud, ask)],
            timers=[Timer(self.policy.timeout, QueryExpired(ask.msg_id))],
            outcome=Asked(pending.attempts),
        )

    def _finish_locally(self, pending: PendingQuery) -> Result:
        self.pending.forget(pending)
        resource = pending.resource
        if resource.is_list:
            local = [o.value for o in self.store.objects(resource.namespace, resource.type)]
        else:
            obj = self.store.get(resource.key)
            local = [] if obj is None else [obj.value]
        if local:
            answer = reply(pending.request, "response", local)
            return Result(replies=answer, outcome=Kind.REMOTE_FALLBACK)
        text = f"no answer from the cloud for {resource}"
        return error_result(
            pending.request, OperationError(CLOUD_TIMEOUT.code, CLOUD_TIMEOUT.reason, text)
        )

    def _complete(self, pending: PendingQuery, msg: Message) -> Result:
        self.pending.forget(pending)
        if msg.operation == "error":
            answer = reply(pending.request, "error", msg.content)
            return Result(replies=answer, outcome=Kind.REMOTE_ERROR)
        resource = pending.resource
        items = msg.content if isinstance(msg.content, list) else [msg.content]
        objects = [item for item in items if isinstance(item, dict)]
        for obj in objects:
            if not resource.is_list:
                self.store.put(resource, obj)
            elif (name := _name_of(obj)) is not None:
                self.store.put(Resource(resource.namespace, resource.type, name), obj)
        answer = reply(pending.request, "response", objects)
        return Result(replies=answer, outcome=Kind.REMOTE_ANSWER)
