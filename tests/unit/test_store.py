from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from mqtt_metamanager import schema
from mqtt_metamanager.envelope import Resource
from mqtt_metamanager.routing import Outgoing
from mqtt_metamanager.sqlitefile import WAL_CHECKPOINT_BYTES
from mqtt_metamanager.store import Store, StoreError


def test_meta_table_has_kubeedge_columns_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = Store(str(path))
    store.put(Resource.parse("default/pod/a"), {"metadata": {"resourceVersion": "7"}})
    store.close()
    db = sqlite3.connect(path)
    cols = {row[1] for row in db.execute("PRAGMA table_info(meta)")}
    assert {"key", "type", "value"} <= cols
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    row = db.execute("SELECT key, type, value, resource_version FROM meta").fetchone()
    assert row == ("default/pod/a", "pod", '{"metadata":{"resourceVersion":"7"}}', "7")


def test_data_survives_reopen_and_schema_is_kept(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    s = Store(path)
    with s.atomic():
        s.put(Resource.parse("ns/configmap/c"), {"a": 1})
        s.outbox_add([Outgoing("t", b"p", b"c", True)])
    s.close()
    s = Store(path)
    assert s.get("ns/configmap/c").value == {"a": 1}  # type: ignore[union-attr]
    [entry] = s.outbox_pending()
    assert entry.publish == Outgoing("t", b"p", b"c", True)
    s.outbox_remove([entry.id])
    assert s.outbox_pending() == []
    s.close()


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "m.db"))

    with pytest.raises(RuntimeError), s.atomic():
        s.put(Resource.parse("ns/pod/a"), {})
        s.outbox_add([Outgoing("t", b"p")])
        raise RuntimeError("crash mid-way")
    assert s.get("ns/pod/a") is None
    assert s.outbox_pending() == []


def test_every_sqlite_failure_in_a_transaction_is_a_store_error(tmp_path: Path) -> None:
    # outbox_remove runs on a plain sqlite3 cursor (executemany), whose errors are
    # sqlite3's, not peewee's: one escaped as a bug (answered 500, the input acked).
    s = Store(str(tmp_path / "m.db"))
    with s.atomic():
        [entry] = s.outbox_add([Outgoing("t", b"p")])
    s.db.execute_sql("PRAGMA query_only = 1")  # every write now fails, as on a bad disk
    with pytest.raises(StoreError), s.atomic():
        s.outbox_remove([entry.id])
    assert s.problem
    # The statements of an input run on sqlite3's connection too (not through peewee).
    for write in (
        lambda: s.put(Resource.parse("ns/pod/a"), {"a": 1}),
        lambda: s.mark_applied("m-1", []),
        lambda: s.outbox_add([Outgoing("t", b"q")]),
    ):
        with pytest.raises(StoreError), s.atomic():
            write()
    s.db.execute_sql("PRAGMA query_only = 0")
    assert [e.id for e in s.outbox_pending()] == [entry.id]


def test_applied_memory_is_bounded(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "m.db"))
    for i in range(150):
        s.mark_applied(f"m{i}", [Outgoing("t", f"r{i}".encode())])
    assert s.applied_replies("m0") == [Outgoing("t", b"r0")]
    assert s.prune_applied(100) == 50
    assert s.applied_replies("m0") is None
    assert s.applied_replies("m149") == [Outgoing("t", b"r149")]


def test_readonly_store_cannot_write(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    Store(path).close()
    ro = Store(path, readonly=True)
    with pytest.raises(StoreError), ro.atomic():
        ro.put(Resource.parse("ns/pod/a"), {})
    ro.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError):
        Store(str(path))


@pytest.mark.parametrize(
    ("stored", "version", "written"),
    [
        (None, 5, True),  # nothing stored
        ("7", 5, False),  # a greater version stored: kept
        ("7", 7, True),
        ("7", 8, True),
        ("10", 9, False),  # numbers, not text
        ("", 1, True),  # a stored version that is no number is never greater
        ("abc", 1, True),
        ("²", 1, True),
        ("1" * 21, 1, True),  # past 20 digits it is no number
        ("9" * 20, 10**18, False),  # past SQLite's integers, still a number
        ("9" * 19, 10**19, True),  # a version past SQLite's integers
        ("9" * 20, 10**19, False),
        ("7", -1, False),
    ],
)
@pytest.mark.parametrize("exists", [None, True, False])  # the caller's guess, right or wrong
def test_put_with_a_version_keeps_an_object_with_a_greater_one(
    tmp_path: Path, stored: str | None, version: int, written: bool, exists: bool | None
) -> None:
    s = Store(str(tmp_path / "m.db"))
    key = Resource.parse("ns/pod/p")
    if stored is not None:
        s.put(key, {"metadata": {"resourceVersion": stored}, "old": True})
    revision = s.revision
    new = {"metadata": {"resourceVersion": str(version)}}
    assert s.put(key, new, version=version, exists=exists) is written
    obj = s.get("ns/pod/p")
    assert obj is not None and (obj.value == new) is written
    assert s.revision == revision + written  # a kept object makes no revision
    assert s.count_by_type() == {"pod": 1}
    last = s.db.execute_sql("SELECT event FROM changes ORDER BY revision DESC LIMIT 1")
    # A kept object's last change is still the one that stored it.
    assert last.fetchone()[0] == ("MODIFIED" if stored is not None and written else "ADDED")
    s.close()


def test_a_put_runs_one_statement_on_the_objects_when_it_knows_what_is_stored(
    tmp_path: Path,
) -> None:
    s = Store(str(tmp_path / "m.db"))
    statements: list[str] = []
    s.db.connection().set_trace_callback(statements.append)

    def writes_on_meta(do: Callable[[], object]) -> list[str]:
        statements.clear()
        do()
        return [q.split(" meta")[0] for q in statements if " meta " in q]

    new, stored = Resource.parse("ns/pod/new"), Resource.parse("ns/pod/stored")
    s.put(stored, {"v": 1})
    # Unknown: an insert is tried first, and a new object needs nothing more.
    assert writes_on_meta(lambda: s.put(new, {"v": 1})) == ["INSERT OR IGNORE INTO"]
    # Known to be stored (an update read it first): the UPDATE alone.
    assert writes_on_meta(lambda: s.put(stored, {"v": 2}, exists=True)) == ["UPDATE"]
    s.close()


def _pods(count: int, namespace: str = "ns") -> list[tuple[Resource, dict[str, object]]]:
    return [
        (Resource(namespace, "pod", f"p{i}"), {"metadata": {"name": f"p{i}", "resourceVersion": i}})
        for i in range(count)
    ]


def test_load_stores_like_put_with_a_revision_each(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "m.db"))
    s.put(Resource.parse("ns/pod/p3"), {"old": True})
    before = s.revision
    assert s.load(_pods(10), batch=4) == 10
    assert s.revision == before + 10
    assert s.count() == 10  # p3 replaced, not doubled
    p3 = s.get("ns/pod/p3")
    assert p3 is not None and p3.value == {"metadata": {"name": "p3", "resourceVersion": 3}}
    assert p3.resource_version == "3" and p3.namespace == "ns" and p3.name == "p3"
    revisions = [r[0] for r in s.db.execute_sql("SELECT revision FROM meta ORDER BY revision")]
    assert revisions == list(range(before + 1, before + 11))
    # The history keeps only the newest change: a watch from before the load lists again.
    changes = s.db.execute_sql("SELECT revision, key FROM changes").fetchall()
    assert changes == [(before + 10, "ns/pod/p9")]
    s.close()
    reopened = Store(str(tmp_path / "m.db"))
    assert reopened.revision == before + 10
    reopened.close()


def test_a_loaded_store_opens_and_counts_without_reading_every_row(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    s = Store(path)
    s.load(_pods(20_000))
    s.close()
    # The statements the store opens and counts with, on a connection of the test's own
    # that counts the virtual machine instructions they take.
    conn = sqlite3.connect(path)
    steps = [0]

    def counted() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(counted, 100)  # once per 100 instructions
    assert conn.execute(schema.LAST_REVISION).fetchone() == (20_000,)
    assert steps[0] < 10, f"the revision took {steps[0] * 100} instructions: a scan"
    plan = conn.execute("EXPLAIN QUERY PLAN " + schema.COUNT_BY_TYPE).fetchall()
    assert "COVERING INDEX" in str(plan), plan
    conn.close()
    s = Store(path)
    assert s.revision == 20_000 and s.count_by_type() == {"pod": 20_000}
    s.close()


def test_texts_with_owner_says_which_statuses_have_their_pod(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "m.db"))
    s.put(Resource.parse("b/pod/x"), {"n": 1})
    s.put(Resource.parse("b/podstatus/x"), {"s": "bx"})
    s.put(Resource.parse("a/podstatus/y"), {"s": "ay"})  # its pod is not stored
    s.put(Resource.parse("a/pod/x"), {"n": 2})  # the same name in another namespace
    assert list(s.texts_with_owner("podstatus", "pod")) == [
        ("a/podstatus/y", "a", b'{"s":"ay"}', False),
        ("b/podstatus/x", "b", b'{"s":"bx"}', True),
    ]


def test_counts_by_type_follow_commits_and_rollbacks_without_a_scan(tmp_path: Path) -> None:
    import random

    s = Store(str(tmp_path / "m.db"))
    s.load(_pods(50))
    pick = random.Random(4)

    def scanned() -> dict[str, int]:
        rows = s.db.execute_sql("SELECT type, COUNT(*) FROM meta GROUP BY type")
        return {str(t): int(n) for t, n in rows}

    assert s.count_by_type() == {"pod": 50}
    for step in range(300):
        key = f"ns/{pick.choice(['pod', 'podstatus', 'secret'])}/p{pick.randrange(60)}"
        change = (
            (lambda k=key: s.delete(k))
            if pick.random() < 0.4
            else (lambda k=key: s.put(Resource.parse(k), {"v": k}))
        )
        mode = pick.choice(["autocommit", "commit", "rollback", "nested rollback"])
        if mode == "autocommit":
            change()
        elif mode == "commit":
            with s.atomic():
                change()
                assert s.count_by_type() == scanned()  # the open transaction's too
        elif mode == "rollback":
            with pytest.raises(KeyError), s.atomic():
                change()
                raise KeyError("undo")
        else:
            with s.atomic():
                change()
                with pytest.raises(KeyError), s.atomic():
                    s.put(Resource.parse(f"ns/configmap/c{step}"), {})
                    raise KeyError("undo the inner one")
        assert s.count_by_type() == scanned(), (step, mode)
    conn = s.db.connection()
    steps = [0]

    def counted() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(counted, 100)
    s.count_by_type()
    conn.set_progress_handler(None, 0)
    assert steps[0] == 0  # a look-up, not a scan
    s.close()


def _put_pods(store: Store, names: list[str], namespace: str = "default") -> None:
    with store.atomic():
        for name in names:
            store.put(Resource(namespace, "pod", name), {"metadata": {"name": name}, "é": [1]})


def test_list_values_are_the_stored_text_joined_in_key_order(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "m.db"))
    _put_pods(store, ["b", "c", "a"])
    _put_pods(store, ["z"], namespace="other")
    joined = store.value_texts("default", "pod")
    assert isinstance(joined, bytes)
    stored = sqlite3.connect(tmp_path / "m.db").execute(
        "SELECT value FROM meta WHERE namespace = 'default' ORDER BY key"
    )
    assert joined == ",".join(row[0] for row in stored).encode()
    assert [v["metadata"]["name"] for v in json.loads(b"[" + joined + b"]")] == ["a", "b", "c"]
    assert store.value_texts("nowhere", "pod") == b""
    # Stored as UTF-8 as it is, not \u-escaped (jsoncodec: both encoders write it so).
    assert store.value_text("default/pod/a") == '{"metadata":{"name":"a"},"é":[1]}'.encode()
    assert store.value_text("default/pod/none") is None


def test_a_list_reads_the_index_in_key_order_without_a_sorter(tmp_path: Path) -> None:
    """A sort of a namespace's values holds all of them in SQLite's sorter (issue 13)."""
    store = Store(str(tmp_path / "m.db"))
    _put_pods(store, [f"p{i}" for i in range(50)])
    statements: list[str] = []
    store.db.connection().set_trace_callback(statements.append)
    store.value_texts("default", "pod")
    store.db.connection().set_trace_callback(None)
    [sql] = [s for s in statements if "FROM meta" in s]
    plan = " | ".join(
        row[3] for row in store.db.execute_sql("EXPLAIN QUERY PLAN " + sql).fetchall()
    )
    assert "meta_type_namespace_key" in plan
    assert "TEMP B-TREE" not in plan


def test_a_file_made_before_the_list_index_gets_it_at_open(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    Store(str(path)).close()
    db = sqlite3.connect(path)
    db.execute("DROP INDEX meta_type_namespace_key")
    db.execute('CREATE INDEX meta_type_namespace ON meta ("type", "namespace")')
    db.commit()
    db.close()
    Store(str(path)).close()
    indexes = {r[1] for r in sqlite3.connect(path).execute("PRAGMA index_list(meta)")}
    assert "meta_type_namespace_key" in indexes
    assert "meta_type_namespace" not in indexes  # covered by the new one


def test_the_page_cache_is_bounded_by_the_configured_size(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "m.db"), cache_kib=512)
    assert store.db.execute_sql("PRAGMA cache_size").fetchone()[0] == -512


def test_a_new_file_has_large_pages_and_an_old_file_keeps_its_own(tmp_path: Path) -> None:
    new, old = tmp_path / "new.db", tmp_path / "old.db"
    made_before = sqlite3.connect(old)
    made_before.execute("PRAGMA page_size = 4096")
    made_before.execute("PRAGMA journal_mode = wal")
    made_before.close()
    for path in (new, old):
        store = Store(str(path))
        with store.atomic():
            store.put(Resource.parse("ns/pod/a"), {"a": 1})
        store.close()
    assert sqlite3.connect(new).execute("PRAGMA page_size").fetchone()[0] == 16384
    assert sqlite3.connect(old).execute("PRAGMA page_size").fetchone()[0] == 4096
    reopened = Store(str(old))
    assert reopened.get("ns/pod/a").value == {"a": 1}  # type: ignore[union-attr]
    reopened.close()


@pytest.mark.parametrize("page_size", [None, 4096])
def test_the_wal_is_checkpointed_at_the_same_size_whatever_the_page_size(
    tmp_path: Path, page_size: int | None
) -> None:
    path = tmp_path / "m.db"
    if page_size is not None:  # a file made before the store chose its page size
        made_before = sqlite3.connect(path)
        made_before.execute(f"PRAGMA page_size = {page_size}")
        made_before.execute("PRAGMA journal_mode = wal")
        made_before.close()
    store = Store(str(path))
    wal, largest = Path(f"{path}-wal"), 0
    for commit in range(80):  # ~40 MB through the WAL: ten times the checkpoint size
        with store.atomic():
            for i in range(20):
                store.put(Resource.parse(f"ns/pod/c{commit}-{i}"), {"data": "x" * 10_000})
        largest = max(largest, wal.stat().st_size)
    store.close()
    # Checkpointed once it passed the size, so it never grew beyond it by more than a
    # commit (~0.8 MB). At SQLite's default 1,000 pages of 16 KiB it would reach 16 MB.
    assert WAL_CHECKPOINT_BYTES < largest < 2 * WAL_CHECKPOINT_BYTES


def test_a_file_that_is_not_a_store_is_a_store_error_at_open(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE other (x)").connection.close()
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, " * 100)
    for path in (other, text):
        with pytest.raises(StoreError):
            Store(str(path), readonly=True)
