"""The remote queries' in-memory state: bounded by configuration, cheap to snapshot."""

from __future__ import annotations

import copy

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
        q = query(name)
        pending.add_attempt(q, f"{name}-1")
        pending.forget(q)
    assert pending.answered_count == 2
    assert not pending.was_answered("a-1")
    assert pending.was_answered("b-1") and pending.was_answered("c-1")


def test_a_snapshot_restores_the_queries_waiting_and_their_attempts() -> None:
    pending = PendingQueries()
    q = query("a")
    pending.add_attempt(q, "a-1")
    saved = copy.deepcopy(pending)
    pending.add_attempt(q, "a-2")
    pending.forget(q)
    restored = saved.get("a-1")
    assert restored is not None and restored.cloud_ids == ["a-1"] and restored.attempts == 1
    assert "a-2" not in saved and len(saved) == 1


def test_the_answered_memory_is_configured_and_checked() -> None:
    cfg = config_mod.from_mapping({"meta": {"remote_query": {"answered_memory": 50}}}, environ={})
    assert cfg.meta.remote_query.answered_memory == 50
    with pytest.raises(ConfigError, match=r"meta\.remote_query\.answered_memory"):
        config_mod.from_mapping({"meta": {"remote_query": {"answered_memory": -1}}}, environ={})
