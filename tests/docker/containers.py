"""Container helpers for the docker tier: a loopback-only Mosquitto container, health and
exit polling, and the request/reply checks every test here makes."""

from __future__ import annotations

import time
import warnings
from typing import Any

from tests.support import (
    EDGED,
    HOST,
    PREFIX,
    Login,
    Publisher,
    Watcher,
    envelope,
    inbox,
    reply_to,
    wait_until,
)

# testcontainers deprecates its own helpers (wait_container_is_ready, string predicates
# for wait_for_logs) that MosquittoContainer still uses: not ours to act on.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:  # testcontainers >= 4.14 moved the module; older releases have it at the top level.
        from testcontainers.community.mqtt import MosquittoContainer
    except ImportError:  # pragma: no cover - depends on the installed testcontainers
        from testcontainers.mqtt import MosquittoContainer

MQTT_PORT = 1883
CONFIG_PATH = "/mosquitto/config/mosquitto.conf"


class LoopbackMosquitto(MosquittoContainer):
    """testcontainers' Mosquitto, with its port published on 127.0.0.1 only.

    ``MosquittoContainer.start`` mounts the given config at ``CONFIG_PATH`` and waits for
    the ``mosquitto version X running`` log line, which the air-gapped image prints as it
    happens (mosquitto runs under ``stdbuf -oL`` there).
    """

    def with_exposed_ports(self, *ports: str | int) -> LoopbackMosquitto:
        for port in ports:
            # docker-py: a 1-tuple is (host_ip,): a random port on that address only.
            self.ports[str(port)] = (HOST,)
        return self

    def start(self, configfile: str | None = None) -> LoopbackMosquitto:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            super().start(configfile=configfile)
        return self

    @property
    def port(self) -> int:
        return int(self.get_exposed_port(MQTT_PORT))


def container_logs(container: Any) -> str:
    """The last lines of a docker-py container's output, for assertion messages."""
    try:
        return str(container.logs(tail=60).decode(errors="replace"))
    except Exception as exc:  # the container may be gone already
        return f"(no logs: {exc})"


def wait_healthy(container: Any, timeout: float) -> None:
    """Poll the image's HEALTHCHECK status until ``healthy``; fail fast if it exits."""

    def healthy() -> bool:
        container.reload()
        state = container.attrs["State"]
        if state["Status"] in ("exited", "dead"):
            raise AssertionError(
                f"{container.name} exited {state['ExitCode']}:\n{container_logs(container)}"
            )
        return bool(state.get("Health", {}).get("Status") == "healthy")

    try:
        wait_until(healthy, timeout, f"{container.name} to be healthy", interval=0.25)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{container_logs(container)}") from None


def stop_timed(container: Any, grace: int = 10) -> tuple[float, int]:
    """``docker stop`` with the compose grace period: (seconds it took, exit code)."""
    started = time.monotonic()
    container.stop(timeout=grace)
    took = time.monotonic() - started
    container.reload()
    return took, int(container.attrs["State"]["ExitCode"])


def insert_is_forwarded(
    port: int, resource: str, content: Any, login: Login | None = None
) -> dict[str, Any]:
    """Insert ``resource`` as the cloud would (through edgehub's inbox, or as the operator
    ``login`` names); return the copy forwarded to edged."""
    watcher = Watcher(port, [EDGED], login=login)
    publisher = Publisher(port, login=login)
    try:
        msg = envelope("insert", resource, content)
        publisher.send(msg, inbox(login[0]) if login else None)
        forwarded: dict[str, Any] = watcher.wait_for(
            EDGED, lambda m: isinstance(m, dict) and m["route"]["resource"] == resource, 15
        )
        return forwarded
    finally:
        publisher.close()
        watcher.close()


def query(
    port: int, resource: str, timeout: float = 15, login: Login | None = None
) -> dict[str, Any]:
    """Ask the service for ``resource`` with a v5 Response Topic, as the user ``login``
    names (else as a tool on a broker that lets anyone in); return its reply."""
    identity = login[0] if login else "tools"
    reply_topic = f"{PREFIX}/reply/{identity}/{time.monotonic_ns()}"
    watcher = Watcher(port, [reply_topic], login=login)
    publisher = Publisher(port, login=login)
    try:
        msg = envelope("query", resource, None, source=identity)
        publisher.send(msg, inbox(identity), response_topic=reply_topic, correlation=b"docker-tier")
        reply: dict[str, Any] = watcher.wait_for(
            reply_topic, reply_to(msg["header"]["msg_id"]), timeout
        )
        return reply
    finally:
        publisher.close()
        watcher.close()


def wait_for_port(port: int, timeout: float = 15) -> None:
    from tests.support import port_open

    wait_until(lambda: port_open(port), timeout, f"a listener on {HOST}:{port}")
