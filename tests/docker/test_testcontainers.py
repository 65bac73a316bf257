"""testcontainers' MosquittoContainer as the broker, the service as a process on the host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mqtt_metamanager.auth import AuthDir
from tests.docker.conftest import ROOT, login_of
from tests.docker.containers import LoopbackMosquitto, container_logs, insert_is_forwarded, query
from tests.support import STATUS, ServiceProcess, Watcher

pytestmark = pytest.mark.docker


@pytest.fixture
def broker(tmp_path: Path, mosquitto_image: str, auth_dir: AuthDir) -> Iterator[LoopbackMosquitto]:
    container = LoopbackMosquitto(image=mosquitto_image)
    container.with_volume_mapping(str(auth_dir.path), "/mosquitto/auth")
    # The project's own broker config, at the path the image and compose use; its
    # include_dir gets an empty conf.d (a developer's own bridge.conf stays out of tests).
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    container.with_volume_mapping(conf_d, "/mosquitto/config/conf.d")
    try:
        container.start(configfile=str(ROOT / "mosquitto" / "mosquitto.conf"))
        yield container
    finally:
        container.stop()


@pytest.fixture
def service(
    tmp_path: Path, broker: LoopbackMosquitto, auth_dir: AuthDir
) -> Iterator[ServiceProcess]:
    login = {
        "mqtt.username": "metamanager",
        "mqtt.password_file": str(auth_dir.password_path("metamanager")),
    }
    svc = ServiceProcess(tmp_path / "svc", broker.port, login)
    try:
        yield svc.start()
    finally:
        svc.kill()


def test_broker_container_answers_on_loopback_only(broker: LoopbackMosquitto) -> None:
    container = broker.get_wrapped_container()
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"]["1883/tcp"]
    assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}
    assert "mosquitto version" in container_logs(container)


def test_service_against_the_broker_container(
    broker: LoopbackMosquitto, service: ServiceProcess, auth_dir: AuthDir
) -> None:
    content = {"metadata": {"name": "nginx", "namespace": "default"}, "spec": {"nodeName": "e1"}}
    admin = login_of(auth_dir, "admin")

    forwarded = insert_is_forwarded(broker.port, "default/pod/nginx", content, admin)
    assert forwarded["content"] == content

    reply = query(broker.port, "default/pod/nginx", login=admin)
    assert reply["route"]["operation"] == "response", reply
    assert reply["content"] == [content]

    # SIGTERM: a clean exit, and the retained status says so.
    status = Watcher(broker.port, [STATUS], login=admin)
    try:
        status.wait_for(STATUS, lambda m: m == b"online")
        assert service.stop() == 0
        status.wait_for(STATUS, lambda m: m == b"offline")
    finally:
        status.close()
