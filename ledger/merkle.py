"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification (sans-I/O).

Leaves hash as SHA-256(0x00 || data), interior nodes as SHA-256(0x01 || left || right)
(RFC 9162 §2.1.1); the empty tree's root is SHA-256 of nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_BYTES = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_sha256 = hashlib.sha256


class ProofError(ValueError):
    """A proof that does not verify, or that is malformed."""


def leaf_hash(data: bytes) -> bytes:
    return _sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(_NODE_PREFIX + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two strictly smaller than `size` (RFC 9162 §2.1.1, k)."""
    assert size >= 2
    return 1 << ((size - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) computed from scratch: the reference the incremental tree is tested against."""
    if not leaf_hashes:
        return EMPTY_ROOT
    if len(leaf_hashes) == 1:
        return leaf_hashes[0]
    k = _split(len(leaf_hashes))
    return node_hash(root_of(leaf_hashes[:k]), root_of(leaf_hashes[k:]))


class MerkleTree:
    """An append-only tree keeping every complete subtree hash, level by level.

    `_levels[h]` holds the hashes of the floor(size / 2**h) complete subtrees of height h,
    32 bytes each, in one bytearray (64 bytes of memory per leaf in total). Any range
    hash, proof or tile is then O(log n) hashes away. Ranges that end at or below the
    current size never change, so right-edge range hashes are memoized.
    """

    __slots__ = ("_levels", "_range_cache", "_range_cache_entries_max")

    def __init__(self, range_cache_entries_max: int = 65_536) -> None:
        assert range_cache_entries_max >= 0
        self._levels: list[bytearray] = [bytearray()]
        self._range_cache: dict[tuple[int, int], bytes] = {}
        self._range_cache_entries_max = range_cache_entries_max

    @property
    def size(self) -> int:
        return len(self._levels[0]) // HASH_BYTES

    def append_leaf_hash(self, hash_value: bytes) -> int:
        assert len(hash_value) == HASH_BYTES
        levels = self._levels
        levels[0] += hash_value
        index = len(levels[0]) // HASH_BYTES - 1
        height = 0
        count = index + 1
        # A new complete subtree of height h+1 closes whenever the count at height h is even.
        while count % 2 == 0:
            level = levels[height]
            parent = _sha256(_NODE_PREFIX + level[-2 * HASH_BYTES :]).digest()
            height += 1
            if height == len(levels):
                levels.append(bytearray())
            levels[height] += parent
            count //= 2
        return index

    def append(self, data: bytes) -> int:
        return self.append_leaf_hash(_sha256(_LEAF_PREFIX + data).digest())

    def extend_leaf_hashes(self, hashes: bytes) -> None:
        """Append many leaf hashes given as one concatenation (the verifier's fast path)."""
        assert len(hashes) % HASH_BYTES == 0
        view = memoryview(hashes)
        for offset in range(0, len(hashes), HASH_BYTES):
            self.append_leaf_hash(bytes(view[offset : offset + HASH_BYTES]))

    def node(self, height: int, index: int) -> bytes:
        """The complete subtree of height `height` at position `index` (tlog-tiles uses these)."""
        level = self._levels[height]
        start = index * HASH_BYTES
        assert start + HASH_BYTES <= len(level), (height, index)
        return bytes(level[start : start + HASH_BYTES])

    def level_bytes(self, height: int, start: int, count: int) -> bytes:
        """`count` consecutive complete-subtree hashes at `height` (one hash tile's payload)."""
        if height >= len(self._levels):
            assert count == 0
            return b""
        level = self._levels[height]
        begin = start * HASH_BYTES
        end = begin + count * HASH_BYTES
        assert end <= len(level), (height, start, count)
        return bytes(level[begin:end])

    def leaf(self, index: int) -> bytes:
        return self.node(0, index)

    def range_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a subtree that RFC 6962's recursion produces."""
        assert 0 <= start < end <= self.size, (start, end, self.size)
        width = end - start
        if width & (width - 1) == 0 and start % width == 0:
            return self.node(width.bit_length() - 1, start // width)
        key = (start, end)
        cached = self._range_cache.get(key)
        if cached is not None:
            return cached
        k = _split(width)
        result = node_hash(self.range_hash(start, start + k), self.range_hash(start + k, end))
        if len(self._range_cache) >= self._range_cache_entries_max:
            self._range_cache.clear()
        self._range_cache[key] = result
        return result

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        assert 0 <= size <= self.size
        if size == 0:
            return EMPTY_ROOT
        return self.range_hash(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 6962 §2.1.1, leaf-side first."""
        assert 0 <= index < size <= self.size, (index, size, self.size)
        path: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                path.append(self.range_hash(start + k, end))
                end = start + k
            else:
                path.append(self.range_hash(start, start + k))
                start += k
        path.reverse()
        return path

    def inclusion_proofs(self, indexes: Iterable[int], size: int) -> list[list[bytes]]:
        """PATH(index, D[0:size]) for many indexes at once; each path equals
        `inclusion_proof(index, size)`.

        RFC 6962's recursion unrolled: a tree of `size` leaves is a row of perfect
        subtrees, one per set bit of `size`, largest first. A leaf's path is its siblings
        inside its own perfect subtree (bottom up), then the hash of all the leaves right
        of that subtree (if any), then the roots of the perfect subtrees left of it,
        nearest first. Consecutive leaves share all siblings above the highest bit where
        their indexes differ, so for indexes in order most of a path is the previous
        one's; shared hashes are the same bytes objects (a caller can encode each one
        once, e.g. receipts' base64).
        """
        assert 0 <= size <= self.size, (size, self.size)
        # The perfect subtrees (start, height), left to right, and each one's path tail.
        tails: dict[int, list[bytes]] = {}
        lefts: list[bytes] = []
        start = 0
        for height in range(size.bit_length() - 1, -1, -1):
            if size >> height & 1:
                end = start + (1 << height)
                right = [self.range_hash(end, size)] if end < size else []
                tails[height] = right + lefts[::-1]
                lefts.append(self.node(height, start >> height))
                start = end
        levels = self._levels
        paths: list[list[bytes]] = []
        previous_index, previous_path = -1, list[bytes]()
        for index in indexes:
            assert 0 <= index < size, (index, size)
            # The highest bit where index and size differ is set in size: the height of
            # the perfect subtree that holds the leaf.
            height = (index ^ size).bit_length() - 1
            # Siblings at the levels where index and the previous index have the same
            # ancestor are the same: take them from the previous path.
            fresh = (index ^ previous_index).bit_length() if previous_index >= 0 else height
            if fresh >= height or height != (previous_index ^ size).bit_length() - 1:
                fresh = height
            path: list[bytes] = []
            for level in range(fresh):
                offset = ((index >> level) ^ 1) * HASH_BYTES
                path.append(bytes(levels[level][offset : offset + HASH_BYTES]))
            if fresh < height:
                path += previous_path[fresh:]
            else:
                path += tails[height]
            paths.append(path)
            previous_index, previous_path = index, path
        return paths

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[0:new_size]) of RFC 6962 §2.1.2."""
        assert 0 < old_size <= new_size <= self.size, (old_size, new_size, self.size)
        if old_size == new_size:
            return []
        return self._subproof(old_size, 0, new_size, complete=True)

    def _subproof(self, m: int, start: int, end: int, complete: bool) -> list[bytes]:
        width = end - start
        if m == width:
            return [] if complete else [self.range_hash(start, end)]
        k = _split(width)
        if m <= k:
            proof = self._subproof(m, start, start + k, complete)
            proof.append(self.range_hash(start + k, end))
        else:
            proof = self._subproof(m - k, start + k, end, False)
            proof.append(self.range_hash(start, start + k))
        return proof


def _check_hashes(proof: Sequence[bytes]) -> None:
    for item in proof:
        if len(item) != HASH_BYTES:
            raise ProofError(f"proof hash of {len(item)} bytes, want {HASH_BYTES}")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof (RFC 9162 §2.1.3.2), or ProofError."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is outside a tree of size {size}")
    if len(leaf) != HASH_BYTES:
        raise ProofError(f"leaf hash of {len(leaf)} bytes, want {HASH_BYTES}")
    _check_hashes(proof)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ProofError unless `proof` shows leaf hash `leaf` at `index` under `root`."""
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofError(f"inclusion proof for index {index} does not lead to the root")


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Raise ProofError unless `proof` shows tree old_size is a prefix of new_size (§2.1.4.2)."""
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}")
    if old_size == 0:
        # Any tree extends the empty tree; a proof from size 0 says nothing, so refuse it.
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if old_size == new_size:
        if proof:
            raise ProofError("equal sizes need an empty proof")
        if old_root != new_root:
            raise ProofError("equal sizes but different roots")
        return
    if not proof:
        raise ProofError("empty consistency proof")
    _check_hashes(proof)
    items = list(proof)
    if old_size & (old_size - 1) == 0:
        items.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = items[0]
    for c in items[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root")
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root")
