"""The operations that write one stored object (SPEC §5): insert, update, patch and delete,
with the stale and no-delta checks that keep an object from going back, and the forward of
each change to the other side. Apart from ``operations.py``, which takes every input to its
operation and keeps the cloud link and the remote queries: of those, a write only needs to
know whether the cloud link is up."""

from __future__ import annotations

from collections.abc import Callable

from .envelope import Message, Resource
from .jsonmerge import merge_patch
from .outcome import Inbound, Kind, OperationError, Outcome, Result, Side, reply
from .podsync import POD, PODSTATUS
from .routing import Outgoing, Topics
from .store import Store
from .versions import is_stale, json_equal, numeric_rv

OK = "OK"


def _object_resource(message: Message) -> Resource:
    resource = message.resource()
    if resource.is_list:
        raise OperationError(
            400, "bad_resource", f"{message.operation} needs <namespace>/<type>/<name>"
        )
    return resource


def forward_to_other_side(topics: Topics, inbound: Inbound) -> Outgoing:
    """From edged to the cloud; from the cloud (or any other module) to edged."""
    if inbound.side is Side.EDGED:
        return Outgoing.of(topics.cloud, inbound.message)
    return Outgoing.of(topics.edged_in, inbound.message)


def _ok(inbound: Inbound, outcome: Outcome, *forwards: Outgoing) -> Result:
    return Result(list(forwards), reply(inbound, "response", OK), outcome=outcome)


class ObjectWrites:
    """insert, update, patch and delete over one ``Store``; ``cloud_connected`` says whether
    the cloud link is up as the running transaction sees it."""

    def __init__(self, store: Store, topics: Topics, cloud_connected: Callable[[], bool]) -> None:
        self.store = store
        self.topics = topics
        self.cloud_connected = cloud_connected

    def insert(self, inbound: Inbound) -> Result:
        msg = inbound.message
        resource = _object_resource(msg)
        # Stale like an update's (SPEC §5): not over an object with a greater version. The
        # store checks it in the statement that writes, without reading the object first.
        if not self.store.put(resource, msg.content, version=numeric_rv(msg.content)):
            return _ok(inbound, Kind.STALE)
        return _ok(inbound, Kind.STORED, forward_to_other_side(self.topics, inbound))

    def update(self, inbound: Inbound) -> Result:
        msg = inbound.message
        resource = _object_resource(msg)
        stored = self.store.get(resource.key)
        if stored is not None and json_equal(stored.value, msg.content):
            return _ok(inbound, Kind.NO_DELTA)
        if stored is not None and is_stale(msg.content, stored.value):
            return _ok(inbound, Kind.STALE)
        self.store.put(resource, msg.content, exists=stored is not None)
        offline = not self.cloud_connected()
        if inbound.side is Side.EDGED and resource.type == PODSTATUS and offline:
            # The sync on reconnect carries the latest status; no flood of stale ones.
            return _ok(inbound, Kind.STORED_OFFLINE)
        return _ok(inbound, Kind.STORED, forward_to_other_side(self.topics, inbound))

    def patch(self, inbound: Inbound) -> Result:
        msg = inbound.message
        resource = _object_resource(msg)
        stored = self.store.get(resource.key)
        if stored is None:
            raise OperationError(404, "not_found", f"{resource} is not stored")
        merged = merge_patch(stored.value, msg.content)
        # Forwarded as the full merged object, so receivers need no base to apply it to.
        return self.update(
            Inbound(msg.with_content(merged, "update"), inbound.reply_to, inbound.side)
        )

    def delete(self, inbound: Inbound) -> Result:
        msg = inbound.message
        resource = _object_resource(msg)
        self.store.delete(resource.key)
        if resource.type == POD:
            self.store.delete(resource.sibling(PODSTATUS).key)
        return _ok(inbound, Kind.DELETED, forward_to_other_side(self.topics, inbound))
