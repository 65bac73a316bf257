"""The HTTP listener on its own: routes, methods, the token, addresses (no service)."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqtt_metamanager.config import ConfigError, HTTPConfig, from_mapping, listen_address
from mqtt_metamanager.http import read_token
from mqtt_metamanager.http.server import HttpEndpoint, Request, Response, json_response


def hello(request: Request) -> Response:
    return json_response(200, {"path": request.path, "query": request.query})


def get(
    endpoint: HttpEndpoint, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    host, port = endpoint.address
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


@pytest.fixture
def endpoint() -> Iterator[HttpEndpoint]:
    server = HttpEndpoint(
        ("127.0.0.1", 0), {"/open": hello, "/guarded": hello}, token=b"t0k", public=["/open"]
    )
    server.start()
    yield server
    server.stop()


def test_routes_methods_and_the_token(endpoint: HttpEndpoint) -> None:
    assert get(endpoint, "/open?x=1")[:2] == (200, b'{"path": "/open", "query": "x=1"}\n')
    assert get(endpoint, "/open", "HEAD")[:2] == (200, b"")
    status, _body, headers = get(endpoint, "/open", "POST")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")
    assert get(endpoint, "/nowhere", headers={"Authorization": "Bearer t0k"})[0] == 404
    assert get(endpoint, "/guarded")[0] == 401
    assert get(endpoint, "/guarded", headers={"Authorization": "Bearer t0"})[0] == 401
    assert get(endpoint, "/guarded", headers={"Authorization": "Basic t0k"})[0] == 401
    assert get(endpoint, "/guarded", headers={"Authorization": "bearer t0k"})[0] == 200
    # Without the token, a path that does not exist says no more than one that does.
    assert get(endpoint, "/nowhere")[0] == 401


def test_a_request_with_a_body_closes_the_connection(endpoint: HttpEndpoint) -> None:
    host, port = endpoint.address
    with socket.create_connection((host, port), timeout=5) as raw:
        raw.sendall(
            b"POST /open HTTP/1.1\r\nHost: x\r\nContent-Length: 25\r\n\r\n"
            b"GET /open HTTP/1.1\r\n\r\n\r\n"
        )
        answer = b"".join(iter(lambda: raw.recv(4096), b""))
    # One answer, the 405: the body was not taken for a second request.
    assert answer.count(b"HTTP/1.1 ") == 1
    assert answer.startswith(b"HTTP/1.1 405")


def test_an_ipv6_listener() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server = HttpEndpoint(("::1", 0), {"/open": hello}, public=["/open"])
        server.start()
    except ConfigError as exc:
        pytest.skip(f"no ::1 here: {exc}")
    try:
        assert get(server, "/open")[0] == 200
    finally:
        server.stop()


def test_a_taken_address_is_a_config_error(endpoint: HttpEndpoint) -> None:
    other = HttpEndpoint(endpoint.address, {"/open": hello})
    with pytest.raises(ConfigError, match=r"http\.listen: cannot listen on"):
        other.start()


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:10550", ("127.0.0.1", 10550)),
        ("[::1]:80", ("::1", 80)),
        ("localhost:1", ("localhost", 1)),
        ("::1:80", None),
        ("127.0.0.1", None),
        (":80", None),
        ("host:0", None),
        ("host:65536", None),
        ("host:\uff18\uff10", None),  # fullwidth digits
    ],
)
def test_listen_addresses(text: str, address: tuple[str, int] | None) -> None:
    assert listen_address(text) == address


def test_http_config_is_checked_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^http\.listen:"):
        from_mapping({"http": {"listen": "nowhere"}}, environ={})
    with pytest.raises(ConfigError, match=r"^http\.ready_outbox_lag:"):
        from_mapping({"http": {"ready_outbox_lag": 0}}, environ={})
    with pytest.raises(ConfigError, match=r"^http\.token_file:"):
        from_mapping({"http": {"token_file": str(tmp_path / "none")}}, environ={})
    assert from_mapping({}, environ={"METAMANAGER_HTTP__LISTEN": ""}).http.listen == ""
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_token(HTTPConfig(token_file=str(empty)))
