"""``bench --scale``'s report for people (a table per kind of run, the targets) and its
chart: each figure at each size as a multiple of the smallest size's."""

from __future__ import annotations

import math
from typing import Any

from .bench_report import TARGET_ONLINE_S, TARGET_RSS_MB, num
from .chart import Axis, Series, line_chart

# (figure, column title), service rows; the ratios come after them.
SERVICE = (
    ("start_to_online_s", "online s"),
    ("peak_rss_mb", "RSS MB"),
    ("query_p50_ms", "q p50 ms"),
    ("query_p99_ms", "q p99 ms"),
    ("list_p50_ms", "list p50"),
    ("list_p99_ms", "list p99"),
    ("inserts_per_s", "inserts/s"),
)
ECHO = (
    ("start_to_online_s", "online s"),
    ("peak_rss_mb", "RSS MB"),
    ("query_p50_ms", "q p50 ms"),
    ("query_p99_ms", "q p99 ms"),
    ("inserts_per_s", "inserts/s"),
)
# The chart's lines: figure, label, unit, colour.
CURVES = (
    ("query_p99_ms", "query p99", "ms", "#1f77b4"),
    ("list_p99_ms", "list p99", "ms", "#ff7f0e"),
    ("start_to_online_s", "start to online", "s", "#2ca02c"),
    ("peak_rss_mb", "peak RSS", "MB", "#9467bd"),
    ("sync_1000_s", "sync of 1,000", "s", "#8c564b"),
)
WIDTH = 11
# Targets (issue 10): against the smallest size's figure, and absolute (start and RSS: the
# plain bench's).
TARGET_GROWTH = 1.3
TARGET_LIST_P99_MS = 40.0
TARGET_SYNC_S = 0.5  # a sync of 1,000 statuses


def verdicts(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each size's figures against the targets (growth: against the smallest size)."""
    first = sizes[0]["service"]
    verdicts = []
    for entry in sizes:
        svc, n = entry["service"], entry["objects"]
        checks = [
            (
                "query p99 <= 1.3x smallest",
                svc["query_p99_ms"] / first["query_p99_ms"],
                TARGET_GROWTH,
            ),
            ("list p99 <= 1.3x smallest", svc["list_p99_ms"] / first["list_p99_ms"], TARGET_GROWTH),
            ("list p99 <= 40 ms", svc["list_p99_ms"], TARGET_LIST_P99_MS),
            ("start to online <= 1 s", svc["start_to_online_s"], TARGET_ONLINE_S),
            ("peak RSS <= 40 MB", svc["peak_rss_mb"], TARGET_RSS_MB),
        ]
        if "sync_1000_s" in svc:
            checks.append(("sync of 1,000 statuses <= 0.5 s", svc["sync_1000_s"], TARGET_SYNC_S))
        for name, value, limit in checks:
            verdicts.append(
                {
                    "objects": n,
                    "target": name,
                    "value": value,
                    "limit": limit,
                    "met": value <= limit,
                }
            )
    return verdicts


def _cells(values: list[str]) -> str:
    return "".join(f"{v:>{WIDTH}}" for v in values)


def render(report: dict[str, Any]) -> str:
    o, sizes = report["options"], report["sizes"]
    first = sizes[0]["service"]
    syncs = [f"sync_{n}_s" for n in sorted(o["syncs"])]
    lines = [
        f"mqtt-metamanager bench --scale: broker {report['broker']}, payload={o['payload_size']}B "
        f"count={o['count']} queries={o['queries']} lists={o['lists']} (of "
        f"{min(1000, sizes[0]['objects'])} pods) rounds={o['rounds']}",
        "",
        "service (medians of the rounds; online and RSS: the worst)",
        _cells(
            ["objects", "db MB", *(t for _, t in SERVICE)]
            + [f"sync {n}" for n in sorted(o["syncs"])]
            + ["q99 x1st", "list x1st", "ins x echo", "q99 x echo"]
        ),
    ]
    for entry in sizes:
        svc = entry["service"]
        lines.append(
            _cells(
                [str(entry["objects"]), num(entry["db_mb"])]
                + [num(svc[k]) for k, _ in SERVICE]
                + [num(svc[k]) if k in svc else "-" for k in syncs]
                + [
                    num(svc["query_p99_ms"] / first["query_p99_ms"], "x"),
                    num(svc["list_p99_ms"] / first["list_p99_ms"], "x"),
                    num(entry["ratios"]["inserts_per_s"], "x"),
                    num(entry["ratios"]["query_p99_ms"], "x"),
                ]
            )
        )
    lines += [
        "",
        "echo (same broker, its runs alternating with the service's)",
        _cells(["objects", *(t for _, t in ECHO)]),
    ]
    for entry in sizes:
        lines.append(_cells([str(entry["objects"])] + [num(entry["echo"][k]) for k, _ in ECHO]))
    lines += ["", "targets:"]
    for t in report["targets"]:
        mark = "met" if t["met"] else "NOT MET"
        lines.append(f"  {t['objects']:>9}  {t['target']:<34} {num(t['value']):>10}  {mark}")
    return "\n".join(lines)


def svg(report: dict[str, Any]) -> str:
    """Each figure as a multiple of the smallest size's, over the sizes (log scale)."""
    sizes = report["sizes"]
    xs = [math.log10(entry["objects"]) for entry in sizes]
    first = sizes[0]["service"]
    series = [
        Series(
            f"{label} (1 = {num(first[key])} {unit} at {sizes[0]['objects']:,})",
            [entry["service"][key] / first[key] for entry in sizes],
            colour,
        )
        for key, label, unit, colour in CURVES
        if all(key in entry["service"] for entry in sizes) and first[key] > 0
    ]
    series.append(
        Series(f"target {TARGET_GROWTH}x", [TARGET_GROWTH] * len(sizes), "#999999", width=1.0)
    )
    ticks = [(x, f"{entry['objects']:,}") for x, entry in zip(xs, sizes, strict=True)]
    low, high = (xs[0] - 0.2, xs[-1] + 0.2)
    return line_chart(
        "bench --scale: the service's figures as the store grows (x the smallest store's)",
        xs,
        Axis(low, high, ticks, "stored objects (log scale)"),
        series,
        height=360,
    )
