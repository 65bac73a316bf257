"""Hostile input, property-based: whatever arrives on an inbox, the service answers cleanly.

Every case goes through the service's own pipeline (``Pipeline.process``: admit, handle,
stage, commit, send, ack) against a temporary SQLite file, no broker, on the legacy inbox
and on per-sender inboxes. The
properties: nothing raises; an invalid input is either an ``error`` reply to a sender that
can be told or a dead-letter entry; anything invalid leaves the store as it was; every
publish owed is well-formed (a valid MQTT topic, strict JSON); a valid mutating input
redelivered with its msg_id is not applied twice; a sender is answered only where it may
read.
"""

from __future__ import annotations

import json
import sqlite3
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqtt_metamanager import intake
from mqtt_metamanager.envelope import MAX_RESOURCE_LENGTH
from mqtt_metamanager.identity import AccessPolicy, Refused
from mqtt_metamanager.jsoninput import MAX_JSON_DEPTH, parse_json
from mqtt_metamanager.linkevents import Received
from mqtt_metamanager.metrics import ServiceMetrics
from mqtt_metamanager.operations import OPERATIONS, Operations, RemoteQueryPolicy, Result
from mqtt_metamanager.outbox import Outbox
from mqtt_metamanager.outcome import Failed, Kind
from mqtt_metamanager.pipeline import Pipeline
from mqtt_metamanager.routing import Outgoing, ReplyTo, Topics
from mqtt_metamanager.store import Store
from mqtt_metamanager.timers import TimerQueue

MAX_PAYLOAD = 64 * 1024
TOPICS = Topics("kubeedge")
SETTINGS = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@dataclass
class Outcome:
    """What the service did with one input."""

    rejected: Refused | None
    result: Result

    @property
    def publishes(self) -> list[Outgoing]:
        return self.result.publishes


class Harness:
    """A store and the service's pipeline over it, fed one input per batch; the MQTT
    client is a list that records what would be published."""

    def __init__(self, path: Path) -> None:
        self.store = Store(str(path))
        access = AccessPolicy(
            TOPICS,
            ["edged", "edgemesh", "devicetwin", "eventbus", "servicebus"],
            ["admin"],
            legacy_inbox=True,
        )
        self.ops = Operations(
            self.store, TOPICS, remote_query=RemoteQueryPolicy(timeout=1.0, retries=1)
        )
        self.published: list[Outgoing] = []
        self.pipeline = Pipeline(
            access,
            self.ops,
            Outbox(self.store, self._publish),
            ServiceMetrics(TOPICS.deadletter),
            TimerQueue(),
            ack=lambda _received: None,
            max_payload=MAX_PAYLOAD,
        )
        self.path = path

    def _publish(self, out: Outgoing) -> int:
        self.published.append(out)
        return len(self.published)

    def feed(
        self, payload: bytes, props: ReplyTo | None = None, topic: str = TOPICS.metamanager_in
    ) -> Outcome:
        """``props``: the input's Response Topic and Correlation Data, if any."""
        props = props or ReplyTo()
        received = Received(topic, payload, 1, 1, props.topic, props.correlation)
        sent_before = len(self.published)
        [handled] = self.pipeline.process([received])
        outcome = handled.result.outcome
        # Neither a bug (500) nor a store failure (503): the pipeline would hide both.
        assert not (isinstance(outcome, Failed) and outcome.code in (500, 503)), outcome
        assert self.published[sent_before:] == handled.result.publishes  # all sent, in order
        admitted = handled.admitted
        return Outcome(admitted if isinstance(admitted, Refused) else None, handled.result)

    def set_cloud_link(self, up: bool) -> None:
        self.pipeline.internal(lambda: self.ops.set_cloud_link(up))

    def snapshot(self) -> list[tuple[Any, ...]]:
        """The ``meta`` table as another process sees it (read-only connection)."""
        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True) as db:
            return db.execute("SELECT key, type, value, resource_version FROM meta").fetchall()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = Harness(tmp_path_factory.mktemp("hostile") / "meta.db")
    # Some state to be damaged: a pod, its status, a configmap with a resource version.
    for i, (op, resource, content) in enumerate(
        [
            ("insert", "default/pod/web", {"metadata": {"name": "web", "resourceVersion": "7"}}),
            ("insert", "default/podstatus/web", {"phase": "Running"}),
            ("insert", "kube-system/configmap/cfg", {"data": {"a": "b"}}),
        ]
    ):
        h.feed(_encode(_envelope(f"seed-{i}", op, resource, content)))
    yield h
    h.store.close()


def _envelope(msg_id: str, op: str, resource: str, content: Any, source: str = "cloud") -> Any:
    return {
        "header": {"msg_id": msg_id, "parent_msg_id": "", "timestamp": 1},
        "route": {"source": source, "group": "resource", "operation": op, "resource": resource},
        "content": content,
    }


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def assert_well_formed(outcome: Outcome) -> None:
    """Every publish has a topic MQTT accepts and a payload that is strict JSON."""
    for out in outcome.publishes:
        assert out.topic and "+" not in out.topic and "#" not in out.topic, out.topic
        assert "\x00" not in out.topic
        out.topic.encode("utf-8")
        parse_json(out.payload)


def assert_clean_rejection(outcome: Outcome) -> None:
    """An error reply to whoever can be told, else exactly one dead-letter entry."""
    refused = outcome.rejected
    assert refused is not None
    letters = [p for p in outcome.publishes if p.topic == TOPICS.deadletter]
    replies = [p for p in outcome.publishes if p.topic != TOPICS.deadletter]
    if refused.inbound is None or refused.notify_operators:
        assert len(letters) == 1
        letter = json.loads(letters[0].payload)
        assert letter["reason"] == refused.error.reason
        assert letter["size"] >= 0
    if refused.inbound is None:
        assert replies == []
    else:
        assert len(replies) == 1
        reply = json.loads(replies[0].payload)
        assert reply["route"]["operation"] == "error"
        assert reply["content"]["code"] == refused.error.code
        assert reply["content"]["code"] in (400, 403)


# -- strategies ------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
# Unpaired surrogates: valid in a JSON escape, invalid in UTF-8 (SQLite, MQTT topics).
surrogates = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)
anything = json_values | surrogates | st.sampled_from([[], {}, "", 0, -1, True])
segment = st.text(alphabet=string.ascii_lowercase + "-.", min_size=1, max_size=6)
resources = st.one_of(
    st.builds(lambda a, b: f"{a}/{b}", segment, segment),
    st.builds(
        lambda a, b, c: f"{a}/{b}/{c}", segment, st.sampled_from(["pod", "podstatus"]), segment
    ),
    st.builds(lambda a, b: f"{a}/{b}", st.sampled_from(["default", "kube-system"]), segment),
    st.sampled_from(["default/pod/web", "default/podstatus/web", "kube-system/configmap/cfg"]),
    st.sampled_from(["", "/", "a", "a//b", "/a/b", "a/b/", "a/b/c/d", "node/connection"]),
    st.text(max_size=30),
    st.builds(lambda a, s: f"{a}/{s}", segment, surrogates),
    st.just("a/b/" + "x" * MAX_RESOURCE_LENGTH),
)
# Every operation the service handles (a new one is fuzzed as soon as it is added), and
# some it does not.
operations = st.sampled_from([*sorted(OPERATIONS), "", "INSERT", "bogus"])
sources = st.sampled_from(["edged", "edgecontroller", "cloud", "metamanager", "", "devicetwin"])
contents = st.one_of(
    anything,
    st.sampled_from(["cloud_connected", "cloud_disconnected", "OK"]),
    st.builds(
        lambda rv, extra: {"metadata": {"name": "web", "resourceVersion": rv}, **extra},
        st.one_of(st.text(max_size=6), st.integers(), st.sampled_from(["²", "٣", "08", "-1"])),
        st.dictionaries(st.text(max_size=5), json_scalars, max_size=3),
    ),
)


def _maybe(field: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field of the right shape most of the time, of any shape otherwise, or absent."""
    return st.one_of(field, field, field, anything)


@st.composite
def envelopes(draw: st.DrawFn) -> Any:
    header: dict[str, Any] = {}
    for name, strategy in [
        (
            "msg_id",
            st.one_of(st.uuids().map(str), st.sampled_from(["seed-0", "dup", ""]), surrogates),
        ),
        ("parent_msg_id", st.one_of(st.just(""), st.text(max_size=8))),
        ("timestamp", st.integers(min_value=0, max_value=2**62)),
        ("resourceversion", st.text(max_size=5)),
        ("sync", st.booleans()),
        ("type", st.text(max_size=5)),
    ]:
        if draw(st.booleans()) or name == "msg_id":
            header[name] = draw(_maybe(strategy))
    route: dict[str, Any] = {}
    for name, strategy in [
        ("source", sources),
        ("destination", st.text(max_size=5)),
        ("group", st.sampled_from(["resource", "meta", ""])),
        ("operation", operations),
        ("resource", resources),
    ]:
        if draw(st.integers(0, 9)) > 0:
            route[name] = draw(_maybe(strategy))
    message: dict[str, Any] = {"header": draw(_maybe(st.just(header))), "route": route}
    if draw(st.booleans()):
        message["content"] = draw(contents)
    if draw(st.integers(0, 9)) == 0:
        message[draw(st.text(max_size=5))] = draw(anything)
    return message


reply_tos = st.one_of(
    st.just(ReplyTo()),
    st.builds(
        ReplyTo,
        st.sampled_from(
            ["tools/reply", "kubeedge/cli/reply/1", "a/b/c", "a/+/b", "#", "a/\x00", "x" * 70000]
        ),
        st.one_of(st.none(), st.binary(max_size=16)),
    ),
)


# -- properties ------------------------------------------------------------------------------


@SETTINGS
@given(payload=st.binary(max_size=2048), reply_to=reply_tos)
def test_random_bytes_never_crash_and_never_write(
    harness: Harness, payload: bytes, reply_to: Any
) -> None:
    before = harness.snapshot()
    outcome = harness.feed(payload, reply_to)
    assert_well_formed(outcome)
    if outcome.rejected is not None:
        assert_clean_rejection(outcome)
        assert harness.snapshot() == before


@SETTINGS
@given(value=json_values, reply_to=reply_tos)
def test_json_that_is_no_envelope_is_rejected(harness: Harness, value: Any, reply_to: Any) -> None:
    before = harness.snapshot()
    outcome = harness.feed(_encode(value), reply_to)
    assert outcome.rejected is not None
    assert_clean_rejection(outcome)
    assert_well_formed(outcome)
    assert harness.snapshot() == before


@SETTINGS
@given(message=envelopes(), reply_to=reply_tos, link_up=st.booleans())
def test_envelopes_of_any_shape(
    harness: Harness, message: Any, reply_to: Any, link_up: bool
) -> None:
    harness.set_cloud_link(link_up)
    before = harness.snapshot()
    payload = _encode(message)
    outcome = harness.feed(payload, reply_to)
    assert_well_formed(outcome)
    if outcome.rejected is not None:
        assert_clean_rejection(outcome)
        assert harness.snapshot() == before
        return
    if isinstance(outcome.result.outcome, Failed):
        assert harness.snapshot() == before, outcome.result.outcome
    # Redelivery with the same msg_id: not applied again, answered again.
    after = harness.snapshot()
    again = harness.feed(payload, reply_to)
    assert_well_formed(again)
    if outcome.result.outcome is not Kind.DUPLICATE and again.result.outcome is Kind.DUPLICATE:
        assert harness.snapshot() == after
        assert [p.topic for p in again.publishes] == [p.topic for p in outcome.result.replies]


@SETTINGS
@given(
    message=envelopes(),
    cut=st.integers(min_value=0, max_value=400),
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(1, 255)), max_size=3),
)
def test_damaged_envelopes(harness: Harness, message: Any, cut: int, flips: Any) -> None:
    payload = bytearray(_encode(message))
    for index, xor in flips:
        if payload:
            payload[index % len(payload)] ^= xor
    damaged = bytes(payload[: max(cut, len(payload) // 2)])
    before = harness.snapshot()
    outcome = harness.feed(damaged)
    assert_well_formed(outcome)
    if outcome.rejected is not None:
        assert_clean_rejection(outcome)
        assert harness.snapshot() == before


# -- the limits, each on its own ---------------------------------------------------------------


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = [value]
    return value


def test_payload_over_max_payload_is_refused(harness: Harness) -> None:
    before = harness.snapshot()
    big = _envelope("big", "insert", "default/pod/big", "x" * MAX_PAYLOAD)
    outcome = harness.feed(_encode(big))
    assert outcome.rejected is not None and outcome.rejected.error.reason == "too_large"
    assert_clean_rejection(outcome)
    no_sender = b"x" * (MAX_PAYLOAD + 1)
    outcome = harness.feed(no_sender)
    assert outcome.rejected is not None and outcome.rejected.error.reason == "too_large"
    letter = json.loads(outcome.publishes[0].payload)
    assert letter["truncated"] and letter["size"] == MAX_PAYLOAD + 1
    assert len(letter["payload"]) == intake.DEADLETTER_PAYLOAD_MAX
    assert harness.snapshot() == before


def test_resource_length_limit(harness: Harness) -> None:
    before = harness.snapshot()
    name = "n" * (MAX_RESOURCE_LENGTH - len("default/pod/"))
    at_limit = harness.feed(_encode(_envelope("len-ok", "insert", f"default/pod/{name}", {})))
    assert at_limit.rejected is None and at_limit.result.outcome is Kind.STORED
    over = harness.feed(_encode(_envelope("len-bad", "insert", f"default/pod/{name}x", {})))
    assert over.rejected is not None and over.rejected.error.reason == "bad_resource"
    assert_clean_rejection(over)
    assert len(harness.snapshot()) == len(before) + 1
    harness.feed(_encode(_envelope("len-del", "delete", f"default/pod/{name}", None)))
    assert harness.snapshot() == before


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 30_000])
def test_nesting_deeper_than_the_limit_is_refused(harness: Harness, depth: int) -> None:
    before = harness.snapshot()
    # The content sits at depth 2 of the envelope.
    too_deep = _envelope("deep", "insert", "default/pod/deep", _nested(depth - 1))
    payload = _encode(too_deep) if depth < 1000 else _deep_payload(depth)
    outcome = harness.feed(payload)
    assert outcome.rejected is not None and outcome.rejected.error.reason == "too_deep"
    assert_clean_rejection(outcome)
    assert harness.snapshot() == before


def _deep_payload(depth: int) -> bytes:
    # json.dumps itself recurses; build the text by hand.
    head = b'{"header":{"msg_id":"deep"},"route":{"source":"cloud","operation":"insert",'
    head += b'"resource":"default/pod/deep"},"content":'
    return head + b"[" * depth + b"]" * depth + b"}"


def test_nesting_at_the_limit_is_stored(harness: Harness) -> None:
    at_limit = _envelope("deep-ok", "insert", "default/pod/deep-ok", _nested(MAX_JSON_DEPTH - 1))
    outcome = harness.feed(_encode(at_limit))
    assert outcome.rejected is None and outcome.result.outcome is Kind.STORED
    harness.feed(_encode(_envelope("deep-del", "delete", "default/pod/deep-ok", None)))


@pytest.mark.parametrize(
    "payload",
    [
        # Found by the properties above: each crashed the loop (and so the service, forever,
        # since the input comes again after a restart) before jsoninput.parse_json refused it.
        rb'{"header":{"msg_id":"\ud800"},"route":{"source":"cloud","operation":"insert",'
        rb'"resource":"a/b/c"},"content":1}',
        rb'{"header":{"msg_id":"s1"},"route":{"source":"cloud","operation":"insert",'
        rb'"resource":"a/b/\udc00"},"content":1}',
        b'{"header":{"msg_id":"s2"},"route":{"source":"cloud","operation":"insert",'
        b'"resource":"a/b/c"},"content":NaN}',
        b'{"header":{"msg_id":"s3"},"route":{"source":"cloud","operation":"insert",'
        b'"resource":"a/b/c"},"content":1e400}',
    ],
)
def test_input_that_is_not_storable_json_is_refused(harness: Harness, payload: bytes) -> None:
    before = harness.snapshot()
    outcome = harness.feed(payload)
    assert outcome.rejected is not None, outcome.result.outcome
    assert_clean_rejection(outcome)
    assert harness.snapshot() == before


def test_superscript_resource_version_does_not_crash(harness: Harness) -> None:
    # "²".isdigit() is True but int("²") raises: an update compared it and crashed.
    rv = {"metadata": {"name": "web", "resourceVersion": "²"}}
    outcome = harness.feed(_encode(_envelope("sup", "update", "default/pod/web", rv)))
    assert outcome.rejected is None and outcome.result.outcome is Kind.STORED
    harness.feed(_encode(_envelope("sup-back", "insert", "default/pod/web", {"metadata": {}})))


@pytest.mark.parametrize("topic", ["reply/+/x", "reply/#", "a\x00b", "t" * 65536])
def test_response_topic_one_cannot_publish_to_is_refused(harness: Harness, topic: str) -> None:
    # Found with the real broker: mosquitto passes a Response Topic with a wildcard, paho
    # raised on the reply after the commit, and the outbox row crashed every later start.
    before = harness.snapshot()
    request = _envelope("rt-bad", "insert", "default/pod/rt", {"n": 1})
    outcome = harness.feed(_encode(request), ReplyTo(topic, b"c"))
    assert outcome.rejected is not None
    assert outcome.rejected.error.reason == "bad_response_topic"
    assert_clean_rejection(outcome)
    assert_well_formed(outcome)
    assert [p.topic for p in outcome.publishes] == [TOPICS.cloud]
    assert harness.snapshot() == before


def test_a_dead_letter_cut_inside_a_character_is_still_text() -> None:
    payload = ("é" * 3000).encode()  # 2 bytes each: the 4 KiB cut splits none, so add 1
    letter = json.loads(intake.deadletter_payload("t", b"x" + payload, "bad_json", "why"))
    assert letter["payload"].startswith("xé")
    assert letter["truncated"] is True
    binary = json.loads(intake.deadletter_payload("t", b"\xff" * 5000, "bad_encoding", "why"))
    assert "payload_base64" in binary


# -- per-sender inboxes (SPEC §11) ----------------------------------------------------------

LOCAL_MODULES = ("edged", "edgemesh", "devicetwin", "eventbus", "servicebus")
identities = st.one_of(
    st.sampled_from([*LOCAL_MODULES, "edgehub", "admin", "tool", "metamanager", "", "Bad", "a/b"]),
    st.text(max_size=8),
)
sources = st.sampled_from(["edged", "devicetwin", "edgecontroller", "metamanager", "tool", ""])


def _reply_topics_allowed(identity: str) -> tuple[str, ...]:
    """Where replies to ``identity`` may go: what it may itself read (the shipped ACL)."""
    own = TOPICS.reply_space(identity)
    if identity in LOCAL_MODULES:
        return (TOPICS.inbox(identity), own)
    if identity == "edgehub":
        return (TOPICS.cloud, own)
    return (own,)


@SETTINGS
@given(
    identity=identities,
    message=envelopes(),
    source=sources,
    reply_to=reply_tos,
    link_up=st.booleans(),
)
def test_a_sender_is_answered_only_where_it_may_read(
    harness: Harness, identity: str, message: Any, source: str, reply_to: Any, link_up: bool
) -> None:
    harness.set_cloud_link(link_up)
    if isinstance(message.get("route"), dict):
        message["route"]["source"] = source
    before = harness.snapshot()
    topic = f"{TOPICS.metamanager_in}/{identity}"
    outcome = harness.feed(_encode(message), reply_to, topic=topic)
    assert_well_formed(outcome)
    if outcome.rejected is not None:
        assert_clean_rejection(outcome)
        assert harness.snapshot() == before
    for reply in outcome.result.replies:
        allowed = _reply_topics_allowed(identity)
        assert reply.topic in allowed or reply.topic.startswith(f"{allowed[-1]}/"), reply.topic
    if identity not in (*LOCAL_MODULES, "edgehub", "admin"):
        # Anyone else may only ask: nothing it sends changes the store.
        assert harness.snapshot() == before
    if identity in LOCAL_MODULES and outcome.rejected is None:
        assert source == identity


@pytest.mark.parametrize(
    ("identity", "source", "operation", "response_topic", "reason", "told"),
    [
        ("devicetwin", "edged", "insert", None, "source_mismatch", "kubeedge/devicetwin/in"),
        ("edged", "metamanager", "update", None, "source_mismatch", "kubeedge/edged/in"),
        ("edgehub", "metamanager", "insert", None, "source_mismatch", "kubeedge/edgehub/in"),
        ("tool", "edgecontroller", "insert", None, "forbidden", "kubeedge/reply/tool"),
        ("tool", "tool", "delete", "kubeedge/reply/tool/1", "forbidden", "kubeedge/reply/tool/1"),
        (
            "tool",
            "tool",
            "query",
            "kubeedge/edged/in",
            "forbidden_response_topic",
            "kubeedge/reply/tool",
        ),
        (
            "edged",
            "edged",
            "query",
            "kubeedge/devicetwin/in",
            "forbidden_response_topic",
            "kubeedge/edged/in",
        ),
        (
            "admin",
            "metamanager",
            "insert",
            "kubeedge/reply/admin/x",
            "source_mismatch",
            "kubeedge/reply/admin/x",
        ),
        ("devicetwin", "devicetwin", "connect", None, "forbidden", "kubeedge/devicetwin/in"),
        ("tool", "tool", "publish", None, "forbidden", "kubeedge/reply/tool"),
    ],
)
def test_refusals_go_to_the_sender_and_to_operators(
    harness: Harness,
    identity: str,
    source: str,
    operation: str,
    response_topic: str | None,
    reason: str,
    told: str,
) -> None:
    before = harness.snapshot()
    request = _envelope(f"deny-{reason}", operation, "default/pod/deny", {"n": 1}, source)
    topic = f"{TOPICS.metamanager_in}/{identity}"
    outcome = harness.feed(_encode(request), ReplyTo(response_topic, b"c"), topic=topic)
    assert outcome.rejected is not None and outcome.rejected.error.reason == reason
    [reply] = outcome.result.replies
    assert reply.topic == told
    answer = json.loads(reply.payload)
    assert answer["route"]["operation"] == "error"
    assert answer["content"]["code"] == 403
    assert answer["header"]["parent_msg_id"] == f"deny-{reason}"
    [letter] = [json.loads(p.payload) for p in outcome.publishes if p.topic == TOPICS.deadletter]
    assert letter["identity"] == identity and letter["reason"] == reason
    assert harness.snapshot() == before


@pytest.mark.parametrize("level", ["", "Admin", "metamanager", "a b", "x" * 64])
def test_an_identity_no_user_can_have_is_a_dead_letter(harness: Harness, level: str) -> None:
    before = harness.snapshot()
    request = _envelope("odd", "insert", "default/pod/odd", {"n": 1}, "edgecontroller")
    topic = f"{TOPICS.metamanager_in}/{level}"
    outcome = harness.feed(_encode(request), ReplyTo("kubeedge/reply/admin/1"), topic=topic)
    assert outcome.rejected is not None and outcome.rejected.error.reason == "bad_identity"
    assert [p.topic for p in outcome.publishes] == [TOPICS.deadletter]
    assert harness.snapshot() == before
