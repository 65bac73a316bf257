"""The remote queries' in-memory state: bounded by configuration, changed only by a commit."""

from __future__ import annotations

import pytest

from mqtt_metamanager import config as config_mod
from mqtt_metamanager.config import ConfigError
from mqtt_metamanager.envelope import Message
from mqtt_metamanager.outcome import Inbound
from mqtt_metamanager.remote_query import PendingQueries, PendingQuery
from mqtt_metamanager.routing import ReplyTo


def query(name: str) -> PendingQuery:
    message = Message.new(
        source="edged",
        group="resource",
        operation="query",
        resource=f"ns/configmap/{name}",
        content=None,
    )
    return PendingQuery(Inbound(message, ReplyTo("t")), message.resource())


def test_answered_ids_are_bounded_by_the_configured_memory() -> None:
    pending = PendingQueries(answered_memory=2)
    for name in ("a", "b", "c"):
        pending.forget(pending.add_attempt(query(name), f"{name}-1"))
        pending.commit()
    assert pending.answered_count == 2
    assert not pending.was_answered("a-1")
    assert pending.was_answered("b-1") and pending.was_answered("c-1")


def test_staged_changes_are_seen_at_once_and_kept_only_by_a_commit() -> None:
    pending = PendingQueries()
    first = pending.add_attempt(query("a"), "a-1")
    assert pending.get("a-1") == first and len(pending) == 1
    assert pending.committed_count == 0  # what other threads see: only what committed
    pending.commit()
    assert pending.committed_count == 1
    second = pending.add_attempt(first, "a-2")
    pending.forget(second)
    assert "a-1" not in pending and pending.was_answered("a-2") and len(pending) == 0
    pending.discard()  # the transaction rolled back
    kept = pending.get("a-1")
    assert kept is not None and kept.cloud_ids == ("a-1",) and kept.attempts == 1
    assert "a-2" not in pending and not pending.was_answered("a-2") and len(pending) == 1


def test_the_answered_memory_is_configured_and_checked() -> None:
    cfg = config_mod.from_mapping({"meta": {"remote_query": {"answered_memory": 50}}}, environ={})
    assert cfg.meta.remote_query.answered_memory == 50
    with pytest.raises(ConfigError, match=r"meta\.remote_query\.answered_memory"):
        config_mod.from_mapping({"meta": {"remote_query": {"answered_memory": -1}}}, environ={})
