"""The read-ahead socket paho's sockets are turned into (sockets.read_ahead)."""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Iterator

import pytest

from mqtt_metamanager.sockets import RECV_CHUNK, ReadAheadSocket, read_ahead


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    ours.setblocking(False)  # as paho's
    yield read_ahead(ours), peer
    ours.close()
    peer.close()


def kernel_has_bytes(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def test_reads_a_packet_a_few_bytes_at_a_time_from_one_chunk(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    assert isinstance(ours, ReadAheadSocket)
    # Two PUBACKs and a PUBLISH, read the way paho reads: command, length, body.
    peer.sendall(b"\x40\x02\x00\x01" + b"\x40\x02\x00\x02" + b"\x32\x05\x00\x01t\x00\x03")
    puback = [ours.recv(1), ours.recv(1), ours.recv(2)]
    # All of it left the kernel with the first call; the rest is held, and said so.
    assert not kernel_has_bytes(ours) and ours.pending() == 11
    puback2 = [ours.recv(1), ours.recv(1), ours.recv(2)]
    publish = [ours.recv(1), ours.recv(1), ours.recv(5)]
    assert puback == [b"\x40", b"\x02", b"\x00\x01"] and puback2[2] == b"\x00\x02"
    assert publish == [b"\x32", b"\x05", b"\x00\x01t\x00\x03"]
    assert ours.pending() == 0
    with pytest.raises(BlockingIOError):  # what paho takes for "nothing more yet"
        ours.recv(1)


def test_a_body_longer_than_what_is_held_comes_short_as_from_the_kernel(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    peer.sendall(b"\x32\x0a" + b"12345")
    assert ours.recv(1) == b"\x32" and ours.recv(1) == b"\x0a"
    assert ours.recv(10) == b"12345"  # paho keeps what it got and asks again for the rest
    peer.sendall(b"67890")
    assert ours.recv(5) == b"67890"


def test_end_of_stream_reads_empty_and_a_chunk_is_bounded(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    peer.sendall(b"x" * (RECV_CHUNK + 10))
    peer.close()
    assert ours.recv(1) == b"x"
    assert ours.pending() <= RECV_CHUNK - 1
    while ours.pending():
        ours.recv(4096)
    rest = b""
    while chunk := ours.recv(4096):
        rest += chunk
    assert len(rest) >= 10 and ours.recv(1) == b""


def test_closing_forgets_what_was_held(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    peer.sendall(b"abc")
    ours.recv(1)
    ours.close()
    assert ours.pending() == 0


def test_only_plain_tcp_sockets_are_changed() -> None:
    context = ssl.create_default_context()
    raw = socket.socket()
    try:
        wrapped = context.wrap_socket(raw, server_hostname="broker", do_handshake_on_connect=False)
        assert type(read_ahead(wrapped)) is ssl.SSLSocket  # SSL reads whole records already
    finally:
        raw.close()
