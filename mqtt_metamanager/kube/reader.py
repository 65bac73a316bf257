"""Reads for the Kubernetes API on connections of their own (WAL: readers never wait on the
message loop, nor it on them), each read one consistent snapshot with its revision."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .resources import Kind

_REVISION = (
    "SELECT MAX(r) FROM (SELECT MAX(revision) AS r FROM changes"
    " UNION ALL SELECT MAX(revision) FROM meta)"
)
_OLDEST_CHANGE = "SELECT MIN(revision) FROM changes"
_COLUMNS = "key, namespace, name, value, revision"


@dataclass(frozen=True)
class Row:
    """One stored object as the API serves it."""

    key: str
    namespace: str
    name: str
    value: str  # JSON text
    revision: int


@dataclass(frozen=True)
class Change:
    revision: int
    event: str  # ADDED, MODIFIED, DELETED
    type: str
    namespace: str
    name: str
    value: str


class Snapshot:
    """One read transaction: every query sees the store as of ``revision``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.revision = int(conn.execute(_REVISION).fetchone()[0] or 0)

    def compacted(self) -> int:
        """The newest revision whose changes are no longer all kept: a watch may resume
        from any revision at or after it."""
        oldest = self.conn.execute(_OLDEST_CHANGE).fetchone()[0]
        return self.revision if oldest is None else int(oldest) - 1

    def objects(
        self, kind: Kind, namespace: str | None, after_key: str = "", limit: int = 0
    ) -> list[Row]:
        sql = f"SELECT {_COLUMNS} FROM meta WHERE type = ? AND key > ?"
        args: list[object] = [kind.stored, after_key]
        if namespace is not None:
            sql += " AND namespace = ?"
            args.append(namespace)
        sql += " ORDER BY key"
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        return [Row(*r) for r in self.conn.execute(sql, args)]

    def object(self, kind: Kind, namespace: str | None, name: str) -> Row | None:
        if namespace is not None:
            sql = f"SELECT {_COLUMNS} FROM meta WHERE key = ?"
            found = self.conn.execute(sql, (f"{namespace}/{kind.stored}/{name}",)).fetchone()
        else:  # cluster-scoped kinds are stored under some namespace: any will do
            sql = f"SELECT {_COLUMNS} FROM meta WHERE type = ? AND name = ? ORDER BY key LIMIT 1"
            found = self.conn.execute(sql, (kind.stored, name)).fetchone()
        return None if found is None else Row(*found)

    def changes(self, kind: Kind, after: int, upto: int) -> list[Change]:
        sql = (
            "SELECT revision, event, type, namespace, name, value FROM changes"
            " WHERE type = ? AND revision > ? AND revision <= ? ORDER BY revision"
        )
        return [Change(*r) for r in self.conn.execute(sql, (kind.stored, after, upto))]

    def all_changes(self, after: int, limit: int) -> list[Change]:
        sql = (
            "SELECT revision, event, type, namespace, name, value FROM changes"
            " WHERE revision > ? ORDER BY revision LIMIT ?"
        )
        return [Change(*r) for r in self.conn.execute(sql, (after, limit))]


class StoreReader:
    """Read-only connections to the service's SQLite file: one per snapshot, opened and
    closed by the thread that reads (cheap next to a request), so nothing is shared."""

    def __init__(self, path: str) -> None:
        self.path = path

    def connect(self) -> sqlite3.Connection:
        """A read-only connection; the caller closes it."""
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        conn.execute("PRAGMA query_only = 1")
        conn.execute("PRAGMA busy_timeout = 5000")
        return conn

    @contextmanager
    def snapshot(self, conn: sqlite3.Connection | None = None) -> Iterator[Snapshot]:
        """One read transaction, on ``conn`` (kept by a thread that reads often: opening
        one costs about a millisecond) or on a connection of its own."""
        own = conn is None
        conn = self.connect() if conn is None else conn
        try:
            conn.execute("BEGIN")
            try:
                yield Snapshot(conn)
            finally:
                conn.execute("COMMIT")
        finally:
            if own:
                conn.close()
