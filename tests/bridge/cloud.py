"""The cloud side of the two-broker tests: a client on the cloud broker that keeps a
persistent session (so nothing the bridge delivers while it reconnects is lost), records
what the node sends up, and publishes down to the node."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support import HOST, PREFIX

NODE = "edge-1"
DOWN = f"{PREFIX}/nodes/{NODE}/down"
UP = f"{PREFIX}/nodes/{NODE}/up"


class CloudSide:
    """edgecontroller, as far as the tests need it: what came up, and a way to send down."""

    def __init__(self, port: int, client_id: str = "test-cloud", topic: str = UP) -> None:
        self.up: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(HOST, port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "cloud client did not subscribe"

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.up.append(json.loads(msg.payload))
            self._cond.notify_all()

    def wait_up(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 10, since: int = 0
    ) -> dict[str, Any]:
        """The first message sent up (from index ``since``) that matches."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self.up[since:]:
                    if match(item):
                        return item
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"nothing matching came up within {timeout}s; saw {self.up[since:][-5:]}"
                    )
                self._cond.wait(remaining)

    def send_down(self, message: dict[str, Any]) -> None:
        info = self.client.publish(DOWN, json.dumps(message), qos=1)
        info.wait_for_publish(10)
        assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
