"""Orders: signed by the buyer, checked, given stock, held for payment, paid or expired.

The buyer signs `livecommerce/order/v1\\n` + canonical JSON of
`{"buyer_id", "order_id", "price_cents", "quantity", "sale_id", "time_ms"}`.

Checks run in this order; the first failure is the answer:

1. `bad_order_id` (order_id is not 1..64 of [A-Za-z0-9_-]), `bad_quantity` / `bad_field`
   (wrong types), `unknown_identity`, `bad_signature`. These are not remembered.
2. The idempotency key is (buyer_id, order_id). Seen before with the same signed bytes:
   the first answer again (`OrderRepeated`). Seen with other bytes: `duplicate_conflict`.
3. `stale` (|now_ms - time_ms| > order_freshness_ms), `unknown_sale`, `sale_not_open`,
   `price_changed`, `bad_quantity` (not 1..per_buyer_limit), then stock:
   `limit_reached` (cumulative per buyer) or `sold_out`. These answers are remembered.

An accepted order holds its units for the sale's `payment_hold_ms`. `PayOrder` settles
it; `tick(now_ms)` expires unpaid holds and returns their units to the sale.

Two ways to take stock, one code path for everything else:
- local (embedded): `place(command, now_ms)` uses the sale's own `SaleStock`.
- external (Redis): `prepare(command, now_ms)`, then the adapter awaits
  `store.reserve(...)`, then `complete(prepared, result, now_ms)`. On `OrderExpired`
  the adapter calls `store.release(...)`. The sale's local counts then mirror only what
  this process saw; the store's `remaining` is what events report.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import msgspec

from livecommerce.commerce.canonical import DOMAIN_ORDER, CanonicalError, signing_bytes
from livecommerce.commerce.events import Entry, Event, flat_fields
from livecommerce.commerce.identity import IdentityRegistry, verify_signature
from livecommerce.commerce.reservations import ORDER_ID, ReserveResult, ReserveStatus
from livecommerce.commerce.results import Reason, Rejected, all_integers, all_text
from livecommerce.commerce.sales import (
    LOT_SALE_PREFIX,
    CloseReason,
    Sale,
    SaleBook,
    SaleState,
    stock_changed,
)

COMMITMENT = re.compile(r"[0-9a-f]{64}")
ORDER_FRESHNESS_MS: Final = 30_000
ORDERS_MAX: Final = 2_000_000
EXPIRIES_PER_TICK_MAX: Final = 10_000


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    order_id: str
    sale_id: str
    buyer_id: str
    quantity: int
    price_cents: int
    time_ms: int
    signature: str

    def signed_fields(self) -> dict[str, object]:
        return {
            "buyer_id": self.buyer_id,
            "order_id": self.order_id,
            "price_cents": self.price_cents,
            "quantity": self.quantity,
            "sale_id": self.sale_id,
            "time_ms": self.time_ms,
        }

    def signing_bytes(self) -> bytes:
        return signing_bytes(DOMAIN_ORDER, self.signed_fields())


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """What checking an order's signature found: `refused` (`bad_field` when the fields
    cannot be written canonically, `bad_signature`), or None and `digest`, the SHA-256 of
    the signed bytes (the order's fingerprint for idempotency). `check_order_signature`
    makes it from the command alone, so an adapter may run it ahead of the core,
    elsewhere (another process: livecommerce/pipeline/verifying.py), and hand the command
    over as a `CheckedOrder`."""

    refused: Rejected | None
    digest: bytes


def check_order_signature(command: PlaceOrder) -> SignatureCheck:
    try:
        message = command.signing_bytes()
    except CanonicalError as error:
        return SignatureCheck(Rejected(Reason.BAD_FIELD, str(error)), b"")
    refused = verify_signature(command.buyer_id, message, command.signature)
    if refused is not None:
        return SignatureCheck(refused, b"")
    return SignatureCheck(None, hashlib.sha256(message).digest())


@dataclass(frozen=True, slots=True)
class CheckedOrder:
    """A `PlaceOrder` with its signature already checked (`check_order_signature` of this
    very command). The core takes the check as given, as it takes a stock store's answer;
    every other rule is applied as for a `PlaceOrder`."""

    order: PlaceOrder
    check: SignatureCheck


@dataclass(frozen=True, slots=True)
class PayOrder:
    """A payment the provider authorized (the adapter asked it, with the buyer's card,
    from the buyer's authenticated session): the order is paid and its money is held in
    escrow (escrow.py). `provider` and `authorization_id` name the authorization (no card
    data). `shipping_commitment` is the salted commitment to the buyer's sealed shipping
    details (privacy.py), "" for none: the adapter seals the details and keeps them off
    the ledger; only the commitment goes on."""

    buyer_id: str
    order_id: str
    shipping_commitment: str = ""
    provider: str = ""
    authorization_id: str = ""


class OrderStatus(StrEnum):
    HELD = "held"
    PAID = "paid"
    EXPIRED = "expired"
    CANCELLED = "cancelled"  # by the buyer before paying
    REJECTED = "rejected"


# A hold whose units went back to the sale (expired, or cancelled by its buyer).
RELEASED: Final = frozenset({OrderStatus.EXPIRED, OrderStatus.CANCELLED})


class OrderAccepted(msgspec.Struct, Event, frozen=True, gc=False):
    """An accepted order. A msgspec Struct with `gc=False`, like `OrderRejected` and the
    order book's records that keep them: only plain values (str, int, bytes, enum
    members), never a reference back, so no reference cycle can pass through them, and
    the cyclic garbage collector need not walk the (up to `orders_max`) remembered
    answers. With tracked objects per order, full collections of a growing order table
    paused the server for 100 to 235 ms (docs/benchmarks.md)."""

    order_id: str
    sale_id: str
    buyer_id: str  # The buyer's public key: a pseudonym, needed to replay per-buyer limits.
    quantity: int
    price_cents: int
    currency: str
    hold_expires_at_ms: int
    time_ms: int
    # SHA-256 (hex) of the signed order bytes: after a restart, a retry with the same
    # bytes still gets this answer, and altered bytes are still refused.
    order_digest: str
    # What the buyer signed, so the ledger itself proves the order: a verifier rebuilds the
    # order bytes from buyer_id, order_id, price_cents, quantity, sale_id and
    # `signed_time_ms` (the client's time) and checks `signature` with the buyer's key.
    signed_time_ms: int
    signature: str

    def to_entry(self) -> Entry:
        return "order/v1", {"action": "accepted", **flat_fields(self)}

    def signed_command(self) -> PlaceOrder:
        """The order as the buyer signed it (its signature can be checked again)."""
        return PlaceOrder(
            self.order_id,
            self.sale_id,
            self.buyer_id,
            self.quantity,
            self.price_cents,
            self.signed_time_ms,
            self.signature,
        )


class OrderRejected(msgspec.Struct, Event, frozen=True, gc=False):
    """A refused order (untracked by the garbage collector, as `OrderAccepted`)."""

    order_id: str
    sale_id: str
    buyer_id: str
    reason: Reason
    detail: str
    time_ms: int

    def to_entry(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class OrderRepeated(Event):
    """The same order again: `first` is the first answer, `status` where it is now."""

    first: OrderAccepted | OrderRejected
    status: OrderStatus

    def to_entry(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class OrderPaid(Event):
    order_id: str
    sale_id: str
    buyer_id: str
    quantity: int
    amount_cents: int
    currency: str
    time_ms: int
    shipping_commitment: str = ""
    provider: str = ""
    authorization_id: str = ""

    def to_entry(self) -> Entry:
        return "order/v1", {"action": "paid", **flat_fields(self)}


@dataclass(frozen=True, slots=True)
class OrderExpired(Event):
    """An unpaid hold ran out, or its buyer cancelled it (`cancel_step_id`, the signed
    step's id: escrow.py); its units go back to the sale (external: call release)."""

    order_id: str
    sale_id: str
    buyer_id: str
    quantity: int
    time_ms: int
    cancel_step_id: str = ""

    def to_entry(self) -> Entry:
        fields = flat_fields(self)
        if not self.cancel_step_id:
            del fields["cancel_step_id"]
            return "order/v1", {"action": "expired", **fields}
        return "order/v1", {"action": "hold_cancelled", **fields}


@dataclass(frozen=True, slots=True)
class PaymentRefused(Event):
    order_id: str
    buyer_id: str
    reason: Reason
    detail: str

    def to_entry(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class PreparedOrder:
    """An order that passed every check but stock; hand it to a stock store."""

    command: PlaceOrder
    digest: bytes
    per_buyer_limit: int


class _Order(msgspec.Struct, gc=False):
    """One remembered order. Not tracked by the garbage collector (see `OrderAccepted`):
    its fields are plain values and an untracked answer."""

    sale_id: str
    digest: bytes
    answer: OrderAccepted | OrderRejected
    status: OrderStatus
    quantity: int
    # Whether the sale's local counts include this order's units (always, in local
    # mode; in external mode, when the local mirror took it).
    counted: bool


class OrderBook:
    def __init__(
        self,
        identities: IdentityRegistry,
        sales: SaleBook,
        order_freshness_ms: int = ORDER_FRESHNESS_MS,
        orders_max: int = ORDERS_MAX,
        expiries_per_tick_max: int = EXPIRIES_PER_TICK_MAX,
        external_stock: bool = False,
    ) -> None:
        assert order_freshness_ms > 0
        assert orders_max > 0
        assert expiries_per_tick_max > 0
        self.identities = identities
        self.sales = sales
        self.order_freshness_ms = order_freshness_ms
        self.orders_max = orders_max
        self.expiries_per_tick_max = expiries_per_tick_max
        self.external_stock = external_stock
        self._orders: dict[tuple[str, str], _Order] = {}
        self._keys_by_sale: dict[str, list[tuple[str, str]]] = {}
        # (hold_expires_at_ms, buyer_id, order_id): a min-heap of holds to expire.
        self._holds: list[tuple[int, str, str]] = []

    def status(self, buyer_id: str, order_id: str) -> OrderStatus | None:
        order = self._orders.get((buyer_id, order_id))
        return None if order is None else order.status

    def _remember(self, key: tuple[str, str], order: _Order) -> None:
        assert key not in self._orders, key
        self._orders[key] = order
        self._keys_by_sale.setdefault(order.sale_id, []).append(key)

    def orders_of_sale(self, sale_id: str) -> list[tuple[tuple[str, str], _Order]]:
        """(buyer_id, order_id) and the order, for every remembered order of a sale."""
        return [(key, self._orders[key]) for key in self._keys_by_sale.get(sale_id, [])]

    def orders_remembered(self) -> int:
        return len(self._orders)

    def forget_sale(self, sale_id: str) -> int | Rejected:
        """Drop the order records of a closed sale whose holds are all settled, so the
        order table (bounded by `orders_max`) does not fill up over days of sales. Call
        it once the sale's answers no longer need repeating (e.g. an hour after it
        closed). Returns how many records were dropped. A retry of a forgotten order then
        gets `stale` or `sale_not_open`, never a second acceptance."""
        sale = self.sales.get(sale_id)
        if sale is None:
            return Rejected(Reason.UNKNOWN_SALE, "no such sale")
        if sale.state is not SaleState.CLOSED:
            return Rejected(Reason.SALE_NOT_OPEN, "only a closed sale can be forgotten")
        keys = self._keys_by_sale.get(sale_id, [])
        if any(self._orders[key].status is OrderStatus.HELD for key in keys):
            return Rejected(Reason.CAPACITY, "the sale still has unpaid holds; retry later")
        for key in keys:
            del self._orders[key]
        self._keys_by_sale.pop(sale_id, None)
        sale.stock.forget_orders()
        return len(keys)

    # Replay from the ledger (trusted entries, in ledger order).

    def restore_accepted(self, accepted: OrderAccepted) -> None:
        key = (accepted.buyer_id, accepted.order_id)
        if key in self._orders:
            return  # Scaled out, two processes can both log one retried order.
        sale = self.sales.get(accepted.sale_id)
        assert sale is not None, f"order {accepted.order_id} for an unknown sale"
        taken = sale.stock.reserve(
            accepted.buyer_id, accepted.order_id, accepted.quantity, sale.spec.per_buyer_limit
        )
        if not taken.accepted and not self.external_stock:
            raise ValueError(f"ledger order {accepted.order_id} oversells or breaks a limit")
        counted = taken.accepted and not taken.duplicate
        if counted:
            sale.units_held += accepted.quantity
        self._remember(
            key,
            _Order(
                sale.sale_id,
                bytes.fromhex(accepted.order_digest),
                accepted,
                OrderStatus.HELD,
                accepted.quantity,
                counted,
            ),
        )
        heapq.heappush(self._holds, (accepted.hold_expires_at_ms, *key))

    def award(
        self, sale: Sale, buyer_id: str, order_id: str, price_cents: int, digest_hex: str,
        now_ms: int,
    ) -> list[Event]:  # fmt: skip
        """An auction's lot to its winner (auctions.py): one unit held for payment at the
        winning price, as if ordered; the order's proof is the auction's bid entries."""
        key = (buyer_id, order_id)
        assert key not in self._orders, key
        taken = sale.stock.reserve(buyer_id, order_id, 1, sale.spec.per_buyer_limit)
        assert taken.accepted, taken
        assert not taken.duplicate, taken
        sale.units_held += 1
        accepted = OrderAccepted(
            order_id, sale.sale_id, buyer_id, 1, price_cents, sale.currency,
            now_ms + sale.spec.payment_hold_ms, now_ms, digest_hex, now_ms, "",
        )  # fmt: skip
        self._remember(
            key,
            _Order(sale.sale_id, bytes.fromhex(digest_hex), accepted, OrderStatus.HELD, 1, True),
        )
        heapq.heappush(self._holds, (accepted.hold_expires_at_ms, *key))
        return [accepted, stock_changed(sale, f"award:{order_id}", now_ms)]

    def restore_paid(self, buyer_id: str, order_id: str) -> None:
        order = self._orders[(buyer_id, order_id)]
        if order.status is OrderStatus.PAID:
            return
        sale = self.sales.get(order.sale_id)
        assert sale is not None
        if order.status in RELEASED:  # Settled in the store after a local expiry.
            order.counted = order.counted and sale.stock.retake(buyer_id, order_id)
            if order.counted:
                sale.units_held += order.quantity
        elif order.counted:
            assert sale.stock.settle(buyer_id, order_id)
        order.status = OrderStatus.PAID
        if order.counted:
            sale.units_held -= order.quantity
            sale.units_sold += order.quantity

    def restore_expired(
        self, buyer_id: str, order_id: str, time_ms: int, cancel_step_id: str = ""
    ) -> None:
        self._expire(buyer_id, order_id, time_ms, cancel_step_id)

    def holds_pending(self) -> int:
        return len(self._holds)

    # The order path.

    def prepare(
        self, command: PlaceOrder, now_ms: int, check: SignatureCheck | None = None
    ) -> PreparedOrder | list[Event]:
        """Every check but stock. `check` is the signature's, if it was checked ahead
        (`CheckedOrder`); without it the signature is checked here."""

        def reject(reason: Reason, detail: str) -> list[Event]:
            return [
                OrderRejected(
                    command.order_id, command.sale_id, command.buyer_id, reason, detail, now_ms
                )
            ]

        if not all_text(command.order_id) or ORDER_ID.fullmatch(command.order_id) is None:
            return reject(Reason.BAD_ORDER_ID, "order_id must be 1..64 of [A-Za-z0-9_-]")
        if not all_text(command.sale_id, command.buyer_id, command.signature):
            return reject(Reason.BAD_FIELD, "sale_id, buyer_id and signature must be text")
        if not all_integers(command.quantity):
            return reject(Reason.BAD_QUANTITY, "quantity must be an integer")
        if not all_integers(command.price_cents, command.time_ms):
            return reject(Reason.BAD_FIELD, "price_cents and time_ms must be integers")
        if self.identities.get(command.buyer_id) is None:
            return reject(Reason.UNKNOWN_IDENTITY, "buyer key is not registered")
        if check is None:
            check = check_order_signature(command)
        if check.refused is not None:
            return reject(check.refused.reason, check.refused.detail)
        digest = check.digest
        key = (command.buyer_id, command.order_id)
        seen = self._orders.get(key)
        if seen is not None:
            if seen.digest != digest:
                return reject(
                    Reason.DUPLICATE_CONFLICT,
                    "this order_id was used for a different order; make a new order_id",
                )
            return [OrderRepeated(seen.answer, seen.status)]
        if len(self._orders) >= self.orders_max:
            return reject(Reason.CAPACITY, "order table is full; retry later")

        def remember(reason: Reason, detail: str) -> list[Event]:
            events = reject(reason, detail)
            rejected = events[0]
            assert isinstance(rejected, OrderRejected)
            self._remember(
                key, _Order(command.sale_id, digest, rejected, OrderStatus.REJECTED, 0, False)
            )
            return events

        if abs(now_ms - command.time_ms) > self.order_freshness_ms:
            return remember(
                Reason.STALE, f"order time is more than {self.order_freshness_ms} ms from now"
            )
        sale = self.sales.get(command.sale_id)
        if sale is None:
            return remember(Reason.UNKNOWN_SALE, "no such sale")
        if sale.sale_id.startswith(LOT_SALE_PREFIX):
            return remember(Reason.SALE_NOT_OPEN, "this lot is sold by auction: bid instead")
        if sale.state is not SaleState.OPEN:
            detail = f"sale is {sale.state}" + (
                f" ({sale.close_reason})" if sale.close_reason else ""
            )
            return remember(Reason.SALE_NOT_OPEN, detail)
        if command.price_cents != sale.spec.price_cents:
            return remember(Reason.PRICE_CHANGED, f"the price is now {sale.spec.price_cents} cents")
        if not 1 <= command.quantity <= sale.spec.per_buyer_limit:
            return remember(Reason.BAD_QUANTITY, f"quantity must be 1..{sale.spec.per_buyer_limit}")
        return PreparedOrder(command, digest, sale.spec.per_buyer_limit)

    def complete(self, prepared: PreparedOrder, result: ReserveResult, now_ms: int) -> list[Event]:
        """Record the stock store's answer for a prepared order."""
        command = prepared.command
        key = (command.buyer_id, command.order_id)
        if key in self._orders:  # Two prepares of one order raced to here: first wins.
            seen = self._orders[key]
            return [OrderRepeated(seen.answer, seen.status)]
        sale = self.sales.get(command.sale_id)
        assert sale is not None, "sales are never deleted"
        counted = not self.external_stock
        if self.external_stock and result.accepted:
            mirrored = sale.stock.reserve(
                command.buyer_id, command.order_id, command.quantity, prepared.per_buyer_limit
            )
            counted = mirrored.accepted
        if result.status in (ReserveStatus.UNKNOWN_SALE, ReserveStatus.CAPACITY):
            # Transient, the store's trouble rather than the order's: not remembered, so
            # a retry after the store is rebuilt (or has room) gets a real answer.
            transient = Reason.STOCK_UNAVAILABLE
            if result.status is ReserveStatus.CAPACITY:
                transient = Reason.CAPACITY
            detail = "stock store cannot take this order now; retry shortly"
            return [
                OrderRejected(
                    command.order_id, command.sale_id, command.buyer_id, transient, detail, now_ms
                )
            ]
        if not result.accepted or result.conflict:
            reason = {
                ReserveStatus.SOLD_OUT: Reason.SOLD_OUT,
                ReserveStatus.LIMIT_REACHED: Reason.LIMIT_REACHED,
            }.get(result.status, Reason.DUPLICATE_CONFLICT)
            if result.conflict:
                reason = Reason.DUPLICATE_CONFLICT
            rejected = OrderRejected(
                command.order_id,
                command.sale_id,
                command.buyer_id,
                reason,
                _reserve_detail(reason, sale),
                now_ms,
            )
            self._remember(
                key, _Order(sale.sale_id, prepared.digest, rejected, OrderStatus.REJECTED, 0, False)
            )
            return [rejected]
        hold_expires_at_ms = now_ms + sale.spec.payment_hold_ms
        accepted = OrderAccepted(
            command.order_id,
            sale.sale_id,
            command.buyer_id,
            command.quantity,
            sale.spec.price_cents,
            sale.currency,
            hold_expires_at_ms,
            now_ms,
            prepared.digest.hex(),
            command.time_ms,
            command.signature,
        )
        self._remember(
            key,
            _Order(
                sale.sale_id, prepared.digest, accepted, OrderStatus.HELD, command.quantity, counted
            ),
        )
        heapq.heappush(self._holds, (hold_expires_at_ms, command.buyer_id, command.order_id))
        if counted:
            sale.units_held += command.quantity
        changed = stock_changed(sale, f"order:{command.order_id}", now_ms)
        if self.external_stock:
            changed = msgspec.structs.replace(changed, units_remaining=result.remaining)
        return [accepted, changed]

    def place(
        self, command: PlaceOrder, now_ms: int, check: SignatureCheck | None = None
    ) -> list[Event]:
        """Local stock: prepare, take stock from the sale itself, complete. Atomic."""
        assert not self.external_stock, "external stock: use prepare / store / complete"
        prepared = self.prepare(command, now_ms, check)
        if not isinstance(prepared, PreparedOrder):
            return prepared
        sale = self.sales.get(command.sale_id)
        assert sale is not None
        result = sale.stock.reserve(
            command.buyer_id, command.order_id, command.quantity, prepared.per_buyer_limit
        )
        return self.complete(prepared, result, now_ms)

    def accepted_of_sale(self, sale_id: str, limit: int) -> list[tuple[OrderAccepted, OrderStatus]]:
        """Up to `limit` accepted orders of a sale, oldest first, with their status now."""
        found: list[tuple[OrderAccepted, OrderStatus]] = []
        for key in self._keys_by_sale.get(sale_id, []):
            order = self._orders[key]
            if isinstance(order.answer, OrderAccepted):
                found.append((order.answer, order.status))
                if len(found) >= limit:
                    break
        return found

    def accepted(self, buyer_id: str, order_id: str) -> OrderAccepted | None:
        order = self._orders.get((buyer_id, order_id))
        if order is None or not isinstance(order.answer, OrderAccepted):
            return None
        return order.answer

    # Payment and expiry.

    def pay(self, command: PayOrder, now_ms: int, store_settled: bool | None = None) -> list[Event]:
        """Settle a held order. Local stock: `store_settled` is None. External stock: the
        adapter first awaits `store.settle(...)` and passes its answer, because the store
        arbitrates between this payment and an expiry (here or in another process):
        False means the units were already released, so the payment is refused; True
        means they are sold, even if this process expired the hold meanwhile."""
        assert (store_settled is None) == (not self.external_stock), "store_settled"

        def refuse(reason: Reason, detail: str) -> list[Event]:
            return [PaymentRefused(command.order_id, command.buyer_id, reason, detail)]

        if not all_text(
            command.buyer_id,
            command.order_id,
            command.shipping_commitment,
            command.provider,
            command.authorization_id,
        ):
            return refuse(Reason.BAD_FIELD, "payment fields must be text")
        if (
            command.shipping_commitment
            and COMMITMENT.fullmatch(command.shipping_commitment) is None
        ):
            return refuse(Reason.BAD_FIELD, "shipping_commitment must be 64 lowercase hex digits")
        order = self._orders.get((command.buyer_id, command.order_id))
        if order is None:
            return refuse(Reason.UNKNOWN_ORDER, "no such order for this buyer")
        if order.status is OrderStatus.PAID:
            return [OrderRepeated(order.answer, order.status)]
        if order.status is OrderStatus.REJECTED:
            return refuse(Reason.UNKNOWN_ORDER, "this order was not accepted")
        accepted = order.answer
        assert isinstance(accepted, OrderAccepted)
        sale = self.sales.get(order.sale_id)
        assert sale is not None
        if store_settled is False:
            expired = self._expire(command.buyer_id, command.order_id, now_ms)
            return [*expired, *refuse(Reason.ORDER_EXPIRED, "the payment hold expired")]
        if order.status in RELEASED and store_settled is None:
            return refuse(Reason.ORDER_EXPIRED, "the payment hold expired; order again")
        if (
            order.status is OrderStatus.HELD
            and store_settled is None
            and now_ms >= accepted.hold_expires_at_ms
        ):
            expired = self._expire(command.buyer_id, command.order_id, now_ms)
            return [*expired, *refuse(Reason.ORDER_EXPIRED, "the payment hold expired")]
        if order.status in RELEASED:
            # External stock, settled in the store although this process expired the hold
            # while the settlement was in flight (its release then gave back nothing).
            # The store is right: the units are sold. Take them back in the local mirror
            # if it still has them; otherwise leave them out of the local counts.
            order.counted = order.counted and sale.stock.retake(command.buyer_id, command.order_id)
            if order.counted:
                sale.units_held += order.quantity
        else:
            assert order.status is OrderStatus.HELD
            if order.counted:
                settled = sale.stock.settle(command.buyer_id, command.order_id)
                assert settled
        order.status = OrderStatus.PAID
        if order.counted:
            sale.units_held -= order.quantity
            sale.units_sold += order.quantity
        events: list[Event] = [
            OrderPaid(
                command.order_id,
                sale.sale_id,
                command.buyer_id,
                order.quantity,
                order.quantity * accepted.price_cents,
                accepted.currency,
                now_ms,
                command.shipping_commitment,
                command.provider,
                command.authorization_id,
            ),
            stock_changed(sale, f"paid:{command.order_id}", now_ms),
        ]
        if (
            not self.external_stock
            and sale.state is not SaleState.CLOSED
            and sale.units_sold == sale.spec.units_offered
        ):
            events.append(self.sales.close(sale, CloseReason.SOLD_OUT, now_ms))
        return events

    def cancel_hold(
        self, buyer_id: str, order_id: str, step_id: str, now_ms: int
    ) -> list[Event] | Rejected:
        """The buyer cancels an order not paid yet (the adapter checked the signed step):
        its units go back to the sale at once, as when the hold expires."""
        if self.status(buyer_id, order_id) is not OrderStatus.HELD:
            return Rejected(Reason.WRONG_STAGE, "only an order held for payment is cancelled so")
        return self._expire(buyer_id, order_id, now_ms, step_id)

    def _expire(
        self, buyer_id: str, order_id: str, now_ms: int, cancel_step_id: str = ""
    ) -> list[Event]:
        order = self._orders.get((buyer_id, order_id))
        if order is None or order.status is not OrderStatus.HELD:
            return []  # Paid (or already expired) since the hold was queued.
        sale = self.sales.get(order.sale_id)
        assert sale is not None
        order.status = OrderStatus.CANCELLED if cancel_step_id else OrderStatus.EXPIRED
        if order.counted:
            released = sale.stock.release(buyer_id, order_id)
            assert released.released_units == order.quantity, released
            sale.units_held -= order.quantity
        cause = "cancelled" if cancel_step_id else "expired"
        return [
            OrderExpired(order_id, sale.sale_id, buyer_id, order.quantity, now_ms, cancel_step_id),
            stock_changed(sale, f"{cause}:{order_id}", now_ms),
        ]

    def tick(self, now_ms: int) -> list[Event]:
        """Expire unpaid holds due by `now_ms`, at most `expiries_per_tick_max` per call."""
        events: list[Event] = []
        for _ in range(self.expiries_per_tick_max):
            if not self._holds or self._holds[0][0] > now_ms:
                break
            _, buyer_id, order_id = heapq.heappop(self._holds)
            events.extend(self._expire(buyer_id, order_id, now_ms))
        return events


def _reserve_detail(reason: Reason, sale: Sale) -> str:
    if reason is Reason.SOLD_OUT:
        return "not enough units left"
    if reason is Reason.LIMIT_REACHED:
        return f"at most {sale.spec.per_buyer_limit} units per buyer in this sale"
    if reason is Reason.DUPLICATE_CONFLICT:
        return "the stock store has this order_id with another quantity"
    return str(reason)
