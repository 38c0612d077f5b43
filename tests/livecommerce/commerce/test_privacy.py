from __future__ import annotations

import itertools

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
