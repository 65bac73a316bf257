from __future__ import annotations

import json

import pytest

from mqtt_metamanager.envelope import (
    MAX_RESOURCE_LENGTH,
    BadMessage,
    JSONText,
    Message,
    Resource,
    decode,
)
from mqtt_metamanager.jsoninput import MAX_JSON_DEPTH


def raw(**over: object) -> bytes:
    base: dict[str, object] = {
        "header": {"msg_id": "m1", "timestamp": 1700000000000, "sync": False},
        "route": {"source": "edged", "operation": "query", "resource": "default/pod/a"},
        "content": {"x": 1},
    }
    base.update(over)
    return json.dumps(base).encode()


def test_round_trip_keeps_every_field() -> None:
    m = decode(raw())
    again = decode(m.encode())
    assert again == m
    assert set(json.loads(m.encode())["header"]) == {
        "msg_id",
        "parent_msg_id",
        "timestamp",
        "resourceversion",
        "sync",
        "type",
    }


def test_unknown_fields_are_ignored() -> None:
    m = decode(raw(extra=1, header={"msg_id": "m1", "new_field": "x"}))
    assert m.msg_id == "m1"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "bad_encoding"),
        (b"{nope", "bad_json"),
        (b"[1,2]", "not_an_object"),
        (raw(header={"timestamp": 1}), "missing_msg_id"),
        (raw(header={"msg_id": ""}), "missing_msg_id"),
        (raw(header={"msg_id": 7}), "bad_field"),
        (raw(header={"msg_id": "m", "timestamp": "now"}), "bad_field"),
        (raw(header={"msg_id": "m", "timestamp": True}), "bad_field"),
        (raw(route={"source": ["edged"]}), "bad_field"),
        (raw(route="x"), "bad_field"),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "too_deep"),
        (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
    ],
)
def test_bad_input_is_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(BadMessage) as err:
        decode(payload)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "text", ["", "a", "a/", "/b", "a/b/c/d", "a//c", "x" * (MAX_RESOURCE_LENGTH + 1)]
)
def test_bad_resources(text: str) -> None:
    with pytest.raises(BadMessage):
        Resource.parse(text)


def test_resource_parts() -> None:
    assert Resource.parse("default/pod").is_list
    one = Resource.parse("default/pod/nginx")
    assert (one.namespace, one.type, one.name, one.key) == (
        "default",
        "pod",
        "nginx",
        "default/pod/nginx",
    )
    assert one.sibling("podstatus").key == "default/podstatus/nginx"


def test_reply_links_to_its_request() -> None:
    request = decode(raw())
    reply = request.reply("metamanager", "response", "OK")
    assert isinstance(reply, Message)
    assert reply.header.parent_msg_id == "m1"
    assert reply.msg_id != "m1"
    assert reply.route.resource == request.route.resource


def test_json_text_content_is_spliced_in_as_the_same_json() -> None:
    values = [{"metadata": {"name": "a"}, "n": 1.5}, {"é": ["x", None, True]}]
    texts = [json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode() for v in values]
    decoded = Message.new(source="s", group="g", operation="response", resource="r", content=values)
    spliced = decoded.with_content(JSONText.joined_array(b",".join(texts)))
    assert json.loads(spliced.encode()) == json.loads(decoded.encode())
    assert json.loads(decoded.with_content(JSONText.joined_array(b"")).encode())["content"] == []
    # The payload is the one bytes object the reply is, its content the stored text as is.
    payload = spliced.encode()
    assert isinstance(payload, bytes)
    assert payload.endswith(b',"content":[' + b",".join(texts) + b"]}")


def test_a_message_written_with_its_array_as_it_comes_is_the_joined_one() -> None:
    message = Message.new(
        source="metamanager",
        group="resource",
        operation="update",
        resource="ns/podstatus",
        content=None,
    )
    texts = [b'{"a":1}', b'"\\u00e9t\\u00e9"', b"[1,2]"]
    written, count = message.encode_with_array(iter(texts))
    assert count == 3
    assert written == message.with_content(JSONText.joined_array(b",".join(texts))).encode()
    assert json.loads(written)["content"] == [{"a": 1}, "été", [1, 2]]
    empty, none = message.encode_with_array([])
    assert (json.loads(empty)["content"], none) == ([], 0)
