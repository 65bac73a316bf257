"""The transport's flow control and clean close, against a scripted broker.

What mosquitto does is not in the test's hands; here the test puts inputs in the input
link's socket itself and sees every packet the transport sends back, and whether its
connection ends with a FIN or a reset. The integration and fault tiers show the same
guarantees against the real broker.
"""

from __future__ import annotations

import queue
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from mqtt_metamanager import config as config_mod
from mqtt_metamanager.link import Link
from mqtt_metamanager.linkevents import Event, Received
from mqtt_metamanager.netloop import NetworkLoop
from mqtt_metamanager.transport import Transport

from ..support import wait_until
from .scripted_broker import DISCONNECT, PUBACK, ScriptedBroker, publish

WINDOW = 4
WINDOW_BYTES = 1 << 20
TIMEOUT = 5.0


@pytest.fixture
def broker() -> Iterator[ScriptedBroker]:
    b = ScriptedBroker()
    yield b
    b.close()


def started(broker: ScriptedBroker, tmp_path: Path, window_bytes: int) -> Transport:
    cfg = config_mod.from_mapping(
        {
            "database": {"path": str(tmp_path / "meta.db")},
            "mqtt": {"port": broker.port, "client_id": "mm"},
        },
        environ={},
    )
    t = Transport(
        cfg.mqtt,
        queue.SimpleQueue(),
        subscriptions=["in/#"],
        status_topic="s",
        window=WINDOW,
        window_bytes=window_bytes,
    )
    assert t.start(attempts=1)
    return t


@pytest.fixture
def transport(broker: ScriptedBroker, tmp_path: Path) -> Iterator[Transport]:
    t = started(broker, tmp_path, WINDOW_BYTES)
    yield t
    t.stop()


def inputs(t: Transport, n: int) -> list[Received]:
    """The next ``n`` inputs the transport reports (other events are skipped)."""
    got: list[Received] = []
    while len(got) < n:
        event: Event = t.events.get(timeout=TIMEOUT)
        if isinstance(event, Received):
            got.append(event)
    return got


def no_input_queued(t: Transport) -> bool:
    while not t.events.empty():
        if isinstance(t.events.get_nowait(), Received):
            return False
    return True


def test_a_full_window_leaves_the_rest_unread_until_half_is_acked(
    broker: ScriptedBroker, transport: Transport
) -> None:
    conn = broker.connection("mm")
    conn.send(b"".join(publish("in/x", mid, b"{}") for mid in range(1, 11)))
    first = inputs(transport, WINDOW)
    assert [r.mid for r in first] == [1, 2, 3, 4]
    transport.ack(first[0])  # 3 held: still full until half is free
    # The PUBACK is written by the network thread: it has turned since the window closed,
    # and read nothing more.
    conn.wait("the first ack", lambda: conn.acked() == [1])
    assert no_input_queued(transport) and transport.window.max_held == WINDOW
    transport.ack(first[1])  # 2 held: open again
    second = inputs(transport, 2)
    assert [r.mid for r in second] == [5, 6]
    for r in [*first[2:], *second]:
        transport.ack(r)
    rest = inputs(transport, 4)
    for r in rest:
        transport.ack(r)
    assert [r.mid for r in rest] == [7, 8, 9, 10]
    conn.wait("every ack, in order", lambda: conn.acked() == list(range(1, 11)))
    assert transport.window.max_held == WINDOW


def test_the_window_closes_on_held_bytes_before_it_is_full_in_count(
    broker: ScriptedBroker, tmp_path: Path
) -> None:
    # 2,500 bytes: two 1 KiB inputs leave it open, the third closes it (4 would by count).
    t = started(broker, tmp_path, 2500)
    try:
        conn = broker.connection("mm")
        conn.send(b"".join(publish("in/x", mid, b"x" * 1024) for mid in range(1, 8)))
        first = inputs(t, 3)
        t.ack(first[0])  # 2 held, 2 KiB: more than half the bytes, still closed
        conn.wait("the first ack", lambda: conn.acked() == [1])
        assert no_input_queued(t) and t.window.max_held_bytes == 3 * 1024
        t.ack(first[1])  # 1 KiB held: open again
        second = inputs(t, 2)
        assert [r.mid for r in [*first, *second]] == [1, 2, 3, 4, 5]
        for r in [first[2], *second]:
            t.ack(r)
        # An input larger than the window's bytes is still read, and holds it alone.
        conn.send(publish("in/x", 8, b"y" * 4000) + publish("in/x", 9, b"{}"))
        rest = inputs(t, 2)  # 6 and 7 first, then the big one closes the window
        for r in rest:
            t.ack(r)
        big = inputs(t, 1)[0]
        assert big.mid == 8 and len(big.payload) == 4000
        conn.wait("the acks so far", lambda: conn.acked() == [1, 2, 3, 4, 5, 6, 7])
        assert no_input_queued(t)
        t.ack(big)
        assert [r.mid for r in inputs(t, 1)] == [9]
    finally:
        t.stop()


def test_stop_with_unread_inputs_delivers_the_last_acks_and_ends_without_a_reset(
    broker: ScriptedBroker, transport: Transport
) -> None:
    # Closing a socket with unread bytes makes the kernel send a RST, and the broker's
    # kernel drops what it had not read: the last acks and the DISCONNECT, so inputs
    # already applied would come again (docs/reliability.md).
    conn = broker.connection("mm")
    # More than the client reads ahead (64 KiB): some stays unread in its socket.
    conn.push(b"".join(publish("in/x", mid, b"x" * 1024) for mid in range(1, 301)))
    held = inputs(transport, WINDOW)
    for r in held[:2]:
        transport.ack(r)
    opened = inputs(transport, 2)  # the window opened and filled again: the rest is unread
    transport.ack(opened[0])
    transport.stop()
    conn.wait("the end of the connection", lambda: conn.end)
    assert conn.end == "eof"
    assert conn.acked() == [1, 2, 5]
    assert conn.types()[-1] == DISCONNECT
    assert PUBACK in conn.types()


def test_acks_made_in_a_batch_are_written_by_the_batching_thread_without_a_wake_up(
    broker: ScriptedBroker, transport: Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The service loop writes what its batch queued itself when the network thread is
    # not at the link: one wake-up and one thread switch fewer per batch. When that thread
    # is still finishing its turn (it has just read these inputs) the loop wakes it
    # instead: so each round first waits for it to leave the link (on a loaded machine it
    # was still there in all of five rounds once), and one round of a few must be quiet
    # (its keepalive chores take the link once a second).
    conn = broker.connection("mm")
    wakes: list[str] = []
    monkeypatch.setattr(transport.input, "wake", lambda: wakes.append("input"))
    quiet_rounds = 0
    for first in range(1, 11, 2):
        conn.send(publish("in/x", first, b"{}") + publish("in/x", first + 1, b"{}"))
        got = inputs(transport, 2)
        # Link.buffered() says yes while another thread is at the link.
        wait_until(lambda: not transport.input.buffered(), TIMEOUT, "the link left alone")
        wakes.clear()
        with transport.writes_batched():
            for r in got:
                transport.ack(r)
        acked = list(range(1, first + 2))
        conn.wait("both acks", lambda acked=acked: conn.acked() == acked)
        quiet_rounds += wakes == []
    assert quiet_rounds >= 1
    wakes.clear()
    # Outside a batch an ack still wakes the network thread to write it.
    conn.send(publish("in/x", 11, b"{}"))
    (last,) = inputs(transport, 1)
    transport.ack(last)
    assert wakes == ["input"]
    monkeypatch.undo()
    transport.input.wake()
    conn.wait("the last ack", lambda: conn.acked() == list(range(1, 12)))


class _ClosedUnderTheLoop:
    """A link whose socket the service loop closed (a loss found writing its batch) after
    the network thread took it for ``select``."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.close()
        self.client = self

    def tend(self, now: float) -> float | None:
        return None

    def socket(self) -> socket.socket:
        return self.sock

    def wants_read(self) -> bool:
        return True

    def buffered(self) -> bool:
        return False

    def want_write(self) -> bool:
        return False


def test_a_socket_closed_under_the_network_loop_ends_its_turn_quietly() -> None:
    loop = NetworkLoop()
    loop.add(cast(Link, _ClosedUnderTheLoop()))
    wake_r, wake_w = socket.socketpair()
    with wake_r, wake_w:
        loop.turn(wake_r, 0.0)  # raised ValueError (fd -1) before: a traceback, a pause
