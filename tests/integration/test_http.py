"""The local HTTP listener of a running service: /metrics, /healthz, /readyz (SPEC §12)."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mqtt_metamanager.http.server import MAX_CONNECTIONS
from mqtt_metamanager.loopstate import TEST_WEDGE_ENV
from mqtt_metamanager.service import INPUT_WINDOW_BYTES
from tests.support import (
    CLOUD,
    HOST,
    PREFIX,
    Broker,
    Publisher,
    ServiceProcess,
    Watcher,
    envelope,
    reply_to,
    wait_until,
)

pytestmark = pytest.mark.integration

MakeService = Callable[..., ServiceProcess]

# Every metric SPEC §12 lists, by the name its family has in the text format.
SPEC_METRICS = {
    "metamanager_inputs": "counter",
    "metamanager_handle_seconds": "histogram",
    "metamanager_commit_seconds": "histogram",
    "metamanager_batch_inputs": "histogram",
    "metamanager_outbox_rows": "gauge",
    "metamanager_outbox_oldest_age_seconds": "gauge",
    "metamanager_held_inputs": "gauge",
    "metamanager_dedup_hits": "counter",
    "metamanager_dead_letters": "counter",
    "metamanager_refusals": "counter",
    "metamanager_cloud_link_up": "gauge",
    "metamanager_cloud_link_changes": "counter",
    "metamanager_remote_queries": "counter",
    "metamanager_podstatus_syncs": "counter",
    "metamanager_podstatus_sync_seconds": "histogram",
    "metamanager_podstatus_sync_statuses": "counter",
    "metamanager_podstatus_sync_orphans_purged": "counter",
    "metamanager_stored_objects": "gauge",
    "metamanager_database_bytes": "gauge",
    "process_resident_memory_bytes": "gauge",
}


def request(
    svc: ServiceProcess, path: str, *, method: str = "GET", token: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    connection = http.client.HTTPConnection(HOST, svc.http_port, timeout=10)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def status_of(svc: ServiceProcess, path: str) -> int:
    """The status of a GET, 0 when the listener closed or refused the connection."""
    try:
        return request(svc, path)[0]
    except OSError:
        return 0


def scrape(svc: ServiceProcess, token: str | None = None) -> dict[str, Any]:
    status, _headers, body = request(svc, "/metrics", token=token)
    assert status == 200, body
    return {family.name: family for family in text_string_to_metric_families(body.decode())}


def sample(families: dict[str, Any], name: str, **labels: str) -> float:
    family = families[name]
    for s in family.samples:
        if s.name in (name, f"{name}_total") and s.labels == labels:
            return float(s.value)
    raise AssertionError(f"no {name}{labels} in {family.samples}")


def insert(publisher: Publisher, watcher: Watcher, name: str) -> None:
    publisher.send(envelope("insert", f"default/pod/{name}", {"n": name}, msg_id=name))
    watcher.wait_for(CLOUD, reply_to(name))


def test_metrics_are_scraped_and_parsed_after_traffic(
    make_service: MakeService, publisher: Publisher, watcher: Watcher
) -> None:
    svc = make_service(**{"metrics.interval": 0.2})
    for i in range(5):
        insert(publisher, watcher, f"p{i}")
    publisher.send(b"{not json", "kubeedge/metamanager/in/edged")

    def refused() -> dict[str, Any] | None:
        families = scrape(svc)
        counted = any(s.value for s in families["metamanager_refusals"].samples)
        return families if counted else None

    families = wait_until(refused, 10, "the refusal of the bad input")
    assert sample(families, "metamanager_inputs", operation="insert", outcome="stored") == 5
    assert sample(families, "metamanager_inputs", operation="unknown", outcome="error_400") == 1
    assert sample(families, "metamanager_refusals", code="400", reason="bad_json") == 1
    assert sample(families, "metamanager_dedup_hits") == 0
    for name, kind in SPEC_METRICS.items():
        assert name in families, name
        assert families[name].type == kind, name
    for name, family in families.items():
        if name.startswith("metamanager_"):
            assert family.documentation, f"{name} has no help text"
    buckets = {
        s.labels["le"]
        for s in families["metamanager_commit_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert {"0.0001", "5.0", "+Inf"} <= buckets
    assert sample(families, "metamanager_mqtt_link_up", link="input") == 1
    assert sample(families, "process_resident_memory_bytes") > 0
    # The retained MQTT snapshot is summed from the same counters.
    snapshot = watcher.wait_for(f"{PREFIX}/metamanager/metrics", lambda m: m.get("rejected") == 1)
    assert snapshot["stored"] == 5
    assert snapshot["error_400"] == 1
    assert snapshot["input_window"] == sample(families, "metamanager_input_window")
    # Present in both (their values move with the traffic); the bound the service was given.
    assert "held_input_bytes" in snapshot and "metamanager_held_input_bytes" in families
    assert sample(families, "metamanager_input_window_bytes") == INPUT_WINDOW_BYTES


def test_readyz_fails_while_the_broker_is_away_and_recovers(
    make_service: MakeService, broker: Broker
) -> None:
    svc = make_service()
    wait_until(lambda: status_of(svc, "/readyz") == 200, 10, "/readyz 200")
    broker.stop()

    def unready() -> dict[str, Any] | None:
        status, _h, body = request(svc, "/readyz")
        return json.loads(body) if status == 503 else None

    verdict = wait_until(unready, 15, "/readyz 503 with the broker stopped")
    assert "mqtt_input" in verdict["failing"]
    assert verdict["ready"] is False
    health = subprocess.run(
        [sys.executable, "-m", "mqtt_metamanager", "health", "-c", str(svc.workdir / "edge.yaml")],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert health.returncode == 1
    assert b"unready: " in health.stdout and b"mqtt_input" in health.stdout
    assert status_of(svc, "/healthz") == 200  # the loop still turns: alive, not ready
    broker.start()
    wait_until(lambda: status_of(svc, "/readyz") == 200, 60, "/readyz 200 again")


def test_healthz_fails_while_the_loop_is_wedged(
    make_service: MakeService,
    publisher: Publisher,
    watcher: Watcher,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wedge = tmp_path / "wedge"
    monkeypatch.setenv(TEST_WEDGE_ENV, str(wedge))  # the service's test hook
    svc = make_service()
    assert status_of(svc, "/healthz") == 200
    wedge.touch()

    def unhealthy() -> dict[str, Any] | None:
        status, _h, body = request(svc, "/healthz")
        return json.loads(body) if status == 503 else None

    verdict = wait_until(unhealthy, 30, "/healthz 503 with the loop wedged", interval=0.5)
    assert verdict["failing"] == ["loop"]
    assert "has not turned" in verdict["checks"]["loop"]["detail"]
    assert status_of(svc, "/readyz") == 503
    wedge.unlink()
    wait_until(lambda: status_of(svc, "/healthz") == 200, 10, "/healthz 200 again")
    insert(publisher, watcher, "after")


def test_the_token_guards_all_but_health_and_readiness(
    make_service: MakeService, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    svc = make_service(**{"http.token_file": str(token_file)})
    status, headers, _b = request(svc, "/metrics")
    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
    assert request(svc, "/metrics", token="wrong")[0] == 401
    assert request(svc, "/metrics", token="s3cret-token-and-more")[0] == 401
    assert request(svc, "/nowhere")[0] == 401
    assert request(svc, "/nowhere", token="s3cret-token")[0] == 404
    assert "metamanager_inputs" in scrape(svc, token="s3cret-token")
    assert status_of(svc, "/healthz") == 200
    assert status_of(svc, "/readyz") == 200


def test_bad_requests_get_short_answers_and_no_stack_trace(make_service: MakeService) -> None:
    svc = make_service()
    assert status_of(svc, "/nowhere") == 404
    assert status_of(svc, "/metrics/") == 404
    status, headers, _b = request(svc, "/metrics", method="POST")
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert request(svc, "/healthz", method="DELETE")[0] == 405
    status, _h, body = request(svc, "/healthz", method="HEAD")
    assert (status, body) == (200, b"")
    with closing(socket.create_connection((HOST, svc.http_port), timeout=10)) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1 and more\r\n\r\n")
        answer = b"".join(iter(lambda: raw.recv(4096), b""))  # until it closes
        assert b"Error code: 400" in answer
    assert status_of(svc, "/healthz") == 200
    assert "Traceback" not in svc.logs()


def test_stuck_http_clients_do_not_delay_mqtt_inputs(
    make_service: MakeService, publisher: Publisher, watcher: Watcher
) -> None:
    svc = make_service()
    stuck = []
    try:
        for _ in range(MAX_CONNECTIONS + 4):  # every connection slot taken, and some more
            sock = socket.create_connection((HOST, svc.http_port), timeout=10)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the end
            stuck.append(sock)
        publisher.send(envelope("insert", "default/pod/during", {"x": 1}, msg_id="during"))
        watcher.wait_for(CLOUD, reply_to("during"), timeout=3)
    finally:
        for sock in stuck:
            sock.close()
    wait_until(lambda: status_of(svc, "/healthz") == 200, 15, "/healthz once they are gone")


def test_a_taken_port_is_a_config_error(make_service: MakeService) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        svc = make_service(wait_online=False, **{"http.listen": f"{HOST}:{port}"})
        assert svc.proc is not None
        assert svc.proc.wait(15) == 2
    assert f"http.listen: cannot listen on {HOST}:{port}" in svc.logs()


def test_an_empty_listen_turns_the_listener_off(make_service: MakeService) -> None:
    on = make_service("on")
    off = make_service("off", **{"http.listen": ""})
    assert f"http: listening on {HOST}:{on.http_port}" in on.logs()
    assert "http: listening" not in off.logs()
    with pytest.raises(OSError):
        request(off, "/healthz")
