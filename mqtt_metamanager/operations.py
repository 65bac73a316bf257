"""The operations of SPEC §5: pure logic over the store, no broker.

``Operations.handle`` takes one decoded input and returns a ``Result``: the publishes it
owes (forwards and replies) and any timers to arm. The caller runs it inside a store
transaction and writes the publishes to the outbox in that same transaction.

The writes of one object (insert, update, patch, delete) are ``objectwrites.py``; here are
the rest (query, response, error, connect, sync), the cloud link and what it sets off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .envelope import BadMessage, JSONText, now_ms
from .identity import Refused
from .intake import deadletter_payload
from .objectwrites import OK, ObjectWrites, forward_to_other_side
from .outcome import (
    CloudLink,
    Failed,
    Inbound,
    Kind,
    OperationError,
    Result,
    Timer,
    TimerEvent,
    error_result,
    reply,
)
from .podsync import podstatus_sync
from .remote_query import RemoteQueries, RemoteQueryPolicy
from .routing import Outgoing, Topics
from .store import Store

__all__ = ["Inbound", "OperationError", "Operations", "RemoteQueryPolicy", "Result", "Timer"]

log = logging.getLogger(__name__)

# Every operation of SPEC §5 this module handles (anything else: 400 unsupported_operation).
OPERATIONS = frozenset(
    [
        "insert",
        "update",
        "patch",
        "delete",
        "query",
        "response",
        "error",
        "connect",
        "publish",
        "meta-internal-sync",
    ]
)
MUTATING = frozenset({"insert", "update", "patch", "delete", "response"})
CLOUD_CONNECTED = "cloud_connected"
CLOUD_DISCONNECTED = "cloud_disconnected"


class Operations:
    """Every operation of SPEC §5 over one ``Store``, plus cloud-link and remote-query state.

    The in-memory state (the cloud link, the remote queries in flight) changes only when
    the transaction the operations ran in commits: the caller calls ``commit`` after a
    commit and ``discard`` after a rollback. Until then the changes are staged, and the
    operations of the same transaction see them.
    """

    def __init__(
        self,
        store: Store,
        topics: Topics,
        *,
        remote_query: RemoteQueryPolicy | None = None,
        dedup_window: int = 100_000,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.topics = topics
        self.dedup_window = dedup_window
        self.clock = clock
        self.link = CloudLink(False, clock())  # as committed: what other threads read
        self._staged_link: CloudLink | None = None
        self.queries = RemoteQueries(store, topics, remote_query or RemoteQueryPolicy())
        self.writes = ObjectWrites(store, topics, lambda: self._current_link().connected)
        self._handlers: dict[str, Callable[[Inbound], Result]] = {
            "insert": self.writes.insert,
            "update": self.writes.update,
            "patch": self.writes.patch,
            "delete": self.writes.delete,
            "query": self._query,
            "response": self._response,
            "error": self._response,
            "connect": self._connect,
            "publish": self._connect,
            "meta-internal-sync": self._internal_sync,
        }

    # -- entry points ------------------------------------------------------------------

    def handle(self, inbound: Inbound) -> Result:
        """Apply one input. Store failures propagate (the caller answers 503)."""
        msg = inbound.message
        op = msg.operation
        remember = op in MUTATING and not self.queries.waits_for(msg.header.parent_msg_id)
        if remember:
            replies = self.store.applied_replies(msg.msg_id)
            if replies is not None:
                return Result(replies=replies, outcome=Kind.DUPLICATE)
        handler = self._handlers.get(op)
        try:
            if handler is None:
                raise OperationError(400, "unsupported_operation", f"operation {op!r} unknown")
            result = handler(inbound)
        except BadMessage as exc:
            result = error_result(inbound, OperationError(400, exc.reason, exc.message))
        except OperationError as exc:
            result = error_result(inbound, exc)
        if remember:
            self.store.mark_applied(msg.msg_id, result.replies)
        return result

    def commit(self) -> None:
        """The transaction committed: the link and remote-query changes it made hold."""
        if self._staged_link is not None:
            self.link, self._staged_link = self._staged_link, None
        self.queries.pending.commit()

    def discard(self) -> None:
        """The transaction rolled back: so do its link and remote-query changes, or a retry
        would see a change as done."""
        self._staged_link = None
        self.queries.pending.discard()

    def _current_link(self) -> CloudLink:
        return self.link if self._staged_link is None else self._staged_link

    def refuse(self, refused: Refused, topic: str, payload: bytes) -> Result:
        """An input that is not applied (400, 403, or 500 for one that met a bug): the error
        reply to whoever can be told, and a dead letter (with the raw input) when nobody
        can, or when operators should see it (access refusals)."""
        err = refused.error
        result = Result(outcome=Failed(err.code, err.reason))
        if refused.inbound is not None:
            result = error_result(refused.inbound, err)
        if not result.publishes or refused.notify_operators:
            letter = deadletter_payload(topic, payload, err.reason, err.message, refused.identity)
            result.forwards.append(Outgoing(self.topics.deadletter, letter))
        return result

    def store_unavailable(self, inbound: Inbound, text: str) -> Result:
        return error_result(inbound, OperationError(503, "store_unavailable", text))

    def set_cloud_link(self, connected: bool) -> Result:
        """Follow the cloud link; on a change publish it, and on reconnect sync at once."""
        result = Result(outcome=Kind.UNCHANGED)
        if connected == self._current_link().connected:
            return result
        self._staged_link = CloudLink(connected, self.clock())
        result.forwards.append(self.connection_publish())
        result.outcome = Kind.CONNECTED if connected else Kind.DISCONNECTED
        if connected:
            result.extend(self.podstatus_sync())
        else:
            # Nothing waits on a cloud that is gone: answer in-flight queries locally now.
            result.extend(self.answer_pending_locally())
        return result

    def connection_publish(self) -> Outgoing:
        return Outgoing(self.topics.connection, self._current_link().payload(), retain=True)

    def podstatus_sync(self) -> Result:
        """MetaSync (``podsync.py``), while the cloud link is up."""
        if not self._current_link().connected:
            return Result(outcome=Kind.SYNC_SKIPPED)
        return podstatus_sync(self.store, self.topics)

    def timer_fired(self, event: TimerEvent) -> Result:
        """A timer an earlier result armed (a remote query's) is due."""
        return self.queries.timer_fired(event)

    def answer_pending_locally(self) -> Result:
        """Stopping: every query still waiting on the cloud is answered from the store now."""
        return self.queries.answer_all_locally()

    def prune_dedup(self) -> int:
        return self.store.prune_applied(self.dedup_window)

    @property
    def pending_queries(self) -> int:
        """Queries waiting on the cloud as of the last commit (read from any thread)."""
        return self.queries.pending.committed_count

    @property
    def answered_query_ids(self) -> int:
        """Attempt ids of answered remote queries remembered to drop late cloud answers."""
        return self.queries.pending.answered_count

    # -- operations (the object writes: ``objectwrites.py``) --------------------------------

    def _query(self, inbound: Inbound) -> Result:
        msg = inbound.message
        resource = msg.resource()
        # The stored JSON text goes into the reply as it is: decoding each object only to
        # encode it again was most of a large list's cost (docs/performance.md).
        if resource.is_list:
            local = self.store.value_texts(resource.namespace, resource.type)
        else:
            local = self.store.value_text(resource.key) or b""
        connected = self._current_link().connected
        if connected and self.queries.should_ask(inbound, resource, has_local=bool(local)):
            return self.queries.ask(inbound, resource)
        if not local and not resource.is_list:
            raise OperationError(404, "not_found", f"{resource} is not stored")
        return Result(
            replies=reply(inbound, "response", JSONText.joined_array(local)), outcome=Kind.LOCAL
        )

    def _response(self, inbound: Inbound) -> Result:
        msg = inbound.message
        answered = self.queries.answer(msg)
        if answered is not None:
            return answered
        outcome = Kind.FORWARDED
        if msg.operation == "response" and isinstance(msg.content, dict):
            resource = msg.resource()
            if not resource.is_list:
                self.store.put(resource, msg.content)
                outcome = Kind.STORED
        return Result([forward_to_other_side(self.topics, inbound)], outcome=outcome)

    def _connect(self, inbound: Inbound) -> Result:
        content = inbound.message.content
        if content not in (CLOUD_CONNECTED, CLOUD_DISCONNECTED):
            # No reply: a connect comes from edgehub, and an answer would go to the cloud.
            return Result(outcome=Kind.IGNORED)
        return self.set_cloud_link(content == CLOUD_CONNECTED)

    def _internal_sync(self, inbound: Inbound) -> Result:
        result = self.podstatus_sync()
        result.replies.extend(reply(inbound, "response", OK))
        return result
