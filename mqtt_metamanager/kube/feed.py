"""The change feed behind every watch.

After each commit the message loop calls ``ChangeFeed.notify(revision)``: it sets an
event and returns, whatever the watchers do. The feed's own thread then reads the new
changes once (from its own SQLite connection), if anyone watches, and hands each to the
watchers of its kind through bounded queues. A watcher whose queue stays full for a second
is dropped (its stream ends; the client lists again), so a slow or stuck client can
neither slow the loop nor make memory grow.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import orjson

from .reader import Change, StoreReader
from .resources import Kind
from .served import event_line, served_json

log = logging.getLogger(__name__)

WATCHER_QUEUE = 256  # changes a watcher may be behind, for DROP_AFTER seconds at most
DROP_AFTER = 1.0  # then it is dropped (one budget per chunk, shared by its watchers)
# Changes read per query and handed to each watcher at once: fewer than a watcher may be
# behind, or one chunk could never fit.
READ_CHUNK = 100


class Delivery:
    """One change as every watcher of its kind gets it: the same instance for all, so its
    event line is made once, by the first watcher that sends it. Only that line is kept
    (not the decoded object: ten busy watchers 256 changes behind held megabytes)."""

    __slots__ = ("_line", "change")

    def __init__(self, change: Change) -> None:
        self.change = change
        self._line: bytes | None = None

    def line(self, kind: Kind) -> bytes:
        if self._line is None:
            text = served_json(self.change, kind)
            self._line = event_line(self.change.event, orjson.Fragment(text))
        return self._line


@dataclass(eq=False)
class Subscription:
    """One watcher's place in the feed: every change of its type after ``start``.

    The feed hands over a chunk of changes with one lock and one wake-up, and the watcher
    takes what is pending in one go: per change and watcher, a queue's put and get (a lock
    and a wake-up each) were most of what ten busy watchers cost the message loop under a
    burst."""

    stored_type: str
    start: int
    dropped: threading.Event = field(default_factory=threading.Event)
    _pending: deque[Delivery] = field(default_factory=deque, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self._ready = threading.Condition(self._lock)  # something to take
        self._room = threading.Condition(self._lock)  # room to offer

    def offer(self, deliveries: list[Delivery], wait: float) -> bool:
        """Queues ``deliveries`` once that leaves this watcher at most ``WATCHER_QUEUE``
        changes behind, waiting up to ``wait`` seconds for it to take some; False, with
        nothing queued, if it did not."""
        with self._lock:
            fits = self._room.wait_for(
                lambda: len(self._pending) + len(deliveries) <= WATCHER_QUEUE, wait
            )
            if fits:
                self._pending.extend(deliveries)
                self._ready.notify()
            return fits

    def take(self, timeout: float, most: int) -> list[Delivery]:
        """Up to ``most`` pending changes, oldest first; waits up to ``timeout`` seconds
        for one (an empty list: nothing came, or the watcher was dropped)."""
        with self._lock:
            if not self._pending and not self.dropped.is_set():
                self._ready.wait(timeout)
            count = min(most, len(self._pending))
            taken = [self._pending.popleft() for _ in range(count)]
            if taken:
                self._room.notify()
            return taken

    def drop(self) -> None:
        """Ends the watch: a watcher waiting in ``take`` returns at once."""
        with self._lock:
            self.dropped.set()
            self._ready.notify_all()


class ChangeFeed:
    """Fans committed changes out to watchers; started and stopped with the service."""

    def __init__(self, reader: StoreReader, revision: int) -> None:
        self.reader = reader
        self.position = revision  # every change up to here has been handed out
        self._committed = revision  # the newest revision the loop said it committed
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._subscriptions: dict[str, set[Subscription]] = {}  # by stored type
        self._count = 0
        self._thread = threading.Thread(target=self._run, name="kube-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        with self._lock:
            for subs in self._subscriptions.values():
                for sub in subs:
                    sub.drop()
            self._subscriptions.clear()
            self._count = 0

    def notify(self, revision: int) -> None:
        """Called by the message loop after committing ``revision``: never blocks."""
        self._committed = revision
        self._wake.set()

    @property
    def watchers(self) -> int:
        return self._count  # read by the metrics scrape without the lock

    def subscribe(self, stored_type: str) -> Subscription:
        """A new watcher; it reads what came before ``start`` from the store itself."""
        with self._lock:
            sub = Subscription(stored_type, self.position)
            self._subscriptions.setdefault(stored_type, set()).add(sub)
            self._count += 1
            return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._discard(sub)

    def _discard(self, sub: Subscription) -> None:
        subs = self._subscriptions.get(sub.stored_type)
        if subs is not None and sub in subs:
            subs.discard(sub)
            self._count -= 1
            if not subs:
                del self._subscriptions[sub.stored_type]

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None  # kept: it reads after every commit
        try:
            while not self._stop.is_set():
                self._wake.wait()
                self._wake.clear()
                try:
                    conn = conn or self.reader.connect()
                    self._hand_out(conn)
                except Exception:  # a read failure must not end the feed: try next commit
                    log.exception("kube: the change feed could not read the store")
                    if conn is not None:
                        conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()

    def _hand_out(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if not self._subscriptions:
                # Nobody to hand changes to: nothing to read (under an MQTT burst that
                # read was most of this thread's share of the CPU). A later watcher
                # reads what came before its start from the store itself.
                self.position = max(self.position, self._committed)
                return
        while not self._stop.is_set():
            with self.reader.snapshot(conn) as snap:
                changes = snap.all_changes(self.position, READ_CHUNK)
            if not changes:
                return
            by_type: dict[str, list[Delivery]] = {}
            for change in changes:
                by_type.setdefault(change.type, []).append(Delivery(change))
            with self._lock:
                # Like the Kubernetes API server's watch cache: a watcher that is behind
                # gets a moment to catch up (a burst committed at once is more than any
                # watcher's queue), one time budget for all; stuck past it, it is dropped.
                budget_end = time.monotonic() + DROP_AFTER
                for stored_type, deliveries in by_type.items():
                    for sub in list(self._subscriptions.get(stored_type, ())):
                        wanted = [d for d in deliveries if d.change.revision > sub.start]
                        wait = max(0.0, budget_end - time.monotonic())
                        if wanted and not sub.offer(wanted, wait):
                            self._drop(sub)
                self.position = changes[-1].revision

    def _drop(self, sub: Subscription) -> None:
        log.warning("kube: a watcher of %s fell %d changes behind: dropped",
                    sub.stored_type, WATCHER_QUEUE)  # fmt: skip
        sub.drop()
        self._discard(sub)
