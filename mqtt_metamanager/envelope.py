"""The wire format: KubeEdge beehive ``model.Message`` as JSON, and the resource key.

Everything here validates when it is built, so code downstream never re-checks a field.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from . import jsoncodec

MAX_RESOURCE_LENGTH = 1024
MAX_JSON_DEPTH = 64
RESOURCE_PARTS_LIST = 2
RESOURCE_PARTS_OBJECT = 3


class BadMessage(ValueError):
    """Input that cannot be taken as a message. ``reason`` is a machine word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def now_ms() -> int:
    return int(time.time() * 1000)


def new_msg_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Resource:
    """``<namespace>/<type>[/<name>]``: two parts name a list, three parts one object."""

    namespace: str
    type: str
    name: str | None = None

    @classmethod
    def parse(cls, text: str) -> Resource:
        if len(text) > MAX_RESOURCE_LENGTH:
            raise BadMessage("bad_resource", f"resource longer than {MAX_RESOURCE_LENGTH}")
        parts = text.split("/")
        if len(parts) not in (RESOURCE_PARTS_LIST, RESOURCE_PARTS_OBJECT) or not all(parts):
            raise BadMessage(
                "bad_resource", f"resource {text!r} is not <namespace>/<type>[/<name>]"
            )
        return cls(*parts)

    @property
    def is_list(self) -> bool:
        return self.name is None

    @property
    def key(self) -> str:
        """The DB key: the full resource string."""
        if self.name is None:
            return f"{self.namespace}/{self.type}"
        return f"{self.namespace}/{self.type}/{self.name}"

    def sibling(self, type_: str) -> Resource:
        """The same namespace and name under another type (pod -> podstatus)."""
        return Resource(self.namespace, type_, self.name)

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class JSONText:
    """A JSON value that is already text (stored objects): a message carrying it as its
    content splices it in as it is, never decoding it to encode it again."""

    # UTF-8 pieces, joined once into the encoded message: a megabyte list reply is made
    # as one bytes object, with no str of it to encode again (docs/performance.md, issue 13).
    parts: tuple[bytes, ...]

    @classmethod
    def array(cls, items: Iterable[bytes]) -> JSONText:
        """A JSON array of values that are each JSON text (UTF-8) already."""
        return cls.joined_array(b",".join(items))

    @classmethod
    def joined_array(cls, elements: bytes) -> JSONText:
        """A JSON array of ``elements``: values that are JSON text, comma-separated."""
        return cls((b"[", elements, b"]"))


@dataclass(frozen=True)
class Header:
    msg_id: str
    parent_msg_id: str = ""
    timestamp: int = 0
    resourceversion: str = ""
    sync: bool = False
    type: str = ""


@dataclass(frozen=True)
class Route:
    source: str = ""
    destination: str = ""
    group: str = ""
    operation: str = ""
    resource: str = ""


@dataclass(frozen=True)
class Message:
    header: Header
    route: Route
    content: Any = None

    @property
    def msg_id(self) -> str:
        return self.header.msg_id

    @property
    def operation(self) -> str:
        return self.route.operation

    @property
    def source(self) -> str:
        return self.route.source

    def resource(self) -> Resource:
        """The parsed resource; raises ``BadMessage`` when it is not one."""
        return Resource.parse(self.route.resource)

    @classmethod
    def new(
        cls,
        *,
        source: str,
        group: str,
        operation: str,
        resource: str,
        content: Any,
        parent_msg_id: str = "",
    ) -> Message:
        return cls(
            Header(msg_id=new_msg_id(), parent_msg_id=parent_msg_id, timestamp=now_ms()),
            Route(source=source, group=group, operation=operation, resource=resource),
            content,
        )

    def reply(self, source: str, operation: str, content: Any) -> Message:
        """A reply to this message: new msg_id, parent set, same group and resource."""
        return Message.new(
            source=source,
            group=self.route.group,
            operation=operation,
            resource=self.route.resource,
            content=content,
            parent_msg_id=self.header.msg_id,
        )

    def with_content(self, content: Any, operation: str | None = None) -> Message:
        route = self.route if operation is None else replace(self.route, operation=operation)
        return replace(self, route=route, content=content)

    def to_dict(self) -> dict[str, Any]:
        h, r = self.header, self.route
        return {
            "header": {
                "msg_id": h.msg_id,
                "parent_msg_id": h.parent_msg_id,
                "timestamp": h.timestamp,
                "resourceversion": h.resourceversion,
                "sync": h.sync,
                "type": h.type,
            },
            "route": {
                "source": r.source,
                "destination": r.destination,
                "group": r.group,
                "operation": r.operation,
                "resource": r.resource,
            },
            "content": self.content,
        }

    def encode(self) -> bytes:
        if not isinstance(self.content, JSONText):
            return jsoncodec.dumps(self.to_dict())
        # "content" is the envelope's last key: the rest is encoded, the text goes after it.
        envelope = replace(self, content=None).to_dict()
        del envelope["content"]
        head = jsoncodec.dumps(envelope)[:-1]
        return b"".join((head, b',"content":', *self.content.parts, b"}"))


_HEADER_TYPES: dict[str, type | tuple[type, ...]] = {
    "msg_id": str,
    "parent_msg_id": str,
    "timestamp": int,
    "resourceversion": str,
    "sync": bool,
    "type": str,
}
_ROUTE_FIELDS = ("source", "destination", "group", "operation", "resource")


def _depth_ok(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


# A ``\uD800``-``\uDFFF`` escape: JSON lets it through, SQLite and MQTT cannot take it alone.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _not_json_number(literal: str) -> float:
    raise ValueError(f"{literal} is not a JSON number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"number {literal[:20]} is out of range")
    return value


def _has_lone_surrogate(data: Any) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def parse_json(payload: bytes) -> Any:
    """Decode a JSON payload, refusing invalid UTF-8, bad JSON and deep nesting.

    Not JSON either, though Python's decoder takes them: ``NaN``/``Infinity``, numbers
    that overflow a double, and unpaired surrogate escapes (they cannot be stored or sent).
    orjson refuses all of those itself; what it refuses, or might read inexactly, goes the
    standard library's way below (``jsoncodec``).
    """
    try:
        data = jsoncodec.loads_fast(payload)
    except jsoncodec.NotFast:
        return _parse_slow(payload)
    if not _depth_ok(data, MAX_JSON_DEPTH):
        raise BadMessage("too_deep", f"JSON nested deeper than {MAX_JSON_DEPTH}")
    return data


def _parse_slow(payload: bytes) -> Any:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadMessage("bad_encoding", f"payload is not UTF-8: {exc.reason}") from None
    try:
        data = json.loads(text, parse_constant=_not_json_number, parse_float=_finite_float)
    except RecursionError:
        raise BadMessage("too_deep", f"JSON nested deeper than {MAX_JSON_DEPTH}") from None
    except ValueError as exc:
        raise BadMessage("bad_json", f"payload is not JSON: {exc}") from None
    # Depth first: a document both too deep and with a lone surrogate is too deep, as before.
    if not _depth_ok(data, MAX_JSON_DEPTH):
        raise BadMessage("too_deep", f"JSON nested deeper than {MAX_JSON_DEPTH}")
    # Cheap pre-check first: a full re-encode only when a surrogate escape is present.
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(data):
        raise BadMessage("bad_encoding", "payload has an unpaired UTF-16 surrogate escape")
    return data


def route_source_of(data: Any) -> str:
    """Best-effort sender of a payload that failed validation, so it can be told why."""
    if isinstance(data, dict):
        route = data.get("route")
        if isinstance(route, dict) and isinstance(route.get("source"), str):
            return str(route["source"])
    return ""


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise BadMessage("bad_field", f"{name} must be an object")
    return value


def message_from_dict(data: Any) -> Message:
    """Build a ``Message`` from decoded JSON; unknown fields are ignored."""
    if not isinstance(data, dict):
        raise BadMessage("not_an_object", "message must be a JSON object")
    header = _section(data, "header")
    route = _section(data, "route")
    h: dict[str, Any] = {}
    for name, typ in _HEADER_TYPES.items():
        if name not in header:
            continue
        value = header[name]
        # bool is an int in Python; a timestamp of `true` is still wrong.
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise BadMessage("bad_field", f"header.{name} has the wrong type")
        h[name] = value
    if not h.get("msg_id"):
        raise BadMessage("missing_msg_id", "header.msg_id is required")
    r: dict[str, str] = {}
    for name in _ROUTE_FIELDS:
        if name in route:
            if not isinstance(route[name], str):
                raise BadMessage("bad_field", f"route.{name} must be a string")
            r[name] = route[name]
    return Message(Header(**h), Route(**r), data.get("content"))


def decode(payload: bytes) -> Message:
    return message_from_dict(parse_json(payload))
