"""Intake: a raw MQTT payload to a validated ``Message``, or why it cannot be one; and the
dead-letter line for input nobody can be told about."""

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
    route_source_of,
)
from .jsoninput import parse_json

BAD_REQUEST = 400  # the code of every error this module finds
DEADLETTER_PAYLOAD_MAX = 4096
# Past this an oversized payload is not even parsed to find its sender: dead letter.
OVERSIZED_PARSE_MAX = 16 * 1024 * 1024
RESOURCE_FREE_OPS = frozenset({"connect", "publish", "meta-internal-sync"})


@dataclass(frozen=True)
class Undecodable:
    """Input that is not a valid message; ``partial`` holds what is readable of it (msg_id,
    source, group, resource) so its sender can be told why."""

    reason: str
    text: str
    partial: Message


def _text(section: Any, name: str) -> str:
    value = section.get(name) if isinstance(section, dict) else None
    return value if isinstance(value, str) else ""


def _partial(data: Any) -> Message:
    """A minimal message carrying what is readable of an invalid one."""
    header = data.get("header") if isinstance(data, dict) else None
    route = data.get("route") if isinstance(data, dict) else None
    return Message(
        # The reply's parent is the request's msg_id, or empty when it had none.
        Header(msg_id=_text(header, "msg_id")),
        Route(
            source=route_source_of(data),
            group=_text(route, "group"),
            resource=_text(route, "resource"),
        ),
    )


def _sender_of_oversized(payload: bytes) -> Any:
    """Decode an oversized payload only to learn whom to tell, and only within reason."""
    if len(payload) > OVERSIZED_PARSE_MAX:
        return None
    try:
        return parse_json(payload)
    except BadMessage:
        return None


MAX_TOPIC_BYTES = 65535


def publishable(topic: str) -> bool:
    """A topic one may publish to (MQTT 5 §4.7): no wildcards, no NUL, fits the length."""
    return (
        bool(topic)
        and not any(c in topic for c in "+#\x00")
        and len(topic.encode("utf-8", "surrogatepass")) <= MAX_TOPIC_BYTES
    )


def decode(payload: bytes, max_payload: int) -> Message | Undecodable:
    """Validate one input; nothing downstream checks it again."""
    if len(payload) > max_payload:
        text = f"payload of {len(payload)} bytes is over {max_payload}"
        return Undecodable("too_large", text, _partial(_sender_of_oversized(payload)))
    data: Any = None
    try:
        data = parse_json(payload)
        message = message_from_dict(data)
        if message.operation not in RESOURCE_FREE_OPS:
            message.resource()
    except BadMessage as exc:
        return Undecodable(exc.reason, exc.message, _partial(data))
    return message


def _text_of(cut: bytes, was_cut: bool) -> str:
    """Decode the kept part of a payload; a character split by the cut is left out."""
    try:
        return cut.decode("utf-8")
    except UnicodeDecodeError as exc:
        if was_cut and exc.start >= len(cut) - 3:
            return cut[: exc.start].decode("utf-8")
        raise


def deadletter_payload(
    topic: str, payload: bytes, reason: str, text: str, identity: str = ""
) -> bytes:
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
            "identity": identity,
            "size": len(payload),
            "truncated": len(payload) > DEADLETTER_PAYLOAD_MAX,
            "timestamp": now_ms(),
            **body,
        }
    ).encode()
