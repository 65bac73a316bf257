"""``mqtt-metamanager bench``'s report for people: each run's figures, the medians, the
service/echo ratios and the targets, as a table."""

from __future__ import annotations

from typing import Any


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
