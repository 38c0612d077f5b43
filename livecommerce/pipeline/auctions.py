"""What pages and the API show of an auction (commerce/auctions.py), and the answer to a
bid."""

from __future__ import annotations

from typing import Any

from livecommerce import protocol as m
from livecommerce.commerce.auctions import Auction, AuctionState, BidTaken
from livecommerce.commerce.core import CommerceCore
from livecommerce.pipeline.pipeline import CommandOutcome

ROOM_AUCTIONS_LISTED_MAX = 20


def auction_view(core: CommerceCore, auction: Auction, now_ms: int) -> dict[str, Any]:
    spec = auction.spec
    product = core.catalog.get(spec.product_id)
    leader = core.identities.get(auction.leader_id) if auction.leader_id else None
    is_open = auction.state is AuctionState.OPEN
    return {
        "auction_id": auction.auction_id,
        "room_id": spec.room_id,
        "merchant_id": spec.merchant_id,
        "product_id": spec.product_id,
        "title": product.title if product else spec.product_id,
        "image_url": product.image_url if product else "",
        "currency": auction.currency,
        "starting_cents": spec.starting_cents,
        "mode": str(spec.mode),
        "bands": [list(band) for band in auction.bands],
        "state": str(auction.state),
        "leader_id": auction.leader_id,
        "leader_name": leader.display_name if leader else "",
        "price_cents": auction.price_cents,
        "minimum_next_cents": auction.minimum_next() if is_open else 0,
        "bids": auction.bids,
        "started_at_ms": auction.started_at_ms,
        "ends_at_ms": auction.ends_at_ms,
        "left_ms": max(0, auction.ends_at_ms - now_ms) if is_open else 0,
        "winner_id": auction.winner_id,
        "order_id": auction.order_id,
        "pay_within_ms": spec.pay_within_ms,
        "offered_second": auction.offered_second,
        "closed_at_ms": auction.closed_at_ms or None,
    }


def auctions_view(core: CommerceCore, what: str, key: str, now_ms: int) -> dict[str, Any] | None:
    """`what` "auction": one auction (None if unknown); "room": the room's newest."""
    if what == "auction":
        auction = core.auctions.get(key)
        return None if auction is None else auction_view(core, auction, now_ms)
    if what == "room":
        newest = core.auctions.of_room(key)[-ROOM_AUCTIONS_LISTED_MAX:]
        return {"auctions": [auction_view(core, a, now_ms) for a in reversed(newest)]}
    raise ValueError(f"no such auction read: {what!r}")


def bid_result(
    auction_id: str, outcome: CommandOutcome, view: dict[str, Any] | None
) -> m.BidResult:
    """The answer to a bid: from its own event where this process took it, else from the
    auction read after it (scaled out, the writer took it)."""
    if outcome.rejection is not None:
        reason, detail = outcome.rejection
        return m.BidResult(auction_id=auction_id, status="rejected", reason=reason, detail=detail)
    index = outcome.index_of("BidTaken")
    taken = next((e for e in outcome.events if isinstance(e, BidTaken)), None)
    if taken is not None:
        leader, price, ends = taken.leader_id, taken.price_cents, taken.ends_at_ms
    elif view is not None:
        leader, price, ends = view["leader_id"], view["price_cents"], view["ends_at_ms"]
    else:
        leader, price, ends = "", 0, 0
    return m.BidResult(
        auction_id=auction_id,
        status="accepted",
        ledger_index=-1 if index is None else index,
        leader_id=leader,
        price_cents=price,
        ends_at_ms=ends,
    )
