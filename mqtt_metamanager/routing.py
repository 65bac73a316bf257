"""Where messages go: the topic names of SPEC §2 and §11, and one publish."""

from __future__ import annotations

from dataclasses import dataclass

from .envelope import Message

METAMANAGER = "metamanager"
EDGED = "edged"
EDGEHUB = "edgehub"


@dataclass(frozen=True)
class Topics:
    prefix: str = "kubeedge"

    def inbox(self, module: str) -> str:
        return f"{self.prefix}/{module}/in"

    @property
    def metamanager_in(self) -> str:
        return self.inbox(METAMANAGER)

    @property
    def edged_in(self) -> str:
        return self.inbox(EDGED)

    @property
    def cloud(self) -> str:
        """Everything bound for the cloud goes to edgehub (the bridge)."""
        return self.inbox(EDGEHUB)

    @property
    def edgehub_connection(self) -> str:
        return f"{self.prefix}/{EDGEHUB}/connection"

    @property
    def connection(self) -> str:
        return f"{self.prefix}/{METAMANAGER}/connection"

    @property
    def status(self) -> str:
        return f"{self.prefix}/{METAMANAGER}/status"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}/{METAMANAGER}/deadletter"

    def reply_space(self, identity: str) -> str:
        """``P/reply/<identity>``: where a sender's Response Topics must lie (SPEC §11)."""
        return f"{self.prefix}/reply/{identity}"

    @property
    def metrics(self) -> str:
        return f"{self.prefix}/{METAMANAGER}/metrics"


@dataclass(frozen=True)
class Outgoing:
    """One publish the service owes because of an input."""

    topic: str
    payload: bytes
    correlation: bytes | None = None
    retain: bool = False

    @classmethod
    def of(cls, topic: str, message: Message, correlation: bytes | None = None) -> Outgoing:
        return cls(topic, message.encode(), correlation)


@dataclass(frozen=True)
class ReplyTo:
    """Where the reply to an input goes, as its sender's identity allows (SPEC §11): its
    MQTT v5 Response Topic, or the topic its identity is answered on; None: nobody."""

    topic: str | None = None
    correlation: bytes | None = None

    def reply(self, message: Message) -> Outgoing | None:
        """The reply publish, or None when nobody can be told."""
        if self.topic is None:
            return None
        return Outgoing.of(self.topic, message, self.correlation)
