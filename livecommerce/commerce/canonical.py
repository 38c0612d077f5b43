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

import json
import re
from collections.abc import Mapping
from typing import Final

JSON_SAFE_INTEGER_MAX: Final = 2**53 - 1
CANONICAL_BYTES_MAX: Final = 64 * 1024
CANONICAL_DEPTH_MAX: Final = 8

DOMAIN_REGISTRATION: Final = "livecommerce/registration/v1"
DOMAIN_SESSION: Final = "livecommerce/session/v1"
DOMAIN_ORDER: Final = "livecommerce/order/v1"
DOMAIN_LISTING: Final = "livecommerce/listing/v1"
DOMAIN_STOCK: Final = "livecommerce/stock/v1"
DOMAIN_SHIPPING: Final = "livecommerce/shipping/v1"

_KEY = re.compile(r"[a-z0-9_]{1,64}")


class CanonicalError(ValueError):
    """The value cannot be written canonically; the message says why."""


def _check(value: object, depth: int) -> None:
    if depth > CANONICAL_DEPTH_MAX:
        raise CanonicalError(f"nested deeper than {CANONICAL_DEPTH_MAX}")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > JSON_SAFE_INTEGER_MAX:
            raise CanonicalError(f"integer {value} is outside the JSON safe range")
        return
    if isinstance(value, float):
        raise CanonicalError("floats are not allowed; use integers (cents, milliseconds)")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise CanonicalError("string is not valid Unicode (lone surrogate)") from None
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check(item, depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or _KEY.fullmatch(key) is None:
                raise CanonicalError(f"key {key!r} is not an ASCII [a-z0-9_] name")
            _check(item, depth + 1)
        return
    raise CanonicalError(f"type {type(value).__name__} is not allowed")


def canonical_json(value: Mapping[str, object]) -> bytes:
    """The canonical JSON bytes of `value` (see the module docstring)."""
    _check(value, 0)
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    encoded = text.encode("utf-8")
    if len(encoded) > CANONICAL_BYTES_MAX:
        raise CanonicalError(f"canonical form is over {CANONICAL_BYTES_MAX} bytes")
    return encoded


def signing_bytes(domain: str, fields: Mapping[str, object]) -> bytes:
    """`domain` + newline + canonical JSON of `fields`: exactly what gets signed."""
    assert "\n" not in domain, domain
    assert domain.startswith("livecommerce/"), domain
    return domain.encode("ascii") + b"\n" + canonical_json(fields)
