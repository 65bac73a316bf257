"""``mqtt-metamanager bridge-config``: the Mosquitto bridge config for the cloud link,
from the command line and the service's config (SPEC §10)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .bridge import (
    DEFAULT_BRIDGE_NAME,
    DEFAULT_KEEPALIVE,
    DEFAULT_RESTART_TIMEOUT,
    PROTOCOLS,
    BridgeConfigError,
    BridgeSettings,
    CloudAddress,
    render,
)
from .config import Config

EXIT_OK, EXIT_USAGE = 0, 2


def cmd_bridge_config(cfg: Config, args: argparse.Namespace) -> int:
    try:
        text = render(settings_from_args(args, cfg))
    except BridgeConfigError as exc:
        print(f"bridge-config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.output:
        write_config(args.output, text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bridge-config", help="print the Mosquitto bridge config for the cloud link")
    p.add_argument("-c", "--config", dest="sub_config", help="config file")
    add_arguments(p)
    p.set_defaults(func=cmd_bridge_config)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bridge-config`` options; node and prefix default to the service's config."""
    add = parser.add_argument
    add(
        "--cloud",
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="cloud broker address; repeat for fallbacks, tried in order",
    )
    add("--node", help="node name (default: node.name)")
    add("--prefix", help="topic prefix (default: mqtt.topic_prefix)")
    add("--name", default=DEFAULT_BRIDGE_NAME, help="bridge connection name (default: %(default)s)")
    add("--clientid", default="", help="client id on the cloud broker (default: <prefix>-<node>)")
    add("--username", default="", help="user name on the cloud broker")
    add("--password-file", default="", help="file holding the password (read now, embedded)")
    add("--cafile", default="", help="CA certificate file, as the edge broker sees it (TLS)")
    add("--capath", default="", help="CA certificate directory, e.g. /etc/ssl/certs (TLS)")
    add("--certfile", default="", help="client certificate, with --keyfile (TLS)")
    add("--keyfile", default="", help="client private key, with --certfile (TLS)")
    add(
        "--insecure",
        action="store_true",
        help="do not check that the cloud's certificate names its host (TLS; tests only)",
    )
    add(
        "--restart-timeout",
        type=int,
        nargs="+",
        metavar="SECONDS",
        default=list(DEFAULT_RESTART_TIMEOUT),
        help="reconnect delay: SECONDS, or BASE CAP for backoff (default: 2 10)",
    )
    add(
        "--keepalive",
        type=int,
        default=DEFAULT_KEEPALIVE,
        help="seconds between pings to the cloud (default: %(default)s)",
    )
    add(
        "--no-try-private",
        dest="try_private",
        action="store_false",
        help="for cloud brokers that refuse Mosquitto's bridge flag",
    )
    add("--protocol", default="mqttv311", choices=PROTOCOLS, help="MQTT version to the cloud")
    add(
        "--insecure-plaintext",
        action="store_true",
        help="allow a cloud that is not on this host without TLS (its traffic in the clear)",
    )
    add("-o", "--output", help="write to this file (mode 0600) instead of stdout")


def settings_from_args(args: argparse.Namespace, config: Config) -> BridgeSettings:
    return BridgeSettings(
        node=args.node or config.node.name,
        cloud=tuple(CloudAddress.parse(text) for text in args.cloud),
        prefix=args.prefix or config.mqtt.topic_prefix,
        name=args.name,
        remote_clientid=args.clientid,
        qos=config.mqtt.qos,
        username=args.username,
        password=read_password_file(args.password_file) if args.password_file else "",
        cafile=args.cafile,
        capath=args.capath,
        certfile=args.certfile,
        keyfile=args.keyfile,
        insecure=args.insecure,
        restart_timeout=tuple(args.restart_timeout),
        keepalive=args.keepalive,
        try_private=args.try_private,
        protocol=args.protocol,
        insecure_plaintext=args.insecure_plaintext,
    )


def read_password_file(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise BridgeConfigError(f"--password-file: cannot read {path}: {exc.strerror}") from None


def write_config(path: str, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (it may hold a password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
