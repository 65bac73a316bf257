"""The compose stack as a user runs it: up with --wait, an insert with mosquitto_pub reaches
edged, the data survives `restart metamanager`, down with volumes."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.docker.conftest import ROOT
from tests.docker.containers import query, wait_for_port
from tests.support import EDGED, IN, Watcher, envelope, free_port

pytestmark = pytest.mark.docker

# The stack's own image for this test, so a user's `mqtt-metamanager:local` is left alone.
COMPOSE_IMAGE = "mqtt-metamanager:pytest-compose"

Compose = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def stack(tmp_path: Path, compose_command: list[str]) -> Iterator[tuple[Compose, int]]:
    """A compose project of its own (unique name, free loopback port), always taken down."""
    project = f"mmtest-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {**os.environ, "MQTT_PORT": str(port), "MQTT_METAMANAGER_IMAGE": COMPOSE_IMAGE}
    # The project's compose file as it is, but an empty conf.d: a developer's own
    # mosquitto/conf.d/bridge.conf must not link the test broker to a real cloud.
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    override = tmp_path / "compose.test.yml"
    override.write_text(
        f"services:\n  mosquitto:\n    volumes:\n      - {conf_d}:/mosquitto/config/conf.d:ro\n"
    )
    files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(override)]

    def compose(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*compose_command, "-p", project, *files, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            logs = subprocess.run(
                [*compose_command, "-p", project, *files, "logs", "--no-color", "--tail", "40"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout}{done.stderr}\n--- logs ---\n{logs.stdout}{logs.stderr}"
            )
        return done

    try:
        yield compose, port
    finally:
        compose("down", "-v", "--remove-orphans", "--timeout", "10", timeout=120)


def test_compose_up_insert_restart_query_down(
    stack: tuple[Compose, int], mosquitto_pub: str
) -> None:
    compose, port = stack
    # --build: compose builds the service image itself, from .env's base image when offline.
    compose("up", "-d", "--wait", "--build", timeout=300)
    wait_for_port(port)

    states = [json.loads(line) for line in compose("ps", "--format", "json").stdout.splitlines()]
    assert {s["Service"]: s["Health"] for s in states} == {
        "mosquitto": "healthy",
        "metamanager": "healthy",
    }, states

    content = {"metadata": {"name": "nginx", "namespace": "default"}, "spec": {"nodeName": "e1"}}
    msg = envelope("insert", "default/pod/nginx", content)
    msg_id = msg["header"]["msg_id"]
    edged = Watcher(port, [EDGED])
    try:
        subprocess.run(
            [
                mosquitto_pub,
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-q",
                "1",
                "-t",
                IN,
                "-m",
                json.dumps(msg),
            ],
            check=True,
            timeout=30,
        )
        forwarded = edged.wait_for(
            EDGED, lambda m: isinstance(m, dict) and m["header"]["msg_id"] == msg_id
        )
    finally:
        edged.close()
    assert forwarded["content"] == content

    compose("restart", "metamanager", timeout=60)
    # The query is QoS 1 to a persistent session: answered once the service is back.
    reply = query(port, "default/pod/nginx", timeout=30)
    assert reply["route"]["operation"] == "response", reply
    assert reply["content"] == [content]

    # A new container (as after an image upgrade) finds it too: the store is on the volume.
    compose("up", "-d", "--wait", "--no-deps", "--force-recreate", "metamanager", timeout=120)
    reply = query(port, "default/pod/nginx", timeout=30)
    assert reply["content"] == [content], reply
