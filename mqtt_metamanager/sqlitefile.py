"""How the store's SQLite file is opened: WAL with durable commits, the page size of a new
file, when the WAL is checkpointed, and the bound of the page cache. The tables are the
store's (``schema.py``, ``Store._migrate``)."""

from __future__ import annotations

import peewee as pw

# The page size of a new file. A commit writes every page it touched to the WAL, each as
# its own frame (header, page, checksum, hash-table entry); an insert touches ~6 KB across
# five tables, so 16 KiB pages write a quarter of the frames that 4 KiB pages do: ~20 µs
# less CPU per insert, lookups and lists unchanged (docs/performance.md). A file made
# before keeps its page size: SQLite can change it only by rewriting the file (VACUUM).
NEW_FILE_PAGE_SIZE = 16 * 1024
# The WAL is checkpointed into the file once it holds this much, whatever the page size:
# SQLite's default of 1,000 pages, at its default 4 KiB page.
WAL_CHECKPOINT_BYTES = 4000 * 1024


def database(path: str, *, readonly: bool, cache_kib: int) -> pw.SqliteDatabase:
    """The file as peewee's database, not yet connected. ``readonly``: another process
    writes it (the CLI)."""
    if readonly:
        return pw.SqliteDatabase(f"file:{path}?mode=ro", uri=True, pragmas={"query_only": 1})
    return pw.SqliteDatabase(
        path,
        pragmas={
            # Before journal_mode: switching to WAL writes the file's first page.
            "page_size": NEW_FILE_PAGE_SIZE,
            "journal_mode": "wal",
            # FULL: a commit is on disk before we ack the broker, power cut included.
            "synchronous": "full",
            "busy_timeout": 5000,
            "foreign_keys": 1,
            "cache_size": -cache_kib,
        },
    )


def checkpoint_by_size(db: pw.SqliteDatabase) -> None:
    """Have the writer's connection checkpoint at ``WAL_CHECKPOINT_BYTES``: SQLite counts
    pages, and the file's may be 4 or 16 KiB."""
    page_size = db.execute_sql("PRAGMA page_size").fetchone()[0]
    db.execute_sql(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_BYTES // page_size}")
