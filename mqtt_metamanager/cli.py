"""The ``mqtt-metamanager`` command line: parses, then calls. Exit codes 0 ok, 1 runtime
failure, 2 usage or config error."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import cli_auth, cli_bench, cli_bridge
from . import config as config_mod
from .cli_login import add_login_args, broker_config
from .config import Config, ConfigError
from .envelope import BadMessage, Message, message_from_dict, new_msg_id, now_ms
from .jsoninput import parse_json

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_CONFIG = "conf/edge.yaml"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "ts": round(record.created, 3),
                "level": record.levelname,
                "logger": record.name,
                "msg": record.getMessage(),
            }
        )


def setup_logging(cfg: Config) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if cfg.logging.format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.logging.level.upper())


def _load_config(path: str | None) -> Config:
    """The given file; else conf/edge.yaml when present; else defaults. Env applies on top."""
    if path is None and Path(DEFAULT_CONFIG).exists():
        path = DEFAULT_CONFIG
    return config_mod.load(path)


def _client(cfg: Config, args: argparse.Namespace) -> Any:
    from .client import MetaClient
    from .transport import tls_context

    mqtt = broker_config(cfg, args)
    return MetaClient(
        mqtt.host,
        mqtt.port,
        topic_prefix=mqtt.topic_prefix,
        qos=mqtt.qos,
        username=mqtt.username or None,
        password=config_mod.read_password(mqtt),
        tls=tls_context(mqtt),
    )


def cmd_run(cfg: Config, _args: argparse.Namespace) -> int:
    from .service import Service
    from .store import StoreError

    setup_logging(cfg)
    try:
        service = Service(cfg)
    except ConfigError as exc:  # a file named in the config went away since it was checked
        logging.getLogger("mqtt_metamanager").error("config error: %s", exc)
        return EXIT_USAGE
    except StoreError as exc:
        logging.getLogger("mqtt_metamanager").error("cannot open the store: %s", exc)
        return EXIT_FAILURE
    service.install_signal_handlers()
    try:
        service.run()
    except ConfigError as exc:  # http.listen: the address is taken
        logging.getLogger("mqtt_metamanager").error("config error: %s", exc)
        return EXIT_USAGE
    return EXIT_OK


def _print_reply(reply: Message) -> int:
    print(json.dumps(reply.to_dict(), indent=2))
    return EXIT_OK if reply.operation == "response" else EXIT_FAILURE


def cmd_query(cfg: Config, args: argparse.Namespace) -> int:
    with _client(cfg, args) as client:
        return _print_reply(client.query(args.resource, timeout=args.timeout))


def cmd_send(cfg: Config, args: argparse.Namespace) -> int:
    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        print(f"send: {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        data = parse_json(raw)
    except BadMessage as exc:
        print(f"send: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(data, dict):
        print("send: the message must be a JSON object", file=sys.stderr)
        return EXIT_USAGE
    header = data.setdefault("header", {})
    if isinstance(header, dict):
        header.setdefault("msg_id", new_msg_id())
        header.setdefault("timestamp", now_ms())
    try:
        message = message_from_dict(data)
    except BadMessage as exc:
        print(f"send: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    with _client(cfg, args) as client:
        if args.no_wait:
            client.publish(message)
            print(message.msg_id)
            return EXIT_OK
        return _print_reply(client.request(message, timeout=args.timeout))


def cmd_store_ls(cfg: Config, args: argparse.Namespace) -> int:
    from .store import Store, StoreError

    path = args.db or cfg.database.path
    if not Path(path).exists():
        print(f"store ls: {path}: no such database", file=sys.stderr)
        return EXIT_FAILURE
    try:
        store = Store(path, readonly=True)
        rows = store.objects(args.namespace, args.type)
    except StoreError as exc:
        print(f"store ls: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        if "store" in locals():
            store.close()
    for obj in rows:
        if args.json:
            print(json.dumps({"key": obj.key, "type": obj.type, "value": obj.value}))
        else:
            print(f"{obj.key}\t{obj.type}\t{obj.resource_version or '-'}")
    return EXIT_OK


def cmd_health(cfg: Config, args: argparse.Namespace) -> int:
    """Healthy when the service's /readyz says ready (SPEC §12); without ``http.listen``,
    when its retained status on the broker says ``online``: both of its connections are
    up (losing either publishes its will, ``offline``)."""
    if cfg.http.listen:
        from .http.probe import check_ready

        ready, text = check_ready(cfg.http.listen, args.timeout)
        print(text)
        return EXIT_OK if ready else EXIT_FAILURE
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from .routing import Topics
    from .transport import tls_context

    broker = broker_config(cfg, args)
    topic = Topics(broker.topic_prefix).status
    got: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if broker.username:
        client.username_pw_set(broker.username, config_mod.read_password(broker))
    context = tls_context(broker)
    if context is not None:  # the same broker settings as the service's two connections
        client.tls_set_context(context)

    def on_connect(c: mqtt.Client, *_a: Any) -> None:
        c.subscribe(topic, qos=0)

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        got.append(bytes(msg.payload))
        done.set()

    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(broker.host, broker.port, keepalive=10)
    except OSError as exc:
        print(f"unhealthy: broker unreachable: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    client.loop_start()
    done.wait(args.timeout)
    client.disconnect()
    client.loop_stop()
    status = got[0].decode(errors="replace") if got else "no status"
    print(status)
    return EXIT_OK if status == "online" else EXIT_FAILURE


def _add_broker_args(p: argparse.ArgumentParser, timeout: float = 10.0) -> None:
    p.add_argument("--host", help="broker host (default: mqtt.host)")
    p.add_argument("--port", type=int, help="broker port (default: mqtt.port)")
    p.add_argument(
        "--timeout", type=float, default=timeout, help=f"seconds to wait (default {timeout:g})"
    )
    add_login_args(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqtt-metamanager",
        description="KubeEdge MetaManager over MQTT: SQLite-backed edge metadata service.",
    )
    parser.add_argument(
        "-c", "--config", help=f"config file (default: {DEFAULT_CONFIG} if present)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the service in the foreground")
    p.add_argument("-c", "--config", dest="sub_config", help="config file")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("query", help="query a resource and print the reply as JSON")
    p.add_argument("resource", help="<namespace>/<type>[/<name>]")
    p.add_argument("-c", "--config", dest="sub_config", help="config file")
    _add_broker_args(p)
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("send", help="publish a message (file or stdin); fills msg_id/timestamp")
    p.add_argument("file", nargs="?", default="-", help="JSON message file, - for stdin")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the reply")
    p.add_argument("-c", "--config", dest="sub_config", help="config file")
    _add_broker_args(p)
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("store", help="read the SQLite store directly (read-only)")
    store_sub = p.add_subparsers(dest="store_command", required=True, metavar="COMMAND")
    ls = store_sub.add_parser("ls", help="list stored objects")
    ls.add_argument("--type", help="only this type")
    ls.add_argument("--namespace", help="only this namespace")
    ls.add_argument("--db", help="database file (default: database.path)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.add_argument("-c", "--config", dest="sub_config", help="config file")
    ls.set_defaults(func=cmd_store_ls)

    p = sub.add_parser(
        "health", help="exit 0 when the service is ready (/readyz; the reason when it is not)"
    )
    p.add_argument("-c", "--config", dest="sub_config", help="config file")
    _add_broker_args(p, timeout=3.0)
    p.set_defaults(func=cmd_health)

    cli_bench.add_parser(sub)

    cli_auth.add_parser(sub)

    cli_bridge.add_parser(sub)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = _load_config(getattr(args, "sub_config", None) or args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(cfg, args))
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except Exception as exc:
        from .client import ClientError

        if isinstance(exc, ClientError | OSError):
            print(f"{args.command}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        raise


if __name__ == "__main__":
    sys.exit(main())
