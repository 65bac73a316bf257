"""What /healthz and /readyz say (SPEC §12), from what the loop and its links publish.

- healthy: the message loop makes progress. It turns at least once a second
  (``service.IDLE_WAKE``); a loop that has not turned for ``LOOP_STALL`` seconds is stuck.
  While connecting and while stopping it does not turn, and counts as healthy.
- ready: the loop runs, the store is open and its last transaction committed, both MQTT
  links are connected (the input link's subscriptions acknowledged), and the oldest
  outbox row the broker has not acknowledged is younger than ``http.ready_outbox_lag``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..loopstate import RUNNING, STARTING, LoopState, Watched

LOOP_STALL = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class Verdict:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def body(self, key: str) -> dict[str, Any]:
        return {
            key: self.ok,
            "failing": [check.name for check in self.checks if not check.ok],
            "checks": {check.name: check.as_dict() for check in self.checks},
        }


def _loop(state: LoopState, now: float) -> Check:
    idle = now - state.last_turn
    if state.phase != RUNNING:
        return Check("loop", True, state.phase)
    if idle > LOOP_STALL:
        return Check("loop", False, f"the message loop has not turned for {idle:.1f} s")
    return Check("loop", True, f"turned {idle:.1f} s ago")


def health(state: LoopState, now: float | None = None) -> Verdict:
    return Verdict((_loop(state, time.monotonic() if now is None else now),))


def readiness(
    state: LoopState, watched: Watched | None, outbox_lag: float, now: float | None = None
) -> Verdict:
    now = time.monotonic() if now is None else now
    loop = _loop(state, now)
    if loop.ok and state.phase != RUNNING:
        detail = "connecting to the broker" if state.phase == STARTING else state.phase
        loop = Check("loop", False, detail)
    if watched is None:
        return Verdict((loop,))
    problem = watched.store.problem
    transport = watched.transport
    oldest = state.outbox_oldest_at
    age = 0.0 if oldest is None else now - oldest
    return Verdict(
        (
            loop,
            Check("store", not problem, problem or "open"),
            Check(
                "mqtt_input",
                transport.input_ready,
                "connected and subscribed"
                if transport.input_ready
                else "not connected and subscribed to the broker",
            ),
            Check(
                "mqtt_output",
                transport.output_ready,
                "connected" if transport.output_ready else "not connected to the broker",
            ),
            Check(
                "outbox",
                age < outbox_lag,
                f"{state.outbox_rows} rows unacknowledged, the oldest {age:.1f} s old"
                f" (limit {outbox_lag:g} s)",
            ),
        )
    )
