"""One input on its way through the pipeline, and the store retries that keep its key's order.

An input is received (``Received``), admitted (decoded and identified: ``Admitted``),
handled (a ``Result`` and the outbox entries it owes), committed, sent and acked. An input
whose transaction the store failed waits for a retry, and every later input for the same
key waits behind it (``StoreRetries``): no later change to an object is applied before an
earlier one, and a query for it is not answered from before the change it follows.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .identity import Refused
from .ledger import OutboxEntry
from .linkevents import Received
from .outcome import Inbound, Result

LINK_KEY = "node/connection"  # the cloud link: connect messages and the bridge's 1/0 alike


@dataclass(frozen=True)
class BridgeState:
    """The Mosquitto bridge's own 1/0 notification (``cloud.bridge_state_topic``)."""

    connected: bool


Admitted = Inbound | Refused | BridgeState
NOT_HANDLED = Result()  # an input's result until it is handled (never changed)


class Handled:
    """One input: what arrived, what the sender may do, and, once handled, what it owes."""

    __slots__ = ("admitted", "entries", "received", "result", "store_failures")

    def __init__(self, received: Received, admitted: Admitted) -> None:
        self.received = received
        self.admitted = admitted
        self.result = NOT_HANDLED
        self.entries: list[OutboxEntry] = []
        self.store_failures = 0

    @property
    def inbound(self) -> Inbound | None:
        """Whom to tell about this input, if anyone can be told."""
        admitted = self.admitted
        if isinstance(admitted, Inbound):
            return admitted
        return admitted.inbound if isinstance(admitted, Refused) else None

    @property
    def key(self) -> str | None:
        """What the input reads or changes, for its order; None for a refusal, which
        changes nothing but the outbox (the order of those does not matter)."""
        admitted = self.admitted
        if isinstance(admitted, Inbound):
            return admitted.message.route.resource or None
        return LINK_KEY if isinstance(admitted, BridgeState) else None


class StoreRetries:
    """Inputs the store failed, each first in line for its key, with those behind it.

    A failed input waits for its retry (a timer); until that succeeds, later inputs for the
    same key are held, unacked, in arrival order, and they count against the input window:
    if the store keeps failing the window fills and the broker keeps the rest. Inputs for
    other keys go on (a read of another object is still answered while the disk is full).
    """

    def __init__(self) -> None:
        self._waiting: dict[str, deque[Handled]] = {}
        self._failed = 0  # inputs waiting for a retry (keyed or not)

    def ready(self, inputs: list[Handled]) -> list[Handled]:
        """Those of ``inputs`` that may be applied now; the rest wait behind a failure."""
        if not self._waiting:
            return inputs
        ready = []
        for handled in inputs:
            key = handled.key
            line = None if key is None else self._waiting.get(key)
            if line is None:
                ready.append(handled)
            else:
                # Not handled until its turn (what a rolled-back attempt left is void).
                handled.result, handled.entries = NOT_HANDLED, []
                line.append(handled)
        return ready

    def failed(self, handled: Handled) -> None:
        """The store failed ``handled``'s transaction: it is first in line for its key."""
        handled.store_failures += 1
        if handled.store_failures == 1:
            self._failed += 1
        key = handled.key
        if key is not None and key not in self._waiting:
            self._waiting[key] = deque([handled])

    def settled(self, handled: Handled) -> list[Handled]:
        """``handled``, which had failed, is done (applied, or dropped for a bug): the
        inputs held behind it, in order, to apply now."""
        self._failed -= 1
        key = handled.key
        if key is None:
            return []
        line = self._waiting.get(key)
        if line is None or line[0] is not handled:
            return []
        del self._waiting[key]
        line.popleft()
        return list(line)

    @property
    def failing(self) -> int:
        """Inputs waiting for a store retry."""
        return self._failed

    @property
    def held(self) -> int:
        """Inputs held behind a failed one for the same key."""
        return sum(len(line) - 1 for line in self._waiting.values())
