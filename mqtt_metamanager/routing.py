"""Where messages go: the topic names of SPEC §2 and the reply rules of SPEC §4."""

from __future__ import annotations

from collections.abc import Iterable
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
    """How to answer an input: its MQTT v5 Response Topic, else by route source."""

    response_topic: str | None = None
    correlation: bytes | None = None


class Router:
    """Maps a module name to its inbox, telling edge-local modules from the cloud."""

    def __init__(self, topics: Topics, local_modules: Iterable[str]) -> None:
        self.topics = topics
        self.local = frozenset(local_modules) | {EDGED}

    def is_cloud(self, source: str) -> bool:
        return source not in self.local and source != METAMANAGER

    def topic_for(self, module: str) -> str:
        return self.topics.inbox(module) if module in self.local else self.topics.cloud

    def reply(self, request_source: str, reply_to: ReplyTo, message: Message) -> Outgoing | None:
        """The reply publish, or None when nobody can be told (no source, no topic)."""
        if reply_to.response_topic:
            return Outgoing.of(reply_to.response_topic, message, reply_to.correlation)
        if not request_source or request_source == METAMANAGER:
            return None
        return Outgoing.of(self.topic_for(request_source), message)
