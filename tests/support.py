"""Test support: a real Mosquitto on a free 127.0.0.1 port, the service as a subprocess,
and a topic watcher that waits on conditions instead of sleeping."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST = "127.0.0.1"
PREFIX = "kubeedge"
IN = f"{PREFIX}/metamanager/in"  # the legacy inbox (security.legacy_inbox)
LOCAL_MODULES = ("edged", "edgemesh", "devicetwin", "eventbus", "servicebus")
EDGED = f"{PREFIX}/edged/in"
CLOUD = f"{PREFIX}/edgehub/in"
STATUS = f"{PREFIX}/metamanager/status"
CONNECTION = f"{PREFIX}/metamanager/connection"
DEADLETTER = f"{PREFIX}/metamanager/deadletter"


# A broker login: (username, password).
Login = tuple[str, str]


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class Broker:
    """A mosquitto process owned by a test; ``restart`` keeps its port and persistence."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra_conf: str = ""
    # A directory `mqtt-metamanager auth init` wrote: then nobody gets in anonymously.
    auth_dir: Path | None = None
    # Without auth_dir: whether clients without a user name get in (TLS brokers say no).
    anonymous: bool = True
    proc: subprocess.Popen[bytes] | None = None

    @property
    def conf_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def start(self) -> Broker:
        binary = mosquitto_binary()
        assert binary, "mosquitto is not installed"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(
            f"listener {self.port} {HOST}\n"
            f"{self._access()}\n"
            "set_tcp_nodelay true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 1000\n"
            # As root, mosquitto drops to user `mosquitto`, which cannot write the
            # root-only tmp dir: persistence would be lost without a word but a log line.
            f"{'user root' if os.geteuid() == 0 else ''}\n"
            f"{self.extra_conf}\n"
        )
        log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([binary, "-c", str(self.conf_path)], stdout=log, stderr=log)
        wait_until(lambda: port_open(self.port), 10, f"mosquitto on port {self.port}")
        return self

    def _access(self) -> str:
        if self.auth_dir is None:
            return f"allow_anonymous {'true' if self.anonymous else 'false'}"
        return (
            "allow_anonymous false\n"
            f"password_file {self.auth_dir / 'passwd'}\n"
            f"acl_file {self.auth_dir / 'acl'}"
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """SIGHUP: mosquitto reads its password and ACL files again."""
        assert self.proc is not None and self.proc.poll() is None, "mosquitto is not running"
        self.proc.send_signal(signal.SIGHUP)


class Watcher:
    """Subscribes to topics and records what arrives; ``wait_for`` blocks on a condition."""

    def __init__(
        self,
        port: int,
        topics: list[str] | str = "#",
        *,
        login: Login | None = None,
        tls: ssl.SSLContext | None = None,
        client_id: str | None = None,
    ) -> None:
        self.messages: list[tuple[str, bytes, Any]] = []
        self._cond = threading.Condition()
        self._topics = [topics] if isinstance(topics, str) else topics
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"watch-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        if login is not None:
            self.client.username_pw_set(*login)
        if tls is not None:
            self.client.tls_set_context(tls)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(HOST, port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "watcher did not subscribe"

    def _on_connect(self, client: mqtt.Client, *_a: Any) -> None:
        client.subscribe([(t, 1) for t in self._topics])

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload), msg.properties))
            self._cond.notify_all()

    def on(self, topic: str) -> list[Any]:
        """Decoded JSON payloads seen on ``topic`` (non-JSON as raw bytes)."""
        with self._cond:
            out = []
            for t, payload, _p in self.messages:
                if t == topic:
                    try:
                        out.append(json.loads(payload))
                    except ValueError:
                        out.append(payload)
            return out

    def wait_for(
        self, topic: str, match: Callable[[Any], bool] = lambda _m: True, timeout: float = 10
    ) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self.on(topic):
                    if match(item):
                        return item
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"nothing matching on {topic} within {timeout}s; saw {self.on(topic)[-5:]}"
                    )
                self._cond.wait(remaining)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def inbox(identity: str) -> str:
    """The per-sender inbox user ``identity`` writes to (SPEC §11)."""
    return f"{IN}/{identity}"


def inbox_for(message: dict[str, Any] | bytes | str) -> str:
    """Where the sender a message's route source names would send it: a local module to its
    own inbox, anyone else is the cloud and comes through edgehub's."""
    source = message.get("route", {}).get("source") if isinstance(message, dict) else None
    return inbox(source if source in LOCAL_MODULES else "edgehub")


def reply_to(msg_id: str) -> Callable[[Any], bool]:
    return lambda m: isinstance(m, dict) and m["header"]["parent_msg_id"] == msg_id


def envelope(
    operation: str,
    resource: str,
    content: Any = None,
    *,
    source: str = "edgecontroller",
    msg_id: str | None = None,
    parent: str = "",
    group: str = "resource",
) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": msg_id or str(uuid.uuid4()),
            "parent_msg_id": parent,
            "timestamp": int(time.time() * 1000),
        },
        "route": {"source": source, "group": group, "operation": operation, "resource": resource},
        "content": content,
    }


class Publisher:
    """A plain QoS 1 publisher, optionally with a v5 Response Topic."""

    def __init__(self, port: int, *, login: Login | None = None) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if login is not None:
            self.client.username_pw_set(*login)
        self.client.connect(HOST, port)
        self.client.loop_start()

    def send(
        self,
        message: dict[str, Any] | bytes | str,
        topic: str | None = None,
        *,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        retain: bool = False,
    ) -> None:
        payload = json.dumps(message) if isinstance(message, dict) else message
        props = None
        if response_topic:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = response_topic
            if correlation is not None:
                props.CorrelationData = correlation
        topic = topic or inbox_for(message)
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=props)
        info.wait_for_publish(10)
        assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class ServiceProcess:
    """``mqtt-metamanager run`` as a subprocess against a test broker."""

    workdir: Path
    broker_port: int
    overrides: dict[str, Any] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    _log_offset: int = 0
    # Its own HTTP port: the default (10550) would be shared by every service on the box.
    http_port: int = field(default_factory=free_port)

    @property
    def db_path(self) -> Path:
        return self.workdir / "meta.db"

    @property
    def log_path(self) -> Path:
        return self.workdir / "service.log"

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "mqtt": {
                "host": HOST,
                "port": self.broker_port,
                "client_id": f"metamanager-{self.workdir.name}",
            },
            "database": {"path": str(self.db_path)},
            "meta": {"remote_query": {"timeout": 1, "retries": 1}},
            "logging": {"level": "DEBUG"},
            "http": {"listen": f"{HOST}:{self.http_port}"},
        }
        for path, value in self.overrides.items():
            node = cfg
            *parents, last = path.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        return cfg

    def start(self, wait_online: bool = True) -> ServiceProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "edge.yaml"
        conf.write_text(yaml.safe_dump(self.config()))
        env = {k: v for k, v in os.environ.items() if not k.startswith("METAMANAGER_")}
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mqtt_metamanager", "run", "-c", str(conf)],
            stdout=log,
            stderr=log,
            env=env,
            cwd=self.workdir,
        )
        if wait_online:
            self.wait_online()
        return self

    def wait_online(self, timeout: float = 15) -> None:
        """Online means: this process's startup log line for the broker connection appeared."""

        def connected() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited {self.proc.returncode}:\n{self.logs()}")
            return "connected to" in self.logs()[self._log_offset :]

        wait_until(connected, timeout, "the service to connect")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"service did not stop on SIGTERM:\n{self.logs()}") from None
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def iter_lines(path: Path) -> Iterator[str]:
    yield from path.read_text().splitlines()
