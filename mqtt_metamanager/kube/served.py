"""Each stored object as the API serves it (kind, apiVersion, its revision as
``metadata.resourceVersion``), and a cache of that JSON kept while the object's revision
holds: a list of 1,000 pods decoded and re-encoded every object on every request (most of
its time); from the cache it only joins bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import orjson

from .. import jsoncodec
from .reader import Change, Row, Version
from .resources import Kind

API_VERSION = "v1"
# What one entry costs beyond its JSON: the key, the tuple, the dict's slot (measured
# with sys.getsizeof, rounded up), so the bound holds in memory, not only in text.
ENTRY_OVERHEAD = 200


def dress(row: Row | Change, kind: Kind) -> dict[str, Any]:
    """The stored object as the API serves it: kind, apiVersion, and the store revision of
    its last change as ``metadata.resourceVersion``."""
    value = jsoncodec.loads(row.value)  # exact beyond 64 bits, as orjson alone is not
    obj: dict[str, Any] = value if isinstance(value, dict) else {"value": value}
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    meta.setdefault("name", row.name)
    if kind.namespaced:
        meta.setdefault("namespace", row.namespace)
    meta["resourceVersion"] = str(row.revision)
    return {"kind": kind.kind, "apiVersion": API_VERSION, **obj}


def served_json(row: Row | Change, kind: Kind) -> bytes:
    return jsoncodec.dumps(dress(row, kind))  # of its own size: it is kept (the cache)


def event_line(event: str, obj: Any) -> bytes:
    """One line of a watch stream; ``obj`` may be an ``orjson.Fragment`` of served JSON.
    (Adding the newline copies it to its own size, as ``jsoncodec.dumps`` does: lines wait
    in queues.)"""
    return orjson.dumps({"type": event, "object": obj}) + b"\n"


class ServedCache:
    """The served JSON of recently read objects, by key, least recently read dropped first
    once ``max_bytes`` would be passed. An entry is used only for the revision it was made
    from, so a changed object is dressed anew and nothing needs invalidating. Shared by the
    request threads."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def cached(self, versions: list[Version]) -> list[bytes | None]:
        """The served JSON of each (key, revision) where it is kept, else None (counted as
        a miss: the caller reads the row and asks ``text``). One lock for all of them."""
        out: list[bytes | None] = []
        entries = self._entries
        with self._lock:
            for key, revision in versions:
                found = entries.get(key)
                if found is None or found[0] != revision:
                    out.append(None)
                    continue
                entries.move_to_end(key)
                out.append(found[1])
            found_count = sum(1 for text in out if text is not None)
            self.hits += found_count
            self.misses += len(out) - found_count
        return out

    def text(self, row: Row, kind: Kind, *, looked_up: bool = False) -> bytes:
        """``row`` as the API serves it, encoded; kept for the next read. ``looked_up``:
        the caller found it missing by ``cached`` already."""
        if not looked_up:
            [found] = self.cached([(row.key, row.revision)])
            if found is not None:
                return found
        text = served_json(row, kind)
        self._keep(row.key, row.revision, text)
        return text

    @property
    def size(self) -> int:
        """Bytes held, overhead included (at most ``max_bytes``)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def _keep(self, key: str, revision: int, text: bytes) -> None:
        cost = len(text) + len(key) + ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old[1]) + len(key) + ENTRY_OVERHEAD
            while self._entries and self._bytes + cost > self.max_bytes:
                dropped_key, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= len(dropped) + len(dropped_key) + ENTRY_OVERHEAD
            self._entries[key] = (revision, text)
            self._bytes += cost
