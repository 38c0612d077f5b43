"""Typed rejections: bad input is a normal result with a reason code, never an exception."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """Every reason code the core can give. Stable strings: clients and docs use them."""

    # Orders.
    SOLD_OUT = "sold_out"
    LIMIT_REACHED = "limit_reached"
    SALE_NOT_OPEN = "sale_not_open"
    PRICE_CHANGED = "price_changed"
    BAD_SIGNATURE = "bad_signature"
    STALE = "stale"
    UNKNOWN_IDENTITY = "unknown_identity"
    UNKNOWN_SALE = "unknown_sale"
    BAD_QUANTITY = "bad_quantity"
    DUPLICATE_CONFLICT = "duplicate_conflict"
    BAD_ORDER_ID = "bad_order_id"
    UNKNOWN_ORDER = "unknown_order"
    ORDER_EXPIRED = "order_expired"
    NOT_YOUR_ORDER = "not_your_order"
    # Identities and sessions.
    BAD_PUBLIC_KEY = "bad_public_key"
    BAD_DISPLAY_NAME = "bad_display_name"
    ALREADY_REGISTERED = "already_registered"
    UNKNOWN_CHALLENGE = "unknown_challenge"
    CHALLENGE_EXPIRED = "challenge_expired"
    BAD_TOKEN = "bad_token"
    TOKEN_EXPIRED = "token_expired"
    # Catalog and sales.
    BAD_FIELD = "bad_field"
    UNKNOWN_PRODUCT = "unknown_product"
    NOT_MERCHANT = "not_merchant"
    PRODUCT_EXISTS = "product_exists"
    SALE_EXISTS = "sale_exists"
    INSUFFICIENT_STOCK = "insufficient_stock"
    SALE_CLOSED = "sale_closed"
    ROOM_LINKED = "room_linked"
    ROOM_NOT_LINKED = "room_not_linked"
    # Funds and the order's life after payment.
    BAD_AMOUNT = "bad_amount"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    TRANSFER_EXISTS = "transfer_exists"
    UNKNOWN_TRANSFER = "unknown_transfer"
    TRANSFER_RESOLVED = "transfer_resolved"
    WRONG_STAGE = "wrong_stage"
    NOT_ARBITER = "not_arbiter"
    PAYMENT_PENDING = "payment_pending"
    ALREADY_PAID = "already_paid"
    PAYMENT_DECLINED = "payment_declined"
    # Reviews and polls.
    UNKNOWN_REVIEW = "unknown_review"
    ALREADY_REVIEWED = "already_reviewed"
    ALREADY_REPLIED = "already_replied"
    ALREADY_HIDDEN = "already_hidden"
    POLL_EXISTS = "poll_exists"
    # Group buying (groups.py).
    NO_GROUP_OFFER = "no_group_offer"
    GROUP_EXISTS = "group_exists"
    UNKNOWN_GROUP = "unknown_group"
    ALREADY_IN_GROUP = "already_in_group"
    GROUP_FULL = "group_full"
    GROUP_CLOSED = "group_closed"
    GROUP_NEEDED = "group_needed"
    GROUP_OPEN = "group_open"
    # Auctions (auctions.py).
    AUCTION_EXISTS = "auction_exists"
    UNKNOWN_AUCTION = "unknown_auction"
    AUCTION_CLOSED = "auction_closed"
    AUCTION_OPEN = "auction_open"
    HAS_BIDS = "has_bids"
    BID_TOO_LOW = "bid_too_low"
    BANNED = "banned"
    NO_SECOND_BIDDER = "no_second_bidder"
    # Traceability (trace.py).
    UNKNOWN_UNIT = "unknown_unit"
    UNKNOWN_LOT = "unknown_lot"
    UNIT_EXISTS = "unit_exists"
    LOT_EXISTS = "lot_exists"
    ROLE_NOT_ALLOWED = "role_not_allowed"
    # Any bounded table is full: push back, retry later.
    CAPACITY = "capacity"
    # The external stock store does not know the sale (Redis lost it): retry later.
    STOCK_UNAVAILABLE = "stock_unavailable"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A refused request: a stable `reason` code and a human `detail`."""

    reason: Reason
    detail: str


def all_text(*values: object) -> bool:
    """True when every value is a str. Commands are typed, but adapters decode untrusted
    JSON: a list where a string belongs must be a rejection, not a TypeError."""
    return all(isinstance(value, str) for value in values)


def all_integers(*values: object) -> bool:
    """True when every value is an int (bool excluded: JSON true is not a quantity)."""
    return all(type(value) is int for value in values)
