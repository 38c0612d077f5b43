from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from livecommerce.commerce.canonical import (
    CanonicalError,
    canonical_json,
    signing_bytes,
)


def test_sorted_keys_no_whitespace_nested() -> None:
    value = {"b": 1, "a": {"z": [1, "x", None, True], "c": False}}
    assert canonical_json(value) == b'{"a":{"c":false,"z":[1,"x",null,true]},"b":1}'


def test_non_ascii_is_raw_utf8_and_controls_escaped_like_json_stringify() -> None:
    # JSON.stringify({n: "é\n\u0001\"\\"}) === '{"n":"é\\n\\u0001\\"\\\\"}'
    assert canonical_json({"n": 'é\n\u0001"\\'}) == '{"n":"é\\n\\u0001\\"\\\\"}'.encode()


def test_golden_order_bytes() -> None:
    fields = {
        "buyer_id": "AAAA",
        "order_id": "o-1",
        "price_cents": 1999,
        "quantity": 2,
        "sale_id": "s1",
        "time_ms": 1700000000000,
    }
    assert signing_bytes("livecommerce/order/v1", fields) == (
        b"livecommerce/order/v1\n"
        b'{"buyer_id":"AAAA","order_id":"o-1","price_cents":1999,"quantity":2,'
        b'"sale_id":"s1","time_ms":1700000000000}'
    )


def reference(value: object) -> bytes:
    """The definition the module docstring gives, written with the standard library."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def test_every_character_is_written_as_the_reference_writes_it() -> None:
    everything = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    for start in range(0, len(everything), 10_000):  # a message is at most 64 KiB
        value = {"text": everything[start : start + 10_000]}
        assert canonical_json(value) == reference(value)


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.from_regex(r"[a-z0-9_]{1,8}", fullmatch=True), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.from_regex(r"[a-z0-9_]{1,8}", fullmatch=True), values, max_size=6))
def test_any_allowed_value_is_written_as_the_reference_writes_it(value: dict[str, object]) -> None:
    assert canonical_json(value) == reference(value)


@pytest.mark.parametrize(
    "value",
    [
        {"price": 1.5},
        {"n": 2**53},
        {"Upper": 1},
        {"n": "\ud800"},
        {"n": b"bytes"},
        {"n": {"n": {"n": {"n": {"n": {"n": {"n": {"n": {"n": {}}}}}}}}}},
        {"n": "x" * 70_000},
    ],
)
def test_refuses_what_cannot_be_canonical(value: dict[str, object]) -> None:
    with pytest.raises(CanonicalError):
        canonical_json(value)


def test_golden_signed_order() -> None:
    """The worked example in docs/commerce.md."""
    from livecommerce.commerce.identity import b64url_encode, verify_signature
    from livecommerce.commerce.orders import PlaceOrder

    key = SigningKey(bytes(range(32)))
    buyer_id = b64url_encode(bytes(key.verify_key))
    assert buyer_id == "A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg"
    order = PlaceOrder("01J9ZK3Q8W-a7", "flash-42", buyer_id, 2, 1999, 1760000000000, "")
    message = order.signing_bytes()
    assert message == (
        b"livecommerce/order/v1\n"
        b'{"buyer_id":"A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg","order_id":"01J9ZK3Q8W-a7",'
        b'"price_cents":1999,"quantity":2,"sale_id":"flash-42","time_ms":1760000000000}'
    )
    signature = (
        "BTAQFFQ3aD4bcQsventkZc1haQ2uuM7aBBGujX7m_35n14d0lFpYpdizQWNjQF7vL0N1GEmEt3eVNHo9L_qBBQ"
    )
    assert b64url_encode(key.sign(message).signature) == signature
    assert verify_signature(buyer_id, message, signature) is None
