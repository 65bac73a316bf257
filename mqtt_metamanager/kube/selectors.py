"""Label and field selectors, as Kubernetes clients send them (``?labelSelector=``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A label key: an optional DNS prefix and a slash, then a name (Kubernetes' own rule,
# loosely: the store holds whatever the cloud sent; a selector only has to be readable).
_KEY = r"[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*$")
_EQUALITY = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})\s*$")
_EXISTS = re.compile(rf"^\s*(?P<neg>!?)\s*(?P<key>{_KEY})\s*$")
FIELDS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "metadata.name": lambda o: _get(o, "metadata", "name"),
    "metadata.namespace": lambda o: _get(o, "metadata", "namespace"),
    "spec.nodeName": lambda o: _get(o, "spec", "nodeName"),
    "status.phase": lambda o: _get(o, "status", "phase"),
}

Predicate = Callable[[dict[str, Any]], bool]


class SelectorError(ValueError):
    """A selector that cannot be read; the message says which part (a 400 Status)."""


def _get(obj: dict[str, Any], section: str, name: str) -> str:
    part = obj.get(section)
    value = part.get(name) if isinstance(part, dict) else None
    return value if isinstance(value, str) else ""


def _labels(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    return labels if isinstance(labels, dict) else {}


def _requirements(text: str) -> list[str]:
    """Split on the commas that are not inside ``( )``."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0 or depth > 1:
            raise SelectorError(f"unbalanced parentheses in {text!r}")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise SelectorError(f"unbalanced parentheses in {text!r}")
    parts.append(current)
    return [p for p in parts if p.strip()] if text.strip() else []


def _label_requirement(text: str) -> Predicate:
    if m := _SET.match(text):
        key, values = m["key"], {v.strip() for v in m["values"].split(",") if v.strip()}
        if not values:
            raise SelectorError(f"{text.strip()!r}: a set needs at least one value")
        if m["op"] == "in":
            return lambda o: key in _labels(o) and str(_labels(o)[key]) in values
        return lambda o: key not in _labels(o) or str(_labels(o)[key]) not in values
    if m := _EQUALITY.match(text):
        key, value = m["key"], m["value"]
        if m["op"] == "!=":
            return lambda o: str(_labels(o).get(key)) != value if key in _labels(o) else True
        return lambda o: key in _labels(o) and str(_labels(o)[key]) == value
    if m := _EXISTS.match(text):
        key = m["key"]
        if m["neg"]:
            return lambda o: key not in _labels(o)
        return lambda o: key in _labels(o)
    raise SelectorError(f"unable to parse requirement: {text.strip()!r}")


def _field_requirement(text: str) -> Predicate:
    m = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", text)
    if m is None:
        raise SelectorError(f"invalid field selector: {text.strip()!r}")
    field, op, value = m.groups()
    if field not in FIELDS:
        raise SelectorError(f'field label not supported: "{field}"')
    read = FIELDS[field]
    if op == "!=":
        return lambda o: read(o) != value
    return lambda o: read(o) == value


@dataclass(frozen=True)
class Selector:
    """Both selectors of one request: an object must match every requirement."""

    requirements: tuple[Predicate, ...] = ()

    @classmethod
    def parse(cls, labels: str = "", fields: str = "") -> Selector:
        reqs = [_label_requirement(r) for r in _requirements(labels)]
        reqs += [_field_requirement(r) for r in fields.split(",") if r.strip()]
        return cls(tuple(reqs))

    @property
    def everything(self) -> bool:
        """No requirement: every object matches (and need not be decoded to know it)."""
        return not self.requirements

    def matches(self, obj: Any) -> bool:
        return isinstance(obj, dict) and all(req(obj) for req in self.requirements)
