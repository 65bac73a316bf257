"""The bulk load of a new or offline store (``Store.load``): many objects in a few large
transactions, each object with a revision of its own but no change kept for it. Apart from
``store.py`` because it skips, for speed, what ``put`` and ``delete`` keep one object at a
time (the staleness check, the history, the per-type counts): ``bench --scale`` preloads
its stores through it (docs/performance.md)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any

import peewee as pw

from . import jsoncodec, schema
from .envelope import Resource
from .typecounts import TypeCounts
from .versions import resource_version_of

LOAD_BATCH = 50_000  # objects per transaction of ``load``


class BulkLoad:
    """``load``; the store gives the connection, the transactions, ``put``, the revision
    and the per-type counts."""

    db: pw.SqliteDatabase
    sql: sqlite3.Connection  # the same connection, for statements written as SQL
    _revision: int
    _counts: TypeCounts

    def atomic(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def put(self, resource: Resource, value: Any, *, version: int | None = None) -> bool:
        raise NotImplementedError

    def load(self, objects: Iterable[tuple[Resource, Any]], *, batch: int = LOAD_BATCH) -> int:
        """Store many objects at once (insert or replace, no staleness check), in
        transactions of ``batch`` objects: a bulk load of a new or offline store.

        Each object gets a revision of its own, as ``put`` gives it. The history is not
        kept for them: each transaction ends with its last object through ``put`` and
        forgets the changes before it, as ``prune_changes`` down to the newest would. A
        watch from before the load must list again, as after any pruning.

        Returns:
            How many objects were stored.
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._counts.forget()  # an upsert does not say what was new: counted again if asked
        stored = 0
        chunk: list[tuple[Resource, Any]] = []
        for item in objects:
            chunk.append(item)
            if len(chunk) >= batch:
                stored += self._load_batch(chunk)
                chunk = []
        if chunk:
            stored += self._load_batch(chunk)
        return stored

    def _load_batch(self, chunk: list[tuple[Resource, Any]]) -> int:
        now = time.time()
        with self.atomic():
            rows = []
            for resource, value in chunk[:-1]:
                self._revision += 1
                rows.append(
                    (
                        resource.type,
                        resource.namespace,
                        resource.name or "",
                        jsoncodec.dumps(value).decode(),
                        resource_version_of(value),
                        now,
                        self._revision,
                        resource.key,
                    )
                )
            self.sql.executemany(schema.UPSERT_OBJECT, rows)
            self.put(*chunk[-1])  # the batch's newest change: the store's revision
            self.sql.execute(schema.FORGET_CHANGES_BEFORE, (self._revision,))
        return len(chunk)
