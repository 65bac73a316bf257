"""The outbox: what is staged, sent, acknowledged and deleted, and when."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqtt_metamanager.outbox import Outbox
from mqtt_metamanager.outcome import Result
from mqtt_metamanager.routing import Outgoing
from mqtt_metamanager.store import Store


class Client:
    """Stands in for the MQTT client: numbers each publish, or refuses a wildcard topic."""

    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    def publish(self, out: Outgoing) -> int:
        if "+" in out.topic:
            raise ValueError("wildcards are not allowed in a topic one publishes to")
        self.sent.append(out)
        return len(self.sent)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(str(tmp_path / "m.db"))


def test_acked_rows_are_deleted_and_forgotten_only_after_the_commit(store: Store) -> None:
    client = Client()
    outbox = Outbox(store, client.publish)
    with outbox.transaction():
        a, b = outbox.stage(Result([Outgoing("t", b"a"), Outgoing("t", b"b")]))
    outbox.send([a, b, *outbox.unlogged([Outgoing("t", b"c")])])  # mids 1, 2, 3
    outbox.acked(1)
    outbox.acked(3)  # no row: nothing to delete
    outbox.acked(99)  # not ours
    assert outbox.unacked == 1 and outbox.rows_in_flight == 1
    with pytest.raises(RuntimeError), outbox.transaction():
        raise RuntimeError("rolled back")
    assert outbox.has_deletions  # still owed: the deletion was rolled back
    with outbox.transaction():
        pass
    assert not outbox.has_deletions
    assert [e.id for e in store.outbox_pending()] == [b.id]
    assert outbox.known_rows() == {b.id}
    store.close()


def test_a_row_the_client_refuses_is_deleted_like_an_acked_one(store: Store) -> None:
    dropped: list[int] = []
    outbox = Outbox(store, Client().publish, lambda: dropped.append(1))
    with outbox.transaction():
        bad, good = outbox.stage(Result([Outgoing("a/+/b", b"{}"), Outgoing("a/b", b"{}")]))
    outbox.send([bad, good])
    assert dropped == [1]
    assert outbox.known_rows() == {bad.id, good.id} and outbox.unacked == 1
    outbox.flush()
    assert [e.id for e in store.outbox_pending()] == [good.id]
    store.close()


def test_an_answer_that_changed_nothing_has_no_row(store: Store) -> None:
    outbox = Outbox(store, Client().publish)
    reply = Result(replies=[Outgoing("r", b"{}")])
    with outbox.transaction():
        assert [e.id for e in outbox.stage_answer(reply, store.changes())] == [0]
        before = store.changes()
        store.mark_applied("m", [])  # the input wrote: its reply is logged
        [logged] = outbox.stage_answer(reply, before)
    assert logged.id != 0 and [e.id for e in store.outbox_pending()] == [logged.id]
    store.close()


def test_rows_left_by_the_last_run_are_sent_once(store: Store) -> None:
    client = Client()
    outbox = Outbox(store, client.publish)
    with outbox.transaction():
        _left, ours = outbox.stage(Result([Outgoing("t", b"left"), Outgoing("t", b"ours")]))
    outbox.send([ours])
    assert outbox.resend_left_over()
    assert [p.payload for p in client.sent] == [b"ours", b"left"]
    store.close()
