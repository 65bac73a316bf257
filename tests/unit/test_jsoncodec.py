"""jsoncodec and jsoninput.parse_json against the standard library: the fast path must give
the very values ``json`` gives, and refuse what the service refused before it."""

from __future__ import annotations

import json
import math
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqtt_metamanager import jsoncodec
from mqtt_metamanager.jsoninput import MAX_JSON_DEPTH, BadMessage, parse_json

# Integers far beyond 64 bits, floats of every size, text beyond ASCII: what orjson alone
# would read or write differently.
numbers = (
    st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**19])
)
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 == 1.0 would hide a float)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


@settings(max_examples=400, deadline=None)
@given(values)
def test_what_is_written_reads_back_as_the_standard_library_reads_it(value: Any) -> None:
    text = jsoncodec.dumps(value)
    assert _same(jsoncodec.loads(text), json.loads(text))
    assert _same(parse_json(text), json.loads(text))
    assert _same(jsoncodec.loads(text), value)


@settings(max_examples=200, deadline=None)
@given(values)
def test_the_standard_librarys_text_reads_the_same_both_ways(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False, indent=1)):
        assert _same(parse_json(text.encode()), json.loads(text))


@pytest.mark.parametrize(
    "text",
    [
        b"123456789012345678901234567890",
        b'{"rv": 18446744073709551616}',
        b"[-9223372036854775809]",
        b'{"pad": "1234567890123456789", "n": 1}',
    ],
)
def test_long_numbers_are_exact(text: bytes) -> None:
    assert _same(parse_json(text), json.loads(text))
    assert (
        jsoncodec.dumps(json.loads(text))
        == json.dumps(json.loads(text), separators=(",", ":")).encode()
    )


def test_text_is_utf8_and_compact_whichever_encoder_writes_it() -> None:
    assert jsoncodec.dumps({"é": [1, "ü"]}) == '{"é":[1,"ü"]}'.encode()
    assert jsoncodec.dumps({"é": [10**20]}) == '{"é":[100000000000000000000]}'.encode()
    assert jsoncodec.dumps({"b": 1, "a": 2}, sort_keys=True) == b'{"a":2,"b":1}'
    assert jsoncodec.dumps({"b": 10**20, "a": 2}, sort_keys=True) == (
        b'{"a":2,"b":100000000000000000000}'
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"NaN", "bad_json"),
        (b"[Infinity]", "bad_json"),
        (b'{"a": 1e400}', "bad_json"),
        (b'"\\ud800"', "bad_encoding"),
        (b'["\\udfff", 12345678901234567890]', "bad_encoding"),
        (b'"\xff"', "bad_encoding"),
        (b"\xef\xbb\xbf{}", "bad_json"),
        (b"[1,]", "bad_json"),
        (b'{"a":1} x', "bad_json"),
        # orjson refuses the surrogate; the depth is what was reported before it.
        (b"[" * 65 + b'"\\ud800"' + b"]" * 65, "too_deep"),
    ],
)
def test_what_the_service_refused_it_still_refuses(payload: bytes, reason: str) -> None:
    with pytest.raises(BadMessage) as err:
        parse_json(payload)
    assert err.value.reason == reason


def test_what_is_written_holds_memory_of_its_own_size() -> None:
    # orjson's own result kept ~8 KiB behind each: 512 payloads awaiting PUBACK were 4 MB.
    value = {"metadata": {"name": "p"}, "spec": {"pad": "x" * 1000}}
    tracemalloc.start()
    try:
        kept = [jsoncodec.dumps(value) for _ in range(200)]
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held / len(kept) < 2 * len(kept[0])


def _nest(depth: int, inner: bytes, as_dict: bool) -> bytes:
    opening, closing = (b'{"k":', b"}") if as_dict else (b"[", b"]")
    return opening * depth + inner + closing * depth


@pytest.mark.parametrize("as_dict", [False, True])
@pytest.mark.parametrize("long_number", [False, True])  # the fast path and the slow one
def test_nesting_is_refused_one_level_past_the_limit_and_not_at_it(
    as_dict: bool, long_number: bool
) -> None:
    # The top value is at depth 1, so MAX_JSON_DEPTH containers may nest with nothing in
    # the innermost; a value in it, or one more container, is too deep.
    leaf = b"12345678901234567890" if long_number else b"1"
    empty = b"{}" if as_dict else b"[]"
    assert parse_json(_nest(MAX_JSON_DEPTH - 1, empty, as_dict)) is not None
    assert parse_json(_nest(MAX_JSON_DEPTH - 1, leaf, as_dict)) is not None
    for too_deep in (_nest(MAX_JSON_DEPTH, leaf, as_dict), _nest(MAX_JSON_DEPTH, empty, as_dict)):
        with pytest.raises(BadMessage) as err:
            parse_json(too_deep)
        assert err.value.reason == "too_deep"


def test_brackets_inside_strings_do_not_make_a_shallow_document_too_deep() -> None:
    brackets = b"[{" * MAX_JSON_DEPTH
    assert parse_json(b'{"a": "' + brackets + b'"}') == {"a": brackets.decode()}
    shallow_many = b"[" + b",".join([b"[]"] * (2 * MAX_JSON_DEPTH)) + b"]"
    assert len(parse_json(shallow_many)) == 2 * MAX_JSON_DEPTH


def test_a_long_digit_run_is_read_exactly_wherever_it_is() -> None:
    assert parse_json(b'{"n": 123456789012345678901}')["n"] == 123456789012345678901
    assert parse_json(b'[1, "a", 98765432109876543210987]')[2] == 98765432109876543210987
    assert parse_json(b'{"n": 1234567890123456789}')["n"] == 1234567890123456789  # 19 digits
