"""RFC 6962 tree and proofs against the shared vectors, the RFC's known answers and
random trees (hypothesis)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    ProofError,
    leaf_hash,
    root_from_inclusion_proof,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from tests.support import ROOT, require

VECTORS = ROOT.parent / "shared" / "vectors" / "rfc6962-proofs"


def _cases(kind: str) -> list[Path]:
    folder = VECTORS / kind
    return sorted(folder.rglob("*.json")) if folder.is_dir() else []


def _b64(value: Any) -> bytes:
    return base64.b64decode(value or "")


def _proof(value: Any) -> list[bytes]:
    return [_b64(item) for item in value or []]


def test_vectors_are_present() -> None:
    require(VECTORS.is_dir(), f"shared vectors not found at {VECTORS}")
    assert len(_cases("inclusion")) > 50
    assert len(_cases("consistency")) > 50


@pytest.mark.parametrize("path", _cases("inclusion"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_inclusion_vector(path: Path) -> None:
    case = json.loads(path.read_text())
    arguments = (
        case["leafIdx"],
        case["treeSize"],
        _b64(case["leafHash"]),
        _proof(case["proof"]),
        _b64(case["root"]),
    )
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*arguments)
    else:
        verify_inclusion(*arguments)


@pytest.mark.parametrize("path", _cases("consistency"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_consistency_vector(path: Path) -> None:
    case = json.loads(path.read_text())
    arguments = (
        case["size1"],
        case["size2"],
        _proof(case["proof"]),
        _b64(case["root1"]),
        _b64(case["root2"]),
    )
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*arguments)
    else:
        verify_consistency(*arguments)


def test_known_answers() -> None:
    # RFC 6962 §2.1: MTH({}) = SHA-256(); the vectors' 8-leaf tree is built from these
    # inputs (RFC 6962 test data, as in the vectors' happy paths).
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert MerkleTree().root() == EMPTY_ROOT
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    leaves = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ]
    tree = MerkleTree()
    for leaf in leaves:
        tree.append(leaf)
    assert base64.b64encode(tree.root()).decode() == "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg="
    assert tree.root(1).hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"


def _tree(size: int) -> MerkleTree:
    tree = MerkleTree(range_cache_entries_max=8)
    for i in range(size):
        tree.append(i.to_bytes(4, "big"))
    return tree


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 600), st.data())
def test_inclusion_proofs_for_random_sizes(size: int, data: st.DataObject) -> None:
    tree = _tree(size)
    assert tree.root() == root_of([leaf_hash(i.to_bytes(4, "big")) for i in range(size)])
    tree_size = data.draw(st.integers(1, size))
    index = data.draw(st.integers(0, tree_size - 1))
    proof = tree.inclusion_proof(index, tree_size)
    leaf = leaf_hash(index.to_bytes(4, "big"))
    verify_inclusion(index, tree_size, leaf, proof, tree.root(tree_size))
    # Every other leaf, index or root must fail.
    with pytest.raises(ProofError):
        verify_inclusion(index, tree_size, leaf_hash(b"other"), proof, tree.root(tree_size))
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[position] = bytes([bad[position][0] ^ 1]) + bad[position][1:]
        with pytest.raises(ProofError):
            verify_inclusion(index, tree_size, leaf, bad, tree.root(tree_size))
    if tree_size > 1:
        other = (index + 1) % tree_size
        try:
            implied = root_from_inclusion_proof(other, tree_size, leaf, proof)
        except ProofError:
            implied = b""
        assert implied != tree.root(tree_size)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 600), st.data())
def test_consistency_proofs_for_random_sizes(size: int, data: st.DataObject) -> None:
    tree = _tree(size)
    new_size = data.draw(st.integers(1, size))
    old_size = data.draw(st.integers(1, new_size))
    proof = tree.consistency_proof(old_size, new_size)
    verify_consistency(old_size, new_size, proof, tree.root(old_size), tree.root(new_size))
    if old_size < new_size:
        wrong = leaf_hash(b"not the old root")
        with pytest.raises(ProofError):
            verify_consistency(old_size, new_size, proof, wrong, tree.root(new_size))
        with pytest.raises(ProofError):
            verify_consistency(old_size, new_size, proof, tree.root(old_size), wrong)


def _rfc_tree() -> MerkleTree:
    """The 8-leaf tree of RFC 6962's test data, which the vectors' happy paths use."""
    tree = MerkleTree()
    for leaf in (b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
                 b"\x50\x51\x52\x53\x54\x55\x56\x57",
                 b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f"):  # fmt: skip
        tree.append(leaf)
    return tree


def test_batch_inclusion_proofs_match_the_vectors() -> None:
    tree = _rfc_tree()
    paths = [path for path in _cases("inclusion") if path.name == "happy-path.json"]
    happy = [json.loads(path.read_text()) for path in paths]
    require(bool(happy), "no happy-path inclusion vectors")
    for case in happy:
        size, index = case["treeSize"], case["leafIdx"]
        assert tree.leaf(index) == _b64(case["leafHash"])
        (path,) = tree.inclusion_proofs([index], size)
        assert path == _proof(case["proof"]), case
        assert tree.root(size) == _b64(case["root"])
    for size in range(1, 9):
        every = list(range(size))
        paths = tree.inclusion_proofs(every, size)
        assert paths == [tree.inclusion_proof(index, size) for index in every]
        for index, path in zip(every, paths, strict=True):
            verify_inclusion(index, size, tree.leaf(index), path, tree.root(size))


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 1100), st.data())
def test_batch_inclusion_proofs_equal_single_proofs(size: int, data: st.DataObject) -> None:
    tree = _tree(size)
    tree_size = data.draw(st.integers(1, size))
    # In order (the receipts' case), and in any order with repeats.
    start = data.draw(st.integers(0, tree_size - 1))
    ordered = list(range(start, tree_size, data.draw(st.integers(1, 3))))
    shuffled = data.draw(st.lists(st.integers(0, tree_size - 1), max_size=40))
    for indexes in (ordered, shuffled):
        paths = tree.inclusion_proofs(indexes, tree_size)
        assert paths == [tree.inclusion_proof(index, tree_size) for index in indexes]


def test_batch_inclusion_proofs_in_a_large_tree() -> None:
    tree = MerkleTree()
    tree.extend_leaf_hashes(b"".join(leaf_hash(i.to_bytes(4, "big")) for i in range(70_001)))
    for size in (65_536, 65_537, 70_001):
        indexes = [0, 1, 2, 255, 256, 32_767, 32_768, *range(size - 300, size), 65_535]
        indexes = [index for index in indexes if index < size]
        paths = tree.inclusion_proofs(indexes, size)
        assert paths == [tree.inclusion_proof(index, size) for index in indexes]
