"""Test keys: deterministic Ed25519 signers."""

from __future__ import annotations

import hashlib

from nacl.signing import SigningKey

from livecommerce.commerce.identity import b64url_encode


class Signer:
    def __init__(self, name: str) -> None:
        self.signing_key = SigningKey(hashlib.sha256(name.encode()).digest())
        self.identity_id = b64url_encode(bytes(self.signing_key.verify_key))

    def sign(self, message: bytes) -> str:
        return b64url_encode(self.signing_key.sign(message).signature)
