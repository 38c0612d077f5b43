"""Sealing shipping details: RFC 9180 HPKE to the merchant's X25519 key, and the boxes
sealed before (libsodium SealedBox) still open."""

from __future__ import annotations

import itertools
import json
import secrets

import pytest

from livecommerce.commerce.canonical import canonical_json
from livecommerce.commerce.identity import b64url_decode, b64url_encode
from livecommerce.commerce.privacy import (
    HPKE_INFO,
    OpenedShipping,
    SealedShipping,
    open_shipping,
    seal_shipping,
    verify_commitment,
)
from livecommerce.commerce.results import Reason, Rejected
from tests.livecommerce.commerce import rfc9180
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


def hex_of(name: str) -> bytes:
    return bytes.fromhex(rfc9180.A_1_1[name])


def test_the_reference_reproduces_rfc9180_vector_a_1_1() -> None:
    skem, pkem = rfc9180.derive_key_pair(hex_of("ikmE"))
    skrm, pkrm = rfc9180.derive_key_pair(hex_of("ikmR"))
    assert (skem, pkem, skrm, pkrm) == (
        hex_of("skEm"),
        hex_of("pkEm"),
        hex_of("skRm"),
        hex_of("pkRm"),
    )
    shared_secret, enc = rfc9180.encap(pkrm, skem)
    assert enc == hex_of("enc")
    assert shared_secret == hex_of("shared_secret")
    assert rfc9180.decap(enc, skrm) == shared_secret
    schedule = rfc9180.key_schedule(shared_secret, hex_of("info"))
    assert schedule.key_schedule_context == hex_of("key_schedule_context")
    assert schedule.secret == hex_of("secret")
    assert schedule.key == hex_of("key")
    assert schedule.base_nonce == hex_of("base_nonce")
    assert schedule.exporter_secret == hex_of("exporter_secret")
    enc, ciphertext = rfc9180.seal_base(pkrm, skem, hex_of("info"), hex_of("aad"), hex_of("pt"))
    assert ciphertext == hex_of("ct")
    assert rfc9180.open_base(skrm, enc, hex_of("info"), hex_of("aad"), ciphertext) == hex_of("pt")


def merchant_x25519(signer: Signer) -> tuple[bytes, bytes]:
    """The merchant's X25519 pair, the standard Ed25519 conversion (as libsodium does)."""
    private_key = bytes(signer.signing_key.to_curve25519_private_key())
    public_key = bytes(signer.signing_key.verify_key.to_curve25519_public_key())
    assert rfc9180.public_bytes(private_key) == public_key
    return private_key, public_key


def test_sealed_bytes_are_a_tag_then_plain_rfc9180_base_mode() -> None:
    merchant = Signer("merchant")
    private_key, _ = merchant_x25519(merchant)
    details = {"name": "Zoë Ångström", "city": "東京", "note": 'a "quote" \\ and \n'}
    sealed = seal_shipping(details, merchant.identity_id, lambda n: bytes([7]) * n)
    assert isinstance(sealed, SealedShipping)
    plaintext = canonical_json({"details": details, "salt": b64url_encode(bytes([7]) * 32)})
    assert sealed.sealed[0] == 0x01
    assert len(sealed.sealed) == 1 + 32 + len(plaintext) + 16
    enc, ciphertext = sealed.sealed[1:33], sealed.sealed[33:]
    # Opened by the RFC's steps written out, with the info and the empty aad documented.
    assert rfc9180.open_base(private_key, enc, b"livecommerce/shipping/v1", b"", ciphertext) == (
        plaintext
    )
    assert HPKE_INFO == b"livecommerce/shipping/v1"


def test_what_any_rfc9180_sender_seals_opens() -> None:
    merchant = Signer("merchant")
    _, public_key = merchant_x25519(merchant)
    salt = bytes(range(32))
    details = {"name": "Ann", "street": "1 Quay Street"}
    plaintext = canonical_json({"details": details, "salt": b64url_encode(salt)})
    ephemeral, _ = rfc9180.derive_key_pair(b"some sender's randomness")
    enc, ciphertext = rfc9180.seal_base(public_key, ephemeral, HPKE_INFO, b"", plaintext)
    opened = open_shipping(b"\x01" + enc + ciphertext, merchant.signing_key)
    assert opened == OpenedShipping(details, salt)
    # Another info or a non-empty aad is another message: refused.
    for info, aad in ((b"livecommerce/shipping/v2", b""), (HPKE_INFO, b"x")):
        enc, ciphertext = rfc9180.seal_base(public_key, ephemeral, info, aad, plaintext)
        assert isinstance(open_shipping(b"\x01" + enc + ciphertext, merchant.signing_key), Rejected)


# Sealed by the SealedBox code this module had before HPKE (salt bytes([7]) * 32, to
# Signer("merchant")): the second box's first byte is 0x01, the new format's tag.
LEGACY_DETAILS = {"name": "Zoë Ångström", "street": "1 Quay Street", "city": "Cork"}
LEGACY_COMMITMENT = "3b2188b708850002a0c50bf104713f644b6eb7f5323877d9508aff3574728606"
LEGACY_BOXES = (
    "WDFqzfd8mhpPdu6fYkWpETgeo44lGXufqAuDWPht6R6tTEdM8x-Ce_Q6_Oeu_VS1wkNeIwLOWLdl0I5uSczzwl3kn"
    "mkDHDzange0hGjaSgvT27uI5mrJZ7JjZ_VGtw3dwUsXoKd_X0X6EIP2izpPHySY8-YpCGbBEmqiLVrf5ih1Cj6yw1"
    "42Zsc5qMIXDZk5W-lztLxiri2_HlnrHnhMHe4V0XvR1tQXzuunlsqoVcQ3Ww",
    "AcdVFRWipLCgJiftR0n1oojEPY-1nTXyBRQ9hkhqQ0G5uVcmk8GqPfGQM7NwcDZI_XpNgkH3BagVHnQZusVpTHO94"
    "-9StNq5uJOeyBHfYlwu_Hd6fK9oJHpKgd86JLqRoNq2AXaxC7Z0p-76-S4d6ZJoESBL1zXIbrl20uPyNzWvADvmkk"
    "D4xEKZ7Z6R06ntVkvRA8oOsHq6aETjnMeUkSagCUWasQ7GMHddbuFAkx6qjg",
)


@pytest.mark.parametrize("box", LEGACY_BOXES, ids=["untagged", "first-byte-0x01"])
def test_boxes_sealed_before_hpke_still_open(box: str) -> None:
    sealed = b64url_decode(box)
    assert sealed is not None
    opened = open_shipping(sealed, Signer("merchant").signing_key)
    assert opened == OpenedShipping(LEGACY_DETAILS, bytes([7]) * 32)
    assert verify_commitment(opened.details, opened.salt, LEGACY_COMMITMENT)
    assert isinstance(open_shipping(sealed, Signer("someone").signing_key), Rejected)


def test_every_changed_byte_is_refused() -> None:
    merchant = Signer("merchant")
    sealed = seal_shipping({"name": "Ann"}, merchant.identity_id)
    assert isinstance(sealed, SealedShipping)
    for at in range(len(sealed.sealed)):
        altered = bytearray(sealed.sealed)
        altered[at] ^= 0x01
        refused = open_shipping(bytes(altered), merchant.signing_key)
        assert isinstance(refused, Rejected), at
        assert refused.reason is Reason.BAD_FIELD
    for cut in (sealed.sealed[:-1], sealed.sealed[:49], sealed.sealed[:1], b""):
        assert isinstance(open_shipping(cut, merchant.signing_key), Rejected)
    # A low-order enc (u = 0) makes an all-zero DH output: refused (RFC 9180 7.1.4).
    low_order = b"\x01" + bytes(32) + sealed.sealed[33:]
    assert isinstance(open_shipping(low_order, merchant.signing_key), Rejected)


def seal_raw(merchant: Signer, plaintext: bytes) -> bytes:
    """What anyone holding the merchant's public key can seal: any bytes at all."""
    _, public_key = merchant_x25519(merchant)
    ephemeral = secrets.token_bytes(32)
    enc, ciphertext = rfc9180.seal_base(public_key, ephemeral, HPKE_INFO, b"", plaintext)
    return b"\x01" + enc + ciphertext


_SALT = b64url_encode(bytes(32))
GOOD_PLAINTEXT = canonical_json({"details": {"name": "Ann"}, "salt": _SALT})
# Plaintexts an anonymous sender could seal that are not what seal_shipping writes; Python
# and the browser (tests/livecommerce/test_sealed_page.py) must refuse every one.
MALFORMED_PLAINTEXTS = (
    b"\xff\xfe not utf-8",
    b"not json",
    b"[" * 5000,  # deeper than the JSON parser recurses
    b"[]",
    b"\xef\xbb\xbf" + GOOD_PLAINTEXT,  # a UTF-8 byte order mark first
    json.dumps({"details": {"name": "Ann"}, "salt": _SALT}).encode(),  # not canonical
    GOOD_PLAINTEXT[:-1] + b',"zz":"x"}',  # canonical, but with a key too many
    GOOD_PLAINTEXT.replace(b'"Ann"', b'"\\ud800"'),  # a lone surrogate, escaped
    GOOD_PLAINTEXT.replace(b'"Ann"', b"7"),
    GOOD_PLAINTEXT.replace(b'"Ann"', b'"' + "é".encode() * 201 + b'"'),
    GOOD_PLAINTEXT.replace(b'"name"', b'"Name"'),
    canonical_json({"details": {f"f{i:02}": "x" for i in range(13)}, "salt": _SALT}),
    canonical_json({"details": {}, "salt": _SALT}),
    canonical_json({"details": "Ann", "salt": _SALT}),
    canonical_json({"details": {"name": "Ann"}, "salt": "short"}),
    canonical_json({"details": {"name": "Ann"}, "salt": _SALT + "="}),
    canonical_json({"details": {"name": "Ann"}, "salt": 7}),
)


def test_whatever_opens_is_checked_like_input() -> None:
    merchant = Signer("merchant")
    for plaintext in MALFORMED_PLAINTEXTS:
        refused = open_shipping(seal_raw(merchant, plaintext), merchant.signing_key)
        assert isinstance(refused, Rejected), plaintext[:40]
        assert refused.detail == "sealed details are malformed"
    opened = open_shipping(seal_raw(merchant, GOOD_PLAINTEXT), merchant.signing_key)
    assert opened == OpenedShipping({"name": "Ann"}, bytes(32))
