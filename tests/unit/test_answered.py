"""answered.py: the answered attempt ids, bounded, exact, compact."""

from __future__ import annotations

import tracemalloc
import uuid

from mqtt_metamanager.answered import AnsweredIds, compact


def test_the_newest_ids_are_kept_up_to_the_bound() -> None:
    ids = [str(uuid.uuid4()) for _ in range(5)]
    answered = AnsweredIds(3)
    for msg_id in [*ids, ids[-1]]:  # a repeat is one id
        answered.add(msg_id)
    assert len(answered) == 3
    assert [msg_id in answered for msg_id in ids] == [False, False, True, True, True]
    none_kept = AnsweredIds(0)
    none_kept.add(ids[0])
    assert ids[0] not in none_kept and len(none_kept) == 0


def test_ids_are_matched_exactly_whatever_their_form() -> None:
    canonical = str(uuid.uuid4())
    answered = AnsweredIds(10)
    answered.add(canonical)
    answered.add("not-a-uuid")
    assert canonical in answered and "not-a-uuid" in answered
    # Other texts of the same uuid are other ids, as they were when ids were kept as text.
    assert canonical.upper() not in answered
    assert canonical.replace("-", "") not in answered
    assert compact(canonical) != compact(canonical.upper())


def test_ten_thousand_ids_take_under_a_megabyte() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        answered = AnsweredIds(10_000)
        for _ in range(10_000):  # each id's text dropped after, as the service drops it
            answered.add(str(uuid.uuid4()))
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(answered) == 10_000
    assert used < 1_000_000, used  # an OrderedDict of the texts: ~1.5 MB
