"""The publish ledger: which outbox rows are with the broker, and which it acknowledged.

A publish handed to paho is known by its packet id (mid) until the broker's PUBACK; then
its outbox row may be deleted. Deletions are written inside the next transaction and
forgotten only once that commits, so a rollback never loses an acknowledgement (the row
would be sent again, as a duplicate, after the next restart).
"""

from __future__ import annotations

import time

from .store import Store

UNLOGGED = 0  # the row id of a publish that has no outbox row (a reply-only input's reply)


class PublishLedger:
    def __init__(self) -> None:
        self._rows_by_mid: dict[int, int] = {}
        # When each logged row went to the broker, oldest first (for /readyz and metrics).
        self._sent_at: dict[int, float] = {}
        self._acked: list[int] = []

    def sent(self, mid: int, row_id: int) -> None:
        self._rows_by_mid[mid] = row_id
        if row_id != UNLOGGED:
            self._sent_at[mid] = time.monotonic()

    def acked(self, mid: int) -> None:
        """The broker acknowledged ``mid``; a mid not ours (or an unlogged one) is ignored."""
        row_id = self._rows_by_mid.pop(mid, None)
        self._sent_at.pop(mid, None)
        if row_id:
            self._acked.append(row_id)

    def dropped(self, row_id: int) -> None:
        """A row that can never be sent: delete it as if acknowledged."""
        if row_id != UNLOGGED:
            self._acked.append(row_id)

    @property
    def unacked(self) -> int:
        return len(self._rows_by_mid)

    @property
    def rows_in_flight(self) -> int:
        """Outbox rows with the broker, not acknowledged yet."""
        return len(self._sent_at)

    @property
    def oldest_sent_at(self) -> float | None:
        """``time.monotonic()`` when the oldest row in flight was sent, None if none is."""
        return next(iter(self._sent_at.values()), None)

    @property
    def has_deletions(self) -> bool:
        return bool(self._acked)

    def known_rows(self) -> set[int]:
        """Rows this run has published already, acknowledged or not."""
        return set(self._rows_by_mid.values()) | set(self._acked)

    def delete_acked(self, store: Store) -> None:
        """Inside a transaction: delete the acknowledged rows (kept until ``committed``)."""
        if self._acked:
            store.outbox_remove(self._acked)

    def committed(self) -> None:
        self._acked = []
