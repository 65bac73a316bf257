"""The bridge config renderer (SPEC §10) and its ``bridge-config`` command."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from mqtt_metamanager import bridge
from mqtt_metamanager.bridge import BridgeConfigError, BridgeSettings, CloudAddress, render
from mqtt_metamanager.cli import main

REPO = Path(__file__).resolve().parents[2]


def settings(**overrides: Any) -> BridgeSettings:
    values: dict[str, Any] = {
        "node": "edge-1",
        "cloud": (CloudAddress("cloud.example", 1883),),
        "insecure_plaintext": True,  # the TLS rules have their own tests below
    }
    values.update(overrides)
    return BridgeSettings(**values)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_the_template_file_is_the_template_the_code_renders() -> None:
    assert (REPO / "mosquitto" / "bridge.conf.template").read_text() == bridge.TEMPLATE


def test_render_maps_the_node_topics_of_spec_10() -> None:
    out = lines(render(settings()))
    assert 'topic "" in 1 kubeedge/metamanager/in/edgehub kubeedge/nodes/edge-1/down' in out
    assert 'topic "" out 1 kubeedge/edgehub/in kubeedge/nodes/edge-1/up' in out
    assert "address cloud.example:1883" in out
    assert "connection cloud" in out


def test_render_keeps_a_persistent_session_and_local_notifications() -> None:
    out = lines(render(settings()))
    for line in (
        "cleansession false",
        "remote_clientid kubeedge-edge-1",
        "notifications true",
        "notifications_local_only true",
        "notification_topic kubeedge/edgehub/bridge",
        "restart_timeout 2 10",
        "keepalive_interval 30",
        "try_private true",
        "start_type automatic",
    ):
        assert line in out
    assert not [line for line in out if line.startswith(("remote_username", "bridge_ca"))]


def test_render_has_no_unfilled_placeholders_and_ends_with_one_newline() -> None:
    text = render(settings(username="u", password="p", cafile="/ca.crt"))
    assert "$" not in text
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_render_follows_prefix_node_qos_and_options() -> None:
    out = lines(
        render(
            settings(
                node="n7",
                prefix="site/ke",
                qos=0,
                name="up-link",
                remote_clientid="n7-bridge",
                cloud=(CloudAddress("a", 1), CloudAddress("b", 2)),
                insecure_plaintext=True,
                restart_timeout=(1,),
                keepalive=10,
                try_private=False,
                protocol="mqttv50",
            )
        )
    )
    assert 'topic "" in 0 site/ke/metamanager/in/edgehub site/ke/nodes/n7/down' in out
    assert 'topic "" out 0 site/ke/edgehub/in site/ke/nodes/n7/up' in out
    assert "notification_topic site/ke/edgehub/bridge" in out
    for line in (
        "connection up-link",
        "address a:1 b:2",
        "remote_clientid n7-bridge",
        "restart_timeout 1",
        "keepalive_interval 10",
        "try_private false",
        "bridge_protocol_version mqttv50",
    ):
        assert line in out


def test_render_auth_and_tls_lines() -> None:
    out = lines(
        render(
            settings(
                username="edge-1",
                password="s3 cret",
                cafile="/certs/ca.crt",
                certfile="/certs/node.crt",
                keyfile="/certs/node.key",
                insecure=True,
            )
        )
    )
    for line in (
        "remote_username edge-1",
        "remote_password s3 cret",
        "bridge_cafile /certs/ca.crt",
        "bridge_certfile /certs/node.crt",
        "bridge_keyfile /certs/node.key",
        "bridge_insecure true",
    ):
        assert line in out


def test_password_is_not_in_the_repr() -> None:
    assert "s3cret" not in repr(settings(username="u", password="s3cret"))


@pytest.mark.parametrize(
    ("overrides", "option"),
    [
        ({"node": ""}, "--node"),
        ({"node": "a/b"}, "--node"),
        ({"node": "a b"}, "--node"),
        ({"node": "a+"}, "--node"),
        ({"prefix": "a/#"}, "--prefix"),
        ({"prefix": "/kubeedge"}, "--prefix"),
        ({"name": "my bridge"}, "--name"),
        ({"remote_clientid": "a b"}, "--clientid"),
        ({"qos": 3}, "--qos"),
        ({"cloud": ()}, "--cloud"),
        ({"password": "p"}, "--password-file"),
        ({"username": "u", "password": "two\nlines"}, "--password-file"),
        ({"username": "u", "password": " edge"}, "--password-file"),
        ({"certfile": "/c.crt"}, "--certfile"),
        ({"certfile": "/c.crt", "keyfile": "/c.key"}, "--cafile"),
        ({"insecure": True}, "--cafile"),
        ({"restart_timeout": (0,)}, "--restart-timeout"),
        ({"restart_timeout": (10, 2)}, "--restart-timeout"),
        ({"restart_timeout": (1, 2, 3)}, "--restart-timeout"),
        ({"keepalive": 1}, "--keepalive"),
        ({"protocol": "mqtt5"}, "--protocol"),
    ],
)
def test_bad_settings_are_refused_naming_the_option(overrides: dict[str, Any], option: str) -> None:
    with pytest.raises(BridgeConfigError, match=rf"^{option}:"):
        settings(**overrides)


@pytest.mark.parametrize("text", ["host", "host:", ":1883", "host:port", "host:0", "h:65536"])
def test_bad_cloud_addresses_are_refused(text: str) -> None:
    with pytest.raises(BridgeConfigError, match=r"^--cloud:"):
        CloudAddress.parse(text)


def test_cloud_address_parses_host_and_port() -> None:
    assert CloudAddress.parse("10.0.0.5:8883") == CloudAddress("10.0.0.5", 8883)


# -- the command ---------------------------------------------------------------------------


@pytest.fixture
def no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No conf/edge.yaml in reach and no METAMANAGER_ variables: the CLI runs on defaults."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("METAMANAGER_")]:
        monkeypatch.delenv(name)
    return tmp_path


def test_command_prints_the_config_without_a_config_file(
    no_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["bridge-config", "--insecure-plaintext", "--cloud", "cloud:1883", "--node", "n1"])
        == 0
    )
    out = capsys.readouterr().out
    assert out == render(settings(node="n1", cloud=(CloudAddress("cloud", 1883),)))


def test_command_takes_node_and_prefix_from_the_environment(
    no_config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("METAMANAGER_NODE__NAME", "from-env")
    monkeypatch.setenv("METAMANAGER_MQTT__TOPIC_PREFIX", "ke")
    assert main(["bridge-config", "--insecure-plaintext", "--cloud", "cloud:1883"]) == 0
    assert 'topic "" out 1 ke/edgehub/in ke/nodes/from-env/up' in capsys.readouterr().out


def test_command_options(no_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    password = no_config / "password"
    password.write_text("s3cret\n")
    argv = [
        "bridge-config",
        "--insecure-plaintext",
        "--cloud",
        "a:1",
        "--cloud",
        "b:2",
        "--node",
        "n1",
    ]
    argv += ["--username", "n1", "--password-file", str(password), "--cafile", "/ca.crt"]
    argv += ["--restart-timeout", "1", "--no-try-private", "--name", "up", "--clientid", "c1"]
    assert main(argv) == 0
    out = lines(capsys.readouterr().out)
    for line in (
        "address a:1 b:2",
        "remote_username n1",
        "remote_password s3cret",
        "bridge_cafile /ca.crt",
        "restart_timeout 1",
        "try_private false",
        "connection up",
        "remote_clientid c1",
    ):
        assert line in out


def test_command_writes_the_output_file_owner_only(
    no_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = no_config / "bridge.conf"
    assert (
        main(
            [
                "bridge-config",
                "--insecure-plaintext",
                "--cloud",
                "c:1",
                "--node",
                "n1",
                "-o",
                str(target),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == ""
    assert "kubeedge/nodes/n1/down" in target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "argv",
    [
        ["--cloud", "nohost", "--node", "n1"],
        ["--cloud", "c:1", "--node", "a/b"],
        ["--cloud", "c:1", "--node", "n", "--username", "u", "--password-file", "/nope/pw"],
        ["--cloud", "c:1", "--node", "n", "--certfile", "/c.crt", "--keyfile", "/c.key"],
        ["--cloud", "c:1", "--node", "n", "--restart-timeout", "5", "1"],
    ],
)
def test_command_refuses_bad_options_with_exit_2(
    no_config: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bridge-config", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("bridge-config: --")


def test_command_without_cloud_is_a_usage_error(no_config: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bridge-config", "--node", "n1"])
    assert exc.value.code == 2


def test_the_edge_broker_config_includes_conf_d_last_and_compose_mounts_it() -> None:
    # Mosquitto refuses to start when an include_dir is missing, and options after a
    # bridge's `connection` line would belong to the bridge: last, and always present.
    conf = lines((REPO / "mosquitto" / "mosquitto.conf").read_text())
    assert conf[-1] == "include_dir /mosquitto/config/conf.d"
    assert (REPO / "mosquitto" / "conf.d").is_dir()
    compose = (REPO / "docker-compose.yml").read_text()
    assert "./mosquitto/conf.d:/mosquitto/config/conf.d:ro" in compose


@pytest.mark.parametrize("host", ["cloud.example", "10.0.0.5", "192.0.2.1"])
def test_a_cloud_off_this_host_needs_tls_or_a_plain_word(host: str) -> None:
    remote = (CloudAddress(host, 8883),)
    with pytest.raises(BridgeConfigError, match=r"^--cafile: .*--insecure-plaintext"):
        BridgeSettings(node="n", cloud=remote)
    tls = BridgeSettings(
        node="n", cloud=remote, cafile="/ca.pem", certfile="/n.pem", keyfile="/n.key"
    )
    rendered = lines(render(tls))
    assert [
        line for line in rendered if line.startswith(("bridge_cafile", "bridge_cert", "bridge_key"))
    ] == ["bridge_cafile /ca.pem", "bridge_certfile /n.pem", "bridge_keyfile /n.key"]
    assert "bridge_insecure true" not in rendered
    BridgeSettings(node="n", cloud=remote, insecure_plaintext=True)  # said plainly: allowed


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "localhost"])
def test_a_cloud_on_this_host_may_be_plain(host: str) -> None:
    BridgeSettings(node="n", cloud=(CloudAddress(host, 1883),))


def test_the_command_refuses_a_plain_remote_cloud(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bridge-config", "--cloud", "cloud.example:1883", "--node", "n1"]) == 2
    assert "--insecure-plaintext" in capsys.readouterr().err
