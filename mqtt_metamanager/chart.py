"""A small line chart as SVG text, written by hand: a few lines over a few dozen points need
no plotting library on an edge box. Used by the soak's and the scale bench's reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

TICKS = 4  # intervals per axis


@dataclass(frozen=True)
class Series:
    """One line: a value per x, drawn against the left axis or the right one."""

    label: str
    values: Sequence[float]
    color: str
    right: bool = False
    width: float = 2.0


@dataclass(frozen=True)
class Axis:
    """Where the x values lie (``low`` to ``high``) and the labels along the bottom."""

    low: float
    high: float
    ticks: Sequence[tuple[float, str]]  # (x, label)
    label: str


def line_chart(
    title: str, xs: Sequence[float], axis: Axis, series: Sequence[Series],
    width: int = 720, height: int = 320,
) -> str:  # fmt: skip
    """The chart as an ``<svg>`` document; each side's scale runs from 0 to its largest
    value plus a tenth. Left series are labelled bottom left, right ones bottom right."""
    rows = max(sum(1 for s in series if s.right == side) for side in (False, True))
    left, right, top, bottom = 60, 70, 30, 27 + 13 * max(1, rows)
    plot_w, plot_h = width - left - right, height - top - bottom
    span = (axis.high - axis.low) or 1.0
    tops = {
        side: max([v for s in series if s.right == side for v in s.values] + [1.0]) * 1.1
        for side in (False, True)
    }

    def x_at(x: float) -> float:
        return left + (x - axis.low) / span * plot_w

    def y_at(value: float, side: bool) -> float:
        return top + plot_h - value / tops[side] * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="18" font-size="13">{escape(title)}</text>',
    ]
    for i in range(TICKS + 1):
        y = top + plot_h - i / TICKS * plot_h
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.0f}" text-anchor="end">'
            f"{_tick(tops[False] * i / TICKS)}</text>"
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.0f}" y2="{y:.0f}" stroke="#ddd"/>'
        )
        if any(s.right for s in series):
            value = _tick(tops[True] * i / TICKS)
            parts.append(f'<text x="{left + plot_w + 6}" y="{y + 4:.0f}">{value}</text>')
    for x, text in axis.ticks:
        parts.append(
            f'<text x="{x_at(x):.0f}" y="{top + plot_h + 16}" text-anchor="middle">'
            f"{escape(text)}</text>"
        )
    for s in series:
        points = " ".join(
            f"{x_at(x):.1f},{y_at(v, s.right):.1f}" for x, v in zip(xs, s.values, strict=True)
        )
        parts.append(
            f'<polyline fill="none" stroke="{s.color}" stroke-width="{s.width:g}" '
            f'points="{points}"/>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 8}" text-anchor="middle">'
        f"{escape(axis.label)}</text>"
    )
    for side, anchor, x in ((False, "start", left), (True, "end", left + plot_w)):
        labelled = [s for s in series if s.right == side]
        for row, s in enumerate(reversed(labelled)):
            parts.append(
                f'<text x="{x}" y="{height - 8 - 13 * row}" text-anchor="{anchor}" '
                f'fill="{s.color}">{escape(s.label)}</text>'
            )
    parts += ["</svg>", ""]
    return "\n".join(parts)


def _tick(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == 0 else f"{value:.2g}"
