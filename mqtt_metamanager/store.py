"""The store: the node's metadata in one SQLite file, through peewee.

Contract:
- ``meta`` keeps KubeEdge's ``key``/``type``/``value`` columns (value is JSON text) plus
  namespace, name, resource version, update time and the revision of its last change.
- ``changes``, the store's history and its revision: ``history.py``.
- ``applied`` and ``outbox``, what is kept about messages: ``ledger.py``.
- How many objects of each type are stored, followed rather than counted: ``typecounts.py``.
- Many objects at once, for a new or offline store: ``bulkload.py``.

One writer (the service loop); the CLI opens the file read-only.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import peewee as pw

from . import jsoncodec, schema, sqlitefile
from .bulkload import BulkLoad
from .envelope import Resource
from .history import ADDED, DELETED, MODIFIED, History
from .ledger import Ledger
from .typecounts import TypeCounts
from .versions import resource_version_of, stored_version

# Bound parameters are SQLite integers; a CAST of a longer number gives its largest one.
_SQL_INT_MAX = 2**63 - 2


class StoreError(RuntimeError):
    """The store cannot take a write now (disk full, read-only, locked)."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    type: str
    namespace: str
    name: str
    value: Any
    resource_version: str
    updated_at: float


class Store(History, BulkLoad, Ledger):
    """Metadata in one SQLite file (WAL), with its history (``history.History``), its bulk
    load (``bulkload.BulkLoad``) and the ledger's tables (``ledger.Ledger``) in the same
    file and transactions.

    One connection, used by the thread that opened the store (the service's loop); other
    threads read through connections of their own (``kube.reader``). sqlite3 refuses a
    call from another thread, and inside ``atomic`` that surfaces as ``StoreError``."""

    def __init__(self, path: str, *, readonly: bool = False, cache_kib: int = 1024) -> None:
        """Args:
        cache_kib: the bound of this connection's SQLite page cache (``database.cache_kib``).
        """
        self.path = path
        self.readonly = readonly  # another process writes: nothing is counted once
        self.db = sqlitefile.database(path, readonly=readonly, cache_kib=cache_kib)
        self.m = schema.models(self.db)
        # Read by /readyz from another thread (peewee's own state is per thread): "" while
        # the last transaction committed, else why it failed; "closed" once closed.
        self.problem = ""
        self._counts = TypeCounts()
        try:
            self.db.connect()
            # Statements run on sqlite3's connection itself: peewee's ``execute_sql`` adds a
            # cursor, a debug-log call and its exception wrapping, ~0.8 µs of a 2.4 µs
            # look-up, six times an insert. Inside a transaction ``atomic`` turns sqlite3's
            # errors into ``StoreError`` as it does peewee's.
            self.sql = self.db.connection()
            if not readonly:
                sqlitefile.checkpoint_by_size(self.db)
                self._migrate()
            self._revision = self._last_revision()
        except (pw.DatabaseError, sqlite3.DatabaseError) as exc:  # not a store, or locked
            raise StoreError(f"{path}: {exc}") from exc

    def _migrate(self) -> None:
        version = self.db.execute_sql("PRAGMA user_version").fetchone()[0]
        if version > schema.SCHEMA_VERSION:
            raise StoreError(f"schema version {version} is newer than this program's")
        with self.db.atomic():
            if version == 1:
                # Objects stored before revisions existed get one each, in key order.
                self.db.execute_sql("ALTER TABLE meta ADD COLUMN revision INTEGER DEFAULT 0")
                self.db.execute_sql(
                    "UPDATE meta SET revision = (SELECT COUNT(*) FROM meta AS m"
                    " WHERE m.key <= meta.key)"
                )
            # safe=True: every index IF NOT EXISTS, so files made before an index get it.
            self.db.create_tables(
                [self.m.Meta, self.m.Change, self.m.Applied, self.m.Outbox], safe=True
            )
            # Covered by meta_type_namespace_key (which replaced it): one index less to write.
            self.db.execute_sql("DROP INDEX IF EXISTS meta_type_namespace")
            self.db.execute_sql(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")

    def close(self) -> None:
        self.problem = "closed"
        if not self.db.is_closed():
            self.db.close()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One transaction; a SQLite failure inside it surfaces as ``StoreError``. The
        revision counter goes back with a rollback, so no revision is ever skipped."""
        start = self._revision
        staged = self._counts.staged()
        changes = self.changes()
        try:
            with self.db.atomic():
                yield
        # sqlite3's own errors too: most statements run on its connection (``self.sql``),
        # where peewee does not wrap them into its own.
        except (pw.DatabaseError, sqlite3.Error) as exc:
            self._revision = start
            self._counts.roll_back(staged)
            # On SQLITE_FULL/IOERR SQLite rolls back by itself; peewee's own rollback then
            # fails with "no transaction is active" and would hide the cause.
            cause: BaseException | None = exc
            while cause is not None and "no transaction is active" in str(cause):
                cause = cause.__context__
            self.problem = f"the last transaction failed: {cause or exc}"
            raise StoreError(str(cause or exc)) from exc
        except BaseException:
            self._revision = start
            self._counts.roll_back(staged)
            raise
        if not self.db.in_transaction():
            self._counts.commit()
        if self.changes() != changes:  # only a write shows that writes work again
            self.problem = ""

    def _counted(self, type_: str, delta: int) -> None:
        self._counts.stage(type_, delta)
        if not self.db.in_transaction():  # autocommit: committed already
            self._counts.commit()

    # -- objects ------------------------------------------------------------------------

    def _row_to_object(self, row: Any) -> StoredObject:
        return StoredObject(
            row.key,
            row.type,
            row.namespace,
            row.name,
            jsoncodec.loads(row.value),
            row.resource_version,
            row.updated_at,
        )

    def get(self, key: str) -> StoredObject | None:
        row = self.sql.execute(schema.GET_OBJECT, (key,)).fetchone()
        if row is None:
            return None
        key, type_, namespace, name, value, resource_version, updated_at = row
        return StoredObject(
            key, type_, namespace, name, jsoncodec.loads(value), resource_version, updated_at
        )

    def put(
        self,
        resource: Resource,
        value: Any,
        *,
        version: int | None = None,
        exists: bool | None = None,
    ) -> bool:
        """Store ``value`` under ``resource`` (insert or replace), as a new revision.

        Args:
            version: ``value``'s resourceVersion as a number, if it is one: then an object
                stored with a greater one (as a number) is kept, and nothing is written.
            exists: whether an object is stored under ``resource``, if the caller read it
                in this transaction. It picks which statement runs first: the UPDATE for a
                stored object, else the INSERT, so a new object costs one statement, not an
                UPDATE that finds nothing first. A wrong guess costs the other statement.

        Returns:
            False when the stored object was kept (``value`` is stale), else True.
        """
        if version is not None and not -_SQL_INT_MAX <= version <= _SQL_INT_MAX:
            stored = stored_version(self.resource_version(resource.key))  # rare: too big
            if stored is not None and stored > version:
                return False
            version = None
        text = jsoncodec.dumps(value).decode()
        now = time.time()
        self._revision += 1
        name = resource.name or ""
        row = (resource.type, resource.namespace, name, text, resource_version_of(value), now)
        key = resource.key
        if exists and self._update(row, key, version):
            event = MODIFIED
        elif self._insert(row, key):
            event = ADDED
            self._counted(resource.type, 1)
        elif not exists and self._update(row, key, version):
            event = MODIFIED
        else:  # it is stored, with a greater version
            self._revision -= 1
            return False
        self._record_change(event, key, resource.type, resource.namespace, name, text, now)
        return True

    def _insert(self, row: tuple[Any, ...], key: str) -> bool:
        """The object as a new row; False if one is stored under ``key``."""
        cursor = self.sql.execute(schema.INSERT_UNLESS_STORED, (*row, self._revision, key))
        return bool(cursor.rowcount)

    def _update(self, row: tuple[Any, ...], key: str, version: int | None) -> bool:
        """The stored object replaced; False if none is stored under ``key``, or (with
        ``version``) the stored one has a greater resourceVersion."""
        if version is None:
            cursor = self.sql.execute(schema.UPDATE_OBJECT, (*row, self._revision, key))
        else:
            where = (*row, self._revision, key, version)
            cursor = self.sql.execute(schema.UPDATE_UNLESS_NEWER, where)
        return bool(cursor.rowcount)

    def value_text(self, key: str) -> bytes | None:
        """One object's value as the JSON text (UTF-8) it is stored as, or None."""
        row = self.sql.execute(schema.GET_VALUE, (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def resource_version(self, key: str) -> str | None:
        """One object's ``metadata.resourceVersion`` as stored ("" if it has none), or None
        if there is no such object."""
        row = self.sql.execute(schema.GET_VERSION, (key,)).fetchone()
        return None if row is None else str(row[0])

    def value_texts(self, namespace: str, type_: str) -> bytes:
        """The values of one type in one namespace, as stored JSON text (UTF-8), in key
        order, comma-separated (b"" for none): a list reply splices them in as they are
        (docs/performance.md)."""
        row = self.sql.execute(schema.LIST_VALUES, (type_, namespace)).fetchone()
        return b"" if row is None or row[0] is None else bytes(row[0])

    def texts_with_owner(
        self, type_: str, owner_type: str
    ) -> Iterator[tuple[str, str, bytes, bool]]:
        """(key, namespace, value as stored JSON text (UTF-8), whether its owner is stored)
        of each object of ``type_``, by namespace and key; the owner is the object of
        ``owner_type`` with the same namespace and name. Read it all before writing."""
        rows = self.sql.execute(schema.WITH_OWNER, (owner_type, type_))
        for key, namespace, text, owned in rows:
            yield str(key), str(namespace), bytes(text), bool(owned)

    def delete(self, key: str) -> bool:
        """Remove one object; a new revision if it was there."""
        row = self.sql.execute(schema.DELETE_OBJECT, (key,)).fetchone()
        if row is None:
            return False
        type_, namespace, name, value = row
        self._counted(type_, -1)
        self._revision += 1
        self._record_change(DELETED, key, type_, namespace, name, value, time.time())
        return True

    def objects(self, namespace: str | None = None, type_: str | None = None) -> list[StoredObject]:
        q = self.m.Meta.select().order_by(self.m.Meta.key)
        if namespace is not None:
            q = q.where(self.m.Meta.namespace == namespace)
        if type_ is not None:
            q = q.where(self.m.Meta.type == type_)
        return [self._row_to_object(row) for row in q]

    def changes(self) -> int:
        """Rows inserted, updated or deleted through this connection so far."""
        return int(self.sql.total_changes)

    def count(self) -> int:
        return int(self.sql.execute(schema.COUNT_OBJECTS).fetchone()[0])

    def count_by_type(self) -> dict[str, int]:
        """How many objects of each type are stored (committed, and made in the open
        transaction). Counted once, then followed: a look-up, not a scan."""
        # Read-only, another process writes: nothing is followed, each call counts.
        scan = functools.partial(self.sql.execute, schema.COUNT_BY_TYPE)
        return self._counts.by_type(scan, recount=self.readonly)
