"""Two real brokers on 127.0.0.1: a "cloud" one, and an "edge" one whose config is the
output of the bridge renderer pointing at the cloud. The service runs on the edge broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mqtt_metamanager.bridge import BridgeSettings, CloudAddress, render
from tests.bridge.cloud import NODE, CloudSide
from tests.support import HOST, PREFIX, Broker, Publisher, ServiceProcess, Watcher, mosquitto_binary

BRIDGE_STATE = f"{PREFIX}/edgehub/bridge"


@pytest.fixture
def cloud_broker(tmp_path: Path) -> Iterator[Broker]:
    if mosquitto_binary() is None:
        pytest.fail(
            "mosquitto is not installed: run scripts/test.sh as root, or apt-get install it"
        )
    broker = Broker(tmp_path / "cloud").start()
    yield broker
    broker.stop()


@pytest.fixture
def edge_broker(tmp_path: Path, cloud_broker: Broker) -> Iterator[Broker]:
    # Reconnect every second instead of the 2-10 s backoff, so the tests stay fast.
    settings = BridgeSettings(
        node=NODE, cloud=(CloudAddress(HOST, cloud_broker.port),), restart_timeout=(1,)
    )
    broker = Broker(tmp_path / "edge", extra_conf=render(settings)).start()
    yield broker
    broker.stop()


@pytest.fixture
def cloud(cloud_broker: Broker) -> Iterator[CloudSide]:
    side = CloudSide(cloud_broker.port)
    yield side
    side.close()


@pytest.fixture
def edge(edge_broker: Broker) -> Iterator[Watcher]:
    watcher = Watcher(edge_broker.port)
    yield watcher
    watcher.close()


@pytest.fixture
def edged(edge_broker: Broker) -> Iterator[Publisher]:
    publisher = Publisher(edge_broker.port)
    yield publisher
    publisher.close()


@pytest.fixture
def service(tmp_path: Path, edge_broker: Broker, cloud: CloudSide) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(
        tmp_path / "svc",
        edge_broker.port,
        {
            "node.name": NODE,
            "cloud.bridge_state_topic": BRIDGE_STATE,
            # Long enough that waiting on the cloud would show; no periodic sync to muddle
            # the count of reconnect syncs.
            "meta.remote_query.timeout": 5,
            "meta.sync.podstatus.interval": 3600,
        },
    )
    svc.start()
    yield svc
    svc.kill()
