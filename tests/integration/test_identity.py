"""Identities through a real broker (SPEC §11): what metamanager refuses, whom it tells, and
that a refused input changes nothing. The broker here lets anyone write anywhere, so these
are the service's own checks; tests/integration/test_acl.py has the broker's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support import (
    CLOUD,
    DEADLETTER,
    EDGED,
    IN,
    PREFIX,
    Publisher,
    ServiceProcess,
    Watcher,
    envelope,
    inbox,
    reply_to,
)

pytestmark = pytest.mark.integration

MakeService = Callable[..., ServiceProcess]
DEVICETWIN = f"{PREFIX}/devicetwin/in"
TOOL_REPLIES = f"{PREFIX}/reply/tool"


def error_of(reason: str) -> Callable[[Any], bool]:
    return lambda m: isinstance(m, dict) and m["content"].get("reason") == reason


def probe(publisher: Publisher, watcher: Watcher, name: str) -> dict[str, Any]:
    """An operator's query, answered after everything sent before it (inputs are handled in
    order): what it returns is the store after those inputs."""
    question = envelope("query", f"default/pod/{name}", source="admin", msg_id=f"probe-{name}")
    publisher.send(question, inbox("admin"), response_topic=f"{PREFIX}/reply/admin/probe")
    answer: dict[str, Any] = watcher.wait_for(
        f"{PREFIX}/reply/admin/probe", reply_to(f"probe-{name}")
    )
    return answer


def forwarded(watcher: Watcher, msg_id: str) -> list[Any]:
    return [m for m in watcher.on(EDGED) + watcher.on(CLOUD) if m["header"]["msg_id"] == msg_id]


def test_a_module_that_sends_as_another_is_refused(
    make_service: MakeService, publisher: Publisher, watcher: Watcher
) -> None:
    make_service()
    spoof = envelope("insert", "default/pod/spoof", {"x": 1}, source="edged", msg_id="spoof")
    publisher.send(spoof, inbox("devicetwin"))
    refusal = watcher.wait_for(DEVICETWIN, reply_to("spoof"))
    assert refusal["route"]["operation"] == "error"
    assert refusal["content"]["code"] == 403
    assert refusal["content"]["reason"] == "source_mismatch"
    letter = watcher.wait_for(DEADLETTER, lambda m: m["reason"] == "source_mismatch")
    assert letter["identity"] == "devicetwin"
    assert probe(publisher, watcher, "spoof")["content"]["reason"] == "not_found"
    assert forwarded(watcher, "spoof") == []


def test_nobody_but_metamanager_speaks_as_metamanager(
    make_service: MakeService, publisher: Publisher, watcher: Watcher
) -> None:
    make_service()
    spoof = envelope("delete", "default/pod/a", source="metamanager", msg_id="mm")
    publisher.send(spoof, inbox("edgehub"))
    refusal = watcher.wait_for(CLOUD, reply_to("mm"))
    assert refusal["content"]["reason"] == "source_mismatch"


def test_a_tool_may_query_but_not_write(
    make_service: MakeService, publisher: Publisher, watcher: Watcher
) -> None:
    make_service()
    insert = envelope("insert", "default/pod/t", {"x": 1}, source="tool", msg_id="t-ins")
    publisher.send(insert, inbox("tool"))
    refusal = watcher.wait_for(TOOL_REPLIES, reply_to("t-ins"))
    assert refusal["content"]["code"] == 403
    assert refusal["content"]["reason"] == "forbidden"
    query = envelope("query", "default/pod/t", source="tool", msg_id="t-q")
    publisher.send(query, inbox("tool"), response_topic=f"{TOOL_REPLIES}/1", correlation=b"c")
    answer = watcher.wait_for(f"{TOOL_REPLIES}/1", reply_to("t-q"))
    assert answer["content"]["reason"] == "not_found"  # asked, answered, nothing was stored
    assert forwarded(watcher, "t-ins") == []


def test_a_response_topic_into_another_inbox_is_refused(
    make_service: MakeService, publisher: Publisher, watcher: Watcher
) -> None:
    make_service()
    seed = envelope("insert", "default/pod/rt", {"x": 1}, source="edgecontroller", msg_id="seed")
    publisher.send(seed)
    watcher.wait_for(CLOUD, reply_to("seed"))
    query = envelope("query", "default/pod/rt", source="tool", msg_id="rt-q")
    publisher.send(query, inbox("tool"), response_topic=EDGED)
    refusal = watcher.wait_for(TOOL_REPLIES, reply_to("rt-q"))
    assert refusal["content"]["reason"] == "forbidden_response_topic"
    assert [m for m in watcher.on(EDGED) if m["header"].get("parent_msg_id") == "rt-q"] == []


@pytest.mark.parametrize("level", ["", "Admin", "metamanager"])
def test_an_inbox_level_no_user_can_have_is_a_dead_letter(
    make_service: MakeService, publisher: Publisher, watcher: Watcher, level: str
) -> None:
    make_service()
    odd = envelope("insert", "default/pod/odd", {"x": 1}, source="edgecontroller", msg_id="odd")
    publisher.send(odd, f"{IN}/{level}")
    letter = watcher.wait_for(DEADLETTER, lambda m: m["reason"] == "bad_identity")
    assert letter["topic"] == f"{IN}/{level}"
    assert probe(publisher, watcher, "odd")["content"]["reason"] == "not_found"
    assert forwarded(watcher, "odd") == []


def test_the_legacy_inbox_is_served_only_when_configured(
    make_service: MakeService, publisher: Publisher, watcher: Watcher
) -> None:
    svc = make_service()
    legacy = envelope("insert", "default/pod/leg", {"x": 1}, source="edgecontroller", msg_id="l1")
    publisher.send(legacy, IN)
    assert probe(publisher, watcher, "leg")["content"]["reason"] == "not_found"
    assert forwarded(watcher, "l1") == []
    svc.stop()
    make_service("legacy", **{"security.legacy_inbox": True})
    publisher.send(legacy, IN)
    assert watcher.wait_for(CLOUD, reply_to("l1"))["content"] == "OK"
