"""Test keys: deterministic Ed25519 signers."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from nacl.signing import SigningKey

from livecommerce.commerce.canonical import CanonicalError
from livecommerce.commerce.catalog import AddStock, ListProduct
from livecommerce.commerce.core import CommerceCore
from livecommerce.commerce.events import Event
from livecommerce.commerce.identity import Register, b64url_encode, registration_bytes
from livecommerce.commerce.orders import PlaceOrder
from livecommerce.commerce.sales import ScheduleSale


class Signer:
    def __init__(self, name: str) -> None:
        self.signing_key = SigningKey(hashlib.sha256(name.encode()).digest())
        self.identity_id = b64url_encode(bytes(self.signing_key.verify_key))

    def sign(self, message: bytes) -> str:
        return b64url_encode(self.signing_key.sign(message).signature)


NOW_MS = 1_700_000_000_000


def register_command(signer: Signer, name: str, now_ms: int = NOW_MS) -> Register:
    message = registration_bytes(signer.identity_id, name, now_ms)
    return Register(signer.identity_id, name, now_ms, signer.sign(message))


def list_product_command(
    merchant: Signer, product_id: str = "mug", price_cents: int = 1500, **overrides: Any
) -> ListProduct:
    fields: dict[str, Any] = {
        "product_id": product_id,
        "merchant_id": merchant.identity_id,
        "title": "A mug",
        "description": "Holds coffee.",
        "price_cents": price_cents,
        "currency": "EUR",
        "sku": "MUG-1",
        "image_url": "/static/img/mug.png",
        "time_ms": NOW_MS,
        "signature": "",
    }
    fields.update(overrides)
    unsigned = ListProduct(**fields)
    if overrides.get("signature") is not None:
        return unsigned
    try:
        message = unsigned.signing_bytes()
    except CanonicalError:  # A float price, say: cannot be signed; the core must refuse it.
        return unsigned
    return dataclasses.replace(unsigned, signature=merchant.sign(message))


def add_stock_command(
    merchant: Signer, quantity: int, product_id: str = "mug", change_id: str = "c1"
) -> AddStock:
    unsigned = AddStock(change_id, product_id, merchant.identity_id, quantity, NOW_MS, "")
    return dataclasses.replace(unsigned, signature=merchant.sign(unsigned.signing_bytes()))


def order_command(
    buyer: Signer,
    order_id: str,
    sale_id: str = "s1",
    quantity: int = 1,
    price_cents: int = 999,
    time_ms: int = NOW_MS,
) -> PlaceOrder:
    unsigned = PlaceOrder(order_id, sale_id, buyer.identity_id, quantity, price_cents, time_ms, "")
    return dataclasses.replace(unsigned, signature=buyer.sign(unsigned.signing_bytes()))


def schedule_command(
    merchant: Signer,
    units_offered: int = 10,
    per_buyer_limit: int = 3,
    starts_at_ms: int = NOW_MS,
    duration_ms: int = 60_000,
    payment_hold_ms: int = 10_000,
    sale_id: str = "s1",
) -> ScheduleSale:
    return ScheduleSale(
        sale_id=sale_id,
        room_id="room1",
        product_id="mug",
        merchant_id=merchant.identity_id,
        units_offered=units_offered,
        price_cents=999,
        per_buyer_limit=per_buyer_limit,
        starts_at_ms=starts_at_ms,
        duration_ms=duration_ms,
        payment_hold_ms=payment_hold_ms,
    )


def make_core(
    buyers: int = 3,
    inventory: int = 1000,
    external_stock: bool = False,
    sink: list[Event] | None = None,
) -> tuple[CommerceCore, Signer, list[Signer]]:
    """A core with a registered merchant and buyers, and a listed, stocked product.
    The events of the setup go to `sink` when given (to replay them later)."""
    core = CommerceCore(external_stock=external_stock)
    merchant = Signer("merchant")
    buyer_signers = [Signer(f"buyer{i}") for i in range(buyers)]
    events: list[Event] = []
    for signer in [merchant, *buyer_signers]:
        registered = core.handle(register_command(signer, "Someone"), NOW_MS)
        assert type(registered[-1]).__name__ == "Registered", registered
        events.extend(registered)
    listed = core.handle(list_product_command(merchant), NOW_MS)
    assert type(listed[-1]).__name__ == "ProductListed"
    added = core.handle(add_stock_command(merchant, inventory), NOW_MS)
    assert type(added[-1]).__name__ == "InventoryChanged", added
    if sink is not None:
        sink.extend([*events, *listed, *added])
    return core, merchant, buyer_signers
