"""What the pages read of an order's life and a merchant's money (pure functions of the
core, plus each order's timeline of ledger entries).

`Timelines` remembers, per order, the ledger index of every entry of its life after the
sale (payment, steps, provider results, transfers, stage changes), so a page can fetch
each one's proof (`/ledger/proof/<index>`) and check it as it checks receipts. It is fed
where entries become durable (the embedded ledger part, and the ledger writer) and at
replay, and is bounded by `ORDERS_WITH_TIMELINES_MAX`.
"""

from __future__ import annotations

import csv
import io
from collections import OrderedDict
from typing import Any, Final

from livecommerce.commerce.core import CommerceCore
from livecommerce.commerce.escrow import FINAL, Life, ResultRecorded, StageChanged, StepTaken
from livecommerce.commerce.events import Event
from livecommerce.commerce.funds import AccountKind, TransferRecorded, account_name
from livecommerce.commerce.groups import GroupClosed, GroupStepTaken
from livecommerce.commerce.identity import Registered
from livecommerce.commerce.operating import OperatingMetrics, Period, Scope, merge, series
from livecommerce.commerce.orders import OrderAccepted, OrderExpired, OrderPaid
from livecommerce.commerce.recommend import Candidate
from livecommerce.commerce.reviews import ReviewTaken
from livecommerce.pipeline.groups import order_group_fields

ORDERS_WITH_TIMELINES_MAX: Final = 2_000_000
# The entries and events of an order's life after the sale (its acceptance has its own
# index: the order's receipt).
TIMELINE_ENTRIES: Final = frozenset({"order/v1", "payment/v1", "transfer/v1", "group/v1"})
TIMELINE_EVENTS: Final = (
    StepTaken, ResultRecorded, StageChanged, TransferRecorded, OrderPaid, OrderExpired,
    GroupStepTaken, GroupClosed,
)  # fmt: skip
STATEMENT_ROWS_MAX: Final = 10_000

OrderKey = tuple[str, str]


KEPT_FIELDS: Final = (
    "stage", "cause", "carrier", "tracking", "amount_cents", "amount", "quantity", "debit",
    "credit", "provider", "reason", "group_id", "price_cents",
)  # fmt: skip


def orders_of(entry_type: str, fields: dict[str, Any]) -> list[OrderKey]:
    """The orders an entry of an order's life belongs to: one, or a group's members at
    its close (groups.py)."""
    if entry_type == "group/v1" and fields.get("action") in ("succeeded", "failed"):
        members = [*fields.get("paid", []), *fields.get("released", [])]
        return [(str(member[0]), str(member[1])) for member in members]
    key = order_of(entry_type, fields)
    return [] if key is None else [key]


def order_of(entry_type: str, fields: dict[str, Any]) -> OrderKey | None:
    """The order an entry of an order's life belongs to (None: not such an entry)."""
    if entry_type in ("order/v1", "payment/v1"):
        buyer_id, order_id = fields.get("buyer_id"), fields.get("order_id")
        if isinstance(buyer_id, str) and isinstance(order_id, str) and buyer_id:
            return buyer_id, order_id
        return None
    if entry_type == "transfer/v1":
        buyer_id, slash, order_id = str(fields.get("reference", "")).rpartition("/")
        return (buyer_id, order_id) if slash else None
    if entry_type == "group/v1" and fields.get("action") in ("opened", "joined"):
        return str(fields["buyer_id"]), str(fields["order_id"])
    return None


class Timelines:
    def __init__(self, orders_max: int = ORDERS_WITH_TIMELINES_MAX) -> None:
        assert orders_max > 0
        self.orders_max = orders_max
        self._items: OrderedDict[OrderKey, list[dict[str, Any]]] = OrderedDict()

    def add_event(self, event: Event, index: int) -> None:
        entry = event.to_entry()
        if entry is not None:
            self.add(entry[0], entry[1], index)

    def add(self, entry_type: str, fields: dict[str, Any], index: int) -> None:
        """One durable entry at `index` (live, or read back at replay)."""
        for key in orders_of(entry_type, fields):
            self._add(key, entry_type, fields, index)

    def _add(self, key: OrderKey, entry_type: str, fields: dict[str, Any], index: int) -> None:
        action = fields.get("action")
        if action == "stage":  # a change the clock or a settlement made: its new stage
            action = fields.get("stage")
        if entry_type == "transfer/v1":
            action = f"transfer {fields.get('code')} {fields.get('phase')}"
        item: dict[str, Any] = {"entry": entry_type, "action": action}
        item.update((name, fields[name]) for name in KEPT_FIELDS if fields.get(name))
        item.update(ledger_index=index, time_ms=fields.get("time_ms"))
        items = self._items.get(key)
        if items is None:
            if len(self._items) >= self.orders_max:
                self._items.popitem(last=False)  # the oldest: the ledger still has it all
            items = self._items[key] = []
        items.append(item)

    def of(self, key: OrderKey) -> list[dict[str, Any]]:
        return list(self._items.get(key, []))


def order_life_view(
    core: CommerceCore, buyer_id: str, order_id: str, timeline: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """An accepted order and its life after the sale (None: no accepted order)."""
    accepted = core.orders.accepted(buyer_id, order_id)
    if accepted is None:
        return None
    status = core.orders.status(buyer_id, order_id)
    view: dict[str, Any] = {
        "order_id": order_id,
        "buyer_id": buyer_id,
        "sale_id": accepted.sale_id,
        "quantity": accepted.quantity,
        "price_cents": accepted.price_cents,
        "amount_cents": accepted.quantity * accepted.price_cents,
        "currency": accepted.currency,
        "order_status": str(status),
        "stage": str(status),
        "timeline": timeline,
    }
    life = core.escrow.get(buyer_id, order_id)
    if life is not None:
        view.update(life_fields(core, life))
    view.update(order_group_fields(core, buyer_id, order_id))
    return view


def life_fields(core: CommerceCore, life: Life) -> dict[str, Any]:
    held = core.funds.balance(life.currency, life.escrow)
    return {
        "stage": str(life.stage),
        "amount_cents": life.amount_cents,  # a group's close may lower it (groups.py)
        "merchant_id": life.merchant_id,
        "provider": life.provider,
        "captured": life.captured,
        "carrier": life.carrier,
        "tracking": life.tracking,
        "shipped_at_ms": life.shipped_at_ms or None,
        "delivered_at_ms": life.delivered_at_ms or None,
        "confirm_due_ms": life.confirm_due_ms or None,
        "refund_requested_cents": life.refund_requested_cents,
        "refund_reason": life.refund_reason,
        "refunding_cents": life.refund.amount_cents if life.refund else 0,
        "refunded_cents": life.refunded_cents,
        "settled_cents": life.settled_cents,
        "fee_cents": life.fee_cents,
        "escrow_cents": held.posted,
        "escrow_pending_cents": held.credits_pending - held.debits_pending,
        "final": life.stage in FINAL,
    }


def merchant_money(core: CommerceCore, merchant_id: str) -> dict[str, Any]:
    """A merchant's balances per currency, and its orders by stage."""
    stages: dict[str, int] = {}
    for life in core.escrow.of_merchant(merchant_id):
        stages[str(life.stage)] = stages.get(str(life.stage), 0) + 1
    return {
        "merchant_id": merchant_id,
        "balances": core.escrow.merchant_balances(merchant_id),
        "orders_by_stage": stages,
    }


STATEMENT_COLUMNS = (
    "time_ms", "transfer_id", "order", "code", "phase", "debit", "credit", "amount_cents",
    "currency",
)  # fmt: skip


def statement_rows(
    core: CommerceCore, merchant_id: str, from_ms: int, to_ms: int
) -> list[dict[str, Any]]:
    """Every transfer of the merchant's money between `from_ms` and `to_ms`: its orders'
    escrow (payments, refunds, settlement, fees) and its payable and payouts."""
    orders = {life.ref for life in core.escrow.of_merchant(merchant_id)}
    own = {
        account_name(AccountKind.MERCHANT_PAYABLE, merchant_id),
        account_name(AccountKind.PROVIDER_CLEARING, merchant_id),
    }
    rows: list[dict[str, Any]] = []
    for transfer in core.funds.transfers():
        if not from_ms <= transfer.time_ms < to_ms:
            continue
        if transfer.reference not in orders and not own & {transfer.debit, transfer.credit}:
            continue
        rows.append(
            {
                "time_ms": transfer.time_ms,
                "transfer_id": transfer.transfer_id,
                "order": transfer.reference,
                "code": str(transfer.code),
                "phase": str(transfer.phase),
                "debit": transfer.debit,
                "credit": transfer.credit,
                "amount_cents": transfer.amount,
                "currency": transfer.currency,
            }
        )
        if len(rows) >= STATEMENT_ROWS_MAX:
            break
    return rows


def statement_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=STATEMENT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


RECOMMEND_CANDIDATES_MAX: Final = 5_000


def recommendations_view(
    core: CommerceCore,
    room_id: str,
    buyer_id: str,
    beside: str,
    count: int,
    now_ms: int,
) -> dict[str, Any]:
    """The two lists of recommend.py for a viewer of `room_id`, with what a card shows."""
    merchant_id = core.rooms.merchant_of(room_id)
    if merchant_id is not None:
        products = core.catalog.of_merchant(merchant_id, RECOMMEND_CANDIDATES_MAX)
    else:
        products = core.catalog.listed(RECOMMEND_CANDIDATES_MAX)
    on_sale: dict[str, int] = {}
    for sale in core.sales.live():
        product_id = sale.spec.product_id
        on_sale[product_id] = on_sale.get(product_id, 0) + sale.units_remaining
    candidates = [
        Candidate(
            p.product_id,
            p.merchant_id,
            core.catalog.inventory_units(p.product_id) > 0 or on_sale.get(p.product_id, 0) > 0,
        )
        for p in products
    ]
    recommender = core.recommender
    lists = {
        "more_from_stream": recommender.more_from_stream(
            room_id, merchant_id, candidates, buyer_id, now_ms, count, beside
        ),
        "you_may_also_like": recommender.you_may_also_like(
            room_id, merchant_id, candidates, buyer_id, now_ms, count, beside
        ),
    }
    view: dict[str, Any] = {"room_id": room_id}
    for name, picks in lists.items():
        view[name] = []
        for pick in picks:
            product = core.catalog.get(pick.product_id)
            assert product is not None
            view[name].append(
                {
                    "product_id": product.product_id,
                    "title": product.title,
                    "price_cents": product.price_cents,
                    "currency": product.currency,
                    "image": product.image_url,
                    "on_sale_units": on_sale.get(product.product_id, 0),
                    "why": pick.why,
                }
            )
    return view


# The events whose entries feed the ledger's operating metrics (operating.py); an
# accepted order is taken typed, without building its entry.
OPERATING_EVENTS: Final = (Registered, OrderPaid, StepTaken, StageChanged, ResultRecorded,
                           ReviewTaken)  # fmt: skip


def operating_metrics(core: CommerceCore) -> OperatingMetrics:
    """Counters that find an order's, a sale's and a room's place in this core."""

    def sale_where(sale_id: str) -> tuple[str, str] | None:
        sale = core.sales.get(sale_id)
        return None if sale is None else (sale.spec.room_id, sale.spec.merchant_id)

    def order_where(buyer_id: str, order_id: str) -> tuple[str, str] | None:
        accepted = core.orders.accepted(buyer_id, order_id)
        return None if accepted is None else sale_where(accepted.sale_id)

    return OperatingMetrics(sale_where, order_where, core.rooms.merchant_of)


def take_operating(metrics: OperatingMetrics, event: Event) -> None:
    """A durable event, live."""
    if isinstance(event, OrderAccepted):
        metrics.take_accepted(event.sale_id, event.quantity, event.time_ms)
    elif isinstance(event, OPERATING_EVENTS):
        entry = event.to_entry()
        if entry is not None:
            metrics.take_entry(*entry)


def operating_view(
    parts: list[dict[int, dict[str, int]]], scope: Scope, scope_id: str, period: Period
) -> dict[str, Any]:
    return {
        "scope": str(scope),
        "id": scope_id,
        "period": str(period),
        "series": series(merge(*parts), period),
    }
