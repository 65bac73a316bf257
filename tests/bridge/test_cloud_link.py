"""The cloud link end to end (SPEC §10): two real brokers bridged by the rendered config,
the service on the edge one, and the cloud coming and going."""

from __future__ import annotations

import time
from typing import Any

import pytest

from mqtt_metamanager.store import Store
from tests.bridge.cloud import CloudSide
from tests.bridge.conftest import BRIDGE_STATE
from tests.support import (
    CLOUD,
    CONNECTION,
    EDGED,
    Broker,
    Publisher,
    ServiceProcess,
    Watcher,
    envelope,
    reply_to,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.bridge]

# The bridge sees a stopped cloud broker's socket close at once; allow for a slow machine.
STATE_TIMEOUT = 5
# Reconnecting waits for the bridge's restart_timeout (1 s here) and the cloud's start.
RECONNECT_TIMEOUT = 15
# Local answers must not wait on the cloud: well under meta.remote_query.timeout (5 s).
LOCAL_ANSWER = 2.0


def connected_state(edge: Watcher, expected: bool, since: int = 0, timeout: float = 10) -> None:
    """Wait until the newest ``connection`` message (from index ``since``) says ``expected``."""

    def latest_matches() -> bool:
        states = edge.on(CONNECTION)[since:]
        return bool(states) and states[-1]["connected"] is expected

    wait_until(latest_matches, timeout, f"{CONNECTION} to say connected={expected}")


def ask(
    edged: Publisher, edge: Watcher, operation: str, resource: str, content: Any = None
) -> tuple[dict[str, Any], float]:
    """edged sends one message; returns metamanager's reply to it and how long it took."""
    msg = envelope(operation, resource, content, source="edged")
    started = time.monotonic()
    edged.send(msg)
    reply = edge.wait_for(EDGED, reply_to(msg["header"]["msg_id"]), timeout=10)
    return reply, time.monotonic() - started


def cloud_sends(
    cloud: CloudSide, edge: Watcher, operation: str, resource: str, content: Any
) -> str:
    """The cloud sends one message down; returns its msg_id once edged has it."""
    msg = envelope(operation, resource, content)
    msg_id: str = msg["header"]["msg_id"]
    cloud.send_down(msg)
    edge.wait_for(EDGED, lambda m: isinstance(m, dict) and m["header"]["msg_id"] == msg_id)
    return msg_id


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "spec": {}}


def status(name: str, phase: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"phase": phase}}


def is_op(operation: str, resource: str) -> Any:
    return lambda m: m["route"]["operation"] == operation and m["route"]["resource"] == resource


def configmap(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"}, "data": {"k": name}}


def test_the_bridge_state_is_a_retained_1_that_the_connection_topic_follows(
    service: ServiceProcess, edge: Watcher, edge_broker: Broker
) -> None:
    connected_state(edge, True)
    # A subscriber that comes later still gets the bridge's 1: it is retained.
    late = Watcher(edge_broker.port, BRIDGE_STATE)
    try:
        assert late.wait_for(BRIDGE_STATE, timeout=5) == 1
    finally:
        late.close()


def test_a_cloud_insert_reaches_edged_and_its_ok_goes_up(
    service: ServiceProcess, cloud: CloudSide, edge: Watcher
) -> None:
    msg_id = cloud_sends(cloud, edge, "insert", "default/pod/web", pod("web"))
    ok = cloud.wait_up(lambda m: m["header"]["parent_msg_id"] == msg_id)
    assert (ok["route"]["operation"], ok["content"]) == ("response", "OK")


def test_a_remote_query_goes_up_and_the_clouds_answer_reaches_the_asker(
    service: ServiceProcess, cloud: CloudSide, edge: Watcher, edged: Publisher
) -> None:
    connected_state(edge, True)
    question = envelope("query", "default/configmap/settings", source="edged")
    edged.send(question)
    asked = cloud.wait_up(is_op("query", "default/configmap/settings"))
    answer = envelope(
        "response",
        "default/configmap/settings",
        configmap("settings"),
        parent=asked["header"]["msg_id"],
    )
    cloud.send_down(answer)
    reply = edge.wait_for(EDGED, reply_to(question["header"]["msg_id"]))
    assert reply["route"]["operation"] == "response"
    assert reply["content"] == [configmap("settings")]
    # Stored: the next ask is answered locally, nothing more goes up.
    again, _ = ask(edged, edge, "query", "default/configmap/settings")
    assert again["content"] == [configmap("settings")]
    assert len([m for m in cloud.up if m["route"]["operation"] == "query"]) == 1


@pytest.mark.fault
def test_outage_local_answers_no_status_flood_and_one_resync_per_namespace(
    service: ServiceProcess,
    cloud: CloudSide,
    cloud_broker: Broker,
    edge: Watcher,
    edged: Publisher,
) -> None:
    connected_state(edge, True)
    cloud_sends(cloud, edge, "insert", "ns1/pod/p1", pod("p1"))
    cloud_sends(cloud, edge, "insert", "ns2/pod/p2", pod("p2"))
    cloud_sends(cloud, edge, "insert", "default/configmap/cm1", configmap("cm1"))

    # The cloud goes away: the state follows within seconds.
    states_before = len(edge.on(CONNECTION))
    cloud_broker.stop()
    connected_state(edge, False, since=states_before, timeout=STATE_TIMEOUT)
    sent_up_before = len(edge.on(CLOUD))

    # Queries are answered from the store at once, remote-queryable types included.
    reply, took = ask(edged, edge, "query", "default/configmap/cm1")
    assert (reply["route"]["operation"], reply["content"]) == ("response", [configmap("cm1")])
    assert took < LOCAL_ANSWER
    reply, took = ask(edged, edge, "query", "default/configmap/absent")
    assert reply["route"]["operation"] == "error"
    assert reply["content"]["code"] == 404
    assert took < LOCAL_ANSWER
    reply, took = ask(edged, edge, "query", "default/node/edge-1")  # always remote when up
    assert reply["content"]["code"] == 404
    assert took < LOCAL_ANSWER

    # Pod statuses from edged are stored and acknowledged, not sent.
    for name, ns, phase in [
        ("p1", "ns1", "Pending"),
        ("p2", "ns2", "Pending"),
        ("p1", "ns1", "ContainerCreating"),
        ("p1", "ns1", "Running"),
        ("p2", "ns2", "Failed"),
    ]:
        reply, _ = ask(edged, edge, "update", f"{ns}/podstatus/{name}", status(name, phase))
        assert (reply["route"]["operation"], reply["content"]) == ("response", "OK")
    # Other updates from edged are sent, and wait in the bridge's queue.
    queued = envelope("update", "ns1/pod/p1", pod("p1", tier="web"), source="edged")
    edged.send(queued)
    edge.wait_for(EDGED, reply_to(queued["header"]["msg_id"]))
    sent_while_away = edge.on(CLOUD)[sent_up_before:]
    assert [m["header"]["msg_id"] for m in sent_while_away] == [queued["header"]["msg_id"]]

    # The cloud comes back: connected, one sync per namespace with the latest statuses only,
    # and what was sent while it was away.
    came_up_before = len(cloud.up)
    cloud_broker.start()
    connected_state(edge, True, since=states_before, timeout=RECONNECT_TIMEOUT)
    ns1 = cloud.wait_up(is_op("update", "ns1/podstatus"), since=came_up_before)
    ns2 = cloud.wait_up(is_op("update", "ns2/podstatus"), since=came_up_before)
    assert ns1["content"] == [status("p1", "Running")]
    assert ns2["content"] == [status("p2", "Failed")]
    cloud.wait_up(lambda m: m["header"]["msg_id"] == queued["header"]["msg_id"])

    # A sentinel sent after the sync arrives after anything the sync could have sent.
    sentinel = envelope("update", "ns2/pod/p2", pod("p2", tier="db"), source="edged")
    edged.send(sentinel)
    cloud.wait_up(lambda m: m["header"]["msg_id"] == sentinel["header"]["msg_id"])
    after = cloud.up[came_up_before:]
    statuses = [m for m in after if m["route"]["resource"].endswith("podstatus")]
    assert sorted(m["route"]["resource"] for m in statuses) == ["ns1/podstatus", "ns2/podstatus"]
    assert not [m for m in after if "podstatus/" in m["route"]["resource"]]


@pytest.mark.fault
def test_a_restarted_service_serves_its_store_at_once_while_the_cloud_is_away(
    service: ServiceProcess,
    cloud: CloudSide,
    cloud_broker: Broker,
    edge: Watcher,
    edged: Publisher,
) -> None:
    connected_state(edge, True)
    cloud_sends(cloud, edge, "insert", "default/configmap/cm1", configmap("cm1"))
    states_before = len(edge.on(CONNECTION))
    cloud_broker.stop()
    connected_state(edge, False, since=states_before, timeout=STATE_TIMEOUT)

    assert service.stop() == 0
    states_before = len(edge.on(CONNECTION))
    sent_up_before = len(edge.on(CLOUD))
    service.start()
    connected_state(edge, False, since=states_before)
    reply, took = ask(edged, edge, "query", "default/configmap/cm1")
    assert (reply["route"]["operation"], reply["content"]) == ("response", [configmap("cm1")])
    assert took < LOCAL_ANSWER
    reply, took = ask(edged, edge, "query", "default/configmap")
    assert reply["content"] == [configmap("cm1")]
    assert took < LOCAL_ANSWER
    assert edge.on(CLOUD)[sent_up_before:] == []


@pytest.mark.fault
def test_cloud_traffic_for_the_node_waits_while_the_edge_broker_is_away(
    service: ServiceProcess, cloud: CloudSide, edge_broker: Broker, edge: Watcher
) -> None:
    connected_state(edge, True)
    edge_broker.stop()
    cloud.send_down(envelope("insert", "default/configmap/late", configmap("late")))
    edge_broker.start()

    def stored() -> bool:
        store = Store(str(service.db_path), readonly=True)
        try:
            return store.get("default/configmap/late") is not None
        finally:
            store.close()

    wait_until(stored, RECONNECT_TIMEOUT, "the insert sent while the edge was away")


@pytest.mark.fault
def test_a_query_in_flight_when_the_cloud_goes_is_answered_locally_at_once(
    service: ServiceProcess,
    cloud: CloudSide,
    cloud_broker: Broker,
    edge: Watcher,
    edged: Publisher,
) -> None:
    connected_state(edge, True)
    node = {"metadata": {"name": "edge-1"}, "status": {"phase": "Running"}}
    cloud_sends(cloud, edge, "insert", "default/node/edge-1", node)
    question = envelope("query", "default/node/edge-1", source="edged")  # always asks the cloud
    edged.send(question)
    cloud.wait_up(is_op("query", "default/node/edge-1"))
    # The cloud never answers; it goes away. The asker must not sit out the 5 s timeout.
    started = time.monotonic()
    cloud_broker.stop()
    reply = edge.wait_for(EDGED, reply_to(question["header"]["msg_id"]), timeout=10)
    assert time.monotonic() - started < STATE_TIMEOUT - 1
    assert (reply["route"]["operation"], reply["content"]) == ("response", [node])
