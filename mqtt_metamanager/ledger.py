"""The ledger: what the store keeps about messages rather than objects, in the same SQLite
file and the same transactions as the objects (``Store`` is a ``Ledger``).

- ``applied`` remembers recently applied msg_ids with the replies they produced, so a
  redelivered message is answered again but not applied again.
- ``outbox`` holds every publish owed because of an input, written in the same
  transaction as the input's effect and removed once the broker acknowledged it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import peewee as pw

from . import jsoncodec, schema
from .routing import Outgoing


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    publish: Outgoing


def _publish_to_json(p: Outgoing) -> dict[str, Any]:
    return {
        "topic": p.topic,
        "payload": p.payload.decode(),
        "correlation": p.correlation.hex() if p.correlation is not None else None,
        "retain": p.retain,
    }


def _publish_from_json(d: dict[str, Any]) -> Outgoing:
    corr = d.get("correlation")
    return Outgoing(
        d["topic"], d["payload"].encode(), bytes.fromhex(corr) if corr else None, d["retain"]
    )


class Ledger:
    """The ``applied`` and ``outbox`` tables; the store gives the connection and the
    transactions."""

    db: pw.SqliteDatabase
    sql: sqlite3.Connection  # the same connection, for statements written as SQL
    m: SimpleNamespace

    def atomic(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    # -- redelivery memory -------------------------------------------------------------

    def applied_replies(self, msg_id: str) -> list[Outgoing] | None:
        """The replies sent for ``msg_id`` if it was applied already, else None."""
        row = self.sql.execute(schema.GET_APPLIED, (msg_id,)).fetchone()
        if row is None:
            return None
        return [_publish_from_json(d) for d in jsoncodec.loads(row[0])]

    def mark_applied(self, msg_id: str, replies: Iterable[Outgoing]) -> None:
        replies_json = jsoncodec.dumps([_publish_to_json(p) for p in replies]).decode()
        self.sql.execute(schema.PUT_APPLIED, (msg_id, replies_json, time.time()))

    def prune_applied(self, keep: int) -> int:
        """Forget all but the ``keep`` newest msg_ids; returns how many were dropped."""
        A = self.m.Applied
        total = A.select().count()
        if total <= keep:
            return 0
        cutoff = A.select(A.applied_at).order_by(A.applied_at.desc()).offset(keep).limit(1)
        return int(A.delete().where(A.applied_at <= cutoff).execute())

    # -- outbox ---------------------------------------------------------------------------

    def outbox_add(self, publishes: Iterable[Outgoing]) -> list[OutboxEntry]:
        entries = []
        for p in publishes:
            cursor = self.sql.execute(
                schema.ADD_OUTBOX, (p.topic, p.payload, p.correlation, int(p.retain))
            )
            entries.append(OutboxEntry(cast(int, cursor.lastrowid), p))  # an INSERT's: set
        return entries

    def outbox_pending(self) -> list[OutboxEntry]:
        with self.atomic():  # for its StoreError on failure
            return self._outbox_rows()

    def _outbox_rows(self) -> list[OutboxEntry]:
        return [
            OutboxEntry(
                row.id,
                Outgoing(
                    row.topic,
                    bytes(row.payload),
                    None if row.correlation is None else bytes(row.correlation),
                    row.retain,
                ),
            )
            for row in self.m.Outbox.select().order_by(self.m.Outbox.id)
        ]

    def outbox_remove(self, ids: Iterable[int]) -> None:
        # One statement run per id, not an ``IN (?, ?, ...)`` per count of ids: each count
        # was a statement of its own in sqlite3's cache (128 of them, up to ~60 KB each for
        # long lists), and the cache filled with every new count over hours (issue 13).
        self.sql.executemany(schema.REMOVE_OUTBOX, [(i,) for i in ids])
