"""``mqtt-metamanager bench``'s report: each run's figures, the medians, the service/echo
ratios and the targets, and the table for people."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

# Targets of issue 6: (name, figure, limit, higher is better).
# Issue 10's: a durable service that batches its writes should beat a naive echo.
TARGET_INSERT_RATIO = 1.0
TARGET_P99_RATIO = 1.5
TARGET_RSS_MB = 40.0
TARGET_ONLINE_S = 1.0


@dataclass
class RunFigures:
    """What one run of the echo or the service measured."""

    inserts_per_s: float
    query_p50_ms: float
    query_p99_ms: float
    peak_rss_mb: float
    start_to_online_s: float
    # The process's own CPU time per insert of the burst (/proc): steadier than a rate on a
    # shared machine, and what the service spends beyond the echo's MQTT hops.
    cpu_us_per_insert: float


def summarize(rounds: list[dict[str, RunFigures]], objects: int) -> dict[str, Any]:
    """Medians per kind (peak RSS and start time: the worst run), ratios and the targets."""
    summary: dict[str, Any] = {}
    for kind in ("echo", "service"):
        runs = [r[kind] for r in rounds]
        summary[kind] = {
            "inserts_per_s": statistics.median(f.inserts_per_s for f in runs),
            "query_p50_ms": statistics.median(f.query_p50_ms for f in runs),
            "query_p99_ms": statistics.median(f.query_p99_ms for f in runs),
            "peak_rss_mb": max(f.peak_rss_mb for f in runs),
            "start_to_online_s": max(f.start_to_online_s for f in runs),
            "cpu_us_per_insert": statistics.median(f.cpu_us_per_insert for f in runs),
        }
    echo, svc = summary["echo"], summary["service"]
    ratios = {
        "inserts_per_s": svc["inserts_per_s"] / echo["inserts_per_s"],
        "query_p50_ms": svc["query_p50_ms"] / echo["query_p50_ms"],
        "query_p99_ms": svc["query_p99_ms"] / echo["query_p99_ms"],
        # /proc counts CPU in clock ticks (10 ms): a tiny run may show none.
        "cpu_us_per_insert": svc["cpu_us_per_insert"] / max(echo["cpu_us_per_insert"], 1e-9),
    }
    targets = [
        ("insert throughput >= 1.0x echo", ratios["inserts_per_s"], TARGET_INSERT_RATIO, True),
        ("query p99 <= 1.5x echo", ratios["query_p99_ms"], TARGET_P99_RATIO, False),
        (f"peak RSS <= 40 MB ({objects} objects)", svc["peak_rss_mb"], TARGET_RSS_MB, False),
        (
            f"start to online < 1 s ({objects} objects)",
            svc["start_to_online_s"],
            TARGET_ONLINE_S,
            False,
        ),
    ]
    summary["ratios"] = ratios
    summary["targets"] = [
        {
            "target": name,
            "value": value,
            "limit": limit,
            "met": value >= limit if higher else value <= limit,
        }
        for name, value, limit, higher in targets
    ]
    return summary


def render(report: dict[str, Any]) -> str:
    cols = ("inserts_per_s", "cpu_us_per_insert", "query_p50_ms", "query_p99_ms", "peak_rss_mb",
            "start_to_online_s")  # fmt: skip
    head = ("inserts/s", "CPU µs/ins", "q p50 ms", "q p99 ms", "peak RSS MB", "online s")
    fmt = "{:<10}{:<9}" + "{:>13}" * len(cols)
    o = report["options"]
    lines = [
        f"mqtt-metamanager bench: broker {report['broker']}, count={o['count']} "
        f"payload={o['payload_size']}B qos={o['qos']} objects={o['objects']} "
        f"queries={o['queries']} rounds={o['rounds']}",
        "",
        fmt.format("round", "run", *head),
    ]
    for i, r in enumerate(report["rounds"], 1):
        for kind in ("echo", "service"):
            lines.append(fmt.format(str(i), kind, *(num(r[kind][c]) for c in cols)))
    s = report["summary"]
    for kind in ("echo", "service"):
        lines.append(fmt.format("median", kind, *(num(s[kind][c]) for c in cols)))
    ratio = s["ratios"]
    lines.append(
        fmt.format("ratio", "svc/echo", *(num(ratio[c], "x") if c in ratio else "" for c in cols))
    )
    lines += ["", "targets:"]
    for t in s["targets"]:
        mark = "met" if t["met"] else "NOT MET"
        lines.append(f"  {t['target']:<42} {num(t['value']):>10}  {mark}")
    return "\n".join(lines)


def num(value: float, suffix: str = "") -> str:
    if value >= 100:
        return f"{value:.0f}{suffix}"
    return f"{value:.2f}{suffix}" if value >= 1 else f"{value:.3f}{suffix}"
