"""The command line, driven as a user would: exit codes 0/1/2, --help everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import CLOUD, Broker, Publisher, ServiceProcess, Watcher, envelope, reply_to

pytestmark = pytest.mark.integration


def cli(
    *args: str,
    stdin: bytes | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "mqtt_metamanager", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        cwd=cwd,
        env=env,
    )


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["run"],
        ["query"],
        ["send"],
        ["store"],
        ["store", "ls"],
        ["health"],
        ["bench"],
        ["bridge-config"],
    ],
)
def test_help_everywhere(args: list[str]) -> None:
    out = cli(*args, "--help")
    assert out.returncode == 0, out.stderr
    assert b"usage:" in out.stdout


def test_usage_error_is_exit_2() -> None:
    assert cli("nonsense").returncode == 2
    assert cli().returncode == 2


def test_config_error_is_exit_2_naming_the_key(tmp_path: Path) -> None:
    conf = tmp_path / "edge.yaml"
    conf.write_text("mqtt:\n  port: 99999\n")
    out = cli("run", "-c", str(conf))
    assert out.returncode == 2
    assert b"mqtt.port" in out.stderr
    good = tmp_path / "good.yaml"
    good.write_text("mqtt:\n  port: 1883\n")
    env = {**os.environ, "METAMANAGER_MQTT__QOS": "7"}
    out = cli("run", "-c", str(good), env=env)
    assert out.returncode == 2
    assert b"mqtt.qos" in out.stderr
    pw = tmp_path / "pw.yaml"
    pw.write_text("mqtt:\n  password_file: /nonexistent/pw\n")
    out = cli("run", "-c", str(pw))
    assert out.returncode == 2
    assert b"mqtt.password_file" in out.stderr


def test_query_send_and_store_ls(
    make_service: Callable[..., ServiceProcess],
    broker: Broker,
    watcher: Watcher,
    publisher: Publisher,
) -> None:
    svc = make_service()
    port = str(broker.port)
    message = {
        "route": {
            "source": "edgecontroller",
            "group": "resource",
            "operation": "insert",
            "resource": "default/configmap/c",
        },
        "content": {"data": {"a": "1"}},
    }
    # Without a user name the CLI is the query-only identity "metactl": a write is refused.
    refused = cli("send", "--port", port, stdin=json.dumps(message).encode())
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["content"]["reason"] == "forbidden"
    # This test broker lets anyone in under any name; the service sees the operator.
    sent = cli("send", "--port", port, "--username", "admin", stdin=json.dumps(message).encode())
    assert sent.returncode == 0, sent.stderr
    reply = json.loads(sent.stdout)
    assert reply["route"]["operation"] == "response"
    assert reply["content"] == "OK"

    out = cli("query", "default/configmap/c", "--port", port)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["content"] == [{"data": {"a": "1"}}]

    missing = cli("query", "default/configmap/none", "--port", port)
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["content"]["code"] == 404

    publisher.send(
        envelope("insert", "kube/pod/p", {"metadata": {"resourceVersion": "4"}}, msg_id="p")
    )
    watcher.wait_for(CLOUD, reply_to("p"))
    ls = cli("store", "ls", "--db", str(svc.db_path))
    assert ls.returncode == 0, ls.stderr
    assert ls.stdout.decode().splitlines() == [
        "default/configmap/c\tconfigmap\t-",
        "kube/pod/p\tpod\t4",
    ]
    ls = cli("store", "ls", "--db", str(svc.db_path), "--type", "pod", "--json")
    assert [json.loads(line)["key"] for line in ls.stdout.splitlines()] == ["kube/pod/p"]

    health = cli("health", "-c", str(svc.workdir / "edge.yaml"))  # its /readyz
    assert health.returncode == 0, health.stdout
    assert health.stdout.strip() == b"ready"
    without_http = {**os.environ, "METAMANAGER_HTTP__LISTEN": ""}  # its retained status
    health = cli("health", "--port", port, env=without_http)
    assert health.returncode == 0
    assert health.stdout.strip() == b"online"


def test_query_without_a_broker_is_exit_1(broker: Broker) -> None:
    broker.stop()
    out = cli("query", "default/pod/a", "--port", str(broker.port))
    assert out.returncode == 1
    without_http = {**os.environ, "METAMANAGER_HTTP__LISTEN": ""}
    assert cli("health", "--port", str(broker.port), env=without_http).returncode == 1


def test_store_ls_of_a_missing_file_is_exit_1(tmp_path: Path) -> None:
    assert cli("store", "ls", "--db", str(tmp_path / "none.db")).returncode == 1
