"""A TCP peer on 127.0.0.1 that speaks just enough MQTT v5 for one Transport.

Mosquitto decides by itself when to send; the flow-control and clean-close tests need to
put bytes in the client's socket and see, packet by packet, what the client sends back and
how its connection ends (a FIN or a reset). Each connection: CONNACK to CONNECT, SUBACK to
SUBSCRIBE, PUBACK to a QoS 1 PUBLISH; the test pushes PUBLISHes with ``Connection.send``.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CONNECT, PUBLISH, PUBACK, SUBSCRIBE, DISCONNECT = 1, 3, 4, 8, 14


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (128 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: str, mid: int, payload: bytes) -> bytes:
    """A QoS 1 PUBLISH without properties."""
    name = topic.encode()
    body = struct.pack("!H", len(name)) + name + struct.pack("!H", mid) + b"\x00" + payload
    return bytes([0x32]) + varint(len(body)) + body


@dataclass
class Connection:
    sock: socket.socket
    client_id: str = ""
    packets: list[tuple[int, bytes]] = field(default_factory=list)  # (type, body) received
    end: str = ""  # "eof" (a FIN) or "reset", once the client's side is gone
    changed: threading.Condition = field(default_factory=threading.Condition)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def push(self, data: bytes) -> threading.Thread:
        """Send ``data`` from a thread of its own: more than the client reads blocks."""

        def send() -> None:
            with contextlib.suppress(OSError):
                self.sock.sendall(data)

        thread = threading.Thread(target=send, daemon=True)
        thread.start()
        return thread

    def acked(self) -> list[int]:
        """Packet ids of the PUBACKs the client sent, in order."""
        with self.changed:
            return [struct.unpack("!H", b[:2])[0] for t, b in self.packets if t == PUBACK]

    def types(self) -> list[int]:
        with self.changed:
            return [t for t, _b in self.packets]

    def wait(self, what: str, check: Callable[[], object], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not check():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}: {self.packets}")
                self.changed.wait(left)


class ScriptedBroker:
    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: dict[str, Connection] = {}
        self.arrived = threading.Condition()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def connection(self, client_id: str, timeout: float = 5.0) -> Connection:
        with self.arrived:
            if not self.arrived.wait_for(lambda: client_id in self.connections, timeout):
                raise AssertionError(f"{client_id} never connected: {list(self.connections)}")
            return self.connections[client_id]

    def close(self) -> None:
        self.listener.close()
        for conn in list(self.connections.values()):
            conn.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _addr = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(Connection(sock),), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: Connection) -> None:
        try:
            while (packet := self._read(conn.sock)) is not None:
                kind, body = packet
                with conn.changed:
                    conn.packets.append(packet)
                    conn.changed.notify_all()
                self._answer(conn, kind, body)
            end = "eof"
        except ConnectionResetError:
            end = "reset"
        except OSError:
            end = "closed"
        with conn.changed:
            conn.end = end
            conn.changed.notify_all()
        conn.sock.close()

    def _answer(self, conn: Connection, kind: int, body: bytes) -> None:
        if kind == CONNECT:
            conn.client_id = _client_id(body)
            conn.send(b"\x20\x03\x00\x00\x00")  # CONNACK: no session, success, no properties
            with self.arrived:
                self.connections[conn.client_id] = conn
                self.arrived.notify_all()
        elif kind == SUBSCRIBE:
            mid = body[:2]
            props_len = body[2]  # short: a subscription's properties fit in one byte
            count = _filters(body[3 + props_len :])
            conn.send(bytes([0x90]) + varint(3 + count) + mid + b"\x00" + b"\x01" * count)
        elif kind == PUBLISH:  # QoS 1 (the only QoS the tests publish with)
            (length,) = struct.unpack("!H", body[:2])
            mid = body[2 + length : 4 + length]
            conn.send(b"\x40\x02" + mid)

    @staticmethod
    def _read(sock: socket.socket) -> tuple[int, bytes] | None:
        first = sock.recv(1)
        if not first:
            return None
        length, shift = 0, 0
        while True:
            (byte,) = _exactly(sock, 1)
            length |= (byte & 127) << shift
            shift += 7
            if not byte & 128:
                break
        return first[0] >> 4, _exactly(sock, length)


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionAbortedError("closed inside a packet")
        data += chunk
    return data


def _client_id(connect_body: bytes) -> str:
    (name_len,) = struct.unpack("!H", connect_body[:2])
    at = 2 + name_len + 1 + 1 + 2  # protocol name, level, flags, keepalive
    props_len, shift = 0, 0
    while True:
        byte = connect_body[at]
        at += 1
        props_len |= (byte & 127) << shift
        shift += 7
        if not byte & 128:
            break
    at += props_len
    (id_len,) = struct.unpack("!H", connect_body[at : at + 2])
    return connect_body[at + 2 : at + 2 + id_len].decode()


def _filters(payload: bytes) -> int:
    count, at = 0, 0
    while at < len(payload):
        (n,) = struct.unpack("!H", payload[at : at + 2])
        at += 2 + n + 1  # the filter and its options byte
        count += 1
    return count
