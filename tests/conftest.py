"""Fixtures that own external processes (broker, service) and always stop them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import Broker, Publisher, ServiceProcess, Watcher, mosquitto_binary


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if mosquitto_binary() is None:
        pytest.fail(
            "mosquitto is not installed: run scripts/test.sh as root, or apt-get install it"
        )
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def make_service(tmp_path: Path, broker: Broker) -> Iterator[Callable[..., ServiceProcess]]:
    started: list[ServiceProcess] = []

    def make(name: str = "svc", wait_online: bool = True, **overrides: Any) -> ServiceProcess:
        svc = ServiceProcess(tmp_path / name, broker.port, overrides)
        started.append(svc)
        return svc.start(wait_online=wait_online)

    yield make
    for svc in started:
        svc.kill()


@pytest.fixture
def watcher(broker: Broker) -> Iterator[Watcher]:
    w = Watcher(broker.port)
    yield w
    w.close()


@pytest.fixture
def publisher(broker: Broker) -> Iterator[Publisher]:
    p = Publisher(broker.port)
    yield p
    p.close()
