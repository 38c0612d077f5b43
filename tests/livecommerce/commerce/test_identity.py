from __future__ import annotations

import pytest

from livecommerce.commerce.identity import (
    IdentityRegistry,
    Register,
    Registered,
    SessionAuthority,
    SessionGranted,
    TokenValid,
    b64url_decode,
    b64url_encode,
    clean_display_name,
    registration_bytes,
    session_bytes,
)
from livecommerce.commerce.results import Reason, Rejected
from tests.livecommerce.commerce.helpers import Signer

NOW_MS = 1_700_000_000_000
SECRET = b"s" * 32


def register(registry: IdentityRegistry, signer: Signer, name: str = "Ada") -> object:
    message = registration_bytes(signer.identity_id, name, NOW_MS)
    return registry.register(
        Register(signer.identity_id, name, NOW_MS, signer.sign(message)), NOW_MS
    )


def test_b64url_is_strict() -> None:
    assert b64url_decode(b64url_encode(b"\x00\xff" * 16), 32) == b"\x00\xff" * 16
    assert b64url_decode("AA==") is None  # padding
    assert b64url_decode("AB") is None  # stray low bits: not canonical
    assert b64url_decode("A+/A") is None  # standard alphabet
    assert b64url_decode("AAAA", 32) is None  # wrong length


def test_register_then_get() -> None:
    registry = IdentityRegistry()
    signer = Signer("ada")
    result = register(registry, signer, " Ada\u0000\u202e Lovelace\n")
    assert isinstance(result, Registered)
    assert result.identity.display_name == "Ada Lovelace"
    assert registry.get(signer.identity_id) == result.identity
    entry_type, fields = result.to_entry()
    assert entry_type == "identity/v1"
    assert "Ada" not in repr(fields)


def test_register_refusals() -> None:
    registry = IdentityRegistry()
    signer, other = Signer("a"), Signer("b")
    message = registration_bytes(signer.identity_id, "Ada", NOW_MS)
    wrong_key = registry.register(
        Register(signer.identity_id, "Ada", NOW_MS, other.sign(message)), NOW_MS
    )
    assert isinstance(wrong_key, Rejected)
    assert wrong_key.reason is Reason.BAD_SIGNATURE
    bad_key = registry.register(Register("short", "Ada", NOW_MS, signer.sign(message)), NOW_MS)
    assert isinstance(bad_key, Rejected)
    assert bad_key.reason is Reason.BAD_PUBLIC_KEY
    empty = register(registry, signer, "\u0000\u0007  ")
    assert isinstance(empty, Rejected)
    assert empty.reason is Reason.BAD_DISPLAY_NAME
    too_long = register(registry, signer, "x" * 41)
    assert isinstance(too_long, Rejected)
    assert too_long.reason is Reason.BAD_DISPLAY_NAME
    stale = registry.register(
        Register(signer.identity_id, "Ada", NOW_MS, signer.sign(message)), NOW_MS + 10**7
    )
    assert isinstance(stale, Rejected)
    assert stale.reason is Reason.STALE
    assert len(registry) == 0
    assert isinstance(register(registry, signer), Registered)
    again = register(registry, signer)
    assert isinstance(again, Rejected)
    assert again.reason is Reason.ALREADY_REGISTERED


def test_registry_capacity() -> None:
    registry = IdentityRegistry(identities_max=1)
    assert isinstance(register(registry, Signer("a")), Registered)
    full = register(registry, Signer("b"))
    assert isinstance(full, Rejected)
    assert full.reason is Reason.CAPACITY


def test_clean_display_name() -> None:
    assert clean_display_name("a\tb\u200b\u0085c") == "abc"


@pytest.fixture
def authority() -> tuple[SessionAuthority, Signer]:
    registry = IdentityRegistry()
    signer = Signer("ada")
    assert isinstance(register(registry, signer), Registered)
    return SessionAuthority(registry, SECRET, challenge_ttl_ms=1000, session_ttl_ms=5000), signer


def test_session_round_trip(authority: tuple[SessionAuthority, Signer]) -> None:
    sessions, signer = authority
    challenge = sessions.issue_challenge(NOW_MS)
    assert not isinstance(challenge, Rejected)
    signature = signer.sign(session_bytes(challenge.challenge, signer.identity_id))
    granted = sessions.open_session(challenge.challenge, signer.identity_id, signature, NOW_MS + 10)
    assert isinstance(granted, SessionGranted)
    assert granted.identity.identity_id == signer.identity_id
    checked = sessions.check_token(granted.token, NOW_MS + 100)
    assert checked == TokenValid(signer.identity_id, NOW_MS + 10 + 5000)
    # Single use.
    reused = sessions.open_session(challenge.challenge, signer.identity_id, signature, NOW_MS + 20)
    assert isinstance(reused, Rejected)
    assert reused.reason is Reason.UNKNOWN_CHALLENGE
    # Expired token; another secret; tampered token.
    expired = sessions.check_token(granted.token, NOW_MS + 10 + 5000)
    assert isinstance(expired, Rejected)
    assert expired.reason is Reason.TOKEN_EXPIRED
    other = SessionAuthority(sessions.registry, b"t" * 32)
    assert isinstance(other.check_token(granted.token, NOW_MS), Rejected)
    identity_id, expires, mac = granted.token.split(".")
    tampered = f"{identity_id}.{int(expires) + 1}.{mac}"
    refused = sessions.check_token(tampered, NOW_MS)
    assert isinstance(refused, Rejected)
    assert refused.reason is Reason.BAD_TOKEN
    for junk in ["", "a.b", "a.b.c.d", "x" * 500, f"{identity_id}.-1.{mac}"]:
        assert isinstance(sessions.check_token(junk, NOW_MS), Rejected)


def test_session_refusals(authority: tuple[SessionAuthority, Signer]) -> None:
    sessions, signer = authority
    challenge = sessions.issue_challenge(NOW_MS)
    assert not isinstance(challenge, Rejected)
    stranger = Signer("stranger")
    unknown = sessions.open_session(
        challenge.challenge,
        stranger.identity_id,
        stranger.sign(session_bytes(challenge.challenge, stranger.identity_id)),
        NOW_MS,
    )
    assert isinstance(unknown, Rejected)
    assert unknown.reason is Reason.UNKNOWN_IDENTITY
    forged = sessions.open_session(
        challenge.challenge,
        signer.identity_id,
        stranger.sign(session_bytes(challenge.challenge, signer.identity_id)),
        NOW_MS,
    )
    assert isinstance(forged, Rejected)
    assert forged.reason is Reason.BAD_SIGNATURE
    late = sessions.open_session(
        challenge.challenge,
        signer.identity_id,
        signer.sign(session_bytes(challenge.challenge, signer.identity_id)),
        NOW_MS + 1000,
    )
    assert isinstance(late, Rejected)
    assert late.reason is Reason.CHALLENGE_EXPIRED


def test_challenges_are_bounded_and_pruned() -> None:
    registry = IdentityRegistry()
    sessions = SessionAuthority(registry, SECRET, challenge_ttl_ms=1000, challenges_max=2)
    assert not isinstance(sessions.issue_challenge(NOW_MS), Rejected)
    assert not isinstance(sessions.issue_challenge(NOW_MS), Rejected)
    full = sessions.issue_challenge(NOW_MS + 1)
    assert isinstance(full, Rejected)
    assert full.reason is Reason.CAPACITY
    assert not isinstance(sessions.issue_challenge(NOW_MS + 1000), Rejected)
