"""What the two-broker tests rely on from the test brokers themselves."""

from __future__ import annotations

import pytest

from tests.bridge.cloud import DOWN, CloudSide
from tests.support import Broker, Publisher

pytestmark = [pytest.mark.integration, pytest.mark.bridge]


def test_a_persistent_session_keeps_its_queue_across_a_broker_restart(cloud_broker: Broker) -> None:
    # Caught a harness bug: as root, mosquitto ran as `mosquitto` and could not write its
    # persistence file, so every restart silently dropped the sessions and their queues.
    listener = CloudSide(cloud_broker.port, client_id="persistent-listener", topic=DOWN)
    listener.close()
    sender = Publisher(cloud_broker.port)
    try:
        sender.send(b'{"n": 1}', topic=DOWN)
    finally:
        sender.close()
    cloud_broker.restart()
    assert (cloud_broker.workdir / "mosquitto.db").exists()
    listener = CloudSide(cloud_broker.port, client_id="persistent-listener", topic=DOWN)
    try:
        listener.wait_up(lambda m: m == {"n": 1}, timeout=10)
    finally:
        listener.close()
