"""RFC 9180 HPKE, base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-128-GCM, written
step by step from the RFC, for the tests only: it shows every intermediate value, so it is
checked against the RFC's test vector A.1.1, and then serves as an independent oracle for
what `privacy.py` seals with `cryptography`'s HPKE (which hides those values) and for what
static/js/sealed.js opens. Section numbers are the RFC's.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

KEM_ID: Final = 0x0020  # DHKEM(X25519, HKDF-SHA256)
KDF_ID: Final = 0x0001  # HKDF-SHA256
AEAD_ID: Final = 0x0001  # AES-128-GCM
N_SECRET: Final = 32
N_SK: Final = 32
N_K: Final = 16
N_N: Final = 12
N_H: Final = 32
MODE_BASE: Final = 0x00


def i2osp(value: int, length: int) -> bytes:
    return value.to_bytes(length, "big")


# Section 4.1 ("KEM" for the KEM's own derivations) and 5.1 ("HPKE" for the key schedule).
KEM_SUITE_ID: Final = b"KEM" + i2osp(KEM_ID, 2)
HPKE_SUITE_ID: Final = b"HPKE" + i2osp(KEM_ID, 2) + i2osp(KDF_ID, 2) + i2osp(AEAD_ID, 2)


def extract(salt: bytes, ikm: bytes) -> bytes:
    """RFC 5869 HKDF-Extract: HMAC-SHA256 keyed with the salt (empty is allowed)."""
    return hmac.digest(salt, ikm, "sha256")


def expand(prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-Expand."""
    assert length <= 255 * N_H
    output, block, counter = b"", b"", 1
    while len(output) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        output += block
        counter += 1
    return output[:length]


def labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return extract(salt, b"HPKE-v1" + suite_id + label + ikm)


def labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return expand(prk, i2osp(length, 2) + b"HPKE-v1" + suite_id + label + info, length)


def public_bytes(private_key: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(private_key).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def derive_key_pair(ikm: bytes) -> tuple[bytes, bytes]:
    """Section 7.1.3 for X25519: (skm, pkm)."""
    dkp_prk = labeled_extract(KEM_SUITE_ID, b"", b"dkp_prk", ikm)
    private_key = labeled_expand(KEM_SUITE_ID, dkp_prk, b"sk", b"", N_SK)
    return private_key, public_bytes(private_key)


def dh(private_key: bytes, public_key: bytes) -> bytes:
    # `exchange` refuses an all-zero output, as section 7.1.4 requires.
    return X25519PrivateKey.from_private_bytes(private_key).exchange(
        X25519PublicKey.from_public_bytes(public_key)
    )


def extract_and_expand(dh_output: bytes, kem_context: bytes) -> bytes:
    eae_prk = labeled_extract(KEM_SUITE_ID, b"", b"eae_prk", dh_output)
    return labeled_expand(KEM_SUITE_ID, eae_prk, b"shared_secret", kem_context, N_SECRET)


def encap(recipient_public: bytes, ephemeral_private: bytes) -> tuple[bytes, bytes]:
    """Section 4.1 Encap with a given ephemeral key: (shared_secret, enc)."""
    enc = public_bytes(ephemeral_private)
    shared_secret = extract_and_expand(
        dh(ephemeral_private, recipient_public), enc + recipient_public
    )
    return shared_secret, enc


def decap(enc: bytes, recipient_private: bytes) -> bytes:
    kem_context = enc + public_bytes(recipient_private)
    return extract_and_expand(dh(recipient_private, enc), kem_context)


@dataclass(frozen=True)
class Schedule:
    key_schedule_context: bytes
    secret: bytes
    key: bytes
    base_nonce: bytes
    exporter_secret: bytes


def key_schedule(shared_secret: bytes, info: bytes) -> Schedule:
    """Section 5.1, base mode: psk and psk_id are empty."""
    psk_id_hash = labeled_extract(HPKE_SUITE_ID, b"", b"psk_id_hash", b"")
    info_hash = labeled_extract(HPKE_SUITE_ID, b"", b"info_hash", info)
    context = bytes([MODE_BASE]) + psk_id_hash + info_hash
    secret = labeled_extract(HPKE_SUITE_ID, shared_secret, b"secret", b"")
    return Schedule(
        key_schedule_context=context,
        secret=secret,
        key=labeled_expand(HPKE_SUITE_ID, secret, b"key", context, N_K),
        base_nonce=labeled_expand(HPKE_SUITE_ID, secret, b"base_nonce", context, N_N),
        exporter_secret=labeled_expand(HPKE_SUITE_ID, secret, b"exp", context, N_H),
    )


def seal_base(
    recipient_public: bytes, ephemeral_private: bytes, info: bytes, aad: bytes, plaintext: bytes
) -> tuple[bytes, bytes]:
    """Sections 5.1 and 6.1, single shot (sequence 0: the nonce is base_nonce): (enc, ct)."""
    shared_secret, enc = encap(recipient_public, ephemeral_private)
    schedule = key_schedule(shared_secret, info)
    return enc, AESGCM(schedule.key).encrypt(schedule.base_nonce, plaintext, aad)


def open_base(
    recipient_private: bytes, enc: bytes, info: bytes, aad: bytes, ciphertext: bytes
) -> bytes:
    schedule = key_schedule(decap(enc, recipient_private), info)
    return AESGCM(schedule.key).decrypt(schedule.base_nonce, ciphertext, aad)


# RFC 9180 appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, Base
# Setup Information, and the first of its encryptions (sequence number 0). Hex, as printed.
A_1_1: Final = {
    "info": "4f6465206f6e2061204772656369616e2055726e",
    "ikmE": "7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234",
    "pkEm": "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
    "skEm": "52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736",
    "ikmR": "6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037",
    "pkRm": "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
    "skRm": "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
    "enc": "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
    "shared_secret": "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc",
    "key_schedule_context": "00725611c9d98c07c03f60095cd32d400d8347d45ed670"
    "97bbad50fc56da742d07cb6cffde367bb0565ba28bb02c90744a20f5ef37f3052352"
    "6106f637abb05449",
    "secret": "12fff91991e93b48de37e7daddb52981084bd8aa64289c3788471d9a9712f397",
    "key": "4531685d41d65f03dc48f6b8302c05b0",
    "base_nonce": "56d890e5accaaf011cff4b7d",
    "exporter_secret": "45ff1c2e220db587171952c0592d5f5ebe103f1561a2614e38f2ffd47e99e3f8",
    "pt": "4265617574792069732074727574682c20747275746820626561757479",
    "aad": "436f756e742d30",
    "ct": "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a9"
    "6d8770ac83d07bea87e13c512a",
}
