from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from mqtt_metamanager.envelope import Resource
from mqtt_metamanager.routing import Outgoing
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
def test_put_with_a_version_keeps_an_object_with_a_greater_one(
    tmp_path: Path, stored: str | None, version: int, written: bool
) -> None:
    s = Store(str(tmp_path / "m.db"))
    key = Resource.parse("ns/pod/p")
    if stored is not None:
        s.put(key, {"metadata": {"resourceVersion": stored}, "old": True})
    revision = s.revision
    new = {"metadata": {"resourceVersion": str(version)}}
    assert s.put(key, new, version=version) is written
    obj = s.get("ns/pod/p")
    assert obj is not None and (obj.value == new) is written
    assert s.revision == revision + written  # a kept object makes no revision
    s.close()


def _pods(store: Store, names: list[str], namespace: str = "default") -> None:
    with store.atomic():
        for name in names:
            store.put(Resource(namespace, "pod", name), {"metadata": {"name": name}, "é": [1]})


def test_list_values_are_the_stored_text_joined_in_key_order(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "m.db"))
    _pods(store, ["b", "c", "a"])
    _pods(store, ["z"], namespace="other")
    joined = store.value_texts("default", "pod")
    assert isinstance(joined, bytes)
    stored = sqlite3.connect(tmp_path / "m.db").execute(
        "SELECT value FROM meta WHERE namespace = 'default' ORDER BY key"
    )
    assert joined == ",".join(row[0] for row in stored).encode()
    assert [v["metadata"]["name"] for v in json.loads(b"[" + joined + b"]")] == ["a", "b", "c"]
    assert store.value_texts("nowhere", "pod") == b""
    assert store.value_text("default/pod/a") == b'{"metadata":{"name":"a"},"\\u00e9":[1]}'
    assert store.value_text("default/pod/none") is None


def test_a_list_reads_the_index_in_key_order_without_a_sorter(tmp_path: Path) -> None:
    """A sort of a namespace's values holds all of them in SQLite's sorter (issue 13)."""
    store = Store(str(tmp_path / "m.db"))
    _pods(store, [f"p{i}" for i in range(50)])
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
