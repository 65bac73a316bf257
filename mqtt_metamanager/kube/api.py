"""The read API's requests: discovery, get, list (selectors, paging) and watch, answered
from the store with Kubernetes JSON; errors are ``Status`` objects.

Every answer is built from one ``Snapshot``; its revision is the list's (and every
object's) ``resourceVersion``, the store revision of SPEC §12.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson

from .. import jsoncodec
from .feed import ChangeFeed
from .reader import Change, Row, Snapshot, StoreReader
from .resources import BY_PLURAL, KINDS, Kind
from .selectors import Selector, SelectorError
from .served import API_VERSION, ServedCache, dress, event_line, served_json

MAX_TIMEOUT = 3600  # seconds a watch may last before the client starts a new one
BOOKMARK_EVERY = 10.0  # seconds between bookmarks, when asked for
WRITE_BATCH = 64  # queued events sent in one write
COALESCE = 0.01  # seconds a watcher waits for more of a burst before writing
# Rows read at a time while a selector leaves fewer items than a page asks for.
MIN_FETCH = 100


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes  # JSON


def answer(code: int, data: Any) -> Answer:
    return Answer(code, orjson.dumps(data))


@dataclass(frozen=True)
class Watch:
    """A watch stream: lines of JSON, ended by the server (timeout, drop) or the client."""

    lines: Iterator[bytes]


def status(code: int, reason: str, message: str) -> Answer:
    return answer(
        code,
        {
            "kind": "Status",
            "apiVersion": API_VERSION,
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        },
    )


def not_found(what: str) -> Answer:
    return status(404, "NotFound", f"{what} not found")


def bad_request(message: str) -> Answer:
    return status(400, "BadRequest", message)


def method_not_allowed(method: str) -> Answer:
    return status(405, "MethodNotAllowed", f"{method} is not allowed: this API is read-only")


def discovery(path: str) -> Answer | None:
    if path == "/api":
        return answer(200, {"kind": "APIVersions", "versions": [API_VERSION],
                            "serverAddressByClientCIDRs": []})  # fmt: skip
    if path == "/api/v1":
        resources = [k.api_resource() for k in KINDS]
        return answer(200, {"kind": "APIResourceList", "groupVersion": API_VERSION,
                            "resources": resources})  # fmt: skip
    if path == "/apis":
        return answer(200, {"kind": "APIGroupList", "apiVersion": API_VERSION, "groups": []})
    if path == "/version":
        return answer(200, {"major": "1", "minor": "29", "gitVersion": "v1.29.0-mqtt-metamanager",
                            "platform": "linux/amd64"})  # fmt: skip
    return None


@dataclass(frozen=True)
class Target:
    kind: Kind
    namespace: str | None  # None: every namespace (or a cluster-scoped kind)
    name: str | None


def target_of(path: str) -> Target | Answer:
    parts = [p for p in path.split("/") if p]
    if parts[:2] != ["api", "v1"]:
        return not_found(f"the path {path!r}")
    rest = parts[2:]
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not 1 <= len(rest) <= 2 or rest[0] not in BY_PLURAL:
        return not_found(f"the server could not find the requested resource ({path})")
    kind = BY_PLURAL[rest[0]]
    if namespace is not None and not kind.namespaced:
        return not_found(f"the server could not find the requested resource ({path})")
    return Target(kind, namespace, rest[1] if len(rest) == 2 else None)


class KubeAPI:
    """Answers GETs under /api and /apis from the store; the HTTP layer only carries them."""

    def __init__(self, reader: StoreReader, feed: ChangeFeed, served: ServedCache) -> None:
        self.reader = reader
        self.feed = feed
        self.served = served

    def get(self, path: str, query: str) -> Answer | Watch:
        found = discovery(path)
        if found is not None:
            return found
        target = target_of(path)
        if isinstance(target, Answer):
            return target
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        try:
            selector = Selector.parse(
                params.get("labelSelector", ""), params.get("fieldSelector", "")
            )
        except SelectorError as exc:
            return bad_request(str(exc))
        if params.get("watch") in ("true", "1"):
            return self._watch(target, selector, params)
        if target.name is not None:
            return self._one(target)
        return self._list(target, selector, params)

    def _one(self, target: Target) -> Answer:
        with self.reader.snapshot() as snap:
            row = snap.object(target.kind, target.namespace, target.name or "")
        if row is None:
            return not_found(f'{target.kind.plural} "{target.name}"')
        return Answer(200, self.served.text(row, target.kind))

    def _list(self, target: Target, selector: Selector, params: dict[str, str]) -> Answer:
        try:
            limit = int(params.get("limit") or 0)
            token = _decode_continue(params.get("continue", ""))
        except ValueError as exc:
            return bad_request(str(exc))
        if limit < 0:
            return bad_request("limit must not be negative")
        with self.reader.snapshot() as snap:
            revision = token.get("rv") or snap.revision
            items, last = self._page(snap, target, selector, token.get("after", ""), limit)
        metadata: dict[str, Any] = {"resourceVersion": str(revision)}
        if last is not None:
            metadata["continue"] = _encode_continue({"after": last, "rv": revision})
        # The items are the cached JSON of each object, put in as they are (Fragment).
        return answer(200, {"kind": target.kind.list_kind, "apiVersion": API_VERSION,
                            "metadata": metadata, "items": items})  # fmt: skip

    def _page(
        self, snap: Snapshot, target: Target, selector: Selector, after: str, limit: int
    ) -> tuple[list[orjson.Fragment], str | None]:
        """The objects after key ``after`` that match, at most ``limit`` (0: all), and the
        key to continue after when more rows follow (as an API server, whether or not
        they match). Each read asks one row more than it needs to know that."""
        items: list[orjson.Fragment] = []
        everything = selector.everything
        while True:
            fetch = max(limit - len(items), MIN_FETCH) + 1 if limit else 0
            versions = snap.versions(target.kind, target.namespace, after, fetch)
            for (key, _), text in zip(versions, self.served.cached(versions), strict=True):
                if limit and len(items) == limit:
                    return items, after
                if text is None:
                    text = self._made(snap, key, target.kind)
                if text is not None and (everything or selector.matches(jsoncodec.loads(text))):
                    items.append(orjson.Fragment(text))
                after = key
            if not limit or len(versions) < fetch:
                return items, None

    def _made(self, snap: Snapshot, key: str, kind: Kind) -> bytes | None:
        row = snap.row(key)  # the same snapshot: the revision just listed
        return None if row is None else self.served.text(row, kind, looked_up=True)

    def _watch(self, target: Target, selector: Selector, params: dict[str, str]) -> Answer | Watch:
        try:
            timeout = min(int(params.get("timeoutSeconds") or MAX_TIMEOUT), MAX_TIMEOUT)
            since = int(params.get("resourceVersion") or 0)
        except ValueError:
            return bad_request("resourceVersion and timeoutSeconds must be integers")
        sub = self.feed.subscribe(target.kind.stored)
        with self.reader.snapshot() as snap:
            if since and since < snap.compacted():
                self.feed.unsubscribe(sub)
                return status(
                    410, "Expired", f"too old resource version: {since} ({snap.compacted()})"
                )
            # Kept as stored text and dressed one line at a time as the stream goes: a
            # thousand decoded objects held per new watcher were megabytes each.
            backlog: list[tuple[str, Row | Change]]
            if since:
                backlog = [(c.event, c) for c in snap.changes(target.kind, since, sub.start)]
            else:  # no revision: the current objects as ADDED, then what changes
                rows = snap.objects(target.kind, target.namespace)
                backlog = [("ADDED", r) for r in rows if r.revision <= sub.start]
        bookmarks = params.get("allowWatchBookmarks") in ("true", "1")
        return Watch(self._stream(target, selector, sub, backlog, timeout, bookmarks))

    def _stream(self, target: Target, selector: Selector, sub: Any,
                backlog: list[tuple[str, Row | Change]], timeout: float,
                bookmarks: bool) -> Iterator[bytes]:  # fmt: skip
        deadline = time.monotonic() + timeout
        last = sub.start
        try:
            for event, row in backlog:
                if self._wanted(target, selector, row):
                    # Current objects as the cache keeps them; past changes made anew.
                    text = (
                        self.served.text(row, target.kind)
                        if isinstance(row, Row)
                        else served_json(row, target.kind)
                    )
                    yield event_line(event, orjson.Fragment(text))
            next_bookmark = time.monotonic() + BOOKMARK_EVERY
            while not sub.dropped.is_set():
                now = time.monotonic()
                if now >= deadline:
                    return
                wait = min(deadline, next_bookmark if bookmarks else deadline) - now
                # Under a burst, whatever else is queued goes out in the same write: one
                # syscall (and one turn of the GIL) for many events, not one each.
                batch = sub.take(WRITE_BATCH, max(0.0, wait))
                if not batch:  # a quiet moment
                    if bookmarks and time.monotonic() >= next_bookmark:
                        yield _bookmark(target.kind, max(last, self.feed.position))
                        next_bookmark = time.monotonic() + BOOKMARK_EVERY
                    continue
                if 1 < len(batch) < WRITE_BATCH:
                    # A burst is on (more than one change came at once): more follow within
                    # milliseconds, and go out in the same write.
                    time.sleep(COALESCE)
                    batch += sub.take(WRITE_BATCH - len(batch), 0)
                lines = []
                for delivery in batch:
                    last = delivery.change.revision
                    if self._wanted(target, selector, delivery.change):
                        lines.append(delivery.line(target.kind))
                if lines:
                    yield b"".join(lines)
        finally:
            self.feed.unsubscribe(sub)

    @staticmethod
    def _wanted(target: Target, selector: Selector, row: Row | Change) -> bool:
        # Namespace and name as stored (as a list filters them); only a selector needs
        # the object itself.
        if target.namespace is not None and row.namespace != target.namespace:
            return False
        if target.name is not None and row.name != target.name:
            return False
        return selector.everything or selector.matches(dress(row, target.kind))


def _bookmark(kind: Kind, revision: int) -> bytes:
    obj = {"kind": kind.kind, "apiVersion": API_VERSION,
           "metadata": {"resourceVersion": str(revision)}}  # fmt: skip
    return event_line("BOOKMARK", obj)


def _encode_continue(token: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode()


def _decode_continue(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        token = json.loads(base64.urlsafe_b64decode(text.encode()))
    except (binascii.Error, ValueError):
        raise ValueError("continue: not a token this server gave") from None
    if not isinstance(token, dict) or not isinstance(token.get("after"), str):
        raise ValueError("continue: not a token this server gave")
    return token
