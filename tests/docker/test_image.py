"""The service's own image, the real deployment unit, against a broker container on a
private Docker network: healthy means connected, data on /data, a quick clean stop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mqtt_metamanager.auth import AuthDir
from tests.docker.conftest import ROOT, login_of
from tests.docker.containers import (
    LoopbackMosquitto,
    container_logs,
    insert_is_forwarded,
    query,
    stop_timed,
    wait_healthy,
)
from tests.support import STATUS, Watcher

pytestmark = pytest.mark.docker

# The Dockerfile's HEALTHCHECK runs every 10 s: the first verdict comes after one interval.
HEALTHY_WITHIN = 45


@pytest.fixture
def network() -> Iterator[Any]:
    from testcontainers.core.network import Network

    with Network() as net:
        yield net


@pytest.fixture
def broker(
    tmp_path: Path, mosquitto_image: str, network: Any, auth_dir: AuthDir
) -> Iterator[LoopbackMosquitto]:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    container = (
        LoopbackMosquitto(image=mosquitto_image)
        .with_network(network)
        .with_network_aliases("mosquitto")
        .with_volume_mapping(conf_d, "/mosquitto/config/conf.d")
        .with_volume_mapping(str(auth_dir.path), "/mosquitto/auth")
    )
    try:
        container.start(configfile=str(ROOT / "mosquitto" / "mosquitto.conf"))
        yield container
    finally:
        container.stop()


@pytest.fixture
def service(
    tmp_path: Path, service_image: str, network: Any, broker: LoopbackMosquitto, auth_dir: AuthDir
) -> Iterator[Any]:
    """The image as built, with its own defaults (broker ``mosquitto``, store in /data) and
    a login, as compose gives it."""
    from testcontainers.core.container import DockerContainer

    # The container's user is not this test's: a copy of its password it may read.
    secret = tmp_path / "secret"
    secret.mkdir(mode=0o755)
    (secret / "metamanager.password").write_text(auth_dir.password_path("metamanager").read_text())
    (secret / "metamanager.password").chmod(0o644)
    container = (
        DockerContainer(service_image)
        .with_network(network)
        .with_volume_mapping(str(secret), "/auth")
        .with_env("METAMANAGER_MQTT__USERNAME", "metamanager")
        .with_env("METAMANAGER_MQTT__PASSWORD_FILE", "/auth/metamanager.password")
    )
    try:
        container.start()
        yield container.get_wrapped_container()
    finally:
        container.stop()


def test_image_runs_connected_and_stops_cleanly(
    broker: LoopbackMosquitto, service: Any, auth_dir: AuthDir
) -> None:
    wait_healthy(service, HEALTHY_WITHIN)
    admin = login_of(auth_dir, "admin")

    # Unprivileged, with the store on the /data volume.
    assert service.attrs["Config"]["User"] == "metamanager"
    uid = service.exec_run(["id", "-u"]).output.decode().strip()
    assert uid != "0", uid
    assert any(m["Destination"] == "/data" for m in service.attrs["Mounts"])

    content = {"metadata": {"name": "web", "namespace": "default"}, "data": {"k": "v"}}
    forwarded = insert_is_forwarded(broker.port, "default/configmap/web", content, admin)
    assert forwarded["content"] == content
    reply = query(broker.port, "default/configmap/web", login=admin)
    assert reply["route"]["operation"] == "response", reply
    assert reply["content"] == [content]
    listing = service.exec_run(["ls", "/data"]).output.decode()
    assert "metamanager.db" in listing, listing

    status = Watcher(broker.port, [STATUS], login=admin)
    try:
        status.wait_for(STATUS, lambda m: m == b"online")
        took, code = stop_timed(service)
        logs = container_logs(service)
        assert code == 0, f"exit {code}:\n{logs}"
        assert took < 5, f"docker stop took {took:.1f}s (SIGTERM not handled?):\n{logs}"
        status.wait_for(STATUS, lambda m: m == b"offline")
    finally:
        status.close()
