from __future__ import annotations

from pathlib import Path

from mqtt_metamanager.ledger import UNLOGGED, PublishLedger
from mqtt_metamanager.routing import Outgoing
from mqtt_metamanager.store import Store


def test_acked_rows_are_deleted_and_forgotten_only_after_the_commit(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "m.db"))
    with store.atomic():
        a, b = store.outbox_add([Outgoing("t", b"a"), Outgoing("t", b"b")])
    ledger = PublishLedger()
    ledger.sent(1, a.id)
    ledger.sent(2, b.id)
    ledger.sent(3, UNLOGGED)
    ledger.acked(1)
    ledger.acked(3)  # no row: nothing to delete
    ledger.acked(99)  # not ours
    assert ledger.unacked == 1
    try:
        with store.atomic():
            ledger.delete_acked(store)
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    assert ledger.has_deletions  # still owed: the deletion was rolled back
    with store.atomic():
        ledger.delete_acked(store)
    ledger.committed()
    assert not ledger.has_deletions
    assert [e.id for e in store.outbox_pending()] == [b.id]
    assert ledger.known_rows() == {b.id}
    store.close()


def test_a_dropped_row_is_deleted_like_an_acked_one() -> None:
    ledger = PublishLedger()
    ledger.dropped(7)
    ledger.dropped(UNLOGGED)
    assert ledger.known_rows() == {7}
    assert ledger.unacked == 0
