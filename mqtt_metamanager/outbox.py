"""The outbox: every publish owed, from staging to the broker's PUBACK.

- Staging: a publish is written as an outbox row in the transaction of the effect it
  announces (``stage``), so a crash after the commit sends it again on the next start.
  A reply that changes nothing has no row (``stage_answer``, ``unlogged``).
- Sending: after the commit each entry goes to the MQTT client (``send``); the client's
  packet id (mid) is remembered until the broker's PUBACK (``acked``).
- Deletion: an acknowledged row is deleted inside the next transaction (``transaction``)
  and forgotten only once that commits, so a rollback never loses an acknowledgement
  (the row would be sent again, as a duplicate, after the next restart).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from .ledger import OutboxEntry
from .outcome import Result
from .routing import Outgoing
from .store import Store, StoreError

log = logging.getLogger(__name__)

UNLOGGED = 0  # the row id of a publish that has no outbox row

Publish = Callable[[Outgoing], int]  # hands one publish to the MQTT client: its mid


class Outbox:
    """The publishes owed, sent and awaiting the broker's PUBACK; one per service."""

    def __init__(
        self, store: Store, publish: Publish, on_unpublishable: Callable[[], None] = lambda: None
    ) -> None:
        self.store = store
        self.publish = publish
        self.on_unpublishable = on_unpublishable
        self._rows_by_mid: dict[int, int] = {}
        # When each logged row went to the broker, oldest first (for /readyz and metrics).
        self._sent_at: dict[int, float] = {}
        # Payload bytes with the broker, by mid: a list reply is megabytes (issue 13).
        self._sizes: dict[int, int] = {}
        self._unacked_bytes = 0
        self._acked: list[int] = []
        self._deleting = 0  # how many of ``_acked`` the running transaction deletes

    # -- staging (inside a transaction) ----------------------------------------------------

    def stage(self, result: Result) -> list[OutboxEntry]:
        """What ``result`` publishes, as rows in the running transaction; its snapshots get
        none (``Result.snapshots``)."""
        return self.store.outbox_add(result.logged) + self.unlogged(result.snapshots)

    def stage_answer(self, result: Result, changes_before: int) -> list[OutboxEntry]:
        """What an input's ``result`` publishes. An input that changed nothing and only
        answers (a local query, a redelivered duplicate, a 400) needs no row: it is acked
        after its reply is published, so if that never happens the broker gives it again
        and it is answered again. No row means no write, so a batch of those needs no
        fsync. ``changes_before``: ``Store.changes()`` before the input was handled."""
        if not result.forwards and not result.timers and self.store.changes() == changes_before:
            return self.unlogged(result.publishes)
        return self.stage(result)

    @staticmethod
    def unlogged(publishes: Iterable[Outgoing]) -> list[OutboxEntry]:
        """Entries with no row: sent at most once, by this process, if it lives that long."""
        return [OutboxEntry(UNLOGGED, p) for p in publishes]

    # -- the transaction -------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One store transaction that also deletes the rows acknowledged so far: every
        write of the service goes through here, so deletion has this one place."""
        with self.store.atomic():
            yield
            self._deleting = len(self._acked)
            if self._deleting:
                self.store.outbox_remove(self._acked[: self._deleting])
        # Committed: those rows are gone for good (acks that arrived meanwhile stay owed).
        del self._acked[: self._deleting]
        self._deleting = 0

    def flush(self) -> None:
        """Delete the acknowledged rows now (an idle turn, stopping)."""
        try:
            with self.transaction():
                pass
        except StoreError as exc:
            log.error("outbox cleanup failed, will retry: %s", exc)

    # -- sending and PUBACKs (after the commit) ----------------------------------------------

    def send(self, entries: Iterable[OutboxEntry]) -> None:
        for entry in entries:
            try:
                mid = self.publish(entry.publish)
            except ValueError as exc:
                # paho refuses it (topic, size) and always will: kept, the row would crash
                # this loop again on every start. Dropped with the reason in the log.
                log.error("outbox row %d can never be sent, dropped: %s", entry.id, exc)
                self.on_unpublishable()
                if entry.id != UNLOGGED:
                    self._acked.append(entry.id)  # deleted as if acknowledged
                continue
            self._rows_by_mid[mid] = entry.id
            size = len(entry.publish.payload)
            self._unacked_bytes += size - self._sizes.get(mid, 0)
            self._sizes[mid] = size
            if entry.id != UNLOGGED:
                self._sent_at[mid] = time.monotonic()

    def acked(self, mid: int) -> None:
        """The broker acknowledged ``mid``; a mid not ours (or an unlogged one) is ignored."""
        row_id = self._rows_by_mid.pop(mid, None)
        self._sent_at.pop(mid, None)
        self._unacked_bytes -= self._sizes.pop(mid, 0)
        if row_id:
            self._acked.append(row_id)

    def resend_left_over(self) -> bool:
        """Send the rows the last run left (once, at the first connect); False if the store
        could not be read (try again at the next connect)."""
        try:
            pending = self.store.outbox_pending()
        except StoreError as exc:
            log.error("outbox: cannot read what the last run left, next connect: %s", exc)
            return False
        # Inputs may have been applied on this run before the first connect (the input link
        # reads the session's backlog before its SUBACK arrives): their rows are published
        # already, awaiting PUBACK or removal. Only the last run's are owed.
        ours = self.known_rows()
        pending = [e for e in pending if e.id not in ours]
        if pending:
            log.info("outbox: resending %d publishes left by the last run", len(pending))
        self.send(pending)
        return True

    # -- where it stands ---------------------------------------------------------------------

    @property
    def unacked(self) -> int:
        """Publishes with the broker, not acknowledged yet (logged or not)."""
        return len(self._rows_by_mid)

    @property
    def unacked_bytes(self) -> int:
        """The payload bytes of those publishes."""
        return self._unacked_bytes

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
        return (set(self._rows_by_mid.values()) | set(self._acked)) - {UNLOGGED}
