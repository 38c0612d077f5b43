"""Shipping details: sealed to the merchant, committed on the ledger, never in clear.

- The merchant's encryption key is its Ed25519 identity key converted to Curve25519
  (`VerifyKey.to_curve25519_public_key`), so a merchant has one key pair for both.
- `seal_shipping` makes a random 32-byte salt and seals
  `canonical_json({"details": {...}, "salt": <base64url salt>})` in a libsodium SealedBox
  (anonymous sender). The sealed bytes are stored off-ledger.
- The ledger holds only `commitment = SHA-256(salt || canonical_json(details))` (hex).
  Without the salt, guessing an address does not confirm it; with the sealed box opened,
  the merchant (or an auditor the merchant shows it to) checks it with `verify_commitment`.
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

from nacl.exceptions import CryptoError
from nacl.public import PublicKey, SealedBox
from nacl.signing import SigningKey

from livecommerce.commerce.canonical import CanonicalError, canonical_json
from livecommerce.commerce.identity import b64url_decode, b64url_encode, decode_public_key
from livecommerce.commerce.results import Reason, Rejected

SALT_BYTES: Final = 32
SHIPPING_FIELDS_MAX: Final = 12
SHIPPING_VALUE_CHARS_MAX: Final = 200
SEALED_BYTES_MAX: Final = 8 * 1024
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
        return Rejected(Reason.BAD_PUBLIC_KEY, "key cannot be converted to Curve25519")


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
    sealed = SealedBox(key).encrypt(plaintext)
    return SealedShipping(bytes(sealed), commitment(details, salt))


def open_shipping(sealed: bytes, merchant_key: SigningKey) -> OpenedShipping | Rejected:
    """The merchant opens sealed details with its Ed25519 signing key."""
    if len(sealed) > SEALED_BYTES_MAX:
        return Rejected(Reason.BAD_FIELD, "sealed details are too large")
    try:
        plaintext = SealedBox(merchant_key.to_curve25519_private_key()).decrypt(sealed)
    except CryptoError:
        return Rejected(Reason.BAD_FIELD, "cannot open: not sealed to this merchant")
    return _parse_opened(plaintext)


def _parse_opened(plaintext: bytes) -> OpenedShipping | Rejected:
    """The opened bytes must be exactly what `seal_shipping` writes: anyone holding the
    merchant's public key can seal (the sender is anonymous), so what opens is checked
    like any input, and only the canonical form is taken."""
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
