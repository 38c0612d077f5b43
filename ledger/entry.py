"""Canonical entry bytes: compact UTF-8 JSON, "type" first, then keys sorted (sans-I/O).

An entry is `{"type":"<kind>/v<version>", ...fields}`. The leaf of the Merkle tree is
exactly these bytes, so the same fields always give the same bytes: no floats (money and
time are integers), integers within ±(2**53 - 1) so JavaScript readers agree, object keys
sorted by code point, no insignificant whitespace, strings escaped only where JSON must.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

ENTRY_BYTES_MAX = 65_535
DEPTH_MAX = 16
SAFE_INTEGER_MAX = 2**53 - 1
ENTRY_TYPE_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{0,62}/v[1-9][0-9]{0,3}")
# Keys that would put a buyer's personal data on the public log in clear. Personal data
# is sealed to the merchant off-log; the log holds only a salted commitment.
PERSONAL_DATA_KEYS = frozenset(
    {
        "address",
        "birthdate",
        "card_number",
        "email",
        "first_name",
        "full_name",
        "ip",
        "ip_address",
        "last_name",
        "phone",
        "postal_address",
        "shipping_address",
        "street",
    }
)

# The entry types the project defines; any `kind/vN` is accepted, these are documented.
KNOWN_ENTRY_TYPES = (
    "identity/v1",
    "order/v1",
    "stock/v1",
    "transfer/v1",
    "escrow/v1",
    "sale/v1",
    "trace/v1",
)


def _check_value(value: object, path: str, depth: int) -> None:
    # Dispatch on the exact type first: this runs for every value of every entry.
    kind = type(value)
    if kind is str:
        if not str(value).isascii():
            try:
                str(value).encode()
            except UnicodeEncodeError:
                raise ValueError(f"{path}: string is not valid Unicode") from None
        return
    if kind is int:
        if not -SAFE_INTEGER_MAX <= int(value) <= SAFE_INTEGER_MAX:  # type: ignore[call-overload]
            raise ValueError(f"{path}: integer outside ±(2**53 - 1)")
        return
    if value is None or kind is bool:
        return
    if depth >= DEPTH_MAX:
        raise ValueError(f"{path}: nested deeper than {DEPTH_MAX}")
    if isinstance(value, float):
        raise ValueError(f"{path}: floats are not canonical; use integers (cents, ms)")
    if isinstance(value, int):
        _check_value(int(value), path, depth)
        return
    if isinstance(value, str):
        _check_value(str(value), path, depth)
        return
    if isinstance(value, list | tuple):
        for position, item in enumerate(value):
            _check_value(item, f"{path}[{position}]", depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: object keys must be strings")
            if key.lower() in PERSONAL_DATA_KEYS:
                raise ValueError(f"{path}.{key}: personal data may not go on the log in clear")
            # Plain ASCII strings and safe integers, most of every entry, are checked
            # here rather than in a call each (and the path is only built for the rest).
            kind = type(item)
            if kind is str and item.isascii():
                continue
            if kind is int and -SAFE_INTEGER_MAX <= item <= SAFE_INTEGER_MAX:
                continue
            _check_value(item, f"{path}.{key}", depth + 1)
        return
    raise ValueError(f"{path}: {type(value).__name__} is not a JSON value")


def encode_entry(entry_type: str, fields: Mapping[str, object]) -> bytes:
    """The canonical bytes of one entry, or ValueError saying what is wrong."""
    if not isinstance(entry_type, str) or not ENTRY_TYPE_PATTERN.fullmatch(entry_type):
        raise ValueError(f"entry type {entry_type!r} is not of the form kind/vN")
    if not isinstance(fields, Mapping):
        raise ValueError("entry fields must be a mapping")
    if "type" in fields:
        raise ValueError('"type" is set by the entry type, not by a field')
    _check_value(fields, "fields", 0)
    head = b'{"type":' + orjson.dumps(entry_type)
    body = orjson.dumps(dict(fields), option=orjson.OPT_SORT_KEYS)
    encoded = head + b"}" if body == b"{}" else head + b"," + body[1:]
    if len(encoded) > ENTRY_BYTES_MAX:
        raise ValueError(f"entry is {len(encoded)} bytes, more than {ENTRY_BYTES_MAX}")
    return encoded


def decode_entry(data: bytes) -> tuple[str, dict[str, Any]]:
    """Parse entry bytes and check they are canonical: ValueError otherwise."""
    if len(data) > ENTRY_BYTES_MAX:
        raise ValueError(f"entry is {len(data)} bytes, more than {ENTRY_BYTES_MAX}")
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"entry is not JSON: {error}") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("type"), str):
        raise ValueError('entry is not an object with a string "type"')
    entry_type = parsed.pop("type")
    if encode_entry(entry_type, parsed) != data:
        raise ValueError("entry bytes are not in canonical form")
    return entry_type, parsed
