"""C2SP signed-note (c2sp.org/signed-note) with Ed25519 keys (sans-I/O).

A note is UTF-8 text ending in a newline, a blank line, then signature lines
"— <name> <base64(key id || signature)>". The key id is the first four bytes of
SHA-256(name || 0x0A || 0x01 || public key), big-endian (signed-note §Ed25519).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.signing

ED25519_ALGORITHM = 0x01
SIGNATURE_PREFIX = "— "
NOTE_BYTES_MAX = 1_000_000
SIGNATURES_MAX = 100


class NoteError(ValueError):
    """A malformed key or note, or a note without a valid signature by a known key."""


def _valid_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_id(name: str, public_key: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ED25519_ALGORITHM]) + public_key)
    return int.from_bytes(digest.digest()[:4], "big")


@dataclass(frozen=True)
class Verifier:
    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        if not _valid_name(self.name):
            raise NoteError(f"invalid key name {self.name!r}")
        if len(self.public_key) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.public_key)

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """Parse "<name>+<hex key id>+<base64(0x01 || public key)>"."""
        parts = vkey.strip().split("+", 2)  # base64 key data may itself hold "+"
        if len(parts) != 3:
            raise NoteError("a verifier key has the form name+hash+keydata")
        name, id_hex, data_b64 = parts
        data = _b64decode(data_b64, "verifier key data")
        if len(data) != 33 or data[0] != ED25519_ALGORITHM:
            raise NoteError("verifier key data is not an Ed25519 key")
        verifier = cls(name, data[1:])
        if len(id_hex) != 8 or id_hex != f"{verifier.key_id:08x}":
            raise NoteError("verifier key hash does not match its name and key")
        return verifier

    def format(self) -> str:
        data = base64.b64encode(bytes([ED25519_ALGORITHM]) + self.public_key).decode()
        return f"{self.name}+{self.key_id:08x}+{data}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            nacl.signing.VerifyKey(self.public_key).verify(message, signature)
        except (nacl.exceptions.BadSignatureError, ValueError):
            return False
        return True


@dataclass(frozen=True)
class Signer:
    name: str
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not _valid_name(self.name):
            raise NoteError(f"invalid key name {self.name!r}")
        if len(self.seed) != 32:
            raise NoteError("an Ed25519 private key seed is 32 bytes")
        object.__setattr__(self, "_signing_key", nacl.signing.SigningKey(self.seed))

    @classmethod
    def generate(cls, name: str) -> Signer:
        return cls(name, bytes(nacl.signing.SigningKey.generate()))

    @classmethod
    def parse(cls, skey: str) -> Signer:
        """Parse "PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>"."""
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
            raise NoteError("a signer key has the form PRIVATE+KEY+name+hash+keydata")
        name, id_hex, data_b64 = parts[2:]
        data = _b64decode(data_b64, "signer key data")
        if len(data) != 33 or data[0] != ED25519_ALGORITHM:
            raise NoteError("signer key data is not an Ed25519 key")
        signer = cls(name, data[1:])
        if id_hex != f"{signer.verifier.key_id:08x}":
            raise NoteError("signer key hash does not match its name and key")
        return signer

    def format(self) -> str:
        data = base64.b64encode(bytes([ED25519_ALGORITHM]) + self.seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_id:08x}+{data}"

    @property
    def verifier(self) -> Verifier:
        signing_key: nacl.signing.SigningKey = self.__dict__["_signing_key"]
        return Verifier(self.name, bytes(signing_key.verify_key))

    def signature_line(self, text: bytes) -> bytes:
        signing_key: nacl.signing.SigningKey = self.__dict__["_signing_key"]
        signature = signing_key.sign(text).signature
        blob = self.verifier.key_id.to_bytes(4, "big") + signature
        return f"{SIGNATURE_PREFIX}{self.name} {base64.b64encode(blob).decode()}\n".encode()


def _b64decode(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode() != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def _check_text(text: bytes) -> None:
    if not text.endswith(b"\n"):
        raise NoteError("note text must end in a newline")
    try:
        decoded = text.decode()
    except UnicodeDecodeError:
        raise NoteError("note text is not UTF-8") from None
    if any(ord(c) < 0x20 and c != "\n" for c in decoded):
        raise NoteError("note text holds a control character")


def sign(text: bytes, signer: Signer) -> bytes:
    """The signed note: text, a blank line, one signature line."""
    _check_text(text)
    return text + b"\n" + signer.signature_line(text)


@dataclass(frozen=True)
class OpenedNote:
    text: bytes
    verified_by: tuple[str, ...]


def open_note(note: bytes, verifiers: tuple[Verifier, ...]) -> OpenedNote:
    """Split a signed note and check it carries a valid signature by one of `verifiers`.

    Unknown signatures are ignored (signed-note: clients MUST ignore unknown keys); a
    signature that claims a known key but does not verify is an error.
    """
    if len(note) > NOTE_BYTES_MAX:
        raise NoteError("note is too large")
    split = note.rfind(b"\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, signature_block = note[: split + 1], note[split + 2 :]
    _check_text(text)
    if not signature_block.endswith(b"\n"):
        raise NoteError("note signatures must end in a newline")
    lines = signature_block[:-1].split(b"\n")
    if len(lines) > SIGNATURES_MAX:
        raise NoteError("note has too many signatures")
    known = {(v.name, v.key_id): v for v in verifiers}
    verified: list[str] = []
    for raw in lines:
        try:
            line = raw.decode()
        except UnicodeDecodeError:
            raise NoteError("signature line is not UTF-8") from None
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError("malformed signature line")
        name, _, blob_b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
        if not _valid_name(name) or not blob_b64 or " " in blob_b64:
            raise NoteError("malformed signature line")
        blob = _b64decode(blob_b64, "signature")
        if len(blob) < 5:
            raise NoteError("signature is too short")
        verifier = known.get((name, int.from_bytes(blob[:4], "big")))
        if verifier is None:
            continue
        if not verifier.verify(text, blob[4:]):
            raise NoteError(f"invalid signature by {name}")
        verified.append(name)
    if not verified:
        raise NoteError("note has no valid signature by a known key")
    return OpenedNote(text, tuple(verified))
