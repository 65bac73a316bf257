"""Reliability fixes in the loop and the transport that need no broker to show.

Each test names the failure it guards against; the fault tier (tests/fault) shows the
same guarantees end to end.
"""

from __future__ import annotations

import itertools
import json
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import peewee as pw
import pytest

from mqtt_metamanager import config as config_mod
from mqtt_metamanager.ledger import OutboxEntry
from mqtt_metamanager.linkevents import Connected, Event, Published, Received
from mqtt_metamanager.routing import Outgoing
from mqtt_metamanager.service import Service
from mqtt_metamanager.store import Store, StoreError
from mqtt_metamanager.transport import Transport
from tests.support import wait_until


def _config(tmp_path: Path) -> config_mod.Config:
    return config_mod.from_mapping(
        {"database": {"path": str(tmp_path / "meta.db")}, "mqtt": {"port": 1}}, environ={}
    )


def _transport(tmp_path: Path) -> Transport:
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    cfg = _config(tmp_path)
    return Transport(
        cfg.mqtt, events, subscriptions=["t"], status_topic="s", window=4, window_bytes=1 << 20
    )


def _connect(t: Transport, client: Any) -> None:
    client.subscribe.return_value = (0, 1)
    flags, ok = mock.Mock(session_present=False), mock.Mock(is_failure=False)
    t._on_input_connect(client, None, flags, ok, None)
    t._on_subscribe(client, None, 1, [], None)


def _message(t: Transport, mid: int, qos: int = 1) -> Received:
    msg = mock.Mock(topic="t", payload=b"{}", mid=mid, qos=qos, properties=None)
    t._on_message(t.input.client, None, msg)
    while True:
        event = t.events.get_nowait()
        if isinstance(event, Received):
            return event


def test_an_input_from_an_earlier_connection_is_not_acked(tmp_path: Path) -> None:
    # Packet ids are per connection: acking id 7 after a reconnect would acknowledge
    # whatever new message the broker numbered 7, before it was processed.
    t = _transport(tmp_path)
    client = mock.Mock()
    t.input.client = client
    _connect(t, client)
    before = _message(t, 7)
    t._on_input_disconnect(client, None, None, "gone", None)
    _connect(t, client)
    after = _message(t, 8)
    t.ack(before)
    t.ack(after)
    client.ack.assert_called_once_with(8, 1)


def test_the_input_window_closes_when_full_and_opens_on_ack(tmp_path: Path) -> None:
    # mosquitto 2.0.11 ignores Receive Maximum once acks interleave: without a window of
    # its own the process held as many inputs as the burst had (docs/performance.md).
    t = _transport(tmp_path)
    client = mock.Mock()
    t.input.client = client
    _connect(t, client)
    held = [_message(t, mid, qos=mid % 2) for mid in range(1, 5)]  # QoS 0 is held too
    assert not t.window.is_open() and t.window.held == 4 == t.window.max_held
    t.ack(held[0])
    assert not t.window.is_open() and t.window.held == 3  # opens again when half is free
    t.ack(held[1])
    assert t.window.is_open() and t.window.held == 2
    t._on_input_disconnect(client, None, None, "gone", None)  # a new connection starts empty
    assert t.window.is_open() and t.window.held == 0
    t.ack(held[2])  # stale: neither acked nor counted against the new connection
    assert t.window.held == 0 and client.ack.call_count == 1


def test_online_needs_both_links(tmp_path: Path) -> None:
    # The status means "can serve": inputs come on one link and replies leave on the other.
    t = _transport(tmp_path)
    t.input.client, t.output.client = mock.Mock(), mock.Mock()
    ok = mock.Mock(is_failure=False)
    _connect(t, t.input.client)
    t.output.client.publish.assert_not_called()
    t._on_output_connect(t.output.client, None, None, ok, None)
    t.output.client.publish.assert_called_once_with("s", b"online", qos=1, retain=True)
    assert any(isinstance(e, Connected) for e in _drain(t))
    t._on_output_disconnect(t.output.client, None, None, "gone", None)
    t._on_output_connect(t.output.client, None, None, ok, None)  # back: online again
    assert t.output.client.publish.call_count == 2


def _drain(t: Transport) -> list[Event]:
    out: list[Event] = []
    while not t.events.empty():
        out.append(t.events.get_nowait())
    return out


def test_first_connect_gives_up_when_cancelled(tmp_path: Path) -> None:
    # SIGTERM while the broker was down at start used to wait forever.
    t = _transport(tmp_path)
    cancel = threading.Event()
    calls = []

    def refuse(*_a: Any, **_k: Any) -> None:
        calls.append(1)
        if len(calls) == 3:
            cancel.set()
        raise ConnectionRefusedError("down")

    with mock.patch.object(t.output.client, "connect", side_effect=refuse):
        assert t.start(cancel=cancel) is False
    assert len(calls) == 3


def test_store_error_names_the_cause_not_the_failed_rollback(tmp_path: Path) -> None:
    # On SQLITE_FULL SQLite rolls back by itself; peewee's rollback then raised
    # "cannot rollback - no transaction is active", and that was all the log said.
    store = Store(str(tmp_path / "meta.db"))
    with (
        mock.patch.object(
            store.db,
            "rollback",
            side_effect=pw.OperationalError("cannot rollback - no transaction is active"),
        ),
        pytest.raises(StoreError, match="disk is full"),
        store.atomic(),
    ):
        raise pw.OperationalError("database or disk is full")
    store.close()


def test_acked_outbox_rows_are_not_forgotten_when_the_transaction_fails(
    tmp_path: Path,
) -> None:
    # The list of acknowledged rows was cleared inside the transaction: when it rolled
    # back, those rows stayed in the table and were sent again after the next restart.
    service = Service(_config(tmp_path))
    with service.store.atomic():
        entries = service.store.outbox_add(
            [mock.Mock(topic="a", payload=b"1", correlation=None, retain=False)]
        )
    with mock.patch.object(service.transport, "publish", return_value=41):
        service.outbox.send(entries)
    service.events.put(Published(41))
    received = Received("kubeedge/metamanager/in/edgehub", _insert(), 5, 1, None, None, 1)
    service.events.put(received)
    with (
        mock.patch.object(service.transport, "publish", return_value=1),
        mock.patch.object(service.transport, "ack") as ack,
        mock.patch.object(
            service.ops, "handle", side_effect=pw.OperationalError("database or disk is full")
        ),
    ):
        service.step(0.1)
        ack.assert_not_called()
    assert service.outbox.known_rows() == {entries[0].id}
    assert service.outbox.has_deletions
    with (
        mock.patch.object(service.transport, "publish", return_value=2),
        mock.patch.object(service.transport, "ack") as ack,
    ):

        def retried() -> bool:
            service.step(0.05)  # the input's retry timer fires on a turn
            return ack.called

        wait_until(retried, 10, "the retry of the input the store failed")
        ack.assert_called_once_with(received)
    # Its row is gone (by topic: a deleted row's id may be given to a new row).
    assert "a" not in [e.publish.topic for e in service.store.outbox_pending()]
    assert not service.outbox.has_deletions
    service.store.close()


def _insert() -> bytes:
    return json.dumps(
        {
            "header": {"msg_id": "m-1"},
            "route": {"source": "edgecontroller", "operation": "insert", "resource": "a/pod/b"},
            "content": {"x": 1},
        }
    ).encode()


@contextmanager
def _publishing(service: Service) -> Iterator[list[Received]]:
    """No broker: the service's publishes get mids 1, 2, ... and its acks are recorded."""
    acked: list[Received] = []
    with (
        mock.patch.object(service.transport, "publish", side_effect=itertools.count(1)),
        mock.patch.object(service.transport, "ack", side_effect=acked.append),
    ):
        yield acked


def _insert_input(mid: int) -> Received:
    return Received("kubeedge/metamanager/in/edgehub", _insert(), mid, 1, None, None, 1)


def test_inputs_wait_while_the_broker_is_behind_on_our_publishes(tmp_path: Path) -> None:
    # Without backpressure the loop committed inputs far faster than paho could publish;
    # a kill -9 then re-sent thousands of outbox rows (duplicates) instead of a few hundred.
    from mqtt_metamanager.service import MAX_UNACKED_PUBLISHES

    service = Service(_config(tmp_path))
    with _publishing(service) as acked:
        rows = [OutboxEntry(mid, Outgoing("t", b"{}")) for mid in range(1, 513)]
        service.outbox.send(rows[:MAX_UNACKED_PUBLISHES])  # mids 1..512, with the broker
        for mid in range(3):
            service.events.put(_insert_input(mid))
        service.step(0.1)
        assert acked == []  # taken, held, not applied
        assert service.store.get("a/pod/b") is None
        assert service.outbox.unacked == MAX_UNACKED_PUBLISHES
        service.events.put(Published(1))
        service.step(0.1)
    assert [r.mid for r in acked] == [0, 1, 2]
    assert service.store.get("a/pod/b") is not None
    # The ack counted (511 left) and its row was deleted with the batch; the batch sent
    # a forward and a reply for the insert and a reply for each redelivery.
    assert service.outbox.unacked == MAX_UNACKED_PUBLISHES - 1 + 4
    assert not service.outbox.has_deletions
    service.store.close()


def test_inputs_wait_while_megabytes_of_our_publishes_are_with_the_broker(tmp_path: Path) -> None:
    # A stall's backlog of list replies (1.5 MB each) all went out at once: by count (512)
    # nothing held them back, and the service's peak RSS rose with them.
    from mqtt_metamanager.service import MAX_UNACKED_BYTES

    service = Service(_config(tmp_path))
    with _publishing(service) as acked:
        big = b"x" * (MAX_UNACKED_BYTES // 2)
        service.outbox.send([OutboxEntry(mid, Outgoing("t", big)) for mid in (1, 2)])
        assert service.outbox.unacked_bytes == MAX_UNACKED_BYTES
        service.events.put(_insert_input(1))
        service.step(0.1)
        assert acked == []  # taken, held, not applied: two publishes, but megabytes
        assert service.store.get("a/pod/b") is None
        service.events.put(Published(1))
        service.step(0.1)
    assert [r.mid for r in acked] == [1]
    assert service.store.get("a/pod/b") is not None
    # Half left with the broker, and the insert's forward and reply.
    assert MAX_UNACKED_BYTES // 2 < service.outbox.unacked_bytes < MAX_UNACKED_BYTES
    service.store.close()


def test_an_outbox_row_paho_refuses_is_dropped_not_fatal(tmp_path: Path) -> None:
    # Defence in depth behind intake's checks: a row paho refuses (a wildcard topic) raised
    # out of the loop after its commit, and from the outbox again on every start.
    service = Service(_config(tmp_path))
    with service.store.atomic():
        bad, good = service.store.outbox_add([Outgoing("a/+/b", b"{}"), Outgoing("a/b", b"{}")])
    service.outbox.send([bad, good])
    assert service.outbox.known_rows() == {bad.id, good.id}
    assert service.outbox.unacked == 1  # only good is with the broker; bad is to delete
    service.outbox.flush()
    assert [e.id for e in service.store.outbox_pending()] == [good.id]
    service.store.close()


def test_a_clean_close_reads_until_the_peer_closes_so_no_reset_drops_our_last_bytes() -> None:
    import socket

    from mqtt_metamanager.sockets import drain_until_closed

    ours, broker = socket.socketpair()
    broker.sendall(b"x" * 20_000)  # inputs we will not read (a paused input link)
    ours.sendall(b"acks+DISCONNECT")
    got = []

    def the_broker() -> None:
        got.append(broker.recv(100))
        while broker.recv(65536):  # our half-close arrives after our last bytes
            pass
        broker.close()

    peer = threading.Thread(target=the_broker)
    peer.start()
    drain_until_closed(ours, 5)
    peer.join(5)
    ours.close()
    assert got == [b"acks+DISCONNECT"]
