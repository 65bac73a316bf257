"""The store's history: every put and delete of an object bumps the store's revision and is
recorded (with the object) in ``changes`` in the same transaction, so a reader that follows
it (the Kubernetes watch) never sees a change a crash then loses, nor misses one that was
committed. The history is bounded (``prune_changes``); readers older than it must start
again.

Apart from ``store.py`` because it is a contract of its own, the one ``kube/`` reads:
``Store`` is a ``History`` (same file, same transactions), as it is a ``Ledger``.
"""

from __future__ import annotations

import sqlite3
import time

import peewee as pw

from . import schema

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


class History:
    """The revision and the ``changes`` table; the store gives the connection and counts
    the revision up as it writes (``Store.put``, ``Store.delete``, ``BulkLoad.load``)."""

    db: pw.SqliteDatabase
    sql: sqlite3.Connection  # the same connection, for statements written as SQL
    _revision: int

    @property
    def revision(self) -> int:
        """The revision of the last committed (or, inside a transaction, made) change."""
        return self._revision

    def _last_revision(self) -> int:
        return int(self.sql.execute(schema.LAST_REVISION).fetchone()[0])

    def _record_change(
        self, event: str, key: str, type_: str, namespace: str, name: str, value: str, at: float
    ) -> None:
        """The change that made the present revision: the object after it (before it, for
        ``DELETED``)."""
        row = (self._revision, event, key, type_, namespace, name, value, at)
        self.sql.execute(schema.ADD_CHANGE, row)

    def prune_changes(self, keep: int, max_age: float | None = None) -> int:
        """Forget changes beyond the ``keep`` newest (and, with ``max_age``, older than that
        many seconds), never the newest one; returns how many were dropped."""
        newest = self._last_revision()
        bound = newest - keep
        if max_age is not None:
            row = self.sql.execute(
                "SELECT MAX(revision) FROM changes WHERE at < ?", (time.time() - max_age,)
            ).fetchone()
            bound = max(bound, min(int(row[0] or 0), newest - 1))
        if bound <= 0:
            return 0
        cursor = self.sql.execute("DELETE FROM changes WHERE revision <= ?", (bound,))
        return int(cursor.rowcount)
