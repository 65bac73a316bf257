"""Every row of SPEC §5 against a temporary SQLite file, no broker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mqtt_metamanager.envelope import Message, message_from_dict
from mqtt_metamanager.identity import AccessPolicy
from mqtt_metamanager.operations import Inbound, Operations, RemoteQueryPolicy, Result
from mqtt_metamanager.outcome import Failed, Kind
from mqtt_metamanager.routing import ReplyTo, Topics
from mqtt_metamanager.store import Store

T = Topics("kubeedge")
EDGED, CLOUD = T.edged_in, T.cloud


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "meta.db"))
    yield s
    s.close()


@pytest.fixture
def ops(store: Store) -> Operations:
    return Operations(
        store,
        T,
        remote_query=RemoteQueryPolicy(timeout=1.0, retries=1),
    )


def msg(
    op: str,
    resource: str,
    content: Any = None,
    *,
    source: str = "edgecontroller",
    msg_id: str = "m1",
    parent: str = "",
) -> Message:
    return message_from_dict(
        {
            "header": {"msg_id": msg_id, "parent_msg_id": parent},
            "route": {"source": source, "group": "resource", "operation": op, "resource": resource},
            "content": content,
        }
    )


# The legacy inbox: no identity, replies and forwards by route source (SPEC §4), so these
# tests can play every sender. Identities have their own tests (test_hostile_input.py).
ACCESS = AccessPolicy(T, ["edged", "edgemesh", "devicetwin"], ["admin"], legacy_inbox=True)


def inbound(m: Message, props: ReplyTo | None = None) -> Inbound:
    """``m`` as it arrives on the legacy inbox; ``props``: its Response Topic and Correlation."""
    props = props or ReplyTo()
    admitted = ACCESS.admit(
        T.metamanager_in, m.encode(), response_topic=props.topic, correlation=props.correlation
    )
    assert isinstance(admitted, Inbound), admitted
    return admitted


def run(ops: Operations, m: Message, reply_to: ReplyTo | None = None) -> Result:
    """One input in a transaction of its own, as the pipeline runs it."""
    with ops.store.atomic():
        result = ops.handle(inbound(m, reply_to))
    ops.commit()
    return result


def fire(ops: Operations, result: Result) -> Result:
    """The timer ``result`` armed fires (in a transaction of its own)."""
    [timer] = result.timers
    with ops.store.atomic():
        fired = ops.timer_fired(timer.event)
    ops.commit()
    return fired


def sent(result: Result, topic: str) -> list[dict[str, Any]]:
    return [json.loads(p.payload) for p in result.publishes if p.topic == topic]


def only(result: Result, topic: str) -> dict[str, Any]:
    found = sent(result, topic)
    assert len(found) == 1, f"expected one publish on {topic}, got {result.publishes}"
    return found[0]


def pod(name: str = "nginx", rv: str = "1", **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "resourceVersion": rv}, **extra}


def connect(ops: Operations, up: bool = True) -> Result:
    content = "cloud_connected" if up else "cloud_disconnected"
    return run(ops, msg("connect", "node/connection", content, source="edgehub", msg_id=f"c-{up}"))


# -- insert --------------------------------------------------------------------------------


def test_insert_stores_forwards_to_edged_and_replies_ok_to_cloud(ops: Operations) -> None:
    result = run(ops, msg("insert", "default/pod/nginx", pod()))
    assert ops.store.get("default/pod/nginx").value == pod()  # type: ignore[union-attr]
    forward = only(result, EDGED)
    assert forward["header"]["msg_id"] == "m1"  # forwards keep the input's msg_id
    reply = only(result, CLOUD)
    assert reply["header"]["parent_msg_id"] == "m1"
    assert reply["route"] == {
        "source": "metamanager",
        "destination": "",
        "group": "resource",
        "operation": "response",
        "resource": "default/pod/nginx",
    }
    assert reply["content"] == "OK"


def test_insert_replaces_an_existing_object(ops: Operations) -> None:
    run(ops, msg("insert", "default/pod/nginx", pod(rv="1")))
    run(ops, msg("insert", "default/pod/nginx", pod(rv="2"), msg_id="m2"))
    assert ops.store.get("default/pod/nginx").value == pod(rv="2")  # type: ignore[union-attr]


def test_insert_of_a_list_resource_is_a_bad_request(ops: Operations) -> None:
    reply = only(run(ops, msg("insert", "default/pod", pod())), CLOUD)
    assert reply["route"]["operation"] == "error"
    assert reply["content"]["code"] == 400
    assert reply["content"]["reason"] == "bad_resource"


def test_redelivered_insert_is_replied_again_but_not_applied_again(ops: Operations) -> None:
    first = run(ops, msg("insert", "default/pod/nginx", pod(rv="1")))
    # Someone else changes the object; a redelivery of m1 must not overwrite it.
    run(ops, msg("insert", "default/pod/nginx", pod(rv="9"), msg_id="m2"))
    again = run(ops, msg("insert", "default/pod/nginx", pod(rv="1")))
    assert ops.store.get("default/pod/nginx").value == pod(rv="9")  # type: ignore[union-attr]
    assert sent(again, EDGED) == []
    assert only(again, CLOUD) == only(first, CLOUD)
    assert again.outcome is Kind.DUPLICATE


# -- update --------------------------------------------------------------------------------


def test_update_from_cloud_stores_forwards_to_edged_replies_to_cloud(ops: Operations) -> None:
    run(ops, msg("insert", "default/pod/nginx", pod(rv="1")))
    result = run(ops, msg("update", "default/pod/nginx", pod(rv="2"), msg_id="u1"))
    assert ops.store.get("default/pod/nginx").value == pod(rv="2")  # type: ignore[union-attr]
    assert only(result, EDGED)["header"]["msg_id"] == "u1"
    assert only(result, CLOUD)["content"] == "OK"


def test_update_from_edged_forwards_to_cloud_and_replies_to_edged(ops: Operations) -> None:
    connect(ops)
    result = run(ops, msg("update", "default/pod/nginx", pod(), source="edged", msg_id="u1"))
    assert only(result, CLOUD)["header"]["msg_id"] == "u1"
    reply = only(result, EDGED)
    assert reply["header"]["parent_msg_id"] == "u1"
    assert reply["content"] == "OK"


def test_update_with_no_delta_stores_and_forwards_nothing(ops: Operations) -> None:
    run(ops, msg("insert", "default/pod/nginx", pod(rv="3")))
    before = ops.store.get("default/pod/nginx")
    result = run(ops, msg("update", "default/pod/nginx", pod(rv="3"), msg_id="u1"))
    assert sent(result, EDGED) == []
    assert only(result, CLOUD)["content"] == "OK"
    assert ops.store.get("default/pod/nginx") == before  # not even the update time moved


def test_update_with_an_older_resource_version_is_stale(ops: Operations) -> None:
    run(ops, msg("insert", "default/pod/nginx", pod(rv="10")))
    result = run(ops, msg("update", "default/pod/nginx", pod(rv="9", spec=1), msg_id="u1"))
    assert ops.store.get("default/pod/nginx").value == pod(rv="10")  # type: ignore[union-attr]
    assert sent(result, EDGED) == []
    assert only(result, CLOUD)["content"] == "OK"
    assert result.outcome is Kind.STALE


def test_insert_with_an_older_resource_version_is_stale(ops: Operations) -> None:
    # Like an update (SPEC §5): a redelivered or reordered old insert must not overwrite a
    # newer object, nor be forwarded; the sender is told OK.
    run(ops, msg("insert", "default/pod/nginx", pod(rv="10")))
    result = run(ops, msg("insert", "default/pod/nginx", pod(rv="9", spec=1), msg_id="i2"))
    assert ops.store.get("default/pod/nginx").value == pod(rv="10")  # type: ignore[union-attr]
    assert sent(result, EDGED) == []
    assert only(result, CLOUD)["content"] == "OK"
    assert result.outcome is Kind.STALE
    # Numerically, not as text; the same version or no version at all is not stale.
    for i, rv in enumerate(["10", "11", ""]):
        newer = run(ops, msg("insert", "default/pod/nginx", pod(rv=rv), msg_id=f"n{i}"))
        assert newer.outcome is Kind.STORED, rv
    assert ops.store.get("default/pod/nginx").value == pod(rv="")  # type: ignore[union-attr]


def test_resource_versions_compare_numerically_not_as_text(ops: Operations) -> None:
    run(ops, msg("insert", "default/pod/nginx", pod(rv="9")))
    run(ops, msg("update", "default/pod/nginx", pod(rv="10"), msg_id="u1"))
    assert ops.store.get("default/pod/nginx").value == pod(rv="10")  # type: ignore[union-attr]


def test_podstatus_from_edged_while_disconnected_is_stored_not_forwarded(
    ops: Operations,
) -> None:
    status = {"metadata": {"name": "nginx"}, "phase": "Running"}
    result = run(ops, msg("update", "default/podstatus/nginx", status, source="edged"))
    assert ops.store.get("default/podstatus/nginx").value == status  # type: ignore[union-attr]
    assert sent(result, CLOUD) == []
    assert only(result, EDGED)["content"] == "OK"


# -- patch ---------------------------------------------------------------------------------


def test_patch_merges_rfc7386_and_then_acts_as_update(ops: Operations) -> None:
    run(ops, msg("insert", "default/configmap/app", {"data": {"a": "1", "b": "2"}, "k": 1}))
    patch = {"data": {"a": None, "c": "3"}, "k": 2}
    result = run(ops, msg("patch", "default/configmap/app", patch, msg_id="p1"))
    merged = {"data": {"b": "2", "c": "3"}, "k": 2}
    assert ops.store.get("default/configmap/app").value == merged  # type: ignore[union-attr]
    forward = only(result, EDGED)
    assert forward["content"] == merged
    assert only(result, CLOUD)["content"] == "OK"


def test_patch_of_a_missing_object_is_404(ops: Operations) -> None:
    reply = only(run(ops, msg("patch", "default/configmap/none", {"a": 1})), CLOUD)
    assert reply["route"]["operation"] == "error"
    assert reply["content"]["code"] == 404
    assert reply["content"]["reason"] == "not_found"
    assert ops.store.get("default/configmap/none") is None


# -- delete --------------------------------------------------------------------------------


def test_delete_of_a_pod_takes_its_podstatus_and_forwards(ops: Operations) -> None:
    run(ops, msg("insert", "default/pod/nginx", pod()))
    run(
        ops,
        msg("update", "default/podstatus/nginx", {"phase": "Running"}, source="edged", msg_id="s1"),
    )
    run(ops, msg("insert", "default/pod/other", pod("other"), msg_id="m2"))
    result = run(ops, msg("delete", "default/pod/nginx", msg_id="d1"))
    assert ops.store.get("default/pod/nginx") is None
    assert ops.store.get("default/podstatus/nginx") is None
    assert ops.store.get("default/pod/other") is not None
    assert only(result, EDGED)["header"]["msg_id"] == "d1"
    assert only(result, CLOUD)["content"] == "OK"


def test_delete_of_a_missing_key_is_fine(ops: Operations) -> None:
    result = run(ops, msg("delete", "default/secret/none"))
    assert only(result, CLOUD)["content"] == "OK"


# -- query ---------------------------------------------------------------------------------


def test_query_one_object_replies_a_list_of_one(ops: Operations) -> None:
    run(ops, msg("insert", "default/pod/nginx", pod()))
    reply = only(run(ops, msg("query", "default/pod/nginx", source="edged", msg_id="q")), EDGED)
    assert reply["route"]["operation"] == "response"
    assert reply["content"] == [pod()]


def test_query_a_list_gets_that_type_in_that_namespace(ops: Operations) -> None:
    run(ops, msg("insert", "default/pod/a", pod("a"), msg_id="1"))
    run(ops, msg("insert", "default/pod/b", pod("b"), msg_id="2"))
    run(ops, msg("insert", "other/pod/c", pod("c"), msg_id="3"))
    run(ops, msg("insert", "default/configmap/d", {"x": 1}, msg_id="4"))
    reply = only(run(ops, msg("query", "default/pod", source="edged", msg_id="q")), EDGED)
    assert reply["content"] == [pod("a"), pod("b")]


def test_query_missing_object_is_404_and_missing_list_is_empty(ops: Operations) -> None:
    one = only(run(ops, msg("query", "default/pod/none", source="edged")), EDGED)
    assert one["route"]["operation"] == "error"
    assert one["content"]["code"] == 404
    many = only(run(ops, msg("query", "default/pod", source="edged", msg_id="q2")), EDGED)
    assert many["content"] == []


def test_query_reply_goes_to_the_response_topic_with_correlation(ops: Operations) -> None:
    run(ops, msg("insert", "default/pod/nginx", pod()))
    to = ReplyTo("tools/reply/1", b"\x01\x02")
    result = run(ops, msg("query", "default/pod/nginx", source="", msg_id="q"), to)
    [out] = result.publishes
    assert out.topic == "tools/reply/1"
    assert out.correlation == b"\x01\x02"


def test_reply_to_a_non_local_source_goes_to_the_cloud(ops: Operations) -> None:
    reply = only(run(ops, msg("query", "default/pod", source="controller-x")), CLOUD)
    assert reply["content"] == []
    reply = only(
        run(ops, msg("query", "default/pod", source="devicetwin", msg_id="2")),
        T.inbox("devicetwin"),
    )
    assert reply["content"] == []


# -- remote query --------------------------------------------------------------------------


def ask_remote(ops: Operations, resource: str = "default/configmap/app") -> tuple[Result, str]:
    connect(ops)
    result = run(ops, msg("query", resource, source="edged", msg_id="q1"))
    up = only(result, CLOUD)
    assert up["route"]["operation"] == "query"
    assert up["header"]["msg_id"] != "q1"
    assert sent(result, EDGED) == []  # nothing to the asker yet
    return result, up["header"]["msg_id"]


def test_remote_query_answered_is_stored_and_replied(ops: Operations) -> None:
    _, cloud_id = ask_remote(ops)
    answer = {"metadata": {"name": "app"}, "data": {"k": "v"}}
    result = run(
        ops,
        msg(
            "response",
            "default/configmap/app",
            answer,
            source="cloud",
            msg_id="r1",
            parent=cloud_id,
        ),
    )
    reply = only(result, EDGED)
    assert reply["header"]["parent_msg_id"] == "q1"
    assert reply["content"] == [answer]
    assert ops.store.get("default/configmap/app").value == answer  # type: ignore[union-attr]
    assert ops.pending_queries == 0


def test_remote_query_error_is_passed_on_at_once(ops: Operations) -> None:
    _, cloud_id = ask_remote(ops)
    err = {"code": 404, "reason": "not_found", "message": "no such configmap"}
    result = run(
        ops,
        msg("error", "default/configmap/app", err, source="cloud", msg_id="e1", parent=cloud_id),
    )
    reply = only(result, EDGED)
    assert reply["route"]["operation"] == "error"
    assert reply["content"] == err
    assert ops.pending_queries == 0


def test_remote_query_unanswered_retries_then_504(ops: Operations) -> None:
    result, cloud_id = ask_remote(ops)
    [timer] = result.timers
    assert timer.delay == 1.0
    backoff = fire(ops, result)
    assert backoff.publishes == []
    resend = fire(ops, backoff)
    second_id = only(resend, CLOUD)["header"]["msg_id"]
    assert second_id != cloud_id
    final = fire(ops, resend)
    reply = only(final, EDGED)
    assert reply["content"]["code"] == 504
    assert reply["content"]["reason"] == "cloud_timeout"
    assert ops.pending_queries == 0


def test_remote_query_answered_late_to_the_first_attempt_still_completes(
    ops: Operations,
) -> None:
    result, cloud_id = ask_remote(ops)
    backoff = fire(ops, result)
    fire(ops, backoff)  # second attempt sent
    late = run(
        ops,
        msg(
            "response",
            "default/configmap/app",
            {"a": 1},
            source="cloud",
            msg_id="r",
            parent=cloud_id,
        ),
    )
    assert only(late, EDGED)["content"] == [{"a": 1}]


def test_remote_timeout_falls_back_to_the_local_object(ops: Operations) -> None:
    run(ops, msg("insert", "default/node/edge-1", {"status": "old"}, msg_id="n"))
    result, _ = ask_remote(ops, "default/node/edge-1")  # node always asks the cloud
    expired = fire(ops, result)
    resent = fire(ops, expired)
    final = fire(ops, resent)
    assert only(final, EDGED)["content"] == [{"status": "old"}]


def test_remote_queryable_with_a_local_record_is_answered_locally(ops: Operations) -> None:
    connect(ops)
    run(ops, msg("insert", "default/secret/s", {"d": 1}, msg_id="i"))
    result = run(ops, msg("query", "default/secret/s", source="edged", msg_id="q"))
    assert sent(result, CLOUD) == []
    assert only(result, EDGED)["content"] == [{"d": 1}]


def test_queries_while_disconnected_never_go_to_the_cloud(ops: Operations) -> None:
    result = run(ops, msg("query", "default/node/edge-1", source="edged"))
    assert sent(result, CLOUD) == []
    assert only(result, EDGED)["content"]["code"] == 404


def test_link_loss_answers_in_flight_remote_queries_at_once(ops: Operations) -> None:
    ask_remote(ops)
    result = connect(ops, up=False)
    assert only(result, EDGED)["content"]["reason"] == "cloud_timeout"
    assert ops.pending_queries == 0


# -- response ------------------------------------------------------------------------------


def test_response_from_cloud_stores_object_and_forwards_to_edged(ops: Operations) -> None:
    obj = {"metadata": {"name": "app"}}
    result = run(ops, msg("response", "default/configmap/app", obj, source="cloud"))
    assert ops.store.get("default/configmap/app").value == obj  # type: ignore[union-attr]
    assert only(result, EDGED)["content"] == obj
    assert sent(result, CLOUD) == []


def test_response_ok_is_never_stored_over_an_object(ops: Operations) -> None:
    run(ops, msg("insert", "default/pod/nginx", pod(), msg_id="i"))
    result = run(ops, msg("response", "default/pod/nginx", "OK", source="edged", msg_id="r"))
    assert ops.store.get("default/pod/nginx").value == pod()  # type: ignore[union-attr]
    assert only(result, CLOUD)["content"] == "OK"


# -- connect and sync ----------------------------------------------------------------------


def test_connect_publishes_state_retained_and_syncs_podstatus(ops: Operations) -> None:
    run(ops, msg("insert", "default/pod/a", pod("a"), msg_id="1"))
    run(ops, msg("insert", "kube/pod/b", pod("b"), msg_id="2"))
    run(ops, msg("update", "default/podstatus/a", {"s": "a"}, source="edged", msg_id="3"))
    run(ops, msg("update", "kube/podstatus/b", {"s": "b"}, source="edged", msg_id="4"))
    run(ops, msg("update", "default/podstatus/gone", {"s": "x"}, source="edged", msg_id="5"))
    result = connect(ops)
    [state] = [p for p in result.publishes if p.topic == T.connection]
    assert state.retain
    assert json.loads(state.payload)["connected"] is True
    syncs = sent(result, CLOUD)
    assert [(s["route"]["resource"], s["route"]["operation"], s["content"]) for s in syncs] == [
        ("default/podstatus", "update", [{"s": "a"}]),
        ("kube/podstatus", "update", [{"s": "b"}]),
    ]
    assert ops.store.get("default/podstatus/gone") is None  # its pod no longer exists


def test_publish_is_kubeedge_1_2_connect_and_repeat_changes_nothing(ops: Operations) -> None:
    result = run(ops, msg("publish", "node/connection", "cloud_connected", source="edgehub"))
    assert ops.link.connected
    assert any(p.topic == T.connection for p in result.publishes)
    again = connect(ops)
    assert again.publishes == []


def test_disconnect_publishes_state_and_sync_sends_nothing(ops: Operations) -> None:
    connect(ops)
    result = connect(ops, up=False)
    assert json.loads(only_raw(result, T.connection))["connected"] is False
    run(ops, msg("insert", "default/pod/a", pod("a"), msg_id="1"))
    run(ops, msg("update", "default/podstatus/a", {"s": "a"}, source="edged", msg_id="3"))
    assert ops.podstatus_sync().publishes == []


def only_raw(result: Result, topic: str) -> bytes:
    [p] = [p for p in result.publishes if p.topic == topic]
    return p.payload


def test_meta_internal_sync_runs_a_sync_now(ops: Operations) -> None:
    connect(ops)
    run(ops, msg("insert", "default/pod/a", pod("a"), msg_id="1"))
    run(ops, msg("update", "default/podstatus/a", {"s": "a"}, source="edged", msg_id="3"))
    result = run(ops, msg("meta-internal-sync", "", source="edged", msg_id="sync"))
    [sync] = [s for s in sent(result, CLOUD) if s["route"]["resource"] == "default/podstatus"]
    assert sync["content"] == [{"s": "a"}]


def test_sync_with_nothing_to_send_sends_nothing(ops: Operations) -> None:
    connect(ops)
    assert ops.podstatus_sync().publishes == []


# -- anything else -------------------------------------------------------------------------


def test_unknown_operation_is_400_unsupported(ops: Operations) -> None:
    reply = only(run(ops, msg("explode", "default/pod/a")), CLOUD)
    assert reply["route"]["operation"] == "error"
    assert reply["content"]["code"] == 400
    assert reply["content"]["reason"] == "unsupported_operation"


def test_link_and_remote_queries_change_only_when_the_transaction_commits(
    ops: Operations,
) -> None:
    connect(ops)
    with pytest.raises(RuntimeError), ops.store.atomic():
        ops.handle(inbound(msg("query", "default/node/n", source="edged", msg_id="q")))
        assert ops.link.connected and ops.pending_queries == 0  # staged, not committed
        ops.set_cloud_link(False)  # sees the staged query: answers it locally
        raise RuntimeError("the commit failed")
    ops.discard()
    assert ops.link.connected
    assert ops.pending_queries == 0
    # Nothing of the rolled-back transaction is seen by the next one.
    result = run(ops, msg("query", "default/node/n", source="edged", msg_id="q2"))
    assert only(result, CLOUD)["route"]["operation"] == "query"
    assert ops.pending_queries == 1


def test_a_resource_version_too_long_for_int_is_not_a_number(ops: Operations) -> None:
    # Caught a bug: int() of a 5000-digit string raises, which stopped the service on every
    # start while the broker redelivered the input.
    run(ops, msg("insert", "default/pod/a", pod(rv="5")))
    result = run(ops, msg("update", "default/pod/a", pod(rv="9" * 5000), msg_id="u"))
    assert result.outcome is Kind.STORED


def test_no_delta_is_json_equality_so_true_is_not_1(ops: Operations) -> None:
    run(ops, msg("insert", "default/configmap/c", {"a": 1}))
    result = run(ops, msg("update", "default/configmap/c", {"a": True}, msg_id="u"))
    assert result.outcome is Kind.STORED
    assert ops.store.get("default/configmap/c").value == {"a": True}  # type: ignore[union-attr]


def test_a_cloud_answer_after_the_asker_was_answered_is_dropped(ops: Operations) -> None:
    _, cloud_id = ask_remote(ops)
    connect(ops, up=False)  # the asker gets its answer locally now
    late = run(
        ops,
        msg(
            "response",
            "default/configmap/app",
            {"a": 1},
            source="cloud",
            msg_id="late",
            parent=cloud_id,
        ),
    )
    assert late.publishes == []
    assert ops.store.get("default/configmap/app") is None


def test_stopping_answers_the_queries_waiting_on_the_cloud(ops: Operations) -> None:
    ask_remote(ops)
    with ops.store.atomic():
        result = ops.answer_pending_locally()
    ops.commit()
    assert only(result, EDGED)["content"]["code"] == 504
    assert ops.pending_queries == 0


def test_every_named_operation_has_a_handler(ops: Operations) -> None:
    # metrics.py labels inputs by this list: an operation handled but not named (or named
    # but not handled) would be counted as "unknown" or answered 400.
    from mqtt_metamanager.operations import OPERATIONS

    for op in OPERATIONS:
        result = run(ops, msg(op, "default/pod/x", {"metadata": {}}, msg_id=f"all-{op}"))
        assert result.outcome != Failed(400, "unsupported_operation"), op
    assert run(ops, msg("frob", "default/pod/x")).outcome == Failed(400, "unsupported_operation")
