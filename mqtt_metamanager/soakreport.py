"""The soak's report for people (a table) and its chart (``chart.py``: RSS and backlog over
time)."""

from __future__ import annotations

from typing import Any

from .chart import Axis, Series, line_chart

COLUMNS = (
    ("row", "row", "{:.0f}"),
    ("inputs_per_s", "in/s", "{:.0f}"),
    ("answered_per_s", "ans/s", "{:.0f}"),
    ("p50_ms", "p50 ms", "{:.1f}"),
    ("p99_ms", "p99 ms", "{:.1f}"),
    ("list_p50_ms", "list p50", "{:.0f}"),
    ("backlog", "backlog", "{:.0f}"),
    ("cpu_s", "CPU s", "{:.1f}"),
    ("cpu_ms_per_input", "CPU ms/in", "{:.2f}"),
    ("load1", "load", "{:.1f}"),
    ("rss_mb", "RSS MB", "{:.1f}"),
    ("rss_low_mb", "RSS low", "{:.1f}"),
    ("heap_mb", "heap MB", "{:.1f}"),
    ("db_mb", "db MB", "{:.1f}"),
    ("wal_mb", "WAL MB", "{:.1f}"),
)
# What the service keeps in memory, from its metrics snapshot (collections and their bounds).
GAUGES = (
    "held_inputs",
    "outbox_inflight",
    "outbox_inflight_bytes",
    "remote_queries",
    "answered_query_ids",
    "timers",
    "store_retries",
    "objects",
    "malloc_heap_bytes",
    "malloc_free_bytes",
    "malloc_mmapped_bytes",
)


def row_line(row: dict[str, Any]) -> str:
    cells = []
    for key, _, fmt in COLUMNS:
        value = row.get(key)
        cells.append("-" if value is None else fmt.format(value))
    return "".join(f"{c:>10}" for c in cells)


def header_line() -> str:
    return "".join(f"{title:>10}" for _, title, _ in COLUMNS)


def render(report: dict[str, Any]) -> str:
    o, t, s = report["options"], report["totals"], report["service"]
    lines = [
        f"mqtt-metamanager bench --soak {o['seconds']:g}: broker {report['broker']}, "
        f"rate={o['rate']}/s pods={o['pods']} payload={o['payload_size']}B "
        f"every {o['interval']:g}s",
        "",
        header_line(),
        *(row_line(r) for r in report["rows"]),
        "",
        f"sent {t['sent']}, answered {t['answered']}, missing {t['missing']} "
        f"{t['missing_by_kind'] or ''}, duplicates {t['duplicates']}, "
        f"unexpected replies {t['unexpected_replies']}, link flaps {t['link_flaps']}"
        + (", STOPPED EARLY (backlog)" if t["stopped_early"] else ""),
        f"service: peak RSS {s['peak_rss_mb']:.1f} MB, RSS low first row -> last row "
        f"{s['rss_first_row_mb']:.1f} -> {s['rss_last_row_mb']:.1f} MB "
        f"({s['rss_growth_mb']:+.1f}), CPU {s.get('cpu_s', 0.0):.1f} s, "
        f"exit code {s['exit_code']}",
        f"store integrity: {report['integrity']}",
    ]
    metrics = s.get("metrics") or {}
    gauges = [f"{g}={metrics[g]}" for g in GAUGES if g in metrics]
    if gauges:
        lines.append("service collections (last metrics): " + " ".join(gauges))
    for entry in metrics.get("heap_growth", []):
        lines.append(f"  heap growth since the first snapshot: {entry}")
    return "\n".join(lines)


def svg(report: dict[str, Any]) -> str:
    """RSS (left axis, MB) and backlog (right axis, inputs) over the soak's minutes."""
    samples = report["samples"]
    t_max = max([s["t"] for s in samples] + [1.0])
    o = report["options"]
    ticks = [(t_max * i / 4, f"{t_max * i / 4 / 60:.1f}") for i in range(5)]
    return line_chart(
        f"bench --soak {o['seconds']:g} at {o['rate']}/s: service RSS and backlog",
        [s["t"] for s in samples],
        Axis(0.0, t_max, ticks, "minutes"),
        [
            Series("RSS MB (left)", [s["rss_mb"] for s in samples], "#1f77b4"),
            Series(
                "backlog, inputs (right)",
                [s["backlog"] for s in samples],
                "#d62728",
                right=True,
                width=1.5,
            ),
        ],
    )
