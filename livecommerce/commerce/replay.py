"""Reading the ledger back into a core: the state after a restart is the ledger's state.

`apply_entry(core, entry_type, fields)` takes one decoded ledger entry, in log order, and
puts its effect back into `core` without re-running any check (the entry says it
happened). Derived entries (`stock/v1`, and `inventory/v1` of a sale's take, which only
restate counts) are checked or applied as absolute values, so replaying a log gives the
same counts as the live core had: `tests/livecommerce/orders` replays a live server's
ledger and compares.

Unknown entry types are skipped (other parts of the system write to the same log).
Anything inconsistent raises `ReplayError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from livecommerce.commerce.catalog import Product
from livecommerce.commerce.core import CommerceCore
from livecommerce.commerce.identity import Identity
from livecommerce.commerce.orders import OrderAccepted
from livecommerce.commerce.results import ReplayError
from livecommerce.commerce.sales import CloseReason, ScheduleSale

PRODUCT_FIELDS = (
    "product_id",
    "merchant_id",
    "title",
    "description",
    "price_cents",
    "currency",
    "sku",
    "image_url",
)
SALE_FIELDS = (
    "sale_id",
    "room_id",
    "product_id",
    "merchant_id",
    "units_offered",
    "price_cents",
    "per_buyer_limit",
    "starts_at_ms",
    "duration_ms",
    "payment_hold_ms",
)
ACCEPTED_FIELDS = (
    "order_id",
    "sale_id",
    "buyer_id",
    "quantity",
    "price_cents",
    "currency",
    "hold_expires_at_ms",
    "time_ms",
    "signed_time_ms",
    "signature",
)


def _pick(fields: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    try:
        return {name: fields[name] for name in names}
    except KeyError as error:
        raise ReplayError(f"entry lacks {error}") from None


def accepted_from_entry(fields: Mapping[str, Any]) -> OrderAccepted:
    return OrderAccepted(**_pick(fields, ACCEPTED_FIELDS))


def apply_entry(core: CommerceCore, entry_type: str, fields: Mapping[str, Any]) -> None:
    """Put one recorded entry's effect into `core` (see the module docstring)."""
    action = fields.get("action")
    time_ms = fields.get("time_ms")
    if isinstance(time_ms, int):
        # Recorded time only moves the core's clock forward; nothing is ticked here.
        core.advance_clock(time_ms)
    if entry_type == "identity/v1" and action == "registered":
        identity_id = fields["identity_id"]
        # Display names are personal data and stay off the log.
        core.identities.restore(Identity(identity_id, "", fields["time_ms"]))
    elif entry_type == "product/v1" and action == "listed":
        core.catalog.record_listed(Product(**_pick(fields, PRODUCT_FIELDS)))
    elif entry_type == "inventory/v1":
        core.catalog.record_inventory(
            fields["product_id"], fields["inventory_units"], fields["cause"]
        )
    elif entry_type == "room/v1" and action == "linked":
        core.rooms.record_linked(fields["room_id"], fields["merchant_id"])
    elif entry_type == "sale/v1":
        if action == "scheduled":
            core.sales.record_scheduled(
                ScheduleSale(**_pick(fields, SALE_FIELDS)), fields["currency"]
            )
        elif action == "opened":
            core.sales.record_opened(fields["sale_id"])
        elif action == "closed":
            core.sales.record_closed(fields["sale_id"], CloseReason(fields["reason"]))
    elif entry_type == "order/v1":
        if action == "accepted":
            core.orders.record_accepted(accepted_from_entry(fields))
        elif action in ("paid", "expired"):
            core.orders.record_settled(fields["buyer_id"], fields["order_id"], action == "paid")
    elif entry_type == "stock/v1":
        sale = core.sales.get(fields["sale_id"])
        if sale is None:
            raise ReplayError(f"stock of unknown sale {fields['sale_id']}")
