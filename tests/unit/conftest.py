"""Unit fixtures: a Service whose transport records publishes instead of sending them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mqtt_metamanager import config
from mqtt_metamanager.routing import Outgoing
from mqtt_metamanager.service import Service

OfflineService = tuple[Service, list[Outgoing]]


@pytest.fixture
def offline_service(tmp_path: Path) -> Iterator[Callable[..., OfflineService]]:
    """``make(**config_sections)`` -> (service, what it published); no broker involved."""
    made: list[Service] = []

    def make(**sections: Any) -> OfflineService:
        cfg = config.from_mapping(
            {"database": {"path": str(tmp_path / "meta.db")}, **sections}, environ={}
        )
        svc = Service(cfg)
        published: list[Outgoing] = []

        def publish(out: Outgoing, _qos: int) -> int:
            published.append(out)
            return len(published)

        svc.transport.publish = publish  # type: ignore[method-assign]
        svc.transport.ack = lambda *_a, **_k: None  # type: ignore[method-assign]
        made.append(svc)
        return svc, published

    yield make
    for svc in made:
        svc.store.close()
