"""What the transport tells the service loop, one event at a time on one queue: a link
came up or went down, an input arrived, a publish was acknowledged, or (from a signal
handler or a test) look around. Value types only, so the loop and its tests need no
connection to make or read them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Connected:
    session_present: bool


@dataclass(frozen=True)
class Disconnected:
    reason: str


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    mid: int
    qos: int
    response_topic: str | None
    correlation: bytes | None
    # Which connection it came on: a packet id means nothing on the next one.
    connection: int = 0


@dataclass(frozen=True)
class Published:
    mid: int


@dataclass(frozen=True)
class Wakeup:
    """Put on the queue by signal handlers and tests to make the loop look around."""

    reason: str


Event = Connected | Disconnected | Received | Published | Wakeup
