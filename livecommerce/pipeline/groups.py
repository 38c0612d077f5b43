"""What pages and the API show of group buying (commerce/groups.py): a sale's offer and
its groups with places and time left, one group (the share link's), and an order's group."""

from __future__ import annotations

from typing import Any

from livecommerce.commerce.core import CommerceCore
from livecommerce.commerce.groups import CLOSED_LISTED_MAX, Group, Offer, Outcome


def offer_view(offer: Offer) -> dict[str, Any]:
    return {
        "sale_id": offer.sale_id,
        "product_id": offer.product_id,
        "size": offer.size,
        "places": offer.places,
        "window_ms": offer.window_ms,
        "currency": offer.currency,
        "price_cents": offer.tiers[0][1],
        "tiers": [{"members": members, "price_cents": price} for members, price in offer.tiers],
    }


def group_view(core: CommerceCore, group: Group, now_ms: int) -> dict[str, Any]:
    offer = core.groups.offer(group.sale_id)
    assert offer is not None
    paid = core.groups.paid_members(group)
    held = core.groups.held_members(group)
    taken = len(paid) + len(held)
    is_open = group.outcome is Outcome.OPEN
    return {
        "group_id": group.group_id,
        "sale_id": group.sale_id,
        "opened_by": group.opened_by,
        "opened_at_ms": group.opened_at_ms,
        "closes_at_ms": group.closes_at_ms,
        "left_ms": max(0, group.closes_at_ms - now_ms) if is_open else 0,
        "size": offer.size,
        "places": offer.places,
        "places_left": max(0, offer.places - taken) if is_open else 0,
        "paid": len(paid),
        "held": len(held),
        "needed": max(0, offer.size - len(paid)),
        "outcome": str(group.outcome),
        # Now: what a close would charge with the members paid so far (at least `size`).
        "price_cents": group.price_cents or offer.price_for(max(len(paid), offer.size)),
        "currency": offer.currency,
        "members": [
            {"buyer_id": buyer_id, "order_id": order_id, "paid": (buyer_id, order_id) in paid}
            for buyer_id, order_id in group.members.items()
            if (buyer_id, order_id) in paid or (buyer_id, order_id) in held or not is_open
        ],
        "closed_at_ms": group.closed_at_ms or None,
    }


def sale_groups_view(core: CommerceCore, sale_id: str, now_ms: int) -> dict[str, Any] | None:
    """The sale's offer, its open groups (closing soonest first) and the newest closed;
    None when the sale has no offer."""
    offer = core.groups.offer(sale_id)
    if offer is None:
        return None
    groups = core.groups.of_sale(sale_id)
    open_groups = sorted(
        (g for g in groups if g.outcome is Outcome.OPEN), key=lambda g: g.closes_at_ms
    )
    closed = [g for g in reversed(groups) if g.outcome is not Outcome.OPEN][:CLOSED_LISTED_MAX]
    return {
        "offer": offer_view(offer),
        "open": [group_view(core, group, now_ms) for group in open_groups],
        "closed": [group_view(core, group, now_ms) for group in closed],
    }


def one_group_view(core: CommerceCore, group_id: str, now_ms: int) -> dict[str, Any] | None:
    group = core.groups.get(group_id)
    if group is None:
        return None
    offer = core.groups.offer(group.sale_id)
    assert offer is not None
    return {**group_view(core, group, now_ms), "offer": offer_view(offer)}


def groups_view(core: CommerceCore, what: str, key: str, now_ms: int) -> dict[str, Any] | None:
    if what == "sale":
        return sale_groups_view(core, key, now_ms)
    if what == "group":
        return one_group_view(core, key, now_ms)
    raise ValueError(f"no such group read: {what!r}")


def order_group_fields(core: CommerceCore, buyer_id: str, order_id: str) -> dict[str, Any]:
    """For an order's life: its group, if it is in one."""
    group = core.groups.group_of(buyer_id, order_id)
    if group is None:
        return {}
    return {
        "group": {
            "group_id": group.group_id,
            "outcome": str(group.outcome),
            "closes_at_ms": group.closes_at_ms,
            "price_cents": group.price_cents or None,
        }
    }
