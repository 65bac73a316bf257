"""The cloud link of SPEC §10: a Mosquitto bridge config that makes the edge broker edgehub.

``BridgeSettings`` checks itself when built; ``render`` fills ``TEMPLATE`` (the same text as
``mosquitto/bridge.conf.template``) and appends the auth and TLS lines that apply.
"""

from __future__ import annotations

import ipaddress
import re
import string
from dataclasses import dataclass, field

DEFAULT_BRIDGE_NAME = "cloud"
# Reconnect backoff: first retry after ~2 s, never more than 10 s apart.
DEFAULT_RESTART_TIMEOUT = (2, 10)
DEFAULT_KEEPALIVE = 30
PROTOCOLS = ("mqttv311", "mqttv31", "mqttv50")
MAX_PORT = 65535

TEMPLATE = """\
# The cloud link (SPEC §10): this edge broker bridges to the cloud broker and so plays
# KubeEdge's edgehub. Rendered by `mqtt-metamanager bridge-config`, which fills the
# placeholders (see docs/cloud-link.md). Give metamanager
# cloud.bridge_state_topic: ${prefix}/edgehub/bridge so it follows this link.
connection ${name}
address ${address}

# cloud -> edge: what the cloud sends the node lands in edgehub's inbox at metamanager.
topic "" in ${qos} ${prefix}/metamanager/in/edgehub ${prefix}/nodes/${node}/down
# edge -> cloud: everything metamanager sends to edgehub goes up.
topic "" out ${qos} ${prefix}/edgehub/in ${prefix}/nodes/${node}/up

# A persistent session on both brokers: what metamanager sends while the cloud is away is
# queued here (max_queued_messages) and delivered on reconnect; the cloud queues the
# node's QoS 1 traffic for this client id while the node is away.
cleansession false
remote_clientid ${remote_clientid}
bridge_protocol_version ${protocol}
try_private ${try_private}
keepalive_interval ${keepalive}
start_type automatic
restart_timeout ${restart_timeout}

# The link state as a retained 1/0 on the local broker only (the cloud never sees it).
notifications true
notifications_local_only true
notification_topic ${prefix}/edgehub/bridge
${options}
"""

_NAME = re.compile(r"[A-Za-z0-9._-]+")


class BridgeConfigError(ValueError):
    """A bridge setting that Mosquitto would refuse or misread; names the option."""


def _token(option: str, value: str, *, forbid: str = "") -> None:
    """A value that must be one config token: non-empty, no whitespace, none of ``forbid``."""
    if not value or any(c.isspace() for c in value) or set(value) & set(forbid):
        extra = f", no {' '.join(forbid)}" if forbid else ""
        raise BridgeConfigError(f"{option}: must be non-empty, no whitespace{extra}: {value!r}")


@dataclass(frozen=True)
class CloudAddress:
    """One cloud broker endpoint, ``HOST:PORT``."""

    host: str
    port: int

    def __post_init__(self) -> None:
        _token("--cloud", self.host, forbid=":[]")
        if not 1 <= self.port <= MAX_PORT:
            raise BridgeConfigError(f"--cloud: port must be 1-{MAX_PORT}, got {self.port}")

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: it could be anywhere
            return False

    @classmethod
    def parse(cls, text: str) -> CloudAddress:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise BridgeConfigError(f"--cloud: expected HOST:PORT, got {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class BridgeSettings:
    """Everything the rendered bridge depends on, validated when built.

    Args:
        node: the node name (``node.name``); owns ``P/nodes/<node>/down`` and ``/up``.
        cloud: the cloud broker endpoints, tried in order.
        prefix: the topic prefix ``P`` (``mqtt.topic_prefix``).
        remote_clientid: the bridge's client id on the cloud; default ``<prefix>-<node>``.
        restart_timeout: ``(constant,)`` or ``(base, cap)`` seconds between reconnects.
    """

    node: str
    cloud: tuple[CloudAddress, ...]
    prefix: str = "kubeedge"
    name: str = DEFAULT_BRIDGE_NAME
    remote_clientid: str = ""
    qos: int = 1
    username: str = ""
    password: str = field(default="", repr=False)
    cafile: str = ""
    capath: str = ""
    certfile: str = ""
    keyfile: str = ""
    insecure: bool = False
    restart_timeout: tuple[int, ...] = DEFAULT_RESTART_TIMEOUT
    keepalive: int = DEFAULT_KEEPALIVE
    try_private: bool = True
    protocol: str = "mqttv311"
    # Plain MQTT to a cloud that is not on this host: only when asked for by name.
    insecure_plaintext: bool = False

    def __post_init__(self) -> None:
        if not self.cloud:
            raise BridgeConfigError("--cloud: at least one HOST:PORT is needed")
        _token("--node", self.node, forbid="/+#")
        _token("--prefix", self.prefix, forbid="+#")
        if self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise BridgeConfigError(f"--prefix: no leading or trailing /: {self.prefix!r}")
        if not _NAME.fullmatch(self.name):
            raise BridgeConfigError(f"--name: letters, digits, . _ - only: {self.name!r}")
        if self.remote_clientid:
            _token("--clientid", self.remote_clientid)
        if self.qos not in (0, 1, 2):
            raise BridgeConfigError(f"--qos: must be 0, 1 or 2, got {self.qos}")
        self._check_credentials()
        self._check_tls()
        timeout = self.restart_timeout
        if not 1 <= len(timeout) <= 2 or min(timeout) < 1 or timeout != tuple(sorted(timeout)):
            raise BridgeConfigError(
                f"--restart-timeout: SECONDS or BASE CAP (1 <= BASE <= CAP), got {timeout}"
            )
        if not 5 <= self.keepalive <= MAX_PORT:
            raise BridgeConfigError(f"--keepalive: 5 to 65535 seconds, got {self.keepalive}")
        if self.protocol not in PROTOCOLS:
            raise BridgeConfigError(f"--protocol: one of {', '.join(PROTOCOLS)}")
        self._check_plaintext()

    def _check_plaintext(self) -> None:
        """The node's traffic crosses the network in the clear only when asked for."""
        remote = [str(a) for a in self.cloud if not a.is_loopback]
        if remote and not (self.cafile or self.capath) and not self.insecure_plaintext:
            raise BridgeConfigError(
                f"--cafile: {', '.join(remote)} is not on this host: the link needs TLS "
                "(--cafile, and --certfile/--keyfile for the node's certificate), or "
                "--insecure-plaintext to send the node's traffic in the clear"
            )

    def _check_credentials(self) -> None:
        if self.username:
            _token("--username", self.username)
        if self.password:
            if not self.username:
                raise BridgeConfigError("--password-file: needs --username")
            # Mosquitto reads the rest of the line and trims it: no way to keep these.
            if "\n" in self.password or self.password != self.password.strip():
                raise BridgeConfigError(
                    "--password-file: the password cannot have line breaks or edge whitespace"
                )

    def _check_tls(self) -> None:
        for option, value in (
            ("--cafile", self.cafile),
            ("--capath", self.capath),
            ("--certfile", self.certfile),
            ("--keyfile", self.keyfile),
        ):
            if value:
                _token(option, value)
        if bool(self.certfile) != bool(self.keyfile):
            raise BridgeConfigError("--certfile: --certfile and --keyfile go together")
        if (self.certfile or self.insecure) and not (self.cafile or self.capath):
            raise BridgeConfigError("--cafile: TLS to the cloud needs --cafile or --capath")

    @property
    def clientid(self) -> str:
        return self.remote_clientid or f"{self.prefix.replace('/', '-')}-{self.node}"

    @property
    def state_topic(self) -> str:
        """Where the bridge publishes 1/0: the value for ``cloud.bridge_state_topic``."""
        return f"{self.prefix}/edgehub/bridge"

    def option_lines(self) -> list[str]:
        lines: list[str] = []
        if self.username:
            lines += ["", f"remote_username {self.username}"]
            if self.password:
                lines.append(f"remote_password {self.password}")
        tls = [
            ("bridge_cafile", self.cafile),
            ("bridge_capath", self.capath),
            ("bridge_certfile", self.certfile),
            ("bridge_keyfile", self.keyfile),
        ]
        if any(value for _key, value in tls):
            # No bridge_tls_version: Mosquitto's default is TLS 1.2 or later, and 1.3 is
            # negotiated when the cloud offers it (a pinned version would only narrow that).
            lines += ["", "# TLS to the cloud broker (1.2 or later)."]
            lines += [f"{key} {value}" for key, value in tls if value]
            if self.insecure:
                lines += [
                    "# The cloud's host name is not checked: any certificate from this CA",
                    "# could pose as the cloud. For tests, never in production.",
                    "bridge_insecure true",
                ]
        return lines


def render(settings: BridgeSettings) -> str:
    """The bridge config text for ``settings``, ready to include in mosquitto.conf.

    Returns:
        The config, ending with one newline.
    """
    text = string.Template(TEMPLATE).substitute(
        name=settings.name,
        address=" ".join(str(a) for a in settings.cloud),
        prefix=settings.prefix,
        node=settings.node,
        qos=settings.qos,
        remote_clientid=settings.clientid,
        protocol=settings.protocol,
        try_private="true" if settings.try_private else "false",
        keepalive=settings.keepalive,
        restart_timeout=" ".join(str(t) for t in settings.restart_timeout),
        options="\n".join(settings.option_lines()),
    )
    return text.rstrip("\n") + "\n"
