"""``mqtt-metamanager bench``: its options and which bench they run (the plain bench
against the echo, ``--kube``, ``--soak``, ``--scale``; docs/performance.md)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from . import scalecli
from .cli_login import add_login_args, broker_config
from .config import Config

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def cmd_bench(cfg: Config, args: argparse.Namespace) -> int:
    from .bench import BenchError, BenchOptions, run_bench
    from .bench_report import render

    if args.kube:
        from .bench_kube import render_kube, run_kube_bench

        try:
            kube_report = run_kube_bench()
        except BenchError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        print(json.dumps(kube_report, indent=2) if args.json else render_kube(kube_report))
        return EXIT_OK

    login: dict[str, Any] = {}
    if args.host is not None:  # a given broker: log in as the command line or config says
        broker = broker_config(cfg, args)
        login = {"username": broker.username, "password_file": broker.password_file}
        login["tls"] = asdict(broker.tls)
    if args.scale:
        return scalecli.run(args, login)
    if args.payload_size is None:
        args.payload_size = 1024
    if args.rounds is None:
        args.rounds = 2
    if args.soak is not None:
        from .soakcli import run

        return run(args, login)
    try:
        fields = set(BenchOptions.__dataclass_fields__) - {"login"}
        options = BenchOptions(**{k: getattr(args, k) for k in fields}, login=login)
        options.check()
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = run_bench(options)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(report, indent=2) if args.json else render(report))
    return EXIT_OK


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="the service against a bare MQTT echo: rates, latency, RSS")
    p.add_argument("--host", help="broker host (default: start a mosquitto on 127.0.0.1)")
    p.add_argument("--port", type=int, help="broker port, with --host")
    p.add_argument("--count", type=int, default=10_000, help="inserts per run")
    p.add_argument("--payload-size", type=int, help="bytes per object (default 1024; --scale: 256)")
    p.add_argument("--qos", type=int, default=1, choices=(0, 1, 2), help="QoS of all traffic")
    p.add_argument("--rounds", type=int, help="echo/service run pairs (default 2; --scale: 3)")
    p.add_argument("--objects", type=int, default=10_000, help="objects stored beforehand")
    p.add_argument("--queries", type=int, default=1000, help="timed queries per run")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per phase")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-c", "--config", dest="sub_config", help="config file (login, with --host)")
    p.add_argument("--kube", action="store_true", help="the Kubernetes read API's figures instead")
    add_login_args(p)
    soak = p.add_argument_group("soak: hours of mixed traffic (docs/performance.md)")
    soak.add_argument("--soak", type=float, metavar="SECONDS", help="run a soak this long")
    soak.add_argument("--rate", type=int, default=200, help="inputs per second (soak)")
    soak.add_argument("--pods", type=int, default=2000, help="pods in the soak's namespace")
    soak.add_argument("--interval", type=float, default=60.0, help="seconds per report row")
    soak.add_argument("--soak-lists", type=int, default=1, help="namespace lists per 200 inputs")
    soak.add_argument("--tracemalloc", action="store_true", help="trace the service's heap")
    soak.add_argument("--plot", metavar="FILE", help="write an SVG chart (soak or scale)")
    scalecli.add_arguments(p)
    p.set_defaults(func=cmd_bench)
