"""What the soak measures: a sample of the service every few seconds (RSS, backlog), a row
every interval (rates, latency, CPU, memory, the store's files), the service's totals at the
end, and SQLite's integrity check of the store."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .benchkit import cpu_seconds, file_mb, peak_rss_mb, percentile, rss_mb
from .soakload import SoakClient, Window


class SoakMeter:
    """The service's figures over a soak: ``samples`` for the chart, ``rows`` for the table;
    ``on_row`` sees each row as it is made."""

    def __init__(self, db: Path, on_row: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.db = db
        self.on_row = on_row
        self.rows: list[dict[str, Any]] = []
        self.samples: list[dict[str, float]] = []
        self.pid = 0
        self._hwm = 0.0
        self._row_start = 0.0
        self._row_cpu = 0.0  # the service's CPU seconds when the current row began
        self._row_samples = 0  # index of the first sample of the current row

    def begin(self, pid: int, now: float) -> None:
        """The first row starts ``now``, of the service running as ``pid``."""
        self.pid = pid
        self._row_start = now
        self._row_cpu = cpu_seconds(pid)

    def sample(self, load: SoakClient, t: float) -> None:
        self._hwm = max(self._hwm, peak_rss_mb(self.pid))
        self.samples.append({"t": round(t, 1), "rss_mb": rss_mb(self.pid), "backlog": load.backlog})

    def row(self, load: SoakClient, now: float) -> None:
        window: Window = load.take_window()
        took = max(1e-9, now - self._row_start)
        self._row_start = now
        metrics = dict(load.metrics)
        rss_now = rss_mb(self.pid)
        rss_low = min([s["rss_mb"] for s in self.samples[self._row_samples :]] + [rss_now])
        self._row_samples = len(self.samples)
        # CPU, not only wall time: rows stay comparable on a machine shared with others.
        cpu_now = cpu_seconds(self.pid)
        cpu, self._row_cpu = cpu_now - self._row_cpu, cpu_now
        heap = metrics.get("heap_bytes")
        self.rows.append(
            {
                "row": len(self.rows) + 1,
                "seconds": round(took, 1),
                "inputs_per_s": window.sent / took,
                "answered_per_s": window.answered / took,
                "p50_ms": _ms(window.latencies, 50),
                "p99_ms": _ms(window.latencies, 99),
                "list_p50_ms": _ms(window.list_latencies, 50),
                "list_kb": window.list_bytes / 1024 / max(1, len(window.list_latencies)),
                "backlog": load.backlog,
                "cpu_s": cpu,
                "cpu_ms_per_input": cpu * 1000 / window.answered if window.answered else None,
                "load1": os.getloadavg()[0],
                "rss_mb": rss_now,
                "rss_low_mb": rss_low,
                "heap_mb": None if heap is None else heap / 1024 / 1024,
                "db_mb": file_mb(self.db),
                "wal_mb": file_mb(self.db.with_name(self.db.name + "-wal")),
                "metrics": metrics,
            }
        )
        if self.on_row is not None:
            self.on_row(self.rows[-1])

    def service(self, exit_code: int | None, metrics: dict[str, Any]) -> dict[str, Any]:
        """The service's part of the report: its exit, memory over the rows, CPU, and its
        last ``metrics`` snapshot."""
        # The low of each row, not one reading: a list reply in flight adds megabytes for
        # a moment, and what is kept is what the service comes back down to.
        first = self.rows[0]["rss_low_mb"] if self.rows else 0.0
        last = self.rows[-1]["rss_low_mb"] if self.rows else 0.0
        return {
            "exit_code": exit_code,
            "peak_rss_mb": max([r["rss_mb"] for r in self.rows] + [self._hwm]),
            "rss_first_row_mb": first,
            "rss_last_row_mb": last,
            "rss_growth_mb": last - first,
            "cpu_s": sum(r["cpu_s"] for r in self.rows),
            "metrics": metrics,
        }


def integrity(db: Path) -> str:
    """SQLite's ``PRAGMA integrity_check`` of the store: ``ok`` or what is wrong."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("PRAGMA integrity_check").fetchall()
        outbox = con.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        con.close()
    text = "; ".join(str(r[0]) for r in rows)
    return text if outbox == 0 else f"{text}; {outbox} outbox rows left"


def _ms(samples: list[float], pct: float) -> float | None:
    return percentile(samples, pct) * 1000 if samples else None
