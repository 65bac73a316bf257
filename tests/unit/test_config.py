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
        ({"database": {"cache_kib": 8}}, {}, "database.cache_kib"),
        ({}, {"METAMANAGER_DATABASE__CACHE_KIB": "2 MB"}, "database.cache_kib"),
        ({"memory": {"malloc_mmap_threshold": 100}}, {}, "memory.malloc_mmap_threshold"),
        ({"memory": {"malloc_mmap_threshold": 1 << 30}}, {}, "memory.malloc_mmap_threshold"),
        ({"memory": {"malloc_arena_max": -1}}, {}, "memory.malloc_arena_max"),
        ({"memory": {"malloc_arena_max": 1.5}}, {}, "memory.malloc_arena_max"),
        ({"memory": {"arena_max": 2}}, {}, "memory.arena_max"),
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


def test_environment_text_is_read_by_the_key_type_not_as_yaml() -> None:
    # Caught a bug: values went through YAML, so 0123 became 83 and 1.10 became 1.1.
    cfg = config.from_mapping(
        {},
        {
            "METAMANAGER_MQTT__CLIENT_ID": "0123",
            "METAMANAGER_NODE__NAME": "1.10",
            "METAMANAGER_MQTT__TLS__INSECURE": "yes",
            "METAMANAGER_MQTT__PORT": " 1884 ",
        },
    )
    assert cfg.mqtt.client_id == "0123"
    assert cfg.node.name == "1.10"
    assert cfg.mqtt.tls.insecure is True
    assert cfg.mqtt.port == 1884


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"mqtt": {"password_file": "/nonexistent/pw"}}, "mqtt.password_file"),
        ({"mqtt": {"tls": {"ca_file": "/nonexistent/ca.pem"}}}, "mqtt.tls.ca_file"),
        ({"cloud": {"bridge_state_topic": "kubeedge/+/bridge"}}, "cloud.bridge_state_topic"),
        ({"modules": {"local": ["edged", "a/b"]}}, "modules.local"),
        ({"modules": {"local": ["Edged"]}}, "modules.local"),
        ({"security": {"operators": ["admin", "root+"]}}, "security.operators"),
        ({"security": {"operators": ["-admin"]}}, "security.operators"),
        ({"security": {"legacy_inbox": "yes"}}, "security.legacy_inbox"),
    ],
)
def test_files_topics_and_module_names_are_checked_at_start(
    data: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        config.from_mapping(data, {})
    assert str(err.value).startswith(key + ":")


@pytest.mark.parametrize("name", ["mosquitto.conf", "local.conf"])
def test_shipped_broker_configs_pass_oversized_input_on_to_metamanager(name: str) -> None:
    # Caught a bug: a broker limit equal to mqtt.max_payload dropped oversized input silently,
    # so its sender never got error 400 too_large.
    lines = (REPO / "mosquitto" / name).read_text().splitlines()
    settings = dict(line.split(None, 1) for line in lines if line and not line.startswith("#"))
    assert "message_size_limit" not in settings
    assert int(settings["max_packet_size"]) > config.from_mapping({}, {}).mqtt.max_payload
    assert settings["set_tcp_nodelay"] == "true"


@pytest.mark.parametrize("name", ["mosquitto.conf", "local.conf"])
def test_shipped_broker_configs_refuse_anonymous_clients(name: str) -> None:
    lines = (REPO / "mosquitto" / name).read_text().splitlines()
    settings = dict(line.split(None, 1) for line in lines if line and not line.startswith("#"))
    assert settings["allow_anonymous"] == "false"
    assert settings["password_file"].endswith("passwd")
    assert settings["acl_file"].endswith("acl")


def test_memory_keys_default_to_the_measured_settings_and_take_overrides() -> None:
    cfg = config.from_mapping({}, {})
    assert cfg.memory.malloc_mmap_threshold == 128 * 1024
    assert cfg.memory.malloc_arena_max == 2
    assert cfg.database.cache_kib == 1024
    env = {"METAMANAGER_MEMORY__MALLOC_ARENA_MAX": "0", "METAMANAGER_DATABASE__CACHE_KIB": "512"}
    cfg = config.from_mapping({"memory": {"malloc_mmap_threshold": 0}}, env)
    assert (cfg.memory.malloc_mmap_threshold, cfg.memory.malloc_arena_max) == (0, 0)
    assert cfg.database.cache_kib == 512
