"""Signed notes against the Go implementation's known answer, and tampering."""

from __future__ import annotations

import pytest

from ledger.checkpoint import Checkpoint, CheckpointError
from ledger.merkle import EMPTY_ROOT
from ledger.note import NoteError, Signer, Verifier, key_id, open_note, sign

SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
TEXT = (
    b"If you think cryptography is the answer to your problem,\n"
    b"then you don't know what your problem is.\n"
)
SIGNATURE = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngo"
    "tpRZb6KE6RyyBwJnAM=\n"
).encode()


def test_go_known_answer() -> None:
    signer = Signer.parse(SKEY)
    verifier = Verifier.parse(VKEY)
    assert signer.verifier == verifier
    assert signer.format() == SKEY
    assert verifier.format() == VKEY
    assert verifier.key_id == 0xC74F20A3 == key_id("PeterNeumann", verifier.public_key)
    note = sign(TEXT, signer)
    assert note == TEXT + b"\n" + SIGNATURE
    assert open_note(note, (verifier,)).text == TEXT
    assert repr(signer.seed) not in repr(signer)


def test_tampering_and_unknown_keys() -> None:
    verifier = Verifier.parse(VKEY)
    note = TEXT + b"\n" + SIGNATURE
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(note.replace(b"problem,", b"problem;"), (verifier,))
    other = Signer.generate("Other")
    with pytest.raises(NoteError, match="no valid signature"):
        open_note(note, (other.verifier,))
    # A second, unknown signature is ignored (signed-note: clients ignore unknown keys).
    cosigned = note + other.signature_line(TEXT)
    assert open_note(cosigned, (verifier,)).verified_by == ("PeterNeumann",)
    for broken in (TEXT, note[:-1], note.replace("—".encode(), b"-"), b"x\n\n\n"):
        with pytest.raises(NoteError):
            open_note(broken, (verifier,))
    for bad_key in ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "a+b"):
        with pytest.raises(NoteError):
            Verifier.parse(bad_key)


def test_checkpoint_body() -> None:
    checkpoint = Checkpoint("example.com/log", 0, EMPTY_ROOT)
    body = checkpoint.body()
    assert body == b"example.com/log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    assert Checkpoint.parse(body) == checkpoint
    assert Checkpoint.parse(body + b"extension\n") == checkpoint
    for bad in (b"o\n01\nAA==\n", b"o\n1\n", b"o\n1\nAAAA\n", b"\n1\nx\n", body[:-1]):
        with pytest.raises(CheckpointError):
            Checkpoint.parse(bad)
