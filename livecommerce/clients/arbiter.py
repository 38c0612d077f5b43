"""`python -m livecommerce arbiter`: the platform's arbiter, from a terminal.

    python -m livecommerce arbiter key --key-file arbiter.key
        makes (once) an Ed25519 key in the file (mode 0600), registers it with the
        server, and prints its identity id: list it in LIVECOMMERCE_ARBITER_IDS
    python -m livecommerce arbiter resolve --key-file arbiter.key --buyer ID --order ID
        --refund-cents N        decides a dispute: N back to the buyer, the rest settles
    python -m livecommerce arbiter payouts --key-file arbiter.key [--batch ID]
        starts a payout batch of every merchant's available balance

Every request is signed with the key (docs/commerce.md, "After the sale"); the server
refuses it unless the key is one of its arbiters.
"""

from __future__ import annotations

import json
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from livecommerce.clients.signing import KeyPair
from livecommerce.clock import wall_clock_ms
from livecommerce.keyfiles import load_or_create_secret


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def main(command: str, base_url: str, key_file: Path, **arguments: Any) -> int:
    key = KeyPair(load_or_create_secret(key_file))
    base = base_url.rstrip("/")
    now_ms = wall_clock_ms()
    try:
        if command == "key":
            status, answer = _post(
                f"{base}/api/identities", key.registration("Platform arbiter", now_ms)
            )
            if status not in (201, 409):
                print(f"registering the key failed: {status} {answer}", file=sys.stderr)
                return 1
            print(key.identity_id)
            return 0
        if command == "resolve":
            body = key.step(
                "resolve", f"resolve-{secrets.token_hex(4)}", arguments["buyer"],
                arguments["order"], now_ms, amount_cents=arguments["refund_cents"],
            )  # fmt: skip
            status, answer = _post(f"{base}/api/orders/{arguments['order']}/steps", body)
        else:
            batch = arguments.get("batch") or f"manual-{now_ms}"
            status, answer = _post(f"{base}/api/payouts", key.payouts(batch, now_ms))
    except urllib.error.URLError as error:
        print(f"cannot reach {base}: {error}", file=sys.stderr)
        return 2
    print(json.dumps(answer, indent=2))
    return 0 if status < 300 else 1
