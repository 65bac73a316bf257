"""The answered attempt ids a remote query remembers, to drop the cloud's late answers.

Up to ``meta.remote_query.answered_memory`` (10,000) of them, ~295 a minute in the soak's
mix: full after about half an hour, so their size is RSS growth until then (issue 13). An
``OrderedDict`` of the ids' text took 1.51 MB for 10,000 (tracemalloc: the 36-character
str, the dict entry, the order's node); a uuid kept as its 128-bit number in a plain dict,
with a deque for the order, takes 0.82 MB.
"""

from __future__ import annotations

import uuid
from collections import deque

Key = int | str


def compact(msg_id: str) -> Key:
    """A uuid in its canonical text as its number; any other id as it is (exact either way:
    two different texts never give one key)."""
    if len(msg_id) == 36:
        try:
            value = uuid.UUID(msg_id)
        except ValueError:
            return msg_id
        if str(value) == msg_id:
            return value.int
    return msg_id


class AnsweredIds:
    """The newest ``bound`` ids added; the oldest is forgotten first."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self._known: dict[Key, None] = {}
        self._order: deque[Key] = deque()

    def add(self, msg_id: str) -> None:
        key = compact(msg_id)
        if key in self._known:
            return
        self._known[key] = None
        self._order.append(key)
        while len(self._order) > self.bound:
            del self._known[self._order.popleft()]

    def __contains__(self, msg_id: str) -> bool:
        return compact(msg_id) in self._known

    def __len__(self) -> int:
        return len(self._order)
