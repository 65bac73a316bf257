"""``mqtt-metamanager auth``: the broker's users, passwords and ACL (SPEC §11)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .auth import AuthDir, AuthError, AuthSettings, render_cloud_acl
from .config import Config

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_DIR = "auth"


def cmd_auth(cfg: Config, args: argparse.Namespace) -> int:
    if args.auth_command == "cloud-acl":
        args.cloud_user = args.cloud_user or ["cloudcore"]
        try:
            text = render_cloud_acl(args.prefix or cfg.mqtt.topic_prefix, args.cloud_user)
        except AuthError as exc:
            print(f"auth: {exc}", file=sys.stderr)
            return EXIT_USAGE
        sys.stdout.write(text)
        return EXIT_OK
    auth = AuthDir(args.dir, AuthSettings.from_config(cfg))
    try:
        if args.auth_command == "init":
            created = auth.init()
            print(f"{auth.path}: {len(auth.users())} users; new: {' '.join(created) or 'none'}")
        elif args.auth_command == "add":
            created = [args.name] if auth.add(args.name, operator=args.operator) else []
            print(
                f"{args.name}: {'added' if created else 'kept'} ({auth.password_path(args.name)})"
            )
            if args.operator and args.name not in cfg.security.operators:
                print(
                    f"note: add {args.name} to security.operators in the service's config "
                    "too, or metamanager lets it only query",
                    file=sys.stderr,
                )
        else:
            removed = auth.remove(args.name)
            print(f"{args.name}: {'removed' if removed else 'not there'}")
    except AuthError as exc:
        print(f"auth: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"auth: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.auth_command != "init":
        print("reload the broker to apply it: kill -HUP <mosquitto pid>", file=sys.stderr)
    return EXIT_OK


def add_parser(sub: Any) -> None:
    """The ``auth`` subcommand and its own subcommands."""
    p = sub.add_parser("auth", help="broker users, hashed passwords and the ACL (SPEC §11)")
    auth_sub = p.add_subparsers(dest="auth_command", required=True, metavar="COMMAND")

    def with_dir(q: argparse.ArgumentParser) -> argparse.ArgumentParser:
        q.add_argument("--dir", default=DEFAULT_DIR, help="the credentials directory (%(default)s)")
        q.add_argument("-c", "--config", dest="sub_config", help="the service's config file")
        return q

    with_dir(
        auth_sub.add_parser(
            "init",
            help="users for metamanager, edgehub, operators and local modules; keeps passwords",
        )
    )
    q = with_dir(auth_sub.add_parser("add", help="add one user (a tool, a module, an operator)"))
    q.add_argument("name", help="the user name: lower-case letters, digits and -")
    q.add_argument("--operator", action="store_true", help="may read everything (ACL)")
    q = with_dir(auth_sub.add_parser("remove", help="remove one user"))
    q.add_argument("name")
    q = auth_sub.add_parser("cloud-acl", help="print the cloud broker's per-node ACL")
    q.add_argument("--prefix", help="topic prefix (default: mqtt.topic_prefix)")
    q.add_argument(
        "--cloud-user",
        action="append",
        default=None,
        help="a cloud-side user that reaches every node (repeatable; default: cloudcore)",
    )
    q.add_argument("-c", "--config", dest="sub_config", help="the service's config file")
    p.set_defaults(func=cmd_auth)
