"""Client-side signing with PyNaCl: what a non-browser client (tests, load tests, the
`buy` command) sends. The browser does the same with WebCrypto (docs/commerce.md)."""

from __future__ import annotations

import secrets
from typing import Any

from nacl.signing import SigningKey

from livecommerce.commerce.auctions import PlaceBid
from livecommerce.commerce.canonical import (
    DOMAIN_LISTING,
    DOMAIN_PAYOUTS,
    DOMAIN_STOCK,
    signing_bytes,
)
from livecommerce.commerce.escrow import OrderStep
from livecommerce.commerce.groups import GroupStep
from livecommerce.commerce.identity import b64url_encode, registration_bytes, session_bytes
from livecommerce.commerce.orders import PlaceOrder
from livecommerce.commerce.reviews import ReviewStep
from livecommerce.commerce.trace import TraceCommand


class KeyPair:
    """An Ed25519 identity: `identity_id` is the public key in base64url."""

    def __init__(self, seed: bytes | None = None) -> None:
        self.signing_key = SigningKey(seed if seed is not None else secrets.token_bytes(32))
        self.identity_id = b64url_encode(bytes(self.signing_key.verify_key))

    def sign(self, message: bytes) -> str:
        return b64url_encode(self.signing_key.sign(message).signature)

    def registration(self, display_name: str, time_ms: int) -> dict[str, Any]:
        """Body of POST /api/identities."""
        message = registration_bytes(self.identity_id, display_name, time_ms)
        return {
            "public_key": self.identity_id,
            "display_name": display_name,
            "time_ms": time_ms,
            "signature": self.sign(message),
        }

    def session(self, challenge: str) -> dict[str, Any]:
        """Body of POST /api/sessions for a challenge from POST /api/sessions/challenge."""
        return {
            "challenge": challenge,
            "public_key": self.identity_id,
            "signature": self.sign(session_bytes(challenge, self.identity_id)),
        }

    def order(
        self, order_id: str, sale_id: str, quantity: int, price_cents: int, time_ms: int
    ) -> dict[str, Any]:
        """The fields of `order/v1` (add "type" for the socket) and of POST /api/orders."""
        unsigned = PlaceOrder(
            order_id, sale_id, self.identity_id, quantity, price_cents, time_ms, ""
        )
        fields = unsigned.signed_fields()
        fields["signature"] = self.sign(unsigned.signing_bytes())
        return fields

    def listing(
        self,
        product_id: str,
        title: str,
        price_cents: int,
        time_ms: int,
        currency: str = "EUR",
        description: str = "",
        sku: str = "",
        image_url: str = "/img/product.png",
    ) -> dict[str, Any]:
        """Body of POST /api/products."""
        fields: dict[str, Any] = {
            "product_id": product_id,
            "merchant_id": self.identity_id,
            "title": title,
            "description": description,
            "price_cents": price_cents,
            "currency": currency,
            "sku": sku or product_id,
            "image_url": image_url,
            "time_ms": time_ms,
        }
        fields["signature"] = self.sign(signing_bytes(DOMAIN_LISTING, fields))
        return fields

    def stock(self, change_id: str, product_id: str, quantity: int, time_ms: int) -> dict[str, Any]:
        """Body of POST /api/products/{product_id}/stock."""
        signed = {
            "change_id": change_id,
            "merchant_id": self.identity_id,
            "product_id": product_id,
            "quantity": quantity,
            "time_ms": time_ms,
        }
        body = {key: value for key, value in signed.items() if key != "product_id"}
        body["signature"] = self.sign(signing_bytes(DOMAIN_STOCK, signed))
        return body

    def step(
        self,
        step: str,
        step_id: str,
        buyer_id: str,
        order_id: str,
        time_ms: int,
        **fields: Any,
    ) -> dict[str, Any]:
        """Body of POST /api/orders/{order_id}/steps, signed by this key (docs/commerce.md,
        "After the sale"): `fields` are carrier, tracking, amount_cents, decision, reason."""
        unsigned = OrderStep(step, step_id, buyer_id, order_id, self.identity_id, time_ms, **fields)
        body = unsigned.signed_fields()
        del body["order_id"]
        body["signature"] = self.sign(unsigned.signing_bytes())
        return body

    def review(
        self, action: str, buyer_id: str, order_id: str, time_ms: int, **fields: Any
    ) -> dict[str, Any]:
        """Body of POST /api/orders/{order_id}/reviews, signed by this key: `fields` are
        stars, target, text (docs/commerce.md, "Reviews")."""
        unsigned = ReviewStep(action, buyer_id, order_id, self.identity_id, time_ms, **fields)
        body = unsigned.signed_fields()
        del body["order_id"]
        body["signature"] = self.sign(unsigned.signing_bytes())
        return body

    def bid(
        self, auction_id: str, amount_cents: int, time_ms: int, max_cents: int = 0
    ) -> dict[str, Any]:
        """The fields of `bid/v1` (add "type" for the socket; POST /api/auctions/{id}/bids
        takes them without `auction_id`): docs/commerce.md, "Auctions"."""
        unsigned = PlaceBid(auction_id, self.identity_id, amount_cents, max_cents, time_ms)
        body = unsigned.signed_fields()
        body["signature"] = self.sign(unsigned.signing_bytes())
        return body

    def group(self, action: str, group_id: str, order_id: str, time_ms: int) -> dict[str, Any]:
        """Body of POST /api/groups: open or join a group with an order (docs/commerce.md,
        "Group buying")."""
        unsigned = GroupStep(action, group_id, self.identity_id, order_id, time_ms)
        body = unsigned.signed_fields()
        body["signature"] = self.sign(unsigned.signing_bytes())
        return body

    def payouts(self, batch_id: str, time_ms: int) -> dict[str, Any]:
        """Body of POST /api/payouts, signed by this (arbiter's) key."""
        fields: dict[str, Any] = {
            "batch_id": batch_id,
            "signer_id": self.identity_id,
            "time_ms": time_ms,
        }
        fields["signature"] = self.sign(signing_bytes(DOMAIN_PAYOUTS, fields))
        return fields

    def trace(self, fields: dict[str, Any], time_ms: int, document: str = "") -> dict[str, Any]:
        """Body of POST /api/trace/<actors|lots|units|events|imports>: `fields` are the
        signed fields but `time_ms` (docs/traceability.md), signed by this key."""
        signed = {**fields, "time_ms": time_ms}
        body: dict[str, Any] = {
            "signed": signed,
            "signature": self.sign(TraceCommand(signed, "").signing_bytes()),
        }
        if document:
            body["document"] = document
        return body
