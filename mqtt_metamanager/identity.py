"""Who sent an input, and what that sender may do (SPEC §11).

MQTT tells a subscriber nothing about who published a message, so the sender's identity is
the last level of the inbox topic it wrote to (``P/metamanager/in/<identity>``), which the
broker's ACL lets only user ``<identity>`` write. This module turns (topic, payload, MQTT
Response Topic) into an ``Inbound`` the operations may act on, or a ``Refused`` that says
why not and whom to tell. Nothing downstream looks at identities again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from . import intake
from .config import USERNAME
from .envelope import Message
from .outcome import Inbound, OperationError, Side
from .routing import EDGED, EDGEHUB, METAMANAGER, ReplyTo, Topics

QUERY = "query"
LINK_STATE_OPS = frozenset({"connect", "publish"})
FORBIDDEN = 403


def valid_identity(name: str) -> bool:
    """A user name Mosquitto can substitute for ``%u`` safely: no ``/``, ``+``, ``#``."""
    return USERNAME.fullmatch(name) is not None


@dataclass(frozen=True)
class Refused:
    """An input that is not applied.

    Args:
        error: the ``error`` reply's content (code, reason, text).
        inbound: a stand-in request to address the reply to, or None when nobody can be
            told (the refusal then goes to the dead-letter topic only).
        identity: the sender's identity ("" on the legacy inbox), for the dead letter.
        notify_operators: also put a line on the dead-letter topic (access refusals).
    """

    error: OperationError
    inbound: Inbound | None
    identity: str
    notify_operators: bool = False


class AccessPolicy:
    """The inbox topics metamanager serves and the rules for each sender."""

    def __init__(
        self,
        topics: Topics,
        local_modules: Iterable[str],
        operators: Iterable[str],
        *,
        legacy_inbox: bool = False,
    ) -> None:
        self.topics = topics
        self.local = frozenset(local_modules) | {EDGED}
        self.operators = frozenset(operators)
        self.legacy_inbox = legacy_inbox
        self._may_write = self.local | self.operators | {EDGEHUB}  # anyone else only queries
        self._inbox_level = f"{topics.metamanager_in}/"

    @property
    def subscriptions(self) -> list[str]:
        """The inbox topic filters: one level per sender, and the legacy inbox if enabled."""
        inboxes = [f"{self.topics.metamanager_in}/+"]
        if self.legacy_inbox:
            inboxes.append(self.topics.metamanager_in)
        return inboxes

    def serves(self, topic: str) -> bool:
        return topic.startswith(self._inbox_level) or (
            self.legacy_inbox and topic == self.topics.metamanager_in
        )

    def admit(
        self,
        topic: str,
        payload: bytes,
        *,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        max_payload: int = 1024 * 1024,
    ) -> Inbound | Refused:
        """Identify the sender of one input, decode it and check what it asks for.

        Args:
            topic: the topic the input arrived on (an inbox, or ``P/edgehub/connection``).
            response_topic, correlation: its MQTT v5 properties, if any.
        """
        decoded = intake.decode(payload, max_payload)
        message = decoded if isinstance(decoded, Message) else decoded.partial
        if topic == self.topics.edgehub_connection:
            # Only edgehub may write there (ACL): the cloud link's retained connect message.
            # It is never answered (an answer would go to the cloud), bad ones are dead
            # letters.
            sender = self._sender(EDGEHUB, message, response_topic, correlation, answer=False)
        elif self.legacy_inbox and topic == self.topics.metamanager_in:
            sender = self._legacy_sender(message, response_topic, correlation)
        else:
            identity = (
                topic[len(self._inbox_level) :] if topic.startswith(self._inbox_level) else ""
            )
            if not valid_identity(identity) or identity == METAMANAGER:
                # No user can have that name, or it is ours: nobody to answer, an operator
                # should look. Metamanager never writes to itself; a reply would loop.
                err = OperationError(403, "bad_identity", f"no sender may write to {topic!r}")
                return Refused(err, None, identity, notify_operators=True)
            sender = self._sender(identity, message, response_topic, correlation)
        if isinstance(sender, Refused):
            return sender
        if not isinstance(decoded, Message):
            error = OperationError(400, decoded.reason, decoded.text)
            return Refused(error, sender.stand_in(message), sender.identity)
        return self.authorize(sender, decoded)

    def authorize(self, sender: Sender, message: Message) -> Inbound | Refused:
        """The rules of SPEC §11 for one decoded message from ``sender``."""
        source = message.source
        if source == METAMANAGER or (sender.identity in self.local and source != sender.identity):
            text = f"{sender.identity or 'the legacy inbox'} may not send as {source!r}"
            return sender.refuse(message, OperationError(403, "source_mismatch", text))
        if sender.query_only and message.operation != QUERY:
            text = f"{sender.identity} may only query, not {message.operation!r}"
            return sender.refuse(message, OperationError(403, "forbidden", text))
        if message.operation in LINK_STATE_OPS and not sender.may_set_link(self.operators):
            # The cloud link's state is edgehub's to tell (SPEC §2), not a local module's.
            text = f"{sender.identity} may not set the cloud link's state"
            return sender.refuse(message, OperationError(403, "forbidden", text))
        side = self._side(sender, message, source)
        return Inbound(message, sender.reply_to, side, sender.identity)

    # -- senders --------------------------------------------------------------------------

    def _sender(
        self,
        identity: str,
        message: Message,
        response_topic: str | None,
        corr: bytes | None,
        *,
        answer: bool = True,
    ) -> Sender | Refused:
        own_replies = self.topics.reply_space(identity)
        default = self._default_reply(identity, corr) if answer else ReplyTo()
        if response_topic and (
            not response_topic.startswith(f"{own_replies}/")
            or not intake.publishable(response_topic)
        ):
            fallback = Sender(identity, default, query_only=False)
            text = f"a Response Topic must lie under {own_replies}/, not {response_topic!r}"
            err = OperationError(403, "forbidden_response_topic", text)
            return fallback.refuse(message, err)
        reply_to = ReplyTo(response_topic, corr) if response_topic else default
        query_only = identity not in self._may_write
        return Sender(identity, reply_to, query_only)

    def _default_reply(self, identity: str, correlation: bytes | None) -> ReplyTo:
        if identity in self.local:
            return ReplyTo(self.topics.inbox(identity), correlation)
        if identity == EDGEHUB:
            return ReplyTo(self.topics.cloud, correlation)
        return ReplyTo(self.topics.reply_space(identity), correlation)

    def _legacy_sender(
        self, message: Message, response_topic: str | None, corr: bytes | None
    ) -> Sender | Refused:
        """SPEC §4: the Response Topic if any, else by route source; anyone may do anything."""
        source = message.source
        by_source = ReplyTo(self._topic_for(source), corr) if source else ReplyTo()
        if source == METAMANAGER:
            by_source = ReplyTo()  # our own inbox: a reply there would come back to us
        if response_topic and not intake.publishable(response_topic):
            # Publishing there would fail after the commit (paho refuses it): tell the
            # sender by its route source instead, if it has one.
            text = "the Response Topic is not a topic one can publish to"
            err = OperationError(400, "bad_response_topic", text)
            return Sender("", by_source, query_only=False).refuse(message, err)
        reply_to = ReplyTo(response_topic, corr) if response_topic else by_source
        return Sender("", reply_to, query_only=False)

    def _topic_for(self, module: str) -> str:
        return self.topics.inbox(module) if module in self.local else self.topics.cloud

    def _side(self, sender: Sender, message: Message, source: str) -> Side:
        """Which side an input comes from decides where its forwards go."""
        if sender.identity == EDGEHUB:
            return Side.CLOUD
        if sender.identity and sender.identity not in self.operators:
            return Side.EDGED if sender.identity == EDGED else Side.LOCAL
        # Operators and the legacy inbox speak for whoever route.source names (SPEC §4).
        if source == EDGED:
            return Side.EDGED
        answered_by_source = not sender.identity and sender.reply_to.topic == self.topics.cloud
        return Side.CLOUD if answered_by_source else Side.LOCAL


@dataclass(frozen=True)
class Sender:
    """An identified sender and where its replies go."""

    identity: str  # "" on the legacy inbox
    reply_to: ReplyTo
    query_only: bool

    def stand_in(self, message: Message) -> Inbound | None:
        """A request to address an error reply to, or None when nobody can be told."""
        if self.reply_to.topic is None:
            return None
        return Inbound(message, self.reply_to, identity=self.identity)

    def may_set_link(self, operators: frozenset[str]) -> bool:
        return self.identity in ("", EDGEHUB) or self.identity in operators

    def refuse(self, message: Message, error: OperationError) -> Refused:
        # Access refusals (403) are security events: operators see each on the dead-letter
        # topic, whoever else is told.
        notify = error.code == FORBIDDEN
        return Refused(error, self.stand_in(message), self.identity, notify_operators=notify)
