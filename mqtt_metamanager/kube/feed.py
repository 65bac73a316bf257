"""The change feed behind every watch.

After each commit the message loop calls ``ChangeFeed.notify(revision)``: it sets an
event and returns, whatever the watchers do. The feed's own thread then reads the new
changes once (from its own SQLite connection), if anyone watches, and hands each to the
watchers of its kind through bounded queues. A watcher whose queue is full is dropped (its
stream ends; the client lists again), so a slow or stuck client can neither slow the loop
nor make memory grow.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from dataclasses import dataclass, field

import orjson

from .reader import Change, StoreReader
from .resources import Kind
from .served import event_line, served_json

log = logging.getLogger(__name__)

WATCHER_QUEUE = 256  # changes a watcher may be behind before it is dropped
READ_CHUNK = 1000  # changes read per query


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
    """One watcher's place in the feed: every change of its type after ``start``."""

    stored_type: str
    start: int
    changes: queue.Queue[Delivery] = field(default_factory=lambda: queue.Queue(WATCHER_QUEUE))
    dropped: threading.Event = field(default_factory=threading.Event)


class ChangeFeed:
    """Fans committed changes out to watchers; started and stopped with the service."""

    def __init__(self, reader: StoreReader, revision: int) -> None:
        self.reader = reader
        self.position = revision  # every change up to here has been handed out
        self._committed = revision  # the newest revision the loop said it committed
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        # By stored type: a change is looked at by its type's watchers only (100 idle
        # watchers of another type cost ~2 µs per change, growing with every watcher).
        self._subscriptions: dict[str, set[Subscription]] = {}
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
                    sub.dropped.set()
            self._subscriptions.clear()

    def notify(self, revision: int) -> None:
        """Called by the message loop after committing ``revision``: never blocks."""
        self._committed = revision
        self._wake.set()

    @property
    def watchers(self) -> int:
        with self._lock:
            return sum(len(subs) for subs in self._subscriptions.values())

    def subscribe(self, stored_type: str) -> Subscription:
        """A new watcher; it reads what came before ``start`` from the store itself."""
        with self._lock:
            sub = Subscription(stored_type, self.position)
            self._subscriptions.setdefault(stored_type, set()).add(sub)
            return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._forget(sub)

    def _forget(self, sub: Subscription) -> None:
        subs = self._subscriptions.get(sub.stored_type)
        if subs is not None:
            subs.discard(sub)
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
            with self._lock:
                for change in changes:
                    subs = self._subscriptions.get(change.type)
                    if not subs:
                        continue
                    delivery = Delivery(change)
                    for sub in list(subs):  # a full one is dropped from the set
                        if change.revision > sub.start:
                            self._give(sub, delivery)
                self.position = changes[-1].revision

    def _give(self, sub: Subscription, delivery: Delivery) -> None:
        try:
            sub.changes.put_nowait(delivery)
        except queue.Full:
            log.warning("kube: a watcher of %s fell %d changes behind: dropped",
                        sub.stored_type, WATCHER_QUEUE)  # fmt: skip
            sub.dropped.set()
            self._forget(sub)
