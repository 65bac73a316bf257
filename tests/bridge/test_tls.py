"""The cloud link over mutual TLS (SPEC §11): two real brokers, certificates the test makes
with openssl. The cloud broker takes each node's certificate CN as its user name and its
client id, and gives it only its own topics (`mqtt-metamanager auth cloud-acl`)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mqtt_metamanager.auth import render_cloud_acl
from mqtt_metamanager.bridge import BridgeSettings, CloudAddress, render
from tests.support import HOST, PREFIX, Broker, Publisher, Watcher, mosquitto_binary, wait_until

pytestmark = pytest.mark.bridge

NODE_A, NODE_B = "node-a", "node-b"
STATE = f"{PREFIX}/edgehub/bridge"
EDGEHUB_INBOX = f"{PREFIX}/metamanager/in/edgehub"
EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@dataclass(frozen=True)
class Identity:
    cert: Path
    key: Path


class CertificateAuthority:
    """A throw-away CA in a directory: server and client certificates signed by it."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True)
        self.cert, self.key = self.dir / "ca.pem", self.dir / "ca.key"
        self._openssl(
            "req", "-x509", "-new", *EC_KEY, "-keyout", str(self.key), "-out", str(self.cert),
            "-days", "2", "-subj", f"/CN={name}",
        )  # fmt: skip

    def issue(self, cn: str, *, ip: str | None = None) -> Identity:
        key, csr, cert = (self.dir / f"{cn}.{ext}" for ext in ("key", "csr", "pem"))
        self._openssl(
            "req", "-new", *EC_KEY, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}",
        )  # fmt: skip
        extensions = self.dir / f"{cn}.ext"
        extensions.write_text(f"subjectAltName=IP:{ip}\n" if ip else "basicConstraints=CA:FALSE\n")
        self._openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extensions),
        )  # fmt: skip
        return Identity(cert, key)

    @staticmethod
    def _openssl(*args: str) -> None:
        openssl = shutil.which("openssl")
        assert openssl, "openssl is not installed"
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(root / "ca", "test-ca")
    other = CertificateAuthority(root / "other", "other-ca")
    return {
        "ca": ca,
        "other": other,
        "server": ca.issue("cloud", ip=HOST),
        NODE_A: ca.issue(NODE_A),
        NODE_B: ca.issue(NODE_B),
        "cloudcore": ca.issue("cloudcore"),
    }


@pytest.fixture
def cloud(tmp_path: Path, pki: dict[str, Any]) -> Iterator[Broker]:
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed")
    acl = tmp_path / "cloud.acl"
    acl.write_text(render_cloud_acl(PREFIX))
    server: Identity = pki["server"]
    tls = (
        f"cafile {pki['ca'].cert}\ncertfile {server.cert}\nkeyfile {server.key}\n"
        "require_certificate true\nuse_identity_as_username true\n"
        # The session is the certificate's too: no node can kick another off or take over
        # its persistent session by dialling with that node's client id.
        "use_username_as_clientid true\n"
        f"acl_file {acl}\n"
    )
    broker = Broker(tmp_path / "cloud", extra_conf=tls, anonymous=False).start()
    yield broker
    broker.stop()


def tls_client(port: int, pki: dict[str, Any], who: str, client_id: str | None = None) -> Watcher:
    """A client of the cloud broker logged in by its certificate."""
    context = ssl.create_default_context(cafile=str(pki["ca"].cert))
    identity: Identity = pki[who]
    context.load_cert_chain(str(identity.cert), str(identity.key))
    return Watcher(port, f"{PREFIX}/nodes/#", tls=context, client_id=client_id)


def edge(tmp_path: Path, cloud: Broker, pki: dict[str, Any], **tls: Any) -> Broker:
    settings = BridgeSettings(
        node=NODE_A, cloud=(CloudAddress(HOST, cloud.port),), restart_timeout=(1,), **tls
    )
    return Broker(tmp_path / "edge", extra_conf=render(settings)).start()


def node_tls(pki: dict[str, Any], node: str = NODE_A) -> dict[str, str]:
    identity: Identity = pki[node]
    return {
        "cafile": str(pki["ca"].cert),
        "certfile": str(identity.cert),
        "keyfile": str(identity.key),
    }


def test_the_bridge_connects_over_mutual_tls_and_carries_traffic_both_ways(
    tmp_path: Path, cloud: Broker, pki: dict[str, Any]
) -> None:
    edge_broker = edge(tmp_path, cloud, pki, **node_tls(pki))
    cloudcore = tls_client(cloud.port, pki, "cloudcore")
    on_edge = Watcher(edge_broker.port, "#")
    sender = Publisher(edge_broker.port)
    try:
        on_edge.wait_for(STATE, lambda m: m == 1, timeout=15)
        cloudcore.client.publish(f"{PREFIX}/nodes/{NODE_A}/down", b'{"to":"edge"}', qos=1)
        assert on_edge.wait_for(EDGEHUB_INBOX) == {"to": "edge"}
        sender.send(b'{"to":"cloud"}', f"{PREFIX}/edgehub/in")
        assert cloudcore.wait_for(f"{PREFIX}/nodes/{NODE_A}/up") == {"to": "cloud"}
    finally:
        sender.close()
        on_edge.close()
        cloudcore.close()
        edge_broker.stop()


# Each fault and the evidence that the attempt was made and failed for that reason: the
# broker that refused the handshake, and what OpenSSL says there.
FAULTS = {
    "wrong CA": ("edge", "certificate verify failed"),  # the node does not trust the cloud
    "no client certificate": ("cloud", "peer did not return a certificate"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_bridge_the_cloud_does_not_trust_stays_down(
    tmp_path: Path, cloud: Broker, pki: dict[str, Any], fault: str
) -> None:
    tls = node_tls(pki)
    if fault == "wrong CA":
        tls["cafile"] = str(pki["other"].cert)  # the node cannot verify the cloud
    else:
        del tls["certfile"], tls["keyfile"]  # the cloud cannot verify the node
    edge_broker = edge(tmp_path, cloud, pki, **tls)
    state = Watcher(edge_broker.port, STATE)
    try:
        side, reason = FAULTS[fault]
        log = (edge_broker if side == "edge" else cloud).workdir / "mosquitto.log"
        wait_until(
            lambda: reason in log.read_text(errors="replace"), 30, f"{reason!r} in the {side} log"
        )
        # The bridge publishes its retained 0 before it dials; a 1 would replace it.
        assert state.wait_for(STATE) == 0
        assert [m for m in state.on(STATE) if m != 0] == [], log.read_text()
    finally:
        state.close()
        edge_broker.stop()


def test_one_node_cannot_read_another_nodes_traffic(cloud: Broker, pki: dict[str, Any]) -> None:
    cloudcore = tls_client(cloud.port, pki, "cloudcore")
    node_a = tls_client(cloud.port, pki, NODE_A)  # subscribed to nodes/#: the ACL filters
    try:
        for node in (NODE_B, NODE_A):
            info = cloudcore.client.publish(f"{PREFIX}/nodes/{node}/down", node.encode(), qos=1)
            info.wait_for_publish(10)
        # In order on one subscription: once A's own arrives, B's would have too.
        assert node_a.wait_for(f"{PREFIX}/nodes/{NODE_A}/down") == NODE_A.encode()
        assert node_a.on(f"{PREFIX}/nodes/{NODE_B}/down") == []
        # Nor may it write another node's up topic (the cloud would take it for node B).
        node_a.client.publish(f"{PREFIX}/nodes/{NODE_B}/up", b"forged", qos=1).wait_for_publish(10)
        node_a.client.publish(f"{PREFIX}/nodes/{NODE_A}/up", b"own", qos=1).wait_for_publish(10)
        assert cloudcore.wait_for(f"{PREFIX}/nodes/{NODE_A}/up") == b"own"
        assert cloudcore.on(f"{PREFIX}/nodes/{NODE_B}/up") == []
    finally:
        node_a.close()
        cloudcore.close()


def test_one_node_cannot_take_over_another_nodes_session(
    tmp_path: Path, cloud: Broker, pki: dict[str, Any]
) -> None:
    # Node B's certificate dials with node A's bridge client id (<prefix>-<node>). Were the
    # client id the client's to choose, B would drop A's link and take A's persistent
    # session, and what the cloud sends A meanwhile would be lost.
    edge_broker = edge(tmp_path, cloud, pki, **node_tls(pki))
    on_edge = Watcher(edge_broker.port, "#")
    cloudcore = tls_client(cloud.port, pki, "cloudcore")
    try:
        on_edge.wait_for(STATE, lambda m: m == 1, timeout=15)
        intruder = tls_client(cloud.port, pki, NODE_B, client_id=f"{PREFIX}-{NODE_A}")
        try:
            info = cloudcore.client.publish(f"{PREFIX}/nodes/{NODE_A}/down", b'{"n":1}', qos=1)
            info.wait_for_publish(10)
            assert on_edge.wait_for(EDGEHUB_INBOX) == {"n": 1}
            assert intruder.messages == []
        finally:
            intruder.close()
        states = on_edge.on(STATE)
        assert 0 not in states[states.index(1) :], "node A's link dropped"
    finally:
        cloudcore.close()
        on_edge.close()
        edge_broker.stop()
