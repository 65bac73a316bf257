"""The ACL matrix (SPEC §11): a real Mosquitto loading the files `mqtt-metamanager auth init`
writes; every identity writes and reads every topic of SPEC §2 and §11, and the broker's
answers are what docs/security.md says. Every login here also proves the $7$ hash."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqtt_metamanager.auth import AuthDir, AuthSettings, verify_password
from mqtt_metamanager.cli import main
from mqtt_metamanager.config import from_mapping
from tests.support import (
    HOST,
    IN,
    LOCAL_MODULES,
    PREFIX,
    STATUS,
    Broker,
    mosquitto_binary,
    wait_until,
)

pytestmark = pytest.mark.integration

NOT_AUTHORIZED = 0x87
BAD_LOGIN = (0x86, 0x87)  # Mosquitto 2.0.11 says 0x87 for both; 0x86 is what v5 allows too
# The default modules.local; "tool" is a user added with `auth add`.
IDENTITIES = (*LOCAL_MODULES, "metamanager", "edgehub", "admin", "tool")

# Each topic of SPEC §2 and §11, and who may write it (the reads follow from the ACL).
TOPICS: dict[str, set[str]] = {
    IN: set(),  # the legacy inbox: nobody
    **{f"{IN}/{who}": {who} for who in IDENTITIES},
    **{f"{PREFIX}/{m}/in": {"metamanager"} for m in (*LOCAL_MODULES, "edgehub")},
    f"{PREFIX}/edgehub/connection": {"edgehub"},
    STATUS: {"metamanager"},
    f"{PREFIX}/metamanager/connection": {"metamanager"},
    f"{PREFIX}/metamanager/deadletter": {"metamanager"},
    **{f"{PREFIX}/reply/{who}/x": {who, "metamanager"} for who in IDENTITIES},
}


def may_read(who: str, topic: str) -> bool:
    if who == "admin" or topic in (STATUS, f"{PREFIX}/metamanager/connection"):
        return True
    if topic.startswith(f"{IN}/") or topic == f"{PREFIX}/edgehub/connection":
        return who == "metamanager"
    if topic.startswith(f"{PREFIX}/reply/"):
        return topic.split("/")[2] == who
    return topic == f"{PREFIX}/{who}/in"


class Client:
    """One MQTT v5 login; records what it receives and the broker's PUBACK codes."""

    def __init__(self, port: int, login: tuple[str, str] | None) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.connack: int | None = None
        self._acks: dict[int, int] = {}
        self._cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if login is not None:
            self.client.username_pw_set(*login)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self._notify("subscribed")
        self.subscribed = False
        self.client.connect(HOST, port)
        self.client.loop_start()
        self._wait(lambda: self.connack is not None, "CONNACK")

    def _notify(self, _what: str) -> None:
        with self._cond:
            self.subscribed = True
            self._cond.notify_all()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        with self._cond:
            self.connack = reason.value
            self._cond.notify_all()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._cond:
            self._acks[mid] = reason.value
            self._cond.notify_all()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.received.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def _wait(self, check: Any, what: str, timeout: float = 10) -> None:
        with self._cond:
            assert self._cond.wait_for(check, timeout), f"no {what} within {timeout}s"

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1 and return the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1)
        self._wait(lambda: info.mid in self._acks, f"PUBACK for {topic}")
        return self._acks[info.mid]

    def subscribe(self, topics: list[str]) -> None:
        self.subscribed = False
        self.client.subscribe([(t, 1) for t in topics])
        self._wait(lambda: self.subscribed, "SUBACK")

    def wait_for(self, topic: str, payload: bytes) -> None:
        self._wait(lambda: (topic, payload) in self.received, f"{payload!r} on {topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def auth_command(*args: str | Path) -> None:
    """``mqtt-metamanager auth ...`` as an operator runs it."""
    assert main(["auth", *map(str, args)]) == 0


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Broker, AuthDir]]:
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed")
    root = tmp_path_factory.mktemp("acl")
    broker, auth = start_secured(root)
    auth_command("add", "tool", "--dir", auth.path, "-c", root / "edge.yaml")
    broker.reload()
    wait_until(lambda: connack(broker.port, login(auth, "tool")) == 0, 10, "tool's login")
    yield broker, auth
    broker.stop()


def start_secured(root: Path) -> tuple[Broker, AuthDir]:
    """A broker with the files `auth init` writes for the default config."""
    (root / "edge.yaml").write_text("{}\n")
    auth = AuthDir(root / "auth", AuthSettings.from_config(from_mapping({}, environ={})))
    auth_command("init", "--dir", auth.path, "-c", root / "edge.yaml")
    return Broker(root / "broker", auth_dir=auth.path).start(), auth


def login(auth: AuthDir, who: str) -> tuple[str, str]:
    return who, auth.password_path(who).read_text().strip()


@pytest.fixture(scope="module")
def clients(secured: tuple[Broker, AuthDir]) -> Iterator[dict[str, Client]]:
    broker, auth = secured
    made = {who: Client(broker.port, login(auth, who)) for who in IDENTITIES}
    yield made
    for client in made.values():
        client.close()


def connack(port: int, credentials: tuple[str, str] | None) -> int | None:
    client = Client(port, credentials)
    client.close()
    return client.connack


def test_anonymous_and_wrong_passwords_are_refused(secured: tuple[Broker, AuthDir]) -> None:
    broker, auth = secured
    assert connack(broker.port, None) == NOT_AUTHORIZED
    assert connack(broker.port, ("admin", "not-the-password")) in BAD_LOGIN
    assert connack(broker.port, ("nobody", "x")) in BAD_LOGIN
    assert connack(broker.port, login(auth, "admin")) == 0


@pytest.mark.parametrize("who", IDENTITIES)
def test_each_identity_writes_only_where_the_acl_says(clients: dict[str, Client], who: str) -> None:
    codes = {topic: clients[who].publish(topic, f"from {who}".encode()) for topic in TOPICS}
    expected = {t: (0 if who in writers else NOT_AUTHORIZED) for t, writers in TOPICS.items()}
    # 0x10 (accepted, nobody subscribed) is an accepted write too.
    assert {t: (0 if c == 0x10 else c) for t, c in codes.items()} == expected


@pytest.mark.parametrize("subscription", ["each topic", "wildcard"])
def test_each_identity_reads_only_where_the_acl_says(
    secured: tuple[Broker, AuthDir], clients: dict[str, Client], subscription: str
) -> None:
    broker, auth = secured
    readable = [t for t, writers in TOPICS.items() if writers]
    readers = {who: Client(broker.port, login(auth, who)) for who in IDENTITIES}
    try:
        for reader in readers.values():
            # Every SUBACK is granted, a wildcard's too; the ACL acts on each delivery.
            reader.subscribe(readable if subscription == "each topic" else [f"{PREFIX}/#"])
        for topic in readable:
            writer = sorted(TOPICS[topic])[0]
            assert clients[writer].publish(topic, b"read-check") in (0, 0x10)
        # Each publish was routed before its PUBACK, and a subscriber gets its messages in
        # order: once this last one arrives, nothing sent before it is still on its way.
        assert clients["metamanager"].publish(STATUS, b"sentinel") in (0, 0x10)
        for who, reader in readers.items():
            reader.wait_for(STATUS, b"sentinel")
            got = {t for t, payload in reader.received if payload == b"read-check"}
            assert got == {t for t in readable if may_read(who, t)}, who
    finally:
        for reader in readers.values():
            reader.close()


def test_only_operators_read_the_brokers_own_topics(
    secured: tuple[Broker, AuthDir], clients: dict[str, Client]
) -> None:
    broker, auth = secured
    readers = {who: Client(broker.port, login(auth, who)) for who in IDENTITIES}
    try:
        for reader in readers.values():
            # Retained since start-up; queued at the SUBACK, so before the sentinel below.
            reader.subscribe(["$SYS/broker/version", STATUS])
        assert clients["metamanager"].publish(STATUS, b"sentinel") in (0, 0x10)
        for who, reader in readers.items():
            reader.wait_for(STATUS, b"sentinel")
            got = {t for t, _payload in reader.received if t.startswith("$SYS/")}
            assert got == ({"$SYS/broker/version"} if who == "admin" else set()), who
    finally:
        for reader in readers.values():
            reader.close()


def test_a_refused_write_never_reaches_metamanager(clients: dict[str, Client]) -> None:
    inbox = clients["metamanager"]
    inbox.subscribe([f"{IN}/+", IN])
    inbox.received.clear()
    for who, client in clients.items():
        for target in (*IDENTITIES, ""):
            client.publish(f"{IN}/{target}" if target else IN, f"{who}->{target}".encode())
    assert clients["admin"].publish(f"{IN}/admin", b"sentinel") == 0
    inbox.wait_for(f"{IN}/admin", b"sentinel")
    arrived = {payload.decode() for _t, payload in inbox.received if payload != b"sentinel"}
    assert arrived == {f"{who}->{who}" for who in IDENTITIES}


def test_auth_files_keep_passwords_and_modes(secured: tuple[Broker, AuthDir]) -> None:
    _broker, auth = secured
    before = {who: auth.password_path(who).read_text() for who in IDENTITIES}
    assert auth.init() == []
    assert {who: auth.password_path(who).read_text() for who in IDENTITIES} == before
    assert oct(Path(auth.password_path("admin")).stat().st_mode & 0o777) == "0o600"
    assert oct(auth.passwd_path.stat().st_mode & 0o777) == "0o644"


def test_users_mosquitto_passwd_made_are_kept_and_changes_apply_on_reload(
    tmp_path: Path,
) -> None:
    mosquitto_passwd = shutil.which("mosquitto_passwd")
    assert mosquitto_passwd, "mosquitto_passwd is not installed (package mosquitto)"
    broker, auth = start_secured(tmp_path)
    config = tmp_path / "edge.yaml"
    try:
        # mosquitto_passwd reads the file auth wrote, and auth keeps the line it adds.
        subprocess.run([mosquitto_passwd, "-b", auth.passwd_path, "carol", "c4r0l"], check=True)
        hashes = auth.users()
        auth_command("init", "--dir", auth.path, "-c", config)
        assert auth.users() == hashes
        assert verify_password("c4r0l", hashes["carol"])
        broker.reload()
        wait_until(lambda: connack(broker.port, ("carol", "c4r0l")) == 0, 10, "carol's login")
        carol = Client(broker.port, ("carol", "c4r0l"))
        try:  # the patterns hold for a user added by hand too
            assert carol.publish(f"{IN}/carol", b"x") in (0, 0x10)
            assert carol.publish(f"{IN}/admin", b"x") == NOT_AUTHORIZED
        finally:
            carol.close()

        auth_command("remove", "carol", "--dir", auth.path, "-c", config)
        auth_command("add", "dave", "--dir", auth.path, "-c", config)
        broker.reload()
        wait_until(lambda: connack(broker.port, login(auth, "dave")) == 0, 10, "dave's login")
        assert connack(broker.port, ("carol", "c4r0l")) in BAD_LOGIN
        assert connack(broker.port, login(auth, "admin")) == 0
    finally:
        broker.stop()
