"""A watcher's place in the change feed (``kube.feed.Subscription``): bounded, in order,
and woken when there is something to take or its watch must end."""

from __future__ import annotations

import threading

from mqtt_metamanager.kube.feed import WATCHER_QUEUE, Delivery, Subscription
from mqtt_metamanager.kube.reader import Change
from tests.support import wait_until


def delivery(revision: int) -> Delivery:
    return Delivery(Change(revision, "ADDED", "pod", "default", f"p{revision}", "{}"))


def revisions(taken: list[Delivery]) -> list[int]:
    return [d.change.revision for d in taken]


def test_changes_are_taken_oldest_first_and_a_full_queue_refuses_more() -> None:
    sub = Subscription("pod", 0)
    assert all(sub.offer(delivery(r)) for r in range(1, WATCHER_QUEUE + 1))
    assert not sub.offer(delivery(WATCHER_QUEUE + 1))
    assert revisions(sub.take(3, 0)) == [1, 2, 3]
    assert sub.offer(delivery(WATCHER_QUEUE + 1))  # room again
    rest = sub.take(WATCHER_QUEUE, 0)
    assert revisions(rest) == list(range(4, WATCHER_QUEUE + 2))
    assert sub.take(10, 0) == []


def test_a_waiting_watcher_is_woken_by_changes_and_by_its_end() -> None:
    sub = Subscription("pod", 0)
    got: list[Delivery] = []

    def watcher() -> None:
        while not sub.dropped.is_set():
            got.extend(sub.take(64, 60))

    thread = threading.Thread(target=watcher, daemon=True)
    thread.start()
    sub.offer(delivery(1))
    sub.offer(delivery(2))
    sub.wake()
    wait_until(lambda: len(got) == 2, 10, "the watcher to be woken by the changes")
    sub.close()
    thread.join(10)
    # Before, a dropped or stopped watch waited out its timeoutSeconds (up to an hour).
    assert not thread.is_alive(), "the watcher was not woken by the end of its watch"
    assert revisions(got) == [1, 2]
