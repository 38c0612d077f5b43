"""Set-up through the host API, so the suite runs against any deployment: a merchant
identity, a product with stock, a room linked to the merchant, and a sale that opens after
a countdown. Writes `run.json` for the Locust processes and the check."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from livecommerce.clients.signing import KeyPair
from loadtests.api import ApiError, call, get_bytes
from loadtests.profiles import Profile
from loadtests.runfile import RUN_FILE_NAME, RunInfo

PRICE_CENTS = 1800
# Longer than any run: no hold expires during the test, so units never come back and
# "accepted no more than offered" holds for the whole run (the check still accounts for
# expiries it finds in the ledger).
PAYMENT_HOLD_MS = 3_600_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def prepare(base_url: str, profile: Profile, out_dir: Path, vkey: str = "") -> RunInfo:
    base = base_url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ApiError(f"--host must be an http:// or https:// URL, got {base_url!r}")
    health = call("GET", f"{base}/healthz")
    if health.get("status") != "ok":
        raise ApiError(f"{base}/healthz answered {health!r}, not ok")
    run_id = secrets.token_hex(4)
    merchant = KeyPair()
    call(
        "POST",
        f"{base}/api/identities",
        merchant.registration(f"Load test merchant {run_id}", now_ms()),
        expect=(201,),
    )
    product_id = f"lt-{run_id}"
    listing = merchant.listing(product_id, "Load-test mug", PRICE_CENTS, now_ms())
    call("POST", f"{base}/api/products", listing, expect=(201,))
    stock = merchant.stock(f"lt-{run_id}-stock", product_id, profile.units, now_ms())
    call("POST", f"{base}/api/products/{product_id}/stock", stock, expect=(201,))
    challenge = call("POST", f"{base}/api/sessions/challenge", {})["challenge"]
    session = call("POST", f"{base}/api/sessions", merchant.session(challenge))
    room = call(
        "POST",
        f"{base}/api/rooms",
        {"title": f"Flash sale load test {run_id}", "host_name": "Locust"},
        expect=(201,),
    )
    room_id, host_token = room["room_id"], room["host_token"]
    call(
        "POST",
        f"{base}/api/rooms/{room_id}/merchant",
        {"merchant_token": session["token"]},
        token=host_token,
        expect=(201,),
    )
    opens_in_ms = int(profile.sale_opens_in_s * 1000)
    sale_ms = int(profile.sale_s * 1000)
    created_local_ms = now_ms()
    sale = call(
        "POST",
        f"{base}/api/rooms/{room_id}/sales",
        {
            "sale_id": f"flash-{run_id}",
            "product_id": product_id,
            "units_offered": profile.units,
            "per_buyer_limit": profile.per_buyer_limit,
            "duration_ms": sale_ms,
            "payment_hold_ms": PAYMENT_HOLD_MS,
            "starts_in_ms": opens_in_ms,
        },
        token=host_token,
        expect=(201,),
    )
    if not vkey:
        vkey = get_bytes(f"{base}/ledger/vkey").decode().strip()
    info = RunInfo(
        base_url=base,
        room_id=room_id,
        host_token=host_token,
        merchant_id=merchant.identity_id,
        product_id=product_id,
        sale_id=sale["sale_id"],
        price_cents=sale["price_cents"],
        units_offered=sale["units_offered"],
        per_buyer_limit=sale["per_buyer_limit"],
        starts_at_ms=sale["starts_at_ms"],
        ends_at_ms=sale["ends_at_ms"],
        t0_local_ms=created_local_ms + opens_in_ms,
        sale_s=profile.sale_s,
        viewers=profile.viewers,
        buyers=profile.buyers,
        viewer_ramp_s=profile.viewer_ramp_s,
        buyer_ramp_s=profile.buyer_ramp_s,
        settle_s=profile.settle_s,
        grace_s=profile.grace_s,
        like_every_s=profile.like_every_s,
        comment_every_s=profile.comment_every_s,
        vkey=vkey,
        profile=profile.name,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    info.write(out_dir / RUN_FILE_NAME)
    return info
