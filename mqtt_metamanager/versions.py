"""Resource versions: which of two versions of an object is newer, and when two values are
the same JSON. Kubernetes resource versions are opaque strings; KubeEdge's (and ours) are
decimal numbers, compared as numbers where both are (SPEC §5)."""

from __future__ import annotations

from typing import Any

from . import jsoncodec

# Kubernetes resource versions are uint64; past this a "number" is not one (and int() of a
# string over 4300 digits raises).
MAX_RV_DIGITS = 20


def rv_number(rv: Any) -> int | None:
    if isinstance(rv, int) and not isinstance(rv, bool):
        return rv
    # isascii: "²".isdigit() is True but int("²") fails.
    if isinstance(rv, str) and len(rv) <= MAX_RV_DIGITS and rv.isascii() and rv.isdigit():
        return int(rv)
    return None


def numeric_rv(value: Any) -> int | None:
    if isinstance(value, dict) and isinstance(value.get("metadata"), dict):
        return rv_number(value["metadata"].get("resourceVersion"))
    return None


def json_equal(a: Any, b: Any) -> bool:
    """Equal as JSON: unlike Python's ==, true is not 1 and 1.0 is not 1."""
    return jsoncodec.dumps(a, sort_keys=True) == jsoncodec.dumps(b, sort_keys=True)


def is_stale(new: Any, stored: Any) -> bool:
    new_rv, old_rv = numeric_rv(new), numeric_rv(stored)
    return new_rv is not None and old_rv is not None and new_rv < old_rv


def resource_version_of(value: Any) -> str:
    """``metadata.resourceVersion`` as the store keeps it: text, "" when there is none."""
    if isinstance(value, dict):
        meta = value.get("metadata")
        if isinstance(meta, dict):
            rv = meta.get("resourceVersion")
            if isinstance(rv, str | int) and not isinstance(rv, bool):
                return str(rv)
    return ""


def stored_version(text: str | None) -> int | None:
    """A stored resourceVersion as the number the staleness check compares, if it is one."""
    if text is not None and len(text) <= MAX_RV_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None
