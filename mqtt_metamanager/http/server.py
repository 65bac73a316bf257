"""The local HTTP listener: a table of GET routes on the standard library's server.

``ThreadingHTTPServer`` in a daemon thread does the HTTP; each connection is served by a
thread of its own, with a socket timeout and at most ``MAX_CONNECTIONS`` at once, so a
slow or stuck client holds one of the listener's threads, never the message loop. Routes
only read what the loop publishes.

Bad requests get short answers and no stack trace in the log: an unknown path 404, a
method other than GET or HEAD 405, a missing or wrong bearer token 401 (on every path but
the public ones, when a token is set).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

from ..config import ConfigError

log = logging.getLogger(__name__)

# Each open connection is a thread: idle Kubernetes watches hold one each (SPEC §12's
# target is 100 idle watchers and 10 busy ones beside the scrapes and probes).
MAX_CONNECTIONS = 256
CLIENT_TIMEOUT = 10.0  # seconds a client may take to send a request or read the answer
ALLOWED = "GET, HEAD"


@dataclass(frozen=True)
class Request:
    path: str
    query: str
    accept: str
    method: str = "GET"


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    # A body of unknown length (a watch): sent chunk by chunk, as the iterator yields.
    stream: Iterator[bytes] | None = None


Route = Callable[[Request], Response]
# Serves a whole part of the URL space (the Kubernetes API), any method; None: not its path.
Fallback = Callable[[Request], Response | None]


def json_response(status: int, data: Any, *headers: tuple[str, str]) -> Response:
    return Response(status, json.dumps(data).encode() + b"\n", headers=headers)


def _digest(token: bytes) -> bytes:
    # Equal-length inputs for compare_digest, whatever the length of what a client sent.
    return hashlib.sha256(token).digest()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], endpoint: HttpEndpoint) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.endpoint = endpoint
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.refusing = False  # all slots taken: said once, not per refused connection
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer's own also looks its address up in DNS (getfqdn), which on a box
        # without a resolver can hold the start for seconds. The name is never used.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            if not self.refusing:
                self.refusing = True
                log.warning(
                    "http: %d connections open, refusing more (the first from %s)",
                    MAX_CONNECTIONS,
                    client_address[0],
                )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()
            self.refusing = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the client went away, or timed out mid-answer
            log.debug("http: connection from %s: %s", client_address[0], exc)
        else:  # a bug in a route: worth its trace
            log.error("http: error serving %s", client_address[0], exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body (and each watch event) are separate writes: with Nagle on, each
    # second write waited for the client's delayed ACK, ~40 ms per answer.
    disable_nagle_algorithm = True
    timeout = CLIENT_TIMEOUT
    server_version = "mqtt-metamanager"
    sys_version = ""

    @property
    def endpoint(self) -> HttpEndpoint:
        return cast(_Server, self.server).endpoint

    def do_GET(self) -> None:
        self._answer(self._respond(allowed=True), head=False)

    def do_HEAD(self) -> None:
        self._answer(self._respond(allowed=True), head=True)

    def _not_allowed(self) -> None:
        self.close_connection = True  # its body, if any, is not read
        self._answer(self._respond(allowed=False), head=False)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _not_allowed

    def _respond(self, *, allowed: bool) -> Response:
        """Checks first (the token, the path, the method), then the route."""
        url = urlsplit(self.path)
        endpoint = self.endpoint
        if url.path not in endpoint.public and not endpoint.authorized(
            self.headers.get("Authorization", "")
        ):
            return json_response(401, {"error": "unauthorized"}, ("WWW-Authenticate", "Bearer"))
        route = endpoint.routes.get(url.path)
        if route is None and endpoint.fallback is not None:
            request = Request(url.path, url.query, self.headers.get("Accept", ""), self.command)
            answer = endpoint.fallback(request)
            if answer is not None:
                return answer
        if route is None:
            return json_response(404, {"error": "not found"})
        if not allowed:
            return json_response(405, {"error": "method not allowed"}, ("Allow", ALLOWED))
        return route(Request(url.path, url.query, self.headers.get("Accept", "")))

    def _answer(self, response: Response, *, head: bool) -> None:
        if self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # a body we do not read must not become a request
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        if response.stream is None:
            self.send_header("Content-Length", str(len(response.body)))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-store")
        for name, value in response.headers:
            self.send_header(name, value)
        if response.stream is not None:
            self._stream(response, head=head)
            return
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(response.body)

    def _stream(self, response: Response, *, head: bool) -> None:
        """Chunked transfer, one chunk per item, each sent at once. A client that stops
        reading makes a write time out (``CLIENT_TIMEOUT``): the stream ends there."""
        assert response.stream is not None
        self.close_connection = True
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            if head:
                return
            for chunk in response.stream:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        finally:
            close = getattr(response.stream, "close", None)
            if close is not None:
                close()  # a generator's cleanup: its watcher leaves the feed

    def log_message(self, format: str, *args: Any) -> None:
        # One DEBUG line per request (and per malformed one): scrapes every few seconds
        # must not fill the service's log.
        log.debug("http: %s %s", self.address_string(), format % args)


class HttpEndpoint:
    """One listener serving ``routes`` (path -> route); a token guards all but ``public``."""

    def __init__(
        self,
        address: tuple[str, int],
        routes: Mapping[str, Route],
        *,
        token: bytes | None = None,
        public: Collection[str] = (),
        fallback: Fallback | None = None,
    ) -> None:
        self.requested = address
        self.routes = dict(routes)
        self.fallback = fallback
        self.public = frozenset(public)
        self._token = None if token is None else _digest(token)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def authorized(self, header: str) -> bool:
        if self._token is None:
            return True
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(_digest(value.strip().encode()), self._token)

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the real port when 0 was asked for)."""
        if self._server is None:
            return self.requested
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind and serve in a daemon thread; ``ConfigError`` when the address is taken."""
        try:
            self._server = _Server(self.requested, self)
        except OSError as exc:
            host, port = self.requested
            raise ConfigError(
                f"http.listen: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            daemon=True,
            name="http",
        )
        self._thread.start()
        host, port = self.address
        log.info("http: listening on %s:%d (%s)", host, port, " ".join(sorted(self.routes)))

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
