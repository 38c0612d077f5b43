"""Group buying (拼团): a sale's merchant offers its price to groups of N buyers within a
window; buyers open and join groups with orders of that sale, and pay into escrow as for
any order. Sans-I/O; every refusal changes nothing.

    offer (merchant) --open (a buyer signs, with a held order)--> open group
        --join (others sign, each with a held order)-->  places fill
        --pay (escrow pending, as any order)--> paid members
    N paid (or the last tier full) --> succeeded: each payment posts at the group price
    the window ends with fewer than N paid --> failed: each payment is voided, the units
        go back; unpaid holds of members are released at either close.

- The offer (`OfferGroup`, from the merchant's session) is made for a sale: its price is
  the price for `size` buyers; optional `tiers` ([members, price], ascending members and
  descending prices) lower it the more join. Without tiers a group closes as soon as
  `size` have paid; with tiers at the end of its window (or when the last tier is full),
  at the price of the largest tier its paid members reach. The difference between what a
  member paid and the group price is released from the payment at close (the escrow
  captures only the group price: the pending transfer is posted in part), and the close
  entry says, member by member, how much came back.
- A sale with an offer sells only in groups: paying an order that is in no group, or in a
  group that closed, is refused (`group_needed`, `group_closed`), and its hold runs out.
- A place is an order holding the sale's units, so there are never more places than
  stock. One place per buyer per group, one group per order; a group has at most as many
  places as its largest tier (or `size`). A member whose hold ran out or who cancelled
  frees the place.
- A group's order may not ship until the group succeeded (`group_open`).

Signed steps: `livecommerce/group/v1\\n` + canonical JSON of `{action, buyer_id,
group_id, order_id, time_ms}` with action `open` or `join`. Entries (`group/v1`):
`offered`, `opened`, `joined` (the signed fields and the signature), `succeeded` and
`failed` (who paid what, what came back, which holds were released). Replay takes each
again and checks that it makes the same entry (replay.py); a close is the head of the
money entries it makes.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from livecommerce.commerce.canonical import DOMAIN_GROUP, CanonicalError, signing_bytes
from livecommerce.commerce.escrow import EscrowBook, Stage
from livecommerce.commerce.events import Entry, Event
from livecommerce.commerce.identity import IdentityRegistry, verify_signature
from livecommerce.commerce.orders import OrderBook, OrderStatus
from livecommerce.commerce.results import Reason, Rejected, all_integers, all_text
from livecommerce.commerce.sales import SaleBook, SaleState

GROUP_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
SIZE_MIN: Final = 2
PLACES_MAX: Final = 50  # in the largest tier
WINDOW_MS_MIN: Final = 5_000
WINDOW_MS_MAX: Final = 7 * 24 * 3600 * 1000
TIERS_MAX: Final = 5
GROUPS_MAX: Final = 200_000
OFFERS_MAX: Final = 100_000
STEP_FRESHNESS_MS: Final = 300_000
CLOSES_PER_TICK_MAX: Final = 1_000
CLOSED_LISTED_MAX: Final = 10  # closed groups a sale's list shows, newest first
# A member's payment counts while it is held in escrow.
PAID_STAGES: Final = frozenset({Stage.PAID})


class GroupAction(StrEnum):
    OPEN = "open"
    JOIN = "join"


class Outcome(StrEnum):
    OPEN = "open"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class OfferGroup:
    """From the sale's merchant (the adapter checked the session). `tiers`: beyond
    `size`, [members, price_cents] pairs, members ascending and prices descending."""

    merchant_id: str
    sale_id: str
    size: int
    window_ms: int
    tiers: list[list[int]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class GroupStep:
    """A buyer opens a group (`group_id` is new, the buyer chooses it) or joins one, with
    an order of the offer's sale that holds its units."""

    action: str
    group_id: str
    buyer_id: str
    order_id: str
    time_ms: int
    signature: str = ""

    def signed_fields(self) -> dict[str, object]:
        return {
            "action": self.action,
            "buyer_id": self.buyer_id,
            "group_id": self.group_id,
            "order_id": self.order_id,
            "time_ms": self.time_ms,
        }

    def signing_bytes(self) -> bytes:
        return signing_bytes(DOMAIN_GROUP, self.signed_fields())


@dataclass(frozen=True, slots=True)
class Offer:
    sale_id: str
    merchant_id: str
    product_id: str
    size: int
    window_ms: int
    currency: str
    # (members, price_cents) from (size, the sale's price) on, members ascending.
    tiers: tuple[tuple[int, int], ...]
    offered_at_ms: int

    @property
    def places(self) -> int:
        return self.tiers[-1][0]

    def price_for(self, members: int) -> int:
        """The price for `members` buyers (the base price below `size`)."""
        price = self.tiers[0][1]
        for tier_members, tier_price in self.tiers:
            if members >= tier_members:
                price = tier_price
        return price


@dataclass
class Group:
    group_id: str
    sale_id: str
    opened_by: str
    opened_order: str
    opened_at_ms: int
    closes_at_ms: int
    members: dict[str, str] = field(default_factory=dict)  # buyer_id -> order_id, in order
    outcome: Outcome = Outcome.OPEN
    price_cents: int = 0  # at close
    closed_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class GroupOffered(Event):
    offer: Offer

    def to_entry(self) -> Entry:
        offer = self.offer
        return "group/v1", {
            "action": "offered",
            "sale_id": offer.sale_id,
            "merchant_id": offer.merchant_id,
            "product_id": offer.product_id,
            "size": offer.size,
            "window_ms": offer.window_ms,
            "currency": offer.currency,
            "tiers": [[members, price] for members, price in offer.tiers],
            "time_ms": offer.offered_at_ms,
        }


@dataclass(frozen=True, slots=True)
class GroupStepTaken(Event):
    step: GroupStep
    sale_id: str
    closes_at_ms: int
    time_ms: int

    def to_entry(self) -> Entry:
        step = self.step
        return "group/v1", {
            "action": "opened" if step.action == GroupAction.OPEN else "joined",
            "group_id": step.group_id,
            "buyer_id": step.buyer_id,
            "order_id": step.order_id,
            "signed_time_ms": step.time_ms,
            "signature": step.signature,
            "sale_id": self.sale_id,
            "closes_at_ms": self.closes_at_ms,
            "time_ms": self.time_ms,
        }


@dataclass(frozen=True, slots=True)
class GroupClosed(Event):
    """`paid`: [buyer_id, order_id, paid_cents, back_cents] per paid member (`back_cents`:
    released at close, all of it when the group failed); `released`: [buyer_id, order_id]
    of members' holds not paid, released."""

    group_id: str
    sale_id: str
    outcome: Outcome
    price_cents: int
    currency: str
    paid: tuple[tuple[str, str, int, int], ...]
    released: tuple[tuple[str, str], ...]
    time_ms: int

    def to_entry(self) -> Entry:
        return "group/v1", {
            "action": str(self.outcome),
            "group_id": self.group_id,
            "sale_id": self.sale_id,
            "price_cents": self.price_cents,
            "currency": self.currency,
            "paid": [list(member) for member in self.paid],
            "released": [list(member) for member in self.released],
            "time_ms": self.time_ms,
        }


@dataclass(frozen=True, slots=True)
class GroupRepeated(Event):
    """The same step again: taken already, nothing changes."""

    group_id: str

    def to_entry(self) -> None:
        return None


class GroupBook:
    def __init__(
        self,
        identities: IdentityRegistry,
        sales: SaleBook,
        orders: OrderBook,
        escrow: EscrowBook,
    ) -> None:
        self.identities = identities
        self.sales = sales
        self.orders = orders
        self.escrow = escrow
        self._offers: dict[str, Offer] = {}
        self._groups: dict[str, Group] = {}
        self._of_sale: dict[str, list[str]] = {}  # sale id -> group ids, oldest first
        self._group_of: dict[tuple[str, str], str] = {}  # (buyer, order) -> group id
        self._due: list[tuple[int, str]] = []  # (closes at ms, group id): a heap

    # Reading

    def offer(self, sale_id: str) -> Offer | None:
        return self._offers.get(sale_id)

    def get(self, group_id: str) -> Group | None:
        return self._groups.get(group_id)

    def group_of(self, buyer_id: str, order_id: str) -> Group | None:
        group_id = self._group_of.get((buyer_id, order_id))
        return None if group_id is None else self._groups[group_id]

    def of_sale(self, sale_id: str) -> list[Group]:
        return [self._groups[group_id] for group_id in self._of_sale.get(sale_id, [])]

    def paid_members(self, group: Group) -> list[tuple[str, str]]:
        paid = []
        for buyer_id, order_id in group.members.items():
            life = self.escrow.get(buyer_id, order_id)
            if life is not None and life.stage in PAID_STAGES:
                paid.append((buyer_id, order_id))
        return paid

    def held_members(self, group: Group) -> list[tuple[str, str]]:
        return [
            (buyer_id, order_id)
            for buyer_id, order_id in group.members.items()
            if self.orders.status(buyer_id, order_id) is OrderStatus.HELD
        ]

    def places_taken(self, group: Group) -> int:
        return len(self.paid_members(group)) + len(self.held_members(group))

    # The merchant's offer

    def make_offer(self, command: OfferGroup, now_ms: int) -> list[Event] | Rejected:
        if not all_text(command.merchant_id, command.sale_id):
            return Rejected(Reason.BAD_FIELD, "merchant_id and sale_id are text")
        if not all_integers(command.size, command.window_ms):
            return Rejected(Reason.BAD_FIELD, "size and window_ms are integers")
        sale = self.sales.get(command.sale_id)
        if sale is None:
            return Rejected(Reason.UNKNOWN_SALE, "no such sale")
        if sale.spec.merchant_id != command.merchant_id:
            return Rejected(Reason.NOT_MERCHANT, "only the sale's merchant offers group prices")
        if sale.state is SaleState.CLOSED:
            return Rejected(Reason.SALE_CLOSED, "the sale is over")
        tiers = _tiers(command, sale.spec.price_cents)
        if isinstance(tiers, Rejected):
            return tiers
        if not WINDOW_MS_MIN <= command.window_ms <= WINDOW_MS_MAX:
            return Rejected(
                Reason.BAD_FIELD, f"window_ms is {WINDOW_MS_MIN}..{WINDOW_MS_MAX} (7 days)"
            )
        offer = Offer(
            sale.sale_id, command.merchant_id, sale.spec.product_id, command.size,
            command.window_ms, sale.currency, tiers, now_ms,
        )  # fmt: skip
        known = self._offers.get(command.sale_id)
        if known is not None:
            if (known.size, known.window_ms, known.tiers) == (offer.size, offer.window_ms, tiers):
                return []  # the same offer again
            return Rejected(Reason.GROUP_EXISTS, "this sale's group offer is made already")
        if len(self._offers) >= OFFERS_MAX:
            return Rejected(Reason.CAPACITY, "too many group offers")
        self._offers[offer.sale_id] = offer
        return [GroupOffered(offer)]

    # Buyers' signed steps

    def take(
        self, step: GroupStep, now_ms: int, verify: bool = True, fresh: bool = True
    ) -> list[Event] | Rejected:
        """`verify` False: the signature was checked when the step was taken (the
        server's own replay); `fresh` False: replay, where the time is the entry's."""
        if not all_text(step.action, step.group_id, step.buyer_id, step.order_id, step.signature):
            return Rejected(Reason.BAD_FIELD, "the step's fields are text")
        if not all_integers(step.time_ms):
            return Rejected(Reason.BAD_FIELD, "time_ms is an integer")
        if step.action not in GroupAction.__members__.values():
            return Rejected(Reason.BAD_FIELD, "action is open or join")
        if GROUP_ID.fullmatch(step.group_id) is None:
            return Rejected(Reason.BAD_FIELD, "group_id is 1..64 of [A-Za-z0-9_-]")
        if self.identities.get(step.buyer_id) is None:
            return Rejected(Reason.UNKNOWN_IDENTITY, "register the buyer's key first")
        if verify:
            try:
                signed = step.signing_bytes()
            except CanonicalError as error:
                return Rejected(Reason.BAD_FIELD, str(error))
            bad = verify_signature(step.buyer_id, signed, step.signature)
            if bad is not None:
                return Rejected(bad.reason, bad.detail)
        if fresh and abs(now_ms - step.time_ms) > STEP_FRESHNESS_MS:
            return Rejected(Reason.STALE, "the step's time is too far from now")
        accepted = self.orders.accepted(step.buyer_id, step.order_id)
        if accepted is None:
            return Rejected(Reason.UNKNOWN_ORDER, "no such accepted order")
        offer = self._offers.get(accepted.sale_id)
        if offer is None:
            return Rejected(Reason.NO_GROUP_OFFER, "the order's sale has no group")
        known = self._group_of.get((step.buyer_id, step.order_id))
        if known is not None:
            group = self._groups[known]
            opener = (group.opened_by, group.opened_order) == (step.buyer_id, step.order_id)
            if known == step.group_id and (step.action == GroupAction.OPEN) == opener:
                return [GroupRepeated(known)]
            return Rejected(Reason.ALREADY_IN_GROUP, "the order is in a group already")
        if self.orders.status(step.buyer_id, step.order_id) is not OrderStatus.HELD:
            return Rejected(Reason.WRONG_STAGE, "only an order held for payment")
        if step.action == GroupAction.OPEN:
            if step.group_id in self._groups:
                return Rejected(Reason.GROUP_EXISTS, "a group with this id exists")
            if len(self._groups) >= GROUPS_MAX:
                return Rejected(Reason.CAPACITY, "too many groups; retry later")
            group = Group(
                step.group_id, offer.sale_id, step.buyer_id, step.order_id, now_ms,
                now_ms + offer.window_ms,
            )  # fmt: skip
            self._groups[group.group_id] = group
            self._of_sale.setdefault(offer.sale_id, []).append(group.group_id)
            heapq.heappush(self._due, (group.closes_at_ms, group.group_id))
        else:
            joined = self._groups.get(step.group_id)
            if joined is None:
                return Rejected(Reason.UNKNOWN_GROUP, "no such group")
            group = joined
            if group.sale_id != accepted.sale_id:
                return Rejected(Reason.BAD_FIELD, "the order is of another sale")
            if group.outcome is not Outcome.OPEN or now_ms >= group.closes_at_ms:
                return Rejected(Reason.GROUP_CLOSED, "the group has closed")
            if step.buyer_id in group.members and self._member_counts(group, step.buyer_id):
                return Rejected(Reason.ALREADY_IN_GROUP, "one place per buyer")
            if self.places_taken(group) >= offer.places:
                return Rejected(Reason.GROUP_FULL, "every place is taken")
        group.members.pop(step.buyer_id, None)  # a place its hold gave up
        group.members[step.buyer_id] = step.order_id
        self._group_of[(step.buyer_id, step.order_id)] = group.group_id
        return [GroupStepTaken(step, group.sale_id, group.closes_at_ms, now_ms)]

    def _member_counts(self, group: Group, buyer_id: str) -> bool:
        """Whether the buyer's place in the group still stands (held or paid)."""
        order_id = group.members[buyer_id]
        life = self.escrow.get(buyer_id, order_id)
        if life is not None:
            return life.stage not in (Stage.CANCELLED, Stage.CAPTURE_FAILED)
        return self.orders.status(buyer_id, order_id) in (OrderStatus.HELD, OrderStatus.PAID)

    # What payment and shipping ask

    def may_pay(self, buyer_id: str, order_id: str, sale_id: str) -> Rejected | None:
        if sale_id not in self._offers:
            return None
        group = self.group_of(buyer_id, order_id)
        if group is None:
            return Rejected(Reason.GROUP_NEEDED, "this sale sells in groups: open or join one")
        if group.outcome is not Outcome.OPEN:
            return Rejected(Reason.GROUP_CLOSED, f"the group has {group.outcome}")
        return None

    def may_ship(self, buyer_id: str, order_id: str) -> Rejected | None:
        group = self.group_of(buyer_id, order_id)
        if group is not None and group.outcome is not Outcome.SUCCEEDED:
            return Rejected(Reason.GROUP_OPEN, "the order's group has not succeeded")
        return None

    def paid(self, buyer_id: str, order_id: str, now_ms: int) -> list[Event]:
        """After a member's payment: the group closes once every place is paid."""
        group = self.group_of(buyer_id, order_id)
        if group is None or group.outcome is not Outcome.OPEN:
            return []
        offer = self._offers[group.sale_id]
        if len(self.paid_members(group)) < offer.places:
            return []
        return self.close(group, now_ms)

    # Closing

    def tick(self, now_ms: int) -> list[Event]:
        events: list[Event] = []
        for _ in range(CLOSES_PER_TICK_MAX):
            if not self._due or self._due[0][0] > now_ms:
                break
            _, group_id = heapq.heappop(self._due)
            group = self._groups[group_id]
            if group.outcome is Outcome.OPEN:
                events.extend(self.close(group, now_ms))
        return events

    def due(self, group: Group, now_ms: int) -> bool:
        """Whether the group may close now: its window ended, or every place is paid."""
        offer = self._offers[group.sale_id]
        return now_ms >= group.closes_at_ms or len(self.paid_members(group)) >= offer.places

    def close(self, group: Group, now_ms: int, release_holds: bool = True) -> list[Event]:
        """The group's close, then its money and holds. `release_holds` False: replay,
        where each hold's release is its own `order/v1` entry after the close's."""
        assert group.outcome is Outcome.OPEN, group
        offer = self._offers[group.sale_id]
        paid = self.paid_members(group)
        held = self.held_members(group)
        succeeded = len(paid) >= offer.size
        group.outcome = Outcome.SUCCEEDED if succeeded else Outcome.FAILED
        group.price_cents = offer.price_for(len(paid)) if succeeded else 0
        group.closed_at_ms = now_ms
        members: list[tuple[str, str, int, int]] = []
        after: list[Event] = []
        for buyer_id, order_id in paid:
            life = self.escrow.get(buyer_id, order_id)
            assert life is not None
            before = life.amount_cents
            if succeeded:
                self.escrow.reprice(life, life.quantity * group.price_cents)
                back = before - life.amount_cents
            else:
                after.extend(self.escrow.void_paid(life, "group_failed", now_ms))
                back = before
            members.append((buyer_id, order_id, before, back))
        for buyer_id, order_id in held if release_holds else []:
            released = self.orders.cancel_hold(
                buyer_id, order_id, f"group-{group.group_id}", now_ms
            )
            assert not isinstance(released, Rejected), released
            after.extend(released)
        closed = GroupClosed(
            group.group_id, group.sale_id, group.outcome, group.price_cents, offer.currency,
            tuple(members), tuple(held), now_ms,
        )  # fmt: skip
        return [closed, *after]


def _tiers(command: OfferGroup, price_cents: int) -> tuple[tuple[int, int], ...] | Rejected:
    def bad(detail: str) -> Rejected:
        return Rejected(Reason.BAD_FIELD, detail)

    if not SIZE_MIN <= command.size <= PLACES_MAX:
        return bad(f"size is {SIZE_MIN}..{PLACES_MAX} buyers")
    raw: object = command.tiers
    if not isinstance(raw, list) or len(raw) > TIERS_MAX:
        return bad(f"tiers is a list of at most {TIERS_MAX} [members, price_cents]")
    tiers = [(command.size, price_cents)]
    for tier in raw:
        if not isinstance(tier, list) or len(tier) != 2 or not all_integers(*tier):
            return bad("a tier is [members, price_cents], two integers")
        members, price = tier
        if not tiers[-1][0] < members <= PLACES_MAX:
            return bad(f"tiers' members ascend from size, at most {PLACES_MAX}")
        if not 1 <= price < tiers[-1][1]:
            return bad("tiers' prices descend from the sale's price, at least 1")
        tiers.append((members, price))
    return tuple(tiers)


def offer_of(fields: dict[str, object]) -> OfferGroup:
    tiers = fields["tiers"]
    assert isinstance(tiers, list)
    return OfferGroup(
        str(fields["merchant_id"]), str(fields["sale_id"]), int(fields["size"]),  # type: ignore[call-overload]
        int(fields["window_ms"]), [list(tier) for tier in tiers[1:]],  # type: ignore[call-overload]
    )  # fmt: skip


def step_of(fields: dict[str, object]) -> GroupStep:
    action = "open" if fields["action"] == "opened" else "join"
    return GroupStep(
        action, str(fields["group_id"]), str(fields["buyer_id"]), str(fields["order_id"]),
        int(fields["signed_time_ms"]), str(fields["signature"]),  # type: ignore[call-overload]
    )  # fmt: skip
