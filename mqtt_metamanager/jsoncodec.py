"""JSON on the hot path: orjson wherever it gives the value the standard library gives,
the standard library where it does not.

Per 1 KB insert, the standard library's decode (with the checks ``jsoninput.parse_json``
hooks into it) and its three encodes (the stored value, the reply, the forward) were
~12 % of the service's CPU; orjson does each in a tenth of the time (docs/performance.md).
Two differences are kept out of the way:

- orjson reads an integer beyond 64 bits as a float, silently; a document with a run of
  19 or more digits anywhere is read by the standard library instead (a long digit run in a
  string only costs it the fast path).
- orjson refuses to write an integer beyond 64 bits; such a value (it came in through the
  standard library) is written by the standard library too.

Both write UTF-8 as it is (no ``\\u`` escapes) and no spaces. Floats may be written
differently (orjson ``1e-05`` as ``0.00001``), which reads back as the same value: nothing
compares stored text, and ``versions.json_equal`` compares two texts of one writer (a value
with a long integer goes to the standard library, one without to orjson).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# A number orjson might not hold exactly: more digits than 2**63 - 1 has less one. Found
# by mapping every digit to "0" and everything else to " " and looking for 19 zeros: a
# tenth of a regular expression's time (0.9 against 8.3 µs for a 1 KB input).
_LONG_DIGITS = b"0" * 19
_DIGITS_ONLY = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))  # 0-9 -> 0
_SEPARATORS = (",", ":")


class NotFast(Exception):
    """orjson cannot read this document as the standard library would: read it that way."""


def loads_fast(data: bytes) -> Any:
    """``data`` read by orjson, or ``NotFast`` (also for anything orjson refuses: the
    standard library then reads it, and says what is wrong with it, as before)."""
    if _LONG_DIGITS in data.translate(_DIGITS_ONLY):
        raise NotFast
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise NotFast from None


def loads(data: bytes | str) -> Any:
    """Stored JSON text (trusted: written by ``dumps``) as Python values."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        return loads_fast(raw)
    except NotFast:
        return json.loads(raw)


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    """``value`` as compact JSON text in UTF-8, in memory of its own size."""
    try:
        written = orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
        # orjson's result keeps the buffer it wrote into: ~8 KiB behind each payload, small
        # or of 1 KiB (tracemalloc, orjson 3.x). Payloads wait for their PUBACK and served
        # JSON is cached, so the copy (0.2 µs) is kept, not the buffer: the plain bench's
        # peak RSS went 39.8 -> 42.8 MB without it.
        return memoryview(written).tobytes()
    except orjson.JSONEncodeError:  # an integer beyond 64 bits
        text = json.dumps(value, separators=_SEPARATORS, ensure_ascii=False, sort_keys=sort_keys)
        return text.encode()
