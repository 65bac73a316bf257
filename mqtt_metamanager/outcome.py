"""The value types an operation deals in: its input, its result and what came of it, its
error, its timers, the cloud link.

What came of an input is a typed ``Outcome``, never text: a ``Kind`` for the plain cases
and a small dataclass where there are figures (a sync, a remote-query attempt, an error).
Metrics read their fields and logs print them; nothing parses them back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .envelope import Message, now_ms
from .routing import METAMANAGER, Outgoing, ReplyTo


class OperationError(Exception):
    """Ends an operation with an ``error`` reply."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message

    def content(self) -> dict[str, Any]:
        return {"code": self.code, "reason": self.reason, "message": self.message}


class Side(Enum):
    """Where an input comes from, which decides where its forwards go."""

    EDGED = "edged"  # forwards go to the cloud
    CLOUD = "cloud"  # forwards go to edged; queries are answered locally, never asked back
    LOCAL = "local"  # another module, a tool or an operator: forwards go to edged


@dataclass(frozen=True)
class Inbound:
    """A decoded input its sender may send, with where its replies go."""

    message: Message
    reply_to: ReplyTo = field(default_factory=ReplyTo)
    side: Side = Side.LOCAL
    identity: str = ""  # who sent it ("" on the legacy inbox), for logs and dead letters


# -- outcomes ----------------------------------------------------------------------------------


class Kind(Enum):
    """What came of an input or of internal work, where there are no figures to tell. The
    value is the ``outcome`` label of ``metamanager_inputs_total`` (docs/operations.md)."""

    STORED = "stored"
    STORED_OFFLINE = "stored_offline"  # a pod status kept for the sync on reconnect
    NO_DELTA = "no_delta"
    STALE = "stale"
    DELETED = "deleted"
    DUPLICATE = "duplicate"  # a msg_id applied before: answered again, not applied
    LOCAL = "local"  # a query answered from the store
    REMOTE_ANSWER = "remote_answer"
    REMOTE_ERROR = "remote_error"
    REMOTE_FALLBACK = "remote_fallback"  # the cloud did not answer: answered from the store
    LATE_ANSWER = "late_answer"  # a cloud answer for a query answered already: dropped
    FORWARDED = "forwarded"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    UNCHANGED = "unchanged"
    IGNORED = "ignored"  # a connect whose content is neither state
    SYNC_SKIPPED = "sync_skipped"  # the cloud link is down
    # Internal work only (timers, stopping), never an input's own outcome.
    BACKOFF = "backoff"
    TIMER_STALE = "timer_stale"
    ANSWERED_LOCALLY = "answered_locally"

    @property
    def label(self) -> str:
        return self.value

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Synced:
    """A pod-status sync sent: namespaces and statuses sent, orphan statuses purged."""

    namespaces: int
    statuses: int
    dropped: int
    label = "sync"

    def __str__(self) -> str:
        return f"sync namespaces={self.namespaces} statuses={self.statuses} dropped={self.dropped}"


@dataclass(frozen=True)
class Asked:
    """A query sent on to the cloud; ``attempt`` counts from 1."""

    attempt: int
    label = "remote"

    def __str__(self) -> str:
        return f"remote attempt={self.attempt}"


@dataclass(frozen=True)
class Failed:
    """Answered with an ``error`` reply of this code and reason."""

    code: int
    reason: str

    @property
    def label(self) -> str:
        return f"error_{self.code}"

    def __str__(self) -> str:
        return f"error {self.code} {self.reason}"


Outcome = Kind | Synced | Asked | Failed
CLOUD_TIMEOUT = Failed(504, "cloud_timeout")


# -- timers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryExpired:
    """A remote query's attempt ``cloud_id`` had no answer in time."""

    cloud_id: str


@dataclass(frozen=True)
class QueryResend:
    """The backoff before re-sending the remote query whose last attempt is ``cloud_id``."""

    cloud_id: str


TimerEvent = QueryExpired | QueryResend


@dataclass(frozen=True)
class Timer:
    """Call ``Operations.timer_fired(event)`` after ``delay`` seconds."""

    delay: float
    event: TimerEvent


@dataclass
class Result:
    """What one input owes: forwards and other publishes, replies to the asker, snapshots,
    timers."""

    forwards: list[Outgoing] = field(default_factory=list)
    replies: list[Outgoing] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    outcome: Outcome = Kind.UNCHANGED
    # Publishes a later one supersedes (the pod-status sync): sent after the others, never
    # logged in the outbox, so a crash can lose one (the next sync makes up for it).
    snapshots: list[Outgoing] = field(default_factory=list)
    # The outcomes of the results merged into this one (``extend``), for metrics: a link
    # change's sync or its local answers to pending queries.
    merged: list[Outcome] = field(default_factory=list)

    @property
    def publishes(self) -> list[Outgoing]:
        """Everything it sends, in the order it is sent."""
        return [*self.forwards, *self.replies, *self.snapshots]

    @property
    def logged(self) -> list[Outgoing]:
        """What it sends through outbox rows: all but the snapshots."""
        return [*self.forwards, *self.replies]

    def extend(self, other: Result) -> None:
        self.forwards.extend(other.forwards)
        self.replies.extend(other.replies)
        self.timers.extend(other.timers)
        self.snapshots.extend(other.snapshots)
        self.merged.extend([other.outcome, *other.merged])


@dataclass(frozen=True)
class CloudLink:
    connected: bool = False
    since: int = field(default_factory=now_ms)

    def payload(self) -> bytes:
        return json.dumps({"connected": self.connected, "since": self.since}).encode()


def reply(inbound: Inbound, operation: str, content: Any) -> list[Outgoing]:
    """The reply to ``inbound`` (``response`` or ``error``), or none if nobody can be told."""
    out = inbound.reply_to.reply(inbound.message.reply(METAMANAGER, operation, content))
    return [] if out is None else [out]


def error_result(inbound: Inbound, err: OperationError) -> Result:
    """An input answered with ``err``."""
    return Result(
        replies=reply(inbound, "error", err.content()), outcome=Failed(err.code, err.reason)
    )
