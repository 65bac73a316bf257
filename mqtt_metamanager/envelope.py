"""The wire format: KubeEdge beehive ``model.Message`` as JSON, and the resource key.

Everything here validates when it is built, so code downstream never re-checks a field.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from . import jsoncodec
from .jsoninput import BadMessage as BadMessage  # the error of every message check
from .jsoninput import parse_json

MAX_RESOURCE_LENGTH = 1024
RESOURCE_PARTS_LIST = 2
RESOURCE_PARTS_OBJECT = 3


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
        return b"".join((self._head(), *self.content.parts, b"}"))

    def encode_with_array(self, items: Iterable[bytes]) -> tuple[bytes, int]:
        """This message encoded with the JSON array of ``items`` (each JSON text, UTF-8) as
        its content, and how many items it has. The items are written as they come, so
        they need never be held at once: a sync of 10,000 statuses was the list of them,
        their joined array and the message, alive together (docs/performance.md)."""
        out = io.BytesIO()
        out.write(self._head())
        out.write(b"[")
        count = 0
        for item in items:
            if count:
                out.write(b",")
            out.write(item)
            count += 1
        out.write(b"]}")
        return out.getvalue(), count  # the buffer itself, not a copy of it

    def _head(self) -> bytes:
        """The envelope up to its content's value: ``{...,"content":``. "content" is the
        envelope's last key, so the content's text goes after this as it is."""
        envelope = replace(self, content=None).to_dict()
        del envelope["content"]
        return jsoncodec.dumps(envelope)[:-1] + b',"content":'


_HEADER_TYPES: dict[str, type | tuple[type, ...]] = {
    "msg_id": str,
    "parent_msg_id": str,
    "timestamp": int,
    "resourceversion": str,
    "sync": bool,
    "type": str,
}
_ROUTE_FIELDS = ("source", "destination", "group", "operation", "resource")


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
