"""The compose stack as a user runs it: up with --wait, nothing anonymous gets in, an insert
with mosquitto_pub as admin reaches edged, the data and the credentials survive `restart` and
`down && up`, down with volumes."""

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
from tests.support import EDGED, Watcher, envelope, free_port, inbox

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


def admin_login(compose: Compose) -> tuple[str, str]:
    """The operator's credentials, the way the README tells an operator to get them."""
    password = compose("exec", "-T", "metamanager", "cat", "/auth/admin.password").stdout
    return ("admin", password.strip())


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
    admin = admin_login(compose)

    content = {"metadata": {"name": "nginx", "namespace": "default"}, "spec": {"nodeName": "e1"}}
    msg = envelope("insert", "default/pod/nginx", content)
    msg_id = msg["header"]["msg_id"]

    def pub(*login: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(mosquitto_pub, "-h", "127.0.0.1", "-p", str(port), *login, "-q", "1"),
                *("-t", inbox("admin"), "-m", json.dumps(msg)),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    # Nothing anonymous gets in, nor a wrong password.
    anonymous = pub()
    assert anonymous.returncode != 0 and "not authorised" in anonymous.stderr.lower(), anonymous
    wrong = pub("-u", "admin", "-P", "not-the-password")
    assert wrong.returncode != 0, wrong

    edged = Watcher(port, [EDGED], login=admin)
    try:
        sent = pub("-u", admin[0], "-P", admin[1])
        assert sent.returncode == 0, sent.stderr
        forwarded = edged.wait_for(
            EDGED, lambda m: isinstance(m, dict) and m["header"]["msg_id"] == msg_id
        )
    finally:
        edged.close()
    assert forwarded["content"] == content

    compose("restart", "metamanager", timeout=60)
    # The query is QoS 1 to a persistent session: answered once the service is back.
    reply = query(port, "default/pod/nginx", timeout=30, login=admin)
    assert reply["route"]["operation"] == "response", reply
    assert reply["content"] == [content]

    # down and up again (as after a host reboot or an upgrade): the store and the
    # credentials are on volumes; the same admin password still works.
    compose("down", "--timeout", "10", timeout=120)
    compose("up", "-d", "--wait", timeout=300)
    wait_for_port(port)
    assert admin_login(compose) == admin
    reply = query(port, "default/pod/nginx", timeout=30, login=admin)
    assert reply["content"] == [content], reply
