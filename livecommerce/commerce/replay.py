"""Rebuild the core from its ledger entries, and the stock store's records from the core.

`replay(entries)` feeds `(entry_type, fields)` pairs, in ledger order, back into a fresh
`CommerceCore`. What the ledger does not hold is not restored: display names (personal
data; keep profiles elsewhere), remembered order *rejections* (a retry after a restart is
evaluated again), and session challenges. Every `stock/v1` entry is checked against the
replayed counts (embedded mode), so a ledger that disagrees with itself is refused with a
`ReplayError` naming the entry, rather than served.

`order_records(core, sale_id)` gives the list a stock store's `rebuild` takes, e.g. after
Redis restarted empty.
"""

from __future__ import annotations

from collections.abc import Iterable

from livecommerce.commerce.catalog import InventoryChanged, Product
from livecommerce.commerce.core import CommerceCore
from livecommerce.commerce.events import Entry
from livecommerce.commerce.identity import Identity
from livecommerce.commerce.orders import OrderAccepted, OrderStatus
from livecommerce.commerce.reservations import OrderRecord, RecordStatus
from livecommerce.commerce.sales import CloseReason, ScheduleSale


class ReplayError(ValueError):
    """The entries do not describe a valid history; the message names the entry."""


def _pick(fields: dict[str, object], names: Iterable[str]) -> dict[str, object]:
    return {name: fields[name] for name in names}


_PRODUCT_FIELDS = [
    "product_id", "merchant_id", "title", "description", "price_cents", "currency", "sku",
    "image_url",
]  # fmt: skip
_SPEC_FIELDS = list(ScheduleSale.__dataclass_fields__)
_ACCEPTED_FIELDS = list(OrderAccepted.__struct_fields__)


def apply_entry(core: CommerceCore, entry: Entry) -> None:
    entry_type, fields = entry
    action = fields.get("action")
    time_ms = fields.get("time_ms")
    if isinstance(time_ms, int):
        core.restore_clock(time_ms)
    if entry_type == "identity/v1":
        identity_id, registered_at_ms = fields["identity_id"], fields["time_ms"]
        assert isinstance(identity_id, str)
        assert isinstance(registered_at_ms, int)
        core.identities.restore(Identity(identity_id, "", registered_at_ms))
    elif entry_type == "product/v1":
        core.catalog.restore_product(Product(**_pick(fields, _PRODUCT_FIELDS)))  # type: ignore[arg-type]
    elif entry_type == "inventory/v1":
        core.catalog.restore_inventory(InventoryChanged(**fields))  # type: ignore[arg-type]
    elif entry_type == "sale/v1" and action == "scheduled":
        spec = ScheduleSale(**_pick(fields, _SPEC_FIELDS))  # type: ignore[arg-type]
        currency = fields["currency"]
        assert isinstance(currency, str)
        core.sales.restore_scheduled(spec, currency)
    elif entry_type == "sale/v1" and action == "opened":
        core.sales.restore_opened(str(fields["sale_id"]))
    elif entry_type == "sale/v1" and action == "closed":
        core.sales.restore_closed(str(fields["sale_id"]), CloseReason(str(fields["reason"])))
    elif entry_type == "order/v1" and action == "accepted":
        accepted = OrderAccepted(**_pick(fields, _ACCEPTED_FIELDS))  # type: ignore[arg-type]
        core.orders.restore_accepted(accepted)
    elif entry_type == "order/v1" and action == "paid":
        core.orders.restore_paid(str(fields["buyer_id"]), str(fields["order_id"]))
    elif entry_type == "order/v1" and action == "expired":
        time_ms = fields["time_ms"]
        assert isinstance(time_ms, int)
        core.orders.restore_expired(str(fields["buyer_id"]), str(fields["order_id"]), time_ms)
    elif entry_type == "room/v1" and action == "linked":
        core.rooms.restore_linked(str(fields["room_id"]), str(fields["merchant_id"]))
    elif entry_type == "stock/v1":
        sale = core.sales.get(str(fields["sale_id"]))
        assert sale is not None, "stock entry for an unknown sale"
        sale.check()
        if not core.orders.external_stock:
            replayed = (sale.units_remaining, sale.units_held, sale.units_sold)
            logged = (fields["units_remaining"], fields["units_held"], fields["units_sold"])
            if replayed != logged:
                raise ValueError(f"counts {logged} in the ledger, {replayed} replayed")
    else:
        raise ValueError(f"unknown entry type {entry_type} / action {action}")


def replay(entries: Iterable[Entry], external_stock: bool = False) -> CommerceCore:
    core = CommerceCore(external_stock=external_stock)
    for index, entry in enumerate(entries):
        try:
            apply_entry(core, entry)
        except (KeyError, TypeError, ValueError, AssertionError) as error:
            raise ReplayError(f"entry {index} ({entry[0]}): {error!r}") from error
    return core


def order_records(core: CommerceCore, sale_id: str) -> list[OrderRecord]:
    """The accepted orders of a sale as the stock stores' `rebuild` wants them."""
    records: list[OrderRecord] = []
    status_to_record = {
        OrderStatus.HELD: RecordStatus.ACCEPTED,
        OrderStatus.PAID: RecordStatus.PAID,
        OrderStatus.EXPIRED: RecordStatus.RELEASED,
    }
    for (buyer_id, order_id), order in core.orders.orders_of_sale(sale_id):
        record = status_to_record.get(order.status)
        if record is not None:
            records.append(OrderRecord(buyer_id, order_id, order.quantity, record))
    return records
