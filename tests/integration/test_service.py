"""The service as a subprocess against a real Mosquitto: SPEC §2-§9 driven from outside."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.support import (
    CLOUD,
    CONNECTION,
    DEADLETTER,
    EDGED,
    HOST,
    IN,
    PREFIX,
    STATUS,
    Broker,
    Publisher,
    ServiceProcess,
    Watcher,
    envelope,
    inbox,
    inbox_for,
    reply_to,
    wait_until,
)

pytestmark = pytest.mark.integration

MakeService = Callable[..., ServiceProcess]


def stored(svc: ServiceProcess, key: str) -> Any:
    db = sqlite3.connect(f"file:{svc.db_path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    finally:
        db.close()
    return None if row is None else json.loads(row[0])


def by_id(msg_id: str) -> Callable[[Any], bool]:
    return lambda m: isinstance(m, dict) and m["header"]["msg_id"] == msg_id


def connect_cloud(publisher: Publisher, watcher: Watcher) -> None:
    publisher.send(
        envelope("connect", "node/connection", "cloud_connected", source="edgehub"),
        "kubeedge/edgehub/connection",
        retain=True,
    )
    watcher.wait_for(CONNECTION, lambda m: isinstance(m, dict) and m["connected"])


def test_insert_is_stored_forwarded_and_acknowledged(
    make_service: MakeService, watcher: Watcher, publisher: Publisher
) -> None:
    svc = make_service()
    pod = {"metadata": {"name": "nginx", "resourceVersion": "1"}}
    m = envelope("insert", "default/pod/nginx", pod, msg_id="ins-1")
    publisher.send(m)
    forward = watcher.wait_for(EDGED, by_id("ins-1"))
    assert forward["content"] == pod
    reply = watcher.wait_for(CLOUD, reply_to("ins-1"))
    assert reply["route"]["operation"] == "response"
    assert reply["content"] == "OK"
    assert stored(svc, "default/pod/nginx") == pod


def test_status_online_retained_and_offline_on_clean_stop(
    make_service: MakeService, broker: Broker
) -> None:
    svc = make_service()
    late = Watcher(broker.port, STATUS)  # subscribes after the fact: sees the retained value
    late.wait_for(STATUS, lambda m: m == b"online")
    late.close()
    assert svc.stop() == 0
    after = Watcher(broker.port, STATUS)
    after.wait_for(STATUS, lambda m: m == b"offline")
    after.close()


def test_last_will_says_offline_when_the_process_dies(
    make_service: MakeService, broker: Broker, watcher: Watcher
) -> None:
    svc = make_service(**{"mqtt.keepalive": 5})
    watcher.wait_for(STATUS, lambda m: m == b"online")
    svc.kill()
    watcher.wait_for(STATUS, lambda m: m == b"offline", timeout=15)


def test_connection_state_is_published_retained(
    make_service: MakeService, watcher: Watcher, publisher: Publisher, broker: Broker
) -> None:
    make_service()
    watcher.wait_for(CONNECTION, lambda m: isinstance(m, dict) and m["connected"] is False)
    connect_cloud(publisher, watcher)
    late = Watcher(broker.port, CONNECTION)
    state = late.wait_for(CONNECTION)
    late.close()
    assert state["connected"] is True
    assert isinstance(state["since"], int)


def test_mosquitto_rr_works_as_a_query_client(
    make_service: MakeService, publisher: Publisher, watcher: Watcher, broker: Broker
) -> None:
    make_service()
    publisher.send(envelope("insert", "default/configmap/app", {"data": {"k": "v"}}, msg_id="c1"))
    watcher.wait_for(CLOUD, reply_to("c1"))
    rr = shutil.which("mosquitto_rr")
    assert rr, "mosquitto-clients is not installed"
    query = envelope("query", "default/configmap/app", source="tool", msg_id="q-rr")
    out = subprocess.run(
        [
            rr,
            "-h",
            HOST,
            "-p",
            str(broker.port),
            "-t",
            inbox("tool"),
            "-e",
            f"{PREFIX}/reply/tool/{uuid.uuid4().hex}",
            "-m",
            json.dumps(query),
            "-W",
            "10",
        ],
        capture_output=True,
        check=True,
        timeout=20,
    )
    reply = json.loads(out.stdout)
    assert reply["header"]["parent_msg_id"] == "q-rr"
    assert reply["content"] == [{"data": {"k": "v"}}]


def test_data_is_kept_across_a_restart(
    make_service: MakeService, publisher: Publisher, watcher: Watcher, broker: Broker
) -> None:
    svc = make_service()
    publisher.send(envelope("insert", "default/secret/s", {"d": 1}, msg_id="s1"))
    watcher.wait_for(CLOUD, reply_to("s1"))
    assert svc.stop() == 0
    svc.start()
    publisher.send(envelope("query", "default/secret/s", source="edged", msg_id="q1"))
    reply = watcher.wait_for(EDGED, reply_to("q1"))
    assert reply["content"] == [{"d": 1}]


def test_input_sent_while_the_service_is_down_is_processed_on_start(
    make_service: MakeService, publisher: Publisher, watcher: Watcher
) -> None:
    svc = make_service()
    assert svc.stop() == 0
    publisher.send(envelope("insert", "default/pod/late", {"x": 1}, msg_id="late"))
    svc.start()
    watcher.wait_for(EDGED, by_id("late"))
    assert stored(svc, "default/pod/late") == {"x": 1}


def test_redelivered_msg_id_is_replied_again_not_applied_again(
    make_service: MakeService, publisher: Publisher, watcher: Watcher
) -> None:
    svc = make_service()
    publisher.send(envelope("insert", "default/pod/a", {"v": 1}, msg_id="dup"))
    watcher.wait_for(CLOUD, reply_to("dup"))
    publisher.send(envelope("update", "default/pod/a", {"v": 2}, msg_id="u2"))
    watcher.wait_for(CLOUD, reply_to("u2"))
    publisher.send(envelope("insert", "default/pod/a", {"v": 1}, msg_id="dup"))
    wait_until(
        lambda: len([m for m in watcher.on(CLOUD) if reply_to("dup")(m)]) == 2,
        10,
        "a second reply to the redelivered message",
    )
    assert stored(svc, "default/pod/a") == {"v": 2}
    assert len([m for m in watcher.on(EDGED) if by_id("dup")(m)]) == 1


def test_bad_input_gets_error_or_deadletter_and_the_service_lives(
    make_service: MakeService, publisher: Publisher, watcher: Watcher
) -> None:
    svc = make_service(**{"mqtt.max_payload": 2048})
    publisher.send(b"\xff not json at all", inbox("edged"))
    told = watcher.wait_for(EDGED, lambda m: m["content"]["reason"] == "bad_encoding")
    assert told["route"]["operation"] == "error" and told["content"]["code"] == 400
    # An inbox level no user can have: nobody to tell, so operators see a dead letter.
    publisher.send(b"\xff not json at all", f"{IN}/")
    letter = watcher.wait_for(DEADLETTER, lambda m: m["reason"] == "bad_identity")
    assert letter["topic"] == f"{IN}/"
    publisher.send(envelope("query", "a/b/c/d", source="edged", msg_id="bad-res"))
    err = watcher.wait_for(EDGED, reply_to("bad-res"))
    assert err["route"]["operation"] == "error"
    assert err["content"]["code"] == 400
    assert err["content"]["reason"] == "bad_resource"
    no_id = envelope("insert", "default/pod/x", {}, source="edged")
    del no_id["header"]["msg_id"]
    publisher.send(no_id)
    missing = watcher.wait_for(
        EDGED,
        lambda m: m["route"]["operation"] == "error" and m["content"]["reason"] == "missing_msg_id",
    )
    assert missing["header"]["parent_msg_id"] == ""
    publisher.send(
        envelope("insert", "default/pod/big", {"pad": "x" * 4096}, source="edged", msg_id="big")
    )
    big = watcher.wait_for(
        EDGED,
        lambda m: (
            m["content"].get("reason") == "too_large"
            if isinstance(m.get("content"), dict)
            else False
        ),
    )
    assert big["content"]["code"] == 400
    publisher.send(envelope("insert", "default/pod/ok", {"fine": True}, msg_id="after"))
    watcher.wait_for(CLOUD, reply_to("after"))
    assert stored(svc, "default/pod/x") is None
    assert stored(svc, "default/pod/big") is None


def test_unsupported_operation_is_400(
    make_service: MakeService, publisher: Publisher, watcher: Watcher
) -> None:
    make_service()
    publisher.send(envelope("frobnicate", "default/pod/a", source="edged", msg_id="f"))
    err = watcher.wait_for(EDGED, reply_to("f"))
    assert err["content"]["reason"] == "unsupported_operation"


class FakeCloud:
    """Answers remote queries arriving on kubeedge/edgehub/in the way a test wants."""

    def __init__(self, publisher: Publisher, watcher: Watcher) -> None:
        self.publisher, self.watcher = publisher, watcher

    def next_query(self, resource: str) -> dict[str, Any]:
        return self.watcher.wait_for(
            CLOUD,
            lambda m: m["route"]["operation"] == "query" and m["route"]["resource"] == resource,
        )

    def answer(self, query: dict[str, Any], operation: str, content: Any) -> None:
        self.publisher.send(
            envelope(
                operation,
                query["route"]["resource"],
                content,
                source="cloudcore",
                parent=query["header"]["msg_id"],
            )
        )


@pytest.fixture
def cloud(publisher: Publisher, watcher: Watcher) -> FakeCloud:
    return FakeCloud(publisher, watcher)


def test_remote_query_answered_by_the_cloud(
    make_service: MakeService, publisher: Publisher, watcher: Watcher, cloud: FakeCloud
) -> None:
    svc = make_service()
    connect_cloud(publisher, watcher)
    publisher.send(envelope("query", "default/configmap/cfg", source="edged", msg_id="rq"))
    asked = cloud.next_query("default/configmap/cfg")
    obj = {"metadata": {"name": "cfg"}, "data": {"a": "b"}}
    cloud.answer(asked, "response", obj)
    reply = watcher.wait_for(EDGED, reply_to("rq"))
    assert reply["route"]["operation"] == "response"
    assert reply["content"] == [obj]
    assert stored(svc, "default/configmap/cfg") == obj


def test_remote_query_error_is_passed_on_at_once(
    make_service: MakeService, publisher: Publisher, watcher: Watcher, cloud: FakeCloud
) -> None:
    make_service(**{"meta.remote_query.timeout": 30})
    connect_cloud(publisher, watcher)
    publisher.send(envelope("query", "default/secret/nope", source="edged", msg_id="rq"))
    asked = cloud.next_query("default/secret/nope")
    cloud.answer(asked, "error", {"code": 404, "reason": "not_found", "message": "nope"})
    # The timeout is 30 s: a reply within 10 s proves the error was not waited out.
    reply = watcher.wait_for(EDGED, reply_to("rq"), timeout=10)
    assert reply["route"]["operation"] == "error"
    assert reply["content"]["code"] == 404


def test_remote_query_unanswered_is_504_after_retries(
    make_service: MakeService, publisher: Publisher, watcher: Watcher
) -> None:
    make_service(**{"meta.remote_query.timeout": 0.5, "meta.remote_query.retries": 1})
    connect_cloud(publisher, watcher)
    publisher.send(envelope("query", "default/node/edge-1", source="edged", msg_id="rq"))
    reply = watcher.wait_for(EDGED, reply_to("rq"), timeout=15)
    assert reply["content"]["code"] == 504
    assert reply["content"]["reason"] == "cloud_timeout"
    attempts = [
        m
        for m in watcher.on(CLOUD)
        if m["route"]["operation"] == "query" and m["route"]["resource"] == "default/node/edge-1"
    ]
    assert len(attempts) == 2


def test_remote_wait_does_not_block_other_messages(
    make_service: MakeService, publisher: Publisher, watcher: Watcher
) -> None:
    make_service(**{"meta.remote_query.timeout": 30})
    connect_cloud(publisher, watcher)
    publisher.send(envelope("query", "default/node/edge-1", source="edged", msg_id="slow"))
    publisher.send(envelope("insert", "default/pod/fast", {"x": 1}, msg_id="fast"))
    watcher.wait_for(CLOUD, reply_to("fast"), timeout=10)
    assert not [m for m in watcher.on(EDGED) if reply_to("slow")(m)]


def test_periodic_podstatus_sync_while_connected(
    make_service: MakeService, publisher: Publisher, watcher: Watcher
) -> None:
    make_service(**{"meta.sync.podstatus.interval": 0.5})
    publisher.send(envelope("insert", "default/pod/web", {"m": 1}, msg_id="p"))
    publisher.send(
        envelope(
            "update", "default/podstatus/web", {"phase": "Running"}, source="edged", msg_id="s"
        )
    )
    watcher.wait_for(EDGED, reply_to("s"))
    assert not [m for m in watcher.on(CLOUD) if m["route"]["resource"] == "default/podstatus"]
    connect_cloud(publisher, watcher)

    def syncs() -> list[Any]:
        return [m for m in watcher.on(CLOUD) if m["route"]["resource"] == "default/podstatus"]

    wait_until(lambda: len(syncs()) >= 2, 10, "the reconnect sync and a periodic one")
    assert all(s["content"] == [{"phase": "Running"}] for s in syncs())
    assert all(s["route"]["operation"] == "update" for s in syncs())


def test_a_burst_holds_no_more_inputs_than_the_window(
    make_service: MakeService, watcher: Watcher, publisher: Publisher
) -> None:
    # mosquitto 2.0.11 ignores Receive Maximum once acks interleave: on one connection a
    # burst of N inputs put up to ~N of them in the process's memory (docs/performance.md).
    # The input link now stops reading at the window (2 batches), whatever the burst.
    batch_max, count = 8, 3000
    svc = make_service(**{"database.batch_max": batch_max, "logging.level": "INFO"})
    for i in range(count):  # all at once, as the cloud does after an outage
        m = envelope("insert", f"default/pod/burst-{i}", {"i": i}, msg_id=f"burst-{i}")
        publisher.client.publish(inbox_for(m), json.dumps(m), qos=1)
    wait_until(lambda: len(watcher.on(CLOUD)) >= count, 60, "a reply to every input")
    assert len({m["header"]["parent_msg_id"] for m in watcher.on(CLOUD)}) == count
    assert svc.stop() == 0
    stop_line = next(line for line in svc.logs().splitlines() if "stopped:" in line)
    max_held = int(stop_line.split("max_held_inputs=")[1].split()[0])
    assert 0 < max_held <= 2 * batch_max, stop_line
