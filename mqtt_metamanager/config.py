"""Configuration: ``conf/edge.yaml`` plus ``METAMANAGER_`` environment overrides.

Every key has a default. Unknown keys and bad values are refused at start with the key's
dotted path in the message (``ConfigError``), which the CLI turns into exit code 2.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .typedtree import ConfigError as ConfigError  # the error of this module too
from .typedtree import build, env_overrides, merge

# A broker user name that Mosquitto can put in an ACL pattern as %u (SPEC §11).
USERNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
DEFAULT_LOCAL_MODULES = ("edged", "edgemesh", "devicetwin", "eventbus", "servicebus")


@dataclass(frozen=True)
class NodeConfig:
    name: str = "edge-node"


@dataclass(frozen=True)
class TLSConfig:
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure: bool = False


@dataclass(frozen=True)
class MQTTConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "metamanager"
    username: str = ""
    password_file: str = ""
    tls: TLSConfig = field(default_factory=TLSConfig)
    topic_prefix: str = "kubeedge"
    qos: int = 1
    max_payload: int = 1024 * 1024
    keepalive: int = 30
    # How long the broker keeps our subscription and queued QoS 1 input while we are down.
    session_expiry: int = 7 * 24 * 3600


@dataclass(frozen=True)
class DatabaseConfig:
    path: str = "metamanager.db"
    # Group commit: at most this many inputs share one transaction and one fsync. 256 was
    # ~3 % faster in a burst and held ~1.5 MB more at its peak (docs/performance.md).
    batch_max: int = 128
    # How many applied msg_ids are remembered for redelivery de-duplication.
    dedup_window: int = 100_000
    # The bound of the service's SQLite page cache (its write connection), in KiB.
    cache_kib: int = 1024


@dataclass(frozen=True)
class PodStatusSyncConfig:
    interval: float = 60.0


@dataclass(frozen=True)
class SyncConfig:
    podstatus: PodStatusSyncConfig = field(default_factory=PodStatusSyncConfig)


@dataclass(frozen=True)
class RemoteQueryConfig:
    timeout: float = 5.0
    retries: int = 2
    # Answered attempt ids kept to drop late cloud answers (in memory, in the metrics).
    answered_memory: int = 10_000


@dataclass(frozen=True)
class MetaConfig:
    sync: SyncConfig = field(default_factory=SyncConfig)
    remote_query: RemoteQueryConfig = field(default_factory=RemoteQueryConfig)


@dataclass(frozen=True)
class ModulesConfig:
    local: list[str] = field(default_factory=lambda: list(DEFAULT_LOCAL_MODULES))


@dataclass(frozen=True)
class CloudConfig:
    bridge_state_topic: str = ""


@dataclass(frozen=True)
class SecurityConfig:
    # Serve the single inbox P/metamanager/in (no identity, replies by route.source) too.
    legacy_inbox: bool = False
    # Identities that may send any operation with any route.source (SPEC §11).
    operators: list[str] = field(default_factory=lambda: ["admin"])


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    format: str = "text"


@dataclass(frozen=True)
class MetricsConfig:
    # Seconds between retained counter snapshots on P/metamanager/metrics; 0 turns them off.
    interval: float = 0.0


@dataclass(frozen=True)
class HTTPConfig:
    # health, readiness and metrics (SPEC §12): "host:port", "[v6]:port"; "" turns it off.
    listen: str = "127.0.0.1:10550"
    # /readyz fails once the oldest unacknowledged outbox row is older than this.
    ready_outbox_lag: float = 30.0
    # A file holding a bearer token every path but /healthz and /readyz then requires.
    token_file: str = ""


@dataclass(frozen=True)
class KubeConfig:
    # The Kubernetes read API (SPEC §12) on the http listener.
    api: bool = True
    # The change history watches resume from: the newest this many changes, and none older
    # than this many seconds; a watch from before it gets 410 Gone and lists again.
    history_changes: int = 10_000
    history_seconds: float = 600.0
    # The served JSON of objects read by gets and lists, kept while each one's revision
    # holds (0: none kept). 4 MiB holds about 4,000 pods of 1 KiB.
    cache_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class MemoryConfig:
    # glibc's malloc, set at start (allocator.py); 0 leaves glibc's own choice. Blocks from
    # this size up are mmapped and unmapped on free, never left in the heap by a list reply.
    malloc_mmap_threshold: int = 128 * 1024
    # At most this many malloc arenas (glibc makes up to 8 per core, one per thread).
    malloc_arena_max: int = 2


@dataclass(frozen=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    mqtt: MQTTConfig = field(default_factory=MQTTConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    modules: ModulesConfig = field(default_factory=ModulesConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    kube: KubeConfig = field(default_factory=KubeConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# Checks beyond the type: (key path, predicate, what it must be).
_RULES: list[tuple[str, typing.Callable[[Any], bool], str]] = [
    ("mqtt.port", lambda v: 1 <= v <= 65535, "a port number 1-65535"),
    ("mqtt.qos", lambda v: v in (0, 1, 2), "0, 1 or 2"),
    ("mqtt.max_payload", lambda v: 1024 <= v <= 256 * 1024 * 1024, "1024 to 268435456 bytes"),
    ("mqtt.keepalive", lambda v: 5 <= v <= 65535, "5 to 65535 seconds"),
    ("mqtt.session_expiry", lambda v: 0 <= v <= 0xFFFFFFFF, "0 to 4294967295 seconds"),
    ("mqtt.topic_prefix", lambda v: bool(v) and not set(v) & set("+#"), "non-empty, no + or #"),
    ("mqtt.client_id", lambda v: bool(v), "non-empty"),
    ("mqtt.host", lambda v: bool(v), "non-empty"),
    ("node.name", lambda v: bool(v) and not set(v) & set("/+#"), "non-empty, no / + #"),
    ("database.path", lambda v: bool(v), "non-empty"),
    ("database.batch_max", lambda v: 1 <= v <= 10_000, "1 to 10000"),
    ("database.dedup_window", lambda v: v >= 100, "at least 100"),
    ("database.cache_kib", lambda v: 64 <= v <= 1 << 20, "64 to 1048576 KiB"),
    (
        "memory.malloc_mmap_threshold",
        lambda v: v == 0 or 4096 <= v <= 32 * 1024 * 1024,
        "0 (glibc's choice) or 4096 to 33554432 bytes",
    ),
    ("memory.malloc_arena_max", lambda v: 0 <= v <= 64, "0 (glibc's choice) or 1 to 64"),
    ("meta.sync.podstatus.interval", lambda v: v > 0, "a positive number of seconds"),
    ("meta.remote_query.timeout", lambda v: v > 0, "a positive number of seconds"),
    ("meta.remote_query.retries", lambda v: 0 <= v <= 20, "0 to 20"),
    ("meta.remote_query.answered_memory", lambda v: 0 <= v <= 1_000_000, "0 to 1000000"),
    ("logging.level", lambda v: str(v).upper() in _LOG_LEVELS, f"one of {_LOG_LEVELS}"),
    ("logging.format", lambda v: v in ("text", "json"), "text or json"),
    ("metrics.interval", lambda v: v >= 0, "0 (off) or a positive number of seconds"),
    ("http.listen", lambda v: v == "" or listen_address(v) is not None, "host:port or empty"),
    ("http.ready_outbox_lag", lambda v: v > 0, "a positive number of seconds"),
    ("kube.history_changes", lambda v: 1 <= v <= 10_000_000, "1 to 10000000"),
    ("kube.history_seconds", lambda v: v > 0, "a positive number of seconds"),
    ("kube.cache_bytes", lambda v: 0 <= v <= 1 << 30, "0 (none) to 1073741824"),
]


def _get(config: Config, path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        node = getattr(node, part)
    return node


def from_mapping(
    data: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None
) -> Config:
    """Validate a decoded config (plus environment overrides) into a ``Config``."""
    merged = merge(dict(data or {}), env_overrides(environ if environ is not None else {}))
    config: Config = build(Config, merged)
    for path, ok, what in _RULES:
        value = _get(config, path)
        if not ok(value):
            raise ConfigError(f"{path}: must be {what}, got {value!r}")
    tls = config.mqtt.tls
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError("mqtt.tls.cert_file: cert_file and key_file go together")
    for path in (
        "mqtt.password_file",
        "mqtt.tls.ca_file",
        "mqtt.tls.cert_file",
        "mqtt.tls.key_file",
        "http.token_file",
    ):
        name = _get(config, path)
        if name and not os.access(name, os.R_OK):
            raise ConfigError(f"{path}: cannot read {name!r}")
    for module in config.modules.local:
        # Each local module logs in under its name and Mosquitto puts it in ACL patterns.
        if not USERNAME.fullmatch(module):
            raise ConfigError(
                f"modules.local: {module!r} is not a module name ({USERNAME.pattern})"
            )
    for operator in config.security.operators:
        if not USERNAME.fullmatch(operator):
            raise ConfigError(
                f"security.operators: {operator!r} is not a user name ({USERNAME.pattern})"
            )
    if set(config.cloud.bridge_state_topic) & set("+#"):
        raise ConfigError("cloud.bridge_state_topic: must be one topic, no + or #")
    return config


def load(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (None: defaults only) and apply ``environ`` (default: os.environ)."""
    data: Any = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    return from_mapping(data, os.environ if environ is None else environ)


def listen_address(text: str) -> tuple[str, int] | None:
    """``"127.0.0.1:10550"`` -> ``("127.0.0.1", 10550)``, ``"[::1]:80"`` -> ``("::1", 80)``;
    None when it is not a host and a port."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        return None  # a bare IPv6 address needs its brackets
    if not sep or not host or not port.isascii() or not port.isdigit():
        return None
    return (host, int(port)) if 1 <= int(port) <= 65535 else None


def read_password(config: MQTTConfig) -> str | None:
    if not config.password_file:
        return None
    try:
        return Path(config.password_file).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"mqtt.password_file: cannot read: {exc.strerror}") from None
