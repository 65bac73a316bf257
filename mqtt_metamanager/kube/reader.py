"""Reads for the Kubernetes API on connections of their own (WAL: readers never wait on the
message loop, nor it on them), each read one consistent snapshot with its revision."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

from .resources import Kind

# The history always keeps the newest change (Store.prune_changes), whose revision is the
# store's: one look-up in the primary key. Only a store that never changed since schema 2
# has none, and then its objects' revisions say it (a scan, once, of an idle store).
_REVISION = (
    "SELECT COALESCE((SELECT MAX(revision) FROM changes), (SELECT MAX(revision) FROM meta), 0)"
)
KEEP_IDLE = 2  # idle read connections kept for requests
# Each connection has a page cache of its own (SQLite's default is 2 MiB): the kept ones
# and the feed's would add megabytes of RSS for what the OS page cache holds anyway.
READER_CACHE_KIB = 512
_OLDEST_CHANGE = "SELECT MIN(revision) FROM changes"
_COLUMNS = "key, namespace, name, value, revision"


class Row(NamedTuple):
    """One stored object as the API serves it."""

    key: str
    namespace: str
    name: str
    value: str  # JSON text
    revision: int


# Which object at which revision (key, revision): enough to find its served JSON kept in
# memory. A plain tuple: a thousand named ones were a tenth of a cached list's time.
Version = tuple[str, int]


class Change(NamedTuple):
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
        self.revision = int(conn.execute(_REVISION).fetchone()[0])

    def compacted(self) -> int:
        """The newest revision whose changes are no longer all kept: a watch may resume
        from any revision at or after it."""
        oldest = self.conn.execute(_OLDEST_CHANGE).fetchone()[0]
        return self.revision if oldest is None else int(oldest) - 1

    def objects(
        self, kind: Kind, namespace: str | None, after_key: str = "", limit: int = 0
    ) -> list[Row]:
        """The objects of ``kind`` (in ``namespace``) after ``after_key``, in key order."""
        sql, args = _in_key_order(_COLUMNS, kind, namespace, after_key, limit)
        return list(map(Row._make, self.conn.execute(sql, args)))

    def versions(
        self, kind: Kind, namespace: str | None, after_key: str = "", limit: int = 0
    ) -> list[Version]:
        """As ``objects``, without their values: reading a thousand values of a kilobyte
        was most of a list's time when their served JSON is kept anyway."""
        sql, args = _in_key_order("key, revision", kind, namespace, after_key, limit)
        return self.conn.execute(sql, args).fetchall()

    def row(self, key: str) -> Row | None:
        found = self.conn.execute(f"SELECT {_COLUMNS} FROM meta WHERE key = ?", (key,)).fetchone()
        return None if found is None else Row._make(found)

    def object(self, kind: Kind, namespace: str | None, name: str) -> Row | None:
        if namespace is not None:
            return self.row(f"{namespace}/{kind.stored}/{name}")
        # Cluster-scoped kinds are stored under some namespace: any will do.
        sql = f"SELECT {_COLUMNS} FROM meta WHERE type = ? AND name = ? ORDER BY key LIMIT 1"
        found = self.conn.execute(sql, (kind.stored, name)).fetchone()
        return None if found is None else Row._make(found)

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


def _in_key_order(
    columns: str, kind: Kind, namespace: str | None, after_key: str, limit: int
) -> tuple[str, list[object]]:
    sql = f"SELECT {columns} FROM meta WHERE type = ? AND key > ?"
    args: list[object] = [kind.stored, after_key]
    if namespace is not None:
        sql += " AND namespace = ?"
        args.append(namespace)
    sql += " ORDER BY key"
    if limit:
        sql += " LIMIT ?"
        args.append(limit)
    return sql, args


class StoreReader:
    """Read-only connections to the service's SQLite file. A few idle ones are kept for
    requests: opening one costs about a millisecond and starts with a cold page cache, which
    was half of a get's time. A connection serves one snapshot at a time, on one thread."""

    def __init__(self, path: str, keep: int = KEEP_IDLE) -> None:
        self.path = path
        self.keep = keep
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def connect(self) -> sqlite3.Connection:
        """A read-only connection; the caller closes it."""
        # check_same_thread off: a kept connection serves whichever request thread takes it
        # next, never two at once (``snapshot`` hands each to one reader).
        conn = sqlite3.connect(
            f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA query_only = 1")
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
        return conn

    @contextmanager
    def snapshot(self, conn: sqlite3.Connection | None = None) -> Iterator[Snapshot]:
        """One read transaction, on ``conn`` (a thread that reads often keeps its own) or
        on a kept connection, given back afterwards unless the read failed."""
        own = conn is None
        conn = self._take() if conn is None else conn
        healthy = False
        try:
            conn.execute("BEGIN")
            try:
                yield Snapshot(conn)
            finally:
                conn.execute("COMMIT")
            healthy = True
        finally:
            if own:
                self._give_back(conn, healthy)

    def close(self) -> None:
        """Close the kept connections (at the service's stop)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _take(self) -> sqlite3.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self.connect()

    def _give_back(self, conn: sqlite3.Connection, healthy: bool) -> None:
        with self._lock:
            if healthy and len(self._idle) < self.keep:
                self._idle.append(conn)
                return
        conn.close()
