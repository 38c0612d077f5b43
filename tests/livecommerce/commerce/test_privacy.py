from __future__ import annotations

import itertools
import json

from nacl.public import SealedBox

from livecommerce.commerce.canonical import canonical_json
from livecommerce.commerce.identity import b64url_encode
from livecommerce.commerce.privacy import (
    OpenedShipping,
    SealedShipping,
    open_shipping,
    seal_shipping,
    verify_commitment,
)
from livecommerce.commerce.results import Reason, Rejected
from tests.livecommerce.commerce.helpers import Signer

DETAILS = {"name": "Ada Lovelace", "street": "12 Rue de la Paix", "city": "Paris"}


def test_seal_open_and_commitment() -> None:
    merchant = Signer("merchant")
    sealed = seal_shipping(DETAILS, merchant.identity_id)
    assert isinstance(sealed, SealedShipping)
    assert b"Ada" not in sealed.sealed
    assert "Ada" not in sealed.commitment_hex
    assert len(sealed.commitment_hex) == 64
    opened = open_shipping(sealed.sealed, merchant.signing_key)
    assert isinstance(opened, OpenedShipping)
    assert opened.details == DETAILS
    assert verify_commitment(opened.details, opened.salt, sealed.commitment_hex)
    altered = {**DETAILS, "city": "Lyon"}
    assert not verify_commitment(altered, opened.salt, sealed.commitment_hex)
    assert not verify_commitment(DETAILS, bytes(32), sealed.commitment_hex)


def test_salt_makes_commitments_differ() -> None:
    merchant = Signer("merchant")
    counter = itertools.count(1)
    first = seal_shipping(DETAILS, merchant.identity_id, lambda n: bytes([next(counter)]) * n)
    second = seal_shipping(DETAILS, merchant.identity_id, lambda n: bytes([next(counter)]) * n)
    assert isinstance(first, SealedShipping)
    assert isinstance(second, SealedShipping)
    assert first.commitment_hex != second.commitment_hex


def test_only_the_merchant_opens() -> None:
    sealed = seal_shipping(DETAILS, Signer("merchant").identity_id)
    assert isinstance(sealed, SealedShipping)
    refused = open_shipping(sealed.sealed, Signer("someone").signing_key)
    assert isinstance(refused, Rejected)
    assert refused.reason is Reason.BAD_FIELD
    garbage = open_shipping(b"x" * 100, Signer("merchant").signing_key)
    assert isinstance(garbage, Rejected)


def test_bad_details_and_keys() -> None:
    merchant = Signer("merchant").identity_id
    for details in ({}, {"Bad Key": "x"}, {"name": "x" * 201}, {f"f{i}": "x" for i in range(13)}):
        assert isinstance(seal_shipping(details, merchant), Rejected)
    bad_key = seal_shipping(DETAILS, "not-a-key")
    assert isinstance(bad_key, Rejected)
    assert bad_key.reason is Reason.BAD_PUBLIC_KEY


def test_whatever_opens_is_checked_like_input() -> None:
    # Anyone holding the merchant's public key can seal any bytes at all.
    merchant = Signer("merchant")
    public_key = merchant.signing_key.verify_key.to_curve25519_public_key()
    salt = b64url_encode(bytes(32))
    details = {"name": "Ann"}
    good = {"details": details, "salt": salt}
    cases = [
        b"\xff\xfe not utf-8",
        b"not json",
        b"[" * 5000,  # deeper than the JSON parser recurses
        b"[]",
        json.dumps(good).encode(),  # JSON, but not the canonical form
        canonical_json({**good, "extra": "x"}),
        canonical_json({"details": details, "salt": "short"}),
        canonical_json({"details": {"name": 7}, "salt": salt}),
        canonical_json({"details": {}, "salt": salt}),
        canonical_json({"details": "Ann", "salt": salt}),
    ]
    for plaintext in cases:
        refused = open_shipping(SealedBox(public_key).encrypt(plaintext), merchant.signing_key)
        assert isinstance(refused, Rejected), plaintext[:40]
        assert refused.detail == "sealed details are malformed"
    opened = open_shipping(
        SealedBox(public_key).encrypt(canonical_json(good)), merchant.signing_key
    )
    assert opened == OpenedShipping(details, bytes(32))
