"""The broker login the CLI's commands share: the config's ``mqtt`` settings with the
command line's user, password file and TLS files on top."""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace

from . import config as config_mod
from .config import Config, MQTTConfig


def broker_config(cfg: Config, args: argparse.Namespace) -> MQTTConfig:
    """The config's broker settings with the command line's login and TLS on top."""
    tls = cfg.mqtt.tls
    tls = replace(
        tls,
        ca_file=args.cafile or tls.ca_file,
        cert_file=args.certfile or tls.cert_file,
        key_file=args.keyfile or tls.key_file,
    )
    mqtt = replace(
        cfg.mqtt,
        host=args.host or cfg.mqtt.host,
        port=args.port or cfg.mqtt.port,
        username=args.username if args.username is not None else cfg.mqtt.username,
        password_file=args.password_file or cfg.mqtt.password_file,
        tls=tls,
    )
    # Checked like the service's own config: the failing option named, exit code 2.
    return config_mod.from_mapping({"mqtt": asdict(mqtt)}, environ={}).mqtt


def add_login_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--username", help="broker user name, also the identity (mqtt.username)")
    p.add_argument("--password-file", help="file holding the password (mqtt.password_file)")
    p.add_argument("--cafile", help="CA certificate for TLS to the broker (mqtt.tls.ca_file)")
    p.add_argument("--certfile", help="client certificate, with --keyfile (mqtt.tls.cert_file)")
    p.add_argument("--keyfile", help="client private key (mqtt.tls.key_file)")
