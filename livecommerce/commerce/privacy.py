"""Shipping details: sealed to the merchant, committed on the ledger, never in clear.

- The merchant's encryption key is its Ed25519 identity key converted to X25519
  (`VerifyKey.to_curve25519_public_key`; the private side is the clamped first half of
  SHA-512(seed), `SigningKey.to_curve25519_private_key`), so a merchant has one key pair
  for both, and the host panel derives it from the same seed in the browser.
- `seal_shipping` makes a random 32-byte salt and seals
  `canonical_json({"details": {...}, "salt": <base64url salt>})` with RFC 9180 HPKE, base
  mode, single shot: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM,
  info `livecommerce/shipping/v1`, empty aad. The suite is one a browser opens with
  WebCrypto alone (static/js/sealed.js) and any RFC 9180 library opens too. The sealed
  bytes are `0x01 || enc (32 bytes) || ciphertext` and are stored off-ledger.
  `cryptography`'s HPKE does the RFC's work; the tests hold it to the RFC's vector A.1.1
  through the RFC's steps written out (tests/livecommerce/commerce/rfc9180.py).
- The ledger holds only `commitment = SHA-256(salt || canonical_json(details))` (hex).
  Without the salt, guessing an address does not confirm it; with the box opened, the
  merchant (or an auditor the merchant shows it to) checks it with `verify_commitment`.
- Boxes sealed before (a libsodium SealedBox: ephemeral key || XSalsa20-Poly1305 box, no
  tag) still open here, so older data directories keep working; only Python opens them.
  Their first byte is the low byte of a random X25519 key, so it is 0x01 for one box in
  256: the tag alone cannot tell the formats apart. `open_shipping` therefore tries HPKE
  when the tag is 0x01 and the SealedBox when that fails. Both are authenticated, so a
  wrong guess is refused by the AEAD, never misread.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey

from livecommerce.commerce.canonical import DOMAIN_SHIPPING, CanonicalError, canonical_json
from livecommerce.commerce.identity import b64url_decode, b64url_encode, decode_public_key
from livecommerce.commerce.results import Reason, Rejected

SALT_BYTES: Final = 32
SHIPPING_FIELDS_MAX: Final = 12
SHIPPING_VALUE_CHARS_MAX: Final = 200
SEALED_BYTES_MAX: Final = 8 * 1024
# RFC 9180 section 7: KEM 0x0020, KDF 0x0001, AEAD 0x0001. One suite, named once.
HPKE_SUITE: Final = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
HPKE_INFO: Final = DOMAIN_SHIPPING.encode("ascii")  # b"livecommerce/shipping/v1"
SEAL_VERSION_HPKE: Final = b"\x01"
HPKE_ENC_BYTES: Final = 32  # Nenc of DHKEM(X25519, HKDF-SHA256)
AEAD_TAG_BYTES: Final = 16  # Nt of AES-128-GCM
_FIELD = re.compile(r"[a-z0-9_]{1,32}")


@dataclass(frozen=True, slots=True)
class SealedShipping:
    sealed: bytes  # Off-ledger: only the merchant can open it.
    commitment_hex: str  # On-ledger.


@dataclass(frozen=True, slots=True)
class OpenedShipping:
    details: dict[str, str]
    salt: bytes


def check_details(details: Mapping[str, str]) -> Rejected | None:
    if not 1 <= len(details) <= SHIPPING_FIELDS_MAX:
        return Rejected(Reason.BAD_FIELD, f"shipping details need 1..{SHIPPING_FIELDS_MAX} fields")
    for key, value in details.items():
        if not isinstance(key, str) or _FIELD.fullmatch(key) is None:
            return Rejected(Reason.BAD_FIELD, "shipping field names are 1..32 of [a-z0-9_]")
        if not isinstance(value, str) or len(value) > SHIPPING_VALUE_CHARS_MAX:
            return Rejected(
                Reason.BAD_FIELD, f"shipping values are text of at most {SHIPPING_VALUE_CHARS_MAX}"
            )
    return None


def commitment(details: Mapping[str, str], salt: bytes) -> str:
    assert len(salt) == SALT_BYTES
    return hashlib.sha256(salt + canonical_json(details)).hexdigest()


def verify_commitment(details: Mapping[str, str], salt: bytes, commitment_hex: str) -> bool:
    if len(salt) != SALT_BYTES:
        return False
    try:
        expected = commitment(details, salt)
    except CanonicalError:
        return False
    return hmac.compare_digest(expected, commitment_hex)


def merchant_encryption_key(merchant_id: str) -> PublicKey | Rejected:
    verify_key = decode_public_key(merchant_id)
    if isinstance(verify_key, Rejected):
        return verify_key
    try:
        return verify_key.to_curve25519_public_key()
    except CryptoError:
        return Rejected(Reason.BAD_PUBLIC_KEY, "key cannot be converted to X25519")


def seal_shipping(
    details: Mapping[str, str],
    merchant_id: str,
    entropy: Callable[[int], bytes] = secrets.token_bytes,
) -> SealedShipping | Rejected:
    refused = check_details(details)
    if refused is not None:
        return refused
    key = merchant_encryption_key(merchant_id)
    if isinstance(key, Rejected):
        return key
    salt = entropy(SALT_BYTES)
    try:
        plaintext = canonical_json({"details": dict(details), "salt": b64url_encode(salt)})
    except CanonicalError as error:
        return Rejected(Reason.BAD_FIELD, str(error))
    try:
        # Base mode, single shot (sequence 0), empty aad: enc || ciphertext.
        sealed = HPKE_SUITE.encrypt(
            plaintext, X25519PublicKey.from_public_bytes(bytes(key)), info=HPKE_INFO
        )
    except ValueError:  # a low-order key: the DH output would be all zeros (RFC 9180 7.1.4)
        return Rejected(Reason.BAD_PUBLIC_KEY, "key cannot be used for X25519")
    return SealedShipping(SEAL_VERSION_HPKE + sealed, commitment(details, salt))


def open_shipping(sealed: bytes, merchant_key: SigningKey) -> OpenedShipping | Rejected:
    """The merchant opens sealed details with its Ed25519 signing key (either format)."""
    if len(sealed) > SEALED_BYTES_MAX:
        return Rejected(Reason.BAD_FIELD, "sealed details are too large")
    private_key = merchant_key.to_curve25519_private_key()
    plaintext = None
    if sealed[:1] == SEAL_VERSION_HPKE:
        plaintext = _open_hpke(sealed[1:], bytes(private_key))
    if plaintext is None:  # not tagged, or a SealedBox whose first byte happens to be 0x01
        plaintext = _open_sealed_box(sealed, private_key)
    if plaintext is None:
        return Rejected(Reason.BAD_FIELD, "cannot open: not sealed to this merchant")
    return _parse_opened(plaintext)


def _open_hpke(sealed: bytes, private_key: bytes) -> bytes | None:
    if len(sealed) < HPKE_ENC_BYTES + AEAD_TAG_BYTES:
        return None
    try:
        return HPKE_SUITE.decrypt(
            sealed, X25519PrivateKey.from_private_bytes(private_key), info=HPKE_INFO
        )
    except (InvalidTag, ValueError):  # ValueError: a low-order enc
        return None


def _open_sealed_box(sealed: bytes, private_key: PrivateKey) -> bytes | None:
    """The format before HPKE; opened so that boxes already on disk stay readable."""
    try:
        return SealedBox(private_key).decrypt(sealed)
    except CryptoError:
        return None


def _parse_opened(plaintext: bytes) -> OpenedShipping | Rejected:
    """The opened bytes must be exactly what `seal_shipping` writes: anyone holding the
    merchant's public key can seal, so what opens is checked like any input, and only the
    canonical form is taken (the browser takes the same set, static/js/sealed.js)."""
    malformed = Rejected(Reason.BAD_FIELD, "sealed details are malformed")
    try:
        value = json.loads(plaintext.decode("utf-8"))
    except (ValueError, RecursionError):  # ValueError covers bad UTF-8 and bad JSON
        return malformed
    if not isinstance(value, dict):
        return malformed
    salt_text, details = value.get("salt"), value.get("details")
    salt = b64url_decode(salt_text, SALT_BYTES) if isinstance(salt_text, str) else None
    if salt is None or not isinstance(details, dict) or check_details(details) is not None:
        return malformed
    try:
        canonical = canonical_json({"details": details, "salt": salt_text})
    except CanonicalError:
        return malformed
    if canonical != plaintext:
        return malformed
    return OpenedShipping(details, salt)
