"""mqtt-metamanager: KubeEdge's MetaManager as an MQTT-bridged microservice."""

from __future__ import annotations

__version__ = "0.1.0"
