"""Secrets and keys in the data directory, each in its own file, made on first start.

| file | what |
|------|------|
| `session_secret` | HMAC key of session tokens (embedded; scaled out it lives in Redis) |
| `viewer_secret` | HMAC key of viewer tokens (embedded) |
| `demo_merchant.key` | the demo merchant's Ed25519 seed (`--demo`) |
| `webhook_secret` | the key webhooks from the payment provider are signed with |
| `ledger/` | the ledger's signing key (ledger/storage.py keeps it) |

Each is created with mode 0600 and never rewritten: a restart finds the same secrets.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

SECRET_BYTES = 32


def load_or_create_secret(path: Path) -> bytes:
    """A 32-byte secret kept at `path`, created on first use with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(secrets.token_bytes(SECRET_BYTES))
    secret = path.read_bytes()
    if len(secret) != SECRET_BYTES:
        raise RuntimeError(f"{path} must hold exactly 32 bytes; remove it to make a new one")
    return secret
