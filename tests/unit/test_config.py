from __future__ import annotations

from pathlib import Path

import pytest

from mqtt_metamanager import config
from mqtt_metamanager.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_edge_yaml_is_valid_and_has_kubeedge_sync_block() -> None:
    cfg = config.load(REPO / "conf" / "edge.yaml", environ={})
    assert cfg.meta.sync.podstatus.interval == 60
    assert cfg.mqtt.topic_prefix == "kubeedge"
    assert cfg.modules.local == ["edged", "edgemesh", "devicetwin", "eventbus", "servicebus"]


def test_every_key_has_a_default() -> None:
    cfg = config.from_mapping({}, {})
    assert cfg.mqtt.qos == 1
    assert cfg.mqtt.max_payload == 1024 * 1024
    assert cfg.cloud.bridge_state_topic == ""


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    f = tmp_path / "edge.yaml"
    f.write_text("mqtt:\n  host: fromfile\n  port: 1884\n")
    env = {
        "METAMANAGER_MQTT__HOST": "mosquitto",
        "METAMANAGER_META__SYNC__PODSTATUS__INTERVAL": "5",
        "METAMANAGER_MODULES__LOCAL": "edged, devicetwin",
        "OTHER": "ignored",
    }
    cfg = config.load(f, environ=env)
    assert cfg.mqtt.host == "mosquitto"
    assert cfg.mqtt.port == 1884
    assert cfg.meta.sync.podstatus.interval == 5.0
    assert cfg.modules.local == ["edged", "devicetwin"]


@pytest.mark.parametrize(
    ("data", "env", "key"),
    [
        ({"mqtt": {"hots": "x"}}, {}, "mqtt.hots"),
        ({"mqtt": {"port": 70000}}, {}, "mqtt.port"),
        ({"mqtt": {"port": "abc"}}, {}, "mqtt.port"),
        ({"mqtt": {"qos": 3}}, {}, "mqtt.qos"),
        ({"meta": {"sync": {"podstatus": {"interval": 0}}}}, {}, "meta.sync.podstatus.interval"),
        ({"meta": {"remote_query": {"retries": -1}}}, {}, "meta.remote_query.retries"),
        ({"logging": {"level": "LOUD"}}, {}, "logging.level"),
        ({"modules": {"local": [1, 2]}}, {}, "modules.local"),
        ({"mqtt": "x"}, {}, "mqtt"),
        ({"mqtt": {"tls": {"insecure": "yes"}}}, {}, "mqtt.tls.insecure"),
        ({}, {"METAMANAGER_MQTT__PORTT": "1"}, "mqtt.portt"),
        ({}, {"METAMANAGER_DATABASE__BATCH_MAX": "0"}, "database.batch_max"),
    ],
)
def test_bad_keys_and_values_are_refused_naming_the_key(
    data: dict[str, object], env: dict[str, str], key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        config.from_mapping(data, env)
    assert str(err.value).startswith(key + ":")


def test_unreadable_or_non_mapping_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        config.load(tmp_path / "missing.yaml", environ={})
    f = tmp_path / "list.yaml"
    f.write_text("- a\n")
    with pytest.raises(ConfigError):
        config.load(f, environ={})
