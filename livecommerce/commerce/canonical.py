"""Canonical bytes for signing.

The format, exactly (a browser reproduces it with `JSON.stringify` over sorted keys):

- The value is a JSON object whose keys are ASCII `[a-z0-9_]` names. Values are strings,
  integers in the JavaScript safe range (|n| <= 2**53 - 1), `true`, `false`, `null`,
  arrays, or nested objects of the same kind. Floats are refused: money and time are
  integers (`price_cents`, `time_ms`).
- Keys are sorted (by code point; keys are ASCII so this equals JavaScript's default
  `Array.prototype.sort`), at every level.
- No whitespace: separators are `,` and `:`.
- Strings are UTF-8; non-ASCII characters are written as themselves (not `\\uXXXX`);
  `"` and `\\` are escaped with a backslash; control characters U+0000..U+001F are
  escaped as `\\b \\t \\n \\f \\r` or `\\u00xx` (lowercase hex), which is what
  `JSON.stringify` emits. Lone surrogates are refused.
- What is signed is a domain-separation prefix, a newline, then that JSON:
  `b"livecommerce/order/v1\\n" + canonical_json(fields)`. The prefix keeps a signature
  made for one purpose from being valid for another.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

import orjson

JSON_SAFE_INTEGER_MAX: Final = 2**53 - 1
CANONICAL_BYTES_MAX: Final = 64 * 1024
CANONICAL_DEPTH_MAX: Final = 8

DOMAIN_REGISTRATION: Final = "livecommerce/registration/v1"
DOMAIN_SESSION: Final = "livecommerce/session/v1"
DOMAIN_ORDER: Final = "livecommerce/order/v1"
DOMAIN_LISTING: Final = "livecommerce/listing/v1"
DOMAIN_STOCK: Final = "livecommerce/stock/v1"
DOMAIN_SHIPPING: Final = "livecommerce/shipping/v1"
DOMAIN_ORDER_STEP: Final = "livecommerce/order-step/v1"
DOMAIN_PAYOUTS: Final = "livecommerce/payouts/v1"
DOMAIN_REVIEW: Final = "livecommerce/review/v1"
DOMAIN_TRACE: Final = "livecommerce/trace/v1"
DOMAIN_GROUP: Final = "livecommerce/group/v1"
DOMAIN_BID: Final = "livecommerce/bid/v1"

_KEY = re.compile(r"[a-z0-9_]{1,64}")
# Keys already found to be [a-z0-9_] names: signed payloads use a few dozen, so each is
# matched against the pattern once (bounded, in case callers make up many).
_KEYS_CHECKED_MAX: Final = 4096
_keys_checked: set[str] = set()


class CanonicalError(ValueError):
    """The value cannot be written canonically; the message says why."""


def _check(value: object, depth: int) -> None:
    if depth > CANONICAL_DEPTH_MAX:
        raise CanonicalError(f"nested deeper than {CANONICAL_DEPTH_MAX}")
    # The exact types first: this runs for every value of every signed message.
    kind = type(value)
    if kind is str:
        if not str(value).isascii():
            _check_unicode(str(value))
        return
    if kind is int:
        if abs(int(value)) > JSON_SAFE_INTEGER_MAX:  # type: ignore[call-overload]
            raise CanonicalError(f"integer {value} is outside the JSON safe range")
        return
    if value is None or kind is bool:
        return
    if isinstance(value, float):
        raise CanonicalError("floats are not allowed; use integers (cents, milliseconds)")
    if isinstance(value, int):  # a subclass (bool was handled above)
        _check(int(value), depth)
        return
    if isinstance(value, str):
        _check(str(value), depth)
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check(item, depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key not in _keys_checked:
                if not isinstance(key, str) or _KEY.fullmatch(key) is None:
                    raise CanonicalError(f"key {key!r} is not an ASCII [a-z0-9_] name")
                if len(_keys_checked) < _KEYS_CHECKED_MAX:
                    _keys_checked.add(key)
            _check(item, depth + 1)
        return
    raise CanonicalError(f"type {type(value).__name__} is not allowed")


def _check_unicode(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalError("string is not valid Unicode (lone surrogate)") from None


def canonical_json(value: Mapping[str, object]) -> bytes:
    """The canonical JSON bytes of `value` (see the module docstring).

    orjson writes it: with sorted keys its output is byte for byte what
    `json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` gives
    (checked for every Unicode code point in `test_canonical.py`), which is what
    `JSON.stringify` gives over sorted keys, at a fraction of the cost."""
    _check(value, 0)
    try:
        encoded = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as error:
        raise CanonicalError(f"cannot be written as JSON: {error}") from None
    if len(encoded) > CANONICAL_BYTES_MAX:
        raise CanonicalError(f"canonical form is over {CANONICAL_BYTES_MAX} bytes")
    return encoded


def signing_bytes(domain: str, fields: Mapping[str, object]) -> bytes:
    """`domain` + newline + canonical JSON of `fields`: exactly what gets signed."""
    assert "\n" not in domain, domain
    assert domain.startswith("livecommerce/"), domain
    return domain.encode("ascii") + b"\n" + canonical_json(fields)
