"""A verifiable, append-only log: RFC 6962 Merkle tree, C2SP checkpoints, tiles and proofs."""
