"""The value types an operation deals in: its input, its result, its error, the link."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .envelope import Message, now_ms
from .routing import Outgoing, ReplyTo


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


@dataclass(frozen=True)
class Timer:
    """Call ``Operations.timer_fired(key)`` after ``delay`` seconds."""

    delay: float
    key: str


@dataclass
class Result:
    """What one input owes: forwards and other publishes, replies to the asker, timers."""

    forwards: list[Outgoing] = field(default_factory=list)
    replies: list[Outgoing] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    outcome: str = ""
    # The outcomes of the results merged into this one (``extend``), for metrics: a link
    # change's sync or its local answers to pending queries.
    merged: list[str] = field(default_factory=list)

    @property
    def publishes(self) -> list[Outgoing]:
        return [*self.forwards, *self.replies]

    def extend(self, other: Result) -> None:
        self.forwards.extend(other.forwards)
        self.replies.extend(other.replies)
        self.timers.extend(other.timers)
        self.merged.extend([other.outcome, *other.merged])


@dataclass
class CloudLink:
    connected: bool = False
    since: int = field(default_factory=now_ms)

    def payload(self) -> bytes:
        return json.dumps({"connected": self.connected, "since": self.since}).encode()
