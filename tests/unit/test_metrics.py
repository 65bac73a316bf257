"""The service's metrics move as inputs of each outcome are handled (no broker)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import peewee as pw
import pytest

from mqtt_metamanager.http.health import readiness
from mqtt_metamanager.linkevents import Received
from mqtt_metamanager.outcome import CLOUD_TIMEOUT, Asked, Failed, Kind, Outcome, Result, Synced
from mqtt_metamanager.readings import read
from mqtt_metamanager.service import Service
from tests.support import DEADLETTER, PREFIX, envelope, inbox, inbox_for, wait_until
from tests.unit.conftest import OfflineService

EDGEHUB_CONNECTION = f"{PREFIX}/edgehub/connection"


@pytest.fixture
def service(offline_service: Callable[..., OfflineService]) -> Service:
    svc, _published = offline_service(meta={"remote_query": {"timeout": 0.05, "retries": 0}})
    return svc


def value(svc: Service, name: str, **labels: str) -> float:
    return svc.metrics.registry.get_sample_value(name, labels) or 0.0


def inputs(svc: Service, operation: str, outcome: str) -> float:
    return value(svc, "metamanager_inputs_total", operation=operation, outcome=outcome)


class Feed:
    """Hands inputs to the service the way its transport does, then turns its loop once."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.mid = 0

    def __call__(self, message: dict[str, Any] | bytes, topic: str | None = None) -> None:
        self.mid += 1
        payload = message if isinstance(message, bytes) else json.dumps(message).encode()
        topic = topic or inbox_for(message if isinstance(message, dict) else {})
        self.svc.events.put(Received(topic, payload, self.mid, 1, None, None))
        self.svc.step(0)


@pytest.fixture
def feed(service: Service) -> Feed:
    return Feed(service)


def test_an_insert_counts_as_stored_with_its_latency_and_batch(
    service: Service, feed: Feed
) -> None:
    feed(envelope("insert", "default/pod/a", {"metadata": {"name": "a"}}, msg_id="a"))
    assert inputs(service, "insert", "stored") == 1
    assert value(service, "metamanager_handle_seconds_count", operation="insert") == 1
    assert value(service, "metamanager_commit_seconds_count") == 1
    assert value(service, "metamanager_batch_inputs_sum") == 1
    assert value(service, "metamanager_outbox_rows") == 0  # no turn since the publish
    feed(envelope("insert", "default/pod/b", {"metadata": {"name": "b"}}, msg_id="b"))
    assert value(service, "metamanager_outbox_rows") == 2  # the first insert's, unacked
    assert value(service, "metamanager_outbox_oldest_age_seconds") > 0


def test_a_redelivered_msg_id_is_a_duplicate_and_a_dedup_hit(service: Service, feed: Feed) -> None:
    insert = envelope("insert", "default/pod/a", {"x": 1}, msg_id="same")
    feed(insert)
    feed(insert)
    assert inputs(service, "insert", "stored") == 1
    assert inputs(service, "insert", "duplicate") == 1
    assert value(service, "metamanager_dedup_hits_total") == 1


def test_a_malformed_input_is_a_400_refusal(service: Service, feed: Feed) -> None:
    feed(b"{not json", inbox("edged"))
    assert inputs(service, "unknown", "error_400") == 1
    [refusal] = [
        s
        for m in service.metrics.registry.collect()
        if m.name == "metamanager_refusals"
        for s in m.samples
    ]
    assert refusal.labels["code"] == "400"
    assert refusal.value == 1
    assert service.metrics.totals()["rejected"] == 1


def test_a_spoofed_source_is_a_403_refusal_and_a_dead_letter(
    offline_service: Callable[..., OfflineService],
) -> None:
    svc, published = offline_service()
    spoof = envelope("insert", "default/pod/p", {"x": 1}, source="metamanager", msg_id="s")
    Feed(svc)(spoof, inbox("edged"))
    assert [p.topic for p in published].count(DEADLETTER) == 1
    assert inputs(svc, "insert", "error_403") == 1
    assert value(svc, "metamanager_refusals_total", code="403", reason="source_mismatch") == 1
    assert value(svc, "metamanager_dead_letters_total", reason="source_mismatch") == 1
    assert svc.metrics.totals()["refused"] == 1


def test_a_store_failure_is_a_503_and_fails_readiness_until_a_write_works(
    service: Service, feed: Feed
) -> None:
    real_outbox_add = service.store.outbox_add
    failures = [pw.OperationalError("database or disk is full")]

    def outbox_add(publishes: Any) -> Any:
        if failures:
            raise failures.pop()
        return real_outbox_add(publishes)

    service.store.outbox_add = outbox_add  # type: ignore[method-assign]
    feed(envelope("insert", "default/pod/a", {"x": 1}, msg_id="a"))
    assert inputs(service, "insert", "error_503") == 1
    assert value(service, "metamanager_store_failures_total") == 1
    assert inputs(service, "insert", "stored") == 0  # rolled back: not counted
    verdict = readiness(service.metrics.state, service.metrics.watched, 30.0)
    assert "store" in verdict.body("ready")["failing"]
    assert "disk is full" in verdict.body("ready")["checks"]["store"]["detail"]

    def retried() -> bool:
        service.step(0.05)
        return inputs(service, "insert", "stored") == 1

    wait_until(retried, 10, "the retry to store the insert")
    verdict = readiness(service.metrics.state, service.metrics.watched, 30.0)
    assert "store" not in verdict.body("ready")["failing"]


def connect_cloud(feed: Feed) -> None:
    connect = envelope("connect", "node/connection", "cloud_connected", source="edgehub")
    feed(connect, EDGEHUB_CONNECTION)


def test_a_remote_query_unanswered_falls_back_to_the_store(service: Service, feed: Feed) -> None:
    feed(envelope("insert", "default/node/n1", {"metadata": {"name": "n1"}}, msg_id="n"))
    connect_cloud(feed)
    assert value(service, "metamanager_cloud_link_changes_total", state="up") == 1
    assert value(service, "metamanager_cloud_link_up") == 1
    feed(envelope("query", "default/node/n1", source="edged", msg_id="q"))
    assert inputs(service, "query", "remote") == 1
    assert value(service, "metamanager_remote_query_attempts_total") == 1
    assert value(service, "metamanager_remote_queries_pending") == 1

    def fell_back() -> bool:
        service.step(0.05)  # the query's timer fires on a turn
        return value(service, "metamanager_remote_queries_total", result="local_fallback") == 1

    wait_until(fell_back, 10, "the remote query to fall back to the store")
    assert value(service, "metamanager_remote_queries_pending") == 0


def test_a_cloud_answer_and_a_link_drop_count_as_remote_results(
    service: Service, feed: Feed
) -> None:
    connect_cloud(feed)
    feed(envelope("query", "default/configmap/c1", source="edged", msg_id="q1"))
    feed(envelope("query", "default/node/gone", source="edged", msg_id="q2"))
    [ask1, _ask2] = _cloud_asks(service)
    answer = envelope("response", "default/configmap/c1", {"metadata": {"name": "c1"}})
    answer["header"]["parent_msg_id"] = ask1
    feed(answer)
    assert value(service, "metamanager_remote_queries_total", result="cloud") == 1
    assert inputs(service, "response", "remote_answer") == 1
    # The link drops with q2 pending: answered at once, from nothing stored: a 504.
    feed(
        envelope("connect", "node/connection", "cloud_disconnected", source="edgehub"),
        EDGEHUB_CONNECTION,
    )
    assert value(service, "metamanager_cloud_link_changes_total", state="down") == 1
    assert value(service, "metamanager_remote_queries_total", result="timeout") == 1


def _cloud_asks(svc: Service) -> list[str]:
    """The msg_ids of the queries the service asked the cloud, from its outbox."""
    asks = []
    for entry in svc.store.outbox_pending():
        body = json.loads(entry.publish.payload)
        if entry.publish.topic.endswith("/edgehub/in") and body["route"]["operation"] == "query":
            asks.append(body["header"]["msg_id"])
    return asks


def test_a_sync_counts_statuses_sent_and_orphans_purged(service: Service, feed: Feed) -> None:
    feed(envelope("insert", "default/pod/web", {"m": 1}, msg_id="p"))
    status = envelope("update", "default/podstatus/web", {"phase": "Running"}, source="edged")
    orphan = envelope("update", "default/podstatus/gone", {"phase": "Failed"}, source="edged")
    feed(status)
    feed(orphan)
    connect_cloud(feed)  # a link that comes up syncs at once
    assert value(service, "metamanager_podstatus_syncs_total", result="sent") == 1
    assert value(service, "metamanager_podstatus_sync_statuses_total") == 1
    assert value(service, "metamanager_podstatus_sync_orphans_purged_total") == 1
    assert value(service, "metamanager_podstatus_sync_seconds_count") == 1
    sync = envelope("meta-internal-sync", "default/podstatus", None, source="edged")
    feed(sync)
    assert value(service, "metamanager_podstatus_syncs_total", result="sent") == 2
    assert value(service, "metamanager_podstatus_sync_statuses_total") == 2


def test_stored_objects_are_sampled_by_type(service: Service, feed: Feed) -> None:
    feed(envelope("insert", "default/pod/a", {"x": 1}))
    feed(envelope("insert", "default/configmap/c", {"x": 1}))
    with service.store.atomic():
        service.metrics.sample_store(service.store)
    assert value(service, "metamanager_stored_objects", type="pod") == 1
    assert value(service, "metamanager_stored_objects", type="configmap") == 1
    assert value(service, "metamanager_database_bytes") > 0
    assert service.metrics.snapshot()["objects"] == 2


def test_the_process_metrics_are_there(service: Service) -> None:
    assert value(service, "process_resident_memory_bytes") > 0


def test_an_operation_a_sender_made_up_is_not_a_label_of_its_own(
    service: Service, feed: Feed
) -> None:
    for i in range(5):
        feed(envelope(f"made-up-{i}", "default/pod/a", None, msg_id=f"m{i}"))
    assert inputs(service, "other", "error_400") == 5


@pytest.mark.parametrize(
    ("outcome", "label"),
    [
        (Kind.STORED, "stored"),
        (Kind.STORED_OFFLINE, "stored_offline"),
        (Kind.LOCAL, "local"),
        (Asked(2), "remote"),
        (Failed(403, "source_mismatch"), "error_403"),
        (Kind.LATE_ANSWER, "late_answer"),
        (Kind.IGNORED, "ignored"),
        (Synced(1, 2, 0), "sync"),
        (Kind.SYNC_SKIPPED, "sync_skipped"),
    ],
)
def test_outcome_labels(outcome: Outcome, label: str) -> None:
    assert read(Result(outcome=outcome)).label == label


def test_read_reads_what_a_link_drop_merged_in() -> None:
    merged: list[Outcome] = [Kind.ANSWERED_LOCALLY, Kind.REMOTE_FALLBACK, CLOUD_TIMEOUT]
    reading = read(Result(outcome=Kind.DISCONNECTED, merged=merged))
    assert reading.link == "down"
    assert reading.remote_results == ("local_fallback", "timeout")


def test_the_loop_heartbeat_is_stamped_every_turn(service: Service) -> None:
    before = time.monotonic()
    service.step(0)
    assert service.metrics.state.last_turn >= before
    assert service.metrics.state.phase == "running"
