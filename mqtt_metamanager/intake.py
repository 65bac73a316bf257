"""Intake: raw MQTT input to a decoded ``Inbound``, or why it cannot be one.

An input that fails validation is answered with ``error`` 400 when its sender can be told
(a readable route source or a response topic), else it goes to the dead-letter topic.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from .envelope import (
    BadMessage,
    Header,
    Message,
    Route,
    message_from_dict,
    now_ms,
    parse_json,
    route_source_of,
)
from .outcome import Inbound
from .routing import ReplyTo

DEADLETTER_PAYLOAD_MAX = 4096
# Past this an oversized payload is not even parsed to find its sender: dead letter.
OVERSIZED_PARSE_MAX = 16 * 1024 * 1024
RESOURCE_FREE_OPS = frozenset({"connect", "publish", "meta-internal-sync"})


@dataclass(frozen=True)
class Rejected:
    """Invalid input; ``inbound`` is a stand-in request to address the error reply to."""

    reason: str
    text: str
    inbound: Inbound | None


def _text(section: Any, name: str) -> str:
    value = section.get(name) if isinstance(section, dict) else None
    return value if isinstance(value, str) else ""


def _stand_in(data: Any, reply_to: ReplyTo) -> Inbound | None:
    """A minimal request carrying what is readable of the sender, or None if nobody is."""
    source = route_source_of(data)
    if not source and not reply_to.response_topic:
        return None
    header = data.get("header") if isinstance(data, dict) else None
    route = data.get("route") if isinstance(data, dict) else None
    request = Message(
        # The reply's parent is the request's msg_id, or empty when it had none.
        Header(msg_id=_text(header, "msg_id")),
        Route(source=source, group=_text(route, "group"), resource=_text(route, "resource")),
    )
    return Inbound(request, reply_to)


def _sender_of_oversized(payload: bytes) -> Any:
    """Decode an oversized payload only to learn whom to tell, and only within reason."""
    if len(payload) > OVERSIZED_PARSE_MAX:
        return None
    try:
        return parse_json(payload)
    except BadMessage:
        return None


MAX_TOPIC_BYTES = 65535


def _publishable(topic: str) -> bool:
    """A topic one may publish to (MQTT 5 §4.7): no wildcards, no NUL, fits the length."""
    return (
        bool(topic)
        and not any(c in topic for c in "+#\x00")
        and len(topic.encode("utf-8", "surrogatepass")) <= MAX_TOPIC_BYTES
    )


def accept(payload: bytes, reply_to: ReplyTo, max_payload: int) -> Inbound | Rejected:
    """Validate one input; nothing downstream checks it again."""
    if reply_to.response_topic and not _publishable(reply_to.response_topic):
        # Publishing the reply there would fail (paho raises) after the commit, and again
        # from the outbox on every start. Tell the sender by its route source, if any.
        text = "the Response Topic is not a topic one can publish to"
        readable = _sender_of_oversized(payload) if len(payload) <= max_payload else None
        return Rejected("bad_response_topic", text, _stand_in(readable, ReplyTo()))
    if len(payload) > max_payload:
        text = f"payload of {len(payload)} bytes is over {max_payload}"
        return Rejected("too_large", text, _stand_in(_sender_of_oversized(payload), reply_to))
    data: Any = None
    try:
        data = parse_json(payload)
        message = message_from_dict(data)
        if message.operation not in RESOURCE_FREE_OPS:
            message.resource()
    except BadMessage as exc:
        return Rejected(exc.reason, exc.message, _stand_in(data, reply_to))
    return Inbound(message, reply_to)


def _text_of(cut: bytes, was_cut: bool) -> str:
    """Decode the kept part of a payload; a character split by the cut is left out."""
    try:
        return cut.decode("utf-8")
    except UnicodeDecodeError as exc:
        if was_cut and exc.start >= len(cut) - 3:
            return cut[: exc.start].decode("utf-8")
        raise


def deadletter_payload(topic: str, payload: bytes, reason: str, text: str) -> bytes:
    cut = payload[:DEADLETTER_PAYLOAD_MAX]
    try:
        body: dict[str, Any] = {"payload": _text_of(cut, len(payload) > len(cut))}
    except UnicodeDecodeError:
        body = {"payload_base64": base64.b64encode(cut).decode()}
    return json.dumps(
        {
            "reason": reason,
            "message": text,
            "topic": topic,
            "size": len(payload),
            "truncated": len(payload) > DEADLETTER_PAYLOAD_MAX,
            "timestamp": now_ms(),
            **body,
        }
    ).encode()
