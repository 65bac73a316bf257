"""``bench --soak``'s command line: options in, rows as they come, the report out."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from .benchnet import BenchError
from .soak import SoakOptions, run_soak
from .soakreport import header_line, render, row_line, svg

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def run(args: argparse.Namespace, login: dict[str, Any]) -> int:
    try:
        options = SoakOptions(
            seconds=args.soak,
            rate=args.rate,
            pods=args.pods,
            payload_size=args.payload_size,
            interval=args.interval,
            tracemalloc=args.tracemalloc,
            lists=args.soak_lists,
            host=args.host,
            port=args.port,
            login=login,
        )
        options.check()
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # SIGTERM unwinds like Ctrl-C, so the service and the broker the soak started are
    # stopped, not left behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # Rows go to stderr as they are made: a long soak can be watched (and its log polled).
    print(header_line(), file=sys.stderr, flush=True)
    try:
        report = run_soak(options, lambda row: print(row_line(row), file=sys.stderr, flush=True))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.plot:
        Path(args.plot).write_text(svg(report))
    print(json.dumps(report, indent=2) if args.json else render(report))
    totals = report["totals"]
    clean = report["integrity"] == "ok" and not totals["missing"] and not totals["duplicates"]
    return EXIT_OK if clean else EXIT_FAILURE
