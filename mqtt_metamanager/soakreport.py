"""The soak's report for people (a table) and its chart (a small SVG, written by hand: two
lines over time need no plotting library on an edge box)."""

from __future__ import annotations

from html import escape
from typing import Any

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


def svg(report: dict[str, Any], width: int = 720, height: int = 320) -> str:
    """RSS (left axis, MB) and backlog (right axis, inputs) over the soak's seconds."""
    samples = report["samples"]
    left, right, top, bottom = 60, 70, 30, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    t_max = max([s["t"] for s in samples] + [1.0])
    rss_max = max([s["rss_mb"] for s in samples] + [1.0]) * 1.1
    backlog_max = max([s["backlog"] for s in samples] + [10]) * 1.1

    def points(key: str, top_value: float) -> str:
        return " ".join(
            f"{left + s['t'] / t_max * plot_w:.1f},{top + plot_h - s[key] / top_value * plot_h:.1f}"
            for s in samples
        )

    o = report["options"]
    title = escape(f"bench --soak {o['seconds']:g} at {o['rate']}/s: service RSS and backlog")
    ticks = []
    for i in range(5):
        y = top + plot_h - i / 4 * plot_h
        ticks.append(
            f'<text x="{left - 6}" y="{y + 4:.0f}" text-anchor="end">'
            f"{rss_max * i / 4:.0f}</text>"
            f'<text x="{left + plot_w + 6}" y="{y + 4:.0f}">{backlog_max * i / 4:.0f}</text>'
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.0f}" y2="{y:.0f}" stroke="#ddd"/>'
        )
        x = left + i / 4 * plot_w
        ticks.append(
            f'<text x="{x:.0f}" y="{top + plot_h + 16}" text-anchor="middle">'
            f"{t_max * i / 4 / 60:.1f}</text>"
        )
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            'font-family="sans-serif" font-size="11">',
            '<rect width="100%" height="100%" fill="white"/>',
            f'<text x="{left}" y="18" font-size="13">{title}</text>',
            *ticks,
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" '
            f'points="{points("rss_mb", rss_max)}"/>',
            f'<polyline fill="none" stroke="#d62728" stroke-width="1.5" '
            f'points="{points("backlog", backlog_max)}"/>',
            f'<text x="{left}" y="{height - 8}" fill="#1f77b4">RSS MB (left)</text>',
            f'<text x="{left + plot_w / 2:.0f}" y="{height - 8}" text-anchor="middle">'
            "minutes</text>",
            f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end" fill="#d62728">'
            "backlog, inputs (right)</text>",
            "</svg>",
            "",
        ]
    )
