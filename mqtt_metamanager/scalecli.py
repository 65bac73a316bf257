"""``bench --scale``'s command line: options in, the report (and the chart) out."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("scale: the figures at growing store sizes (docs/performance.md)")
    group.add_argument("--scale", action="store_true", help="run the scale bench")
    group.add_argument(
        "--scale-sizes",
        help="stored objects per step, comma-separated (default 1000,100000,1000000)",
    )
    group.add_argument(
        "--scale-syncs",
        help="pod statuses per timed sync, comma-separated (default 1000,10000)",
    )
    group.add_argument("--lists", type=int, default=200, help="timed namespace lists (scale)")


def _counts(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--{option}: comma-separated whole numbers, got {text!r}") from None


def run(args: argparse.Namespace, login: dict[str, Any]) -> int:
    # Imported here: the CLI's other commands (the service's ``run``) need none of it.
    from .bench_scale import SCALE_PAYLOAD, SIZES, SYNCS, ScaleOptions, run_scale
    from .benchnet import BenchError
    from .scale_report import render, svg

    try:
        options = ScaleOptions(
            sizes=SIZES if args.scale_sizes is None else _counts(args.scale_sizes, "scale-sizes"),
            syncs=SYNCS if args.scale_syncs is None else _counts(args.scale_syncs, "scale-syncs"),
            payload_size=SCALE_PAYLOAD if args.payload_size is None else args.payload_size,
            count=args.count,
            queries=args.queries,
            lists=args.lists,
            rounds=3 if args.rounds is None else args.rounds,
            timeout=max(args.timeout, 1.0),
            host=args.host,
            port=args.port,
            login=login,
        )
        options.check()
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = run_scale(options)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.plot:
        Path(args.plot).write_text(svg(report))
    print(json.dumps(report, indent=2) if args.json else render(report))
    return EXIT_OK
