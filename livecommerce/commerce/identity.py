"""Ed25519 identities, challenge-signed sessions and stateless session tokens.

- An identity is an Ed25519 public key. `identity_id` is the key in base64url without
  padding (43 characters for 32 bytes). Signatures are base64url without padding too.
- Registration proves possession of the key: the client signs
  `livecommerce/registration/v1\\n` + canonical JSON of
  `{"display_name": <as sent>, "public_key": <identity_id>, "time_ms": <client ms>}`.
  The display name is then cleaned (control characters removed, whitespace trimmed) and
  must be 1..40 characters.
- A session starts with a server challenge (random, expires after `challenge_ttl_ms`,
  single use). The client signs `livecommerce/session/v1\\n` + canonical JSON of
  `{"challenge": <challenge>, "public_key": <identity_id>}` and gets a token.
- The token is `<identity_id>.<expires_at_ms>.<mac>` where `mac` is base64url
  HMAC-SHA-256 over `livecommerce/token/v1\\n<identity_id>.<expires_at_ms>` with the server
  secret, so any process holding the secret checks it without state.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from livecommerce.commerce.canonical import (
    DOMAIN_REGISTRATION,
    DOMAIN_SESSION,
    CanonicalError,
    signing_bytes,
)
from livecommerce.commerce.events import Entry, Event
from livecommerce.commerce.results import Reason, Rejected, all_integers, all_text

PUBLIC_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
DISPLAY_NAME_CHARS_MAX: Final = 40
DISPLAY_NAME_INPUT_CHARS_MAX: Final = 400
CHALLENGE_BYTES: Final = 32
SESSION_SECRET_BYTES_MIN: Final = 32
TOKEN_CHARS_MAX: Final = 200
PUBLIC_KEYS_CACHED_MAX: Final = 65_536

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_TOKEN_DOMAIN: Final = b"livecommerce/token/v1\n"


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 4648 section 5)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, length_bytes: int | None = None) -> bytes | None:
    """Strict inverse of `b64url_encode`: None for anything else (padding, bad length)."""
    if not isinstance(text, str) or len(text) > 4096 or _BASE64URL.fullmatch(text) is None:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    if b64url_encode(data) != text:  # Refuse non-canonical encodings (stray low bits).
        return None
    if length_bytes is not None and len(data) != length_bytes:
        return None
    return data


def decode_public_key(identity_id: str) -> VerifyKey | Rejected:
    if type(identity_id) is str:
        return _decode_public_key(identity_id)
    return Rejected(Reason.BAD_PUBLIC_KEY, "public key must be 32 bytes in base64url")


@functools.lru_cache(maxsize=PUBLIC_KEYS_CACHED_MAX)
def _decode_public_key(identity_id: str) -> VerifyKey | Rejected:
    """Every order of a buyer names the same key: decode it once (a bounded cache)."""
    raw = b64url_decode(identity_id, PUBLIC_KEY_BYTES)
    if raw is None:
        return Rejected(Reason.BAD_PUBLIC_KEY, "public key must be 32 bytes in base64url")
    return VerifyKey(raw)


def verify_signature(identity_id: str, message: bytes, signature: str) -> Rejected | None:
    """None when `signature` (base64url, 64 bytes) is `identity_id`'s signature of `message`."""
    key = decode_public_key(identity_id)
    if isinstance(key, Rejected):
        return key
    raw_signature = b64url_decode(signature, SIGNATURE_BYTES)
    if raw_signature is None:
        return Rejected(Reason.BAD_SIGNATURE, "signature must be 64 bytes in base64url")
    try:
        key.verify(message, raw_signature)
    except BadSignatureError:
        return Rejected(Reason.BAD_SIGNATURE, "signature does not verify")
    return None


def clean_display_name(name: str) -> str:
    """Drop control and format characters (Unicode Cc, Cf), collapse whitespace."""
    kept = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf"))
    return " ".join(kept.split())


def registration_bytes(public_key: str, display_name: str, time_ms: int) -> bytes:
    fields = {"display_name": display_name, "public_key": public_key, "time_ms": time_ms}
    return signing_bytes(DOMAIN_REGISTRATION, fields)


def session_bytes(challenge: str, public_key: str) -> bytes:
    return signing_bytes(DOMAIN_SESSION, {"challenge": challenge, "public_key": public_key})


@dataclass(frozen=True, slots=True)
class Identity:
    identity_id: str  # base64url public key
    display_name: str
    registered_at_ms: int


@dataclass(frozen=True, slots=True)
class Register:
    """Command: register `public_key` with a display name, signed by that key."""

    public_key: str
    display_name: str
    time_ms: int
    signature: str


@dataclass(frozen=True, slots=True)
class Registered(Event):
    identity: Identity

    def to_entry(self) -> Entry:
        # The display name is personal data: it stays off the ledger.
        return "identity/v1", {
            "action": "registered",
            "identity_id": self.identity.identity_id,
            "time_ms": self.identity.registered_at_ms,
        }


class IdentityRegistry:
    """Known identities, bounded by `identities_max`."""

    def __init__(self, identities_max: int = 1_000_000, registration_freshness_ms: int = 300_000):
        assert identities_max > 0
        assert registration_freshness_ms > 0
        self.identities_max = identities_max
        self.registration_freshness_ms = registration_freshness_ms
        self._identities: dict[str, Identity] = {}

    def __len__(self) -> int:
        return len(self._identities)

    def get(self, identity_id: str) -> Identity | None:
        return self._identities.get(identity_id)

    def register(self, command: Register, now_ms: int) -> Registered | Rejected:
        if not all_text(command.public_key, command.display_name, command.signature):
            return Rejected(Reason.BAD_FIELD, "public_key, display_name, signature are text")
        if not all_integers(command.time_ms):
            return Rejected(Reason.BAD_FIELD, "time_ms must be an integer")
        if len(command.display_name) > DISPLAY_NAME_INPUT_CHARS_MAX:
            return Rejected(Reason.BAD_DISPLAY_NAME, "display name is too long")
        if abs(now_ms - command.time_ms) > self.registration_freshness_ms:
            return Rejected(Reason.STALE, "registration time is too far from the server clock")
        try:
            message = registration_bytes(command.public_key, command.display_name, command.time_ms)
        except CanonicalError as error:
            return Rejected(Reason.BAD_FIELD, str(error))
        refused = verify_signature(command.public_key, message, command.signature)
        if refused is not None:
            return refused
        name = clean_display_name(command.display_name)
        if not 1 <= len(name) <= DISPLAY_NAME_CHARS_MAX:
            return Rejected(
                Reason.BAD_DISPLAY_NAME,
                f"display name must be 1..{DISPLAY_NAME_CHARS_MAX} visible characters",
            )
        if command.public_key in self._identities:
            return Rejected(Reason.ALREADY_REGISTERED, "this key is already registered")
        if len(self._identities) >= self.identities_max:
            return Rejected(Reason.CAPACITY, "identity table is full")
        identity = Identity(command.public_key, name, now_ms)
        self._identities[identity.identity_id] = identity
        return Registered(identity)

    def restore(self, identity: Identity) -> None:
        """Put back an identity replayed from storage (trusted input)."""
        self._identities[identity.identity_id] = identity


@dataclass(frozen=True, slots=True)
class Challenge:
    challenge: str
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class SessionGranted:
    identity: Identity
    token: str
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class TokenValid:
    identity_id: str
    expires_at_ms: int


class SessionAuthority:
    """Issues challenges, turns signed challenges into tokens, checks tokens.

    `entropy(n)` returns n random bytes; injected so tests are deterministic.
    """

    def __init__(
        self,
        registry: IdentityRegistry,
        secret: bytes,
        challenge_ttl_ms: int = 60_000,
        session_ttl_ms: int = 12 * 3600 * 1000,
        challenges_max: int = 100_000,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        assert len(secret) >= SESSION_SECRET_BYTES_MIN, "session secret must be >= 32 bytes"
        assert challenge_ttl_ms > 0
        assert session_ttl_ms > 0
        assert challenges_max > 0
        self.registry = registry
        self.challenge_ttl_ms = challenge_ttl_ms
        self.session_ttl_ms = session_ttl_ms
        self.challenges_max = challenges_max
        self._secret = secret
        self._entropy = entropy
        self._challenges: dict[str, int] = {}  # challenge -> expires_at_ms, insertion-ordered

    def _prune(self, now_ms: int) -> None:
        # Insertion order is expiry order (constant TTL, time does not go back), so stop at
        # the first live one: each call costs only what it removes.
        while self._challenges:
            challenge, expires_at_ms = next(iter(self._challenges.items()))
            if expires_at_ms > now_ms:
                break
            del self._challenges[challenge]

    def issue_challenge(self, now_ms: int) -> Challenge | Rejected:
        self._prune(now_ms)
        if len(self._challenges) >= self.challenges_max:
            return Rejected(Reason.CAPACITY, "too many open challenges; retry shortly")
        challenge = b64url_encode(self._entropy(CHALLENGE_BYTES))
        expires_at_ms = now_ms + self.challenge_ttl_ms
        self._challenges[challenge] = expires_at_ms
        return Challenge(challenge, expires_at_ms)

    def admit_challenge(self, challenge: str, expires_at_ms: int) -> None:
        """A challenge issued elsewhere (scaled out, kept in shared storage and claimed
        once from there): answerable here until it expires or is used."""
        self._challenges[challenge] = expires_at_ms

    def withdraw_challenge(self, challenge: str) -> None:
        self._challenges.pop(challenge, None)

    def open_session(
        self, challenge: str, public_key: str, signature: str, now_ms: int
    ) -> SessionGranted | Rejected:
        if not all_text(challenge, public_key, signature):
            return Rejected(Reason.BAD_FIELD, "challenge, public_key, signature are text")
        expires_at_ms = self._challenges.get(challenge)
        if expires_at_ms is None:
            return Rejected(Reason.UNKNOWN_CHALLENGE, "no such challenge (or already used)")
        if now_ms >= expires_at_ms:
            del self._challenges[challenge]
            return Rejected(Reason.CHALLENGE_EXPIRED, "challenge expired; ask for a new one")
        identity = self.registry.get(public_key)
        if identity is None:
            return Rejected(Reason.UNKNOWN_IDENTITY, "register this key first")
        refused = verify_signature(public_key, session_bytes(challenge, public_key), signature)
        if refused is not None:
            return refused  # The challenge stays usable: a forged answer must not burn it.
        del self._challenges[challenge]
        token_expires_at_ms = now_ms + self.session_ttl_ms
        return SessionGranted(
            identity, self._token(public_key, token_expires_at_ms), token_expires_at_ms
        )

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self._secret, _TOKEN_DOMAIN + payload.encode(), hashlib.sha256)
        return b64url_encode(digest.digest())

    def _token(self, identity_id: str, expires_at_ms: int) -> str:
        payload = f"{identity_id}.{expires_at_ms}"
        return f"{payload}.{self._mac(payload)}"

    def check_token(self, token: str, now_ms: int) -> TokenValid | Rejected:
        """Stateless: valid MAC and not expired. Does not consult the registry."""
        if not all_text(token) or len(token) > TOKEN_CHARS_MAX:
            return Rejected(Reason.BAD_TOKEN, "malformed token")
        parts = token.split(".")
        if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 16:
            return Rejected(Reason.BAD_TOKEN, "malformed token")
        identity_id, expires_text, mac = parts
        if not hmac.compare_digest(
            mac.encode(), self._mac(f"{identity_id}.{expires_text}").encode()
        ):
            return Rejected(Reason.BAD_TOKEN, "token signature does not match")
        expires_at_ms = int(expires_text)
        if now_ms >= expires_at_ms:
            return Rejected(Reason.TOKEN_EXPIRED, "session expired; sign a new challenge")
        return TokenValid(identity_id, expires_at_ms)
