"""Live auctions: the host auctions one unit of a product with a bid timer; bidders sign
their bids; the winner gets an order at the winning price that is paid into escrow like
any order. Sans-I/O; every refusal changes nothing.

    start (host, for the room's merchant: starting price, duration, mode, bands)
        --bid (a bidder signs auction id, amount, max, time)--> leader and price
        timer ends --> closed: the highest valid bid wins; its order is held
        winner does not pay in time --offer_second (host)--> the second bidder's order
        no bid --> closed unsold; before any bid the host may cancel

- The lot: one unit leaves the product's inventory at the start, into a sale of its own
  (`auction-<auction id>`, one unit, never orderable by `order/v1`: `sale_not_open`),
  which the winner's order holds, so paying, shipping, refunds and settlement are the
  flash sale's (escrow.py).
- Timer: `extend` (a bid accepted in the last `EXTEND_WINDOW_MS` sets the end to
  `EXTEND_WINDOW_MS` from then, up to `EXTENDED_MAX_MS` past the first end) or
  `sudden_death` (no extension). A bid is taken only while now < the end.
- Increments by price band: `bands` [[from_cents, increment_cents], ...] from 0 up
  (default: 100 below 3,000, 200 from 3,000, 500 from 10,000). The first bid is at least
  the starting price; a later one at least the price plus the increment at the price.
- Proxy bidding: a bid may carry `max_cents` (>= amount): the server bids for its bidder
  by the increment up to that maximum. The leader is whoever has the higher maximum; at
  equal maxima the earlier accepted bid leads (ties go to the earlier). The price is then
  the lower maximum plus one increment (at most the leader's maximum), and at least the
  new bid's amount when the new bidder leads. A leader may raise its own maximum.
- Bans: the host may ban a bidder from an auction (`ban`); the bidder's bids are refused.
- Every accepted bid is an entry with the signed fields and what it made (leader, price,
  end), so anyone can replay the auction: the winner is the leader after the last bid
  taken before the end, at that price.

Signed bids: `livecommerce/bid/v1\\n` + canonical JSON of `{amount_cents, auction_id,
bidder_id, max_cents, time_ms}` (`max_cents` 0: no proxy). Entries (`auction/v1`):
`started`, `bid`, `closed` (winner, price, order id; "" and 0 when unsold), `cancelled`,
`banned`, `offered` (to the second bidder). The winner's order is an ordinary `order/v1`
`accepted` entry of the lot's sale, carrying the winning bid's signature and digest.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from livecommerce.commerce.canonical import DOMAIN_BID, CanonicalError, signing_bytes
from livecommerce.commerce.catalog import Catalog
from livecommerce.commerce.events import Entry, Event
from livecommerce.commerce.identity import IdentityRegistry, verify_signature
from livecommerce.commerce.orders import OrderBook, OrderStatus
from livecommerce.commerce.results import Reason, Rejected, all_integers, all_text
from livecommerce.commerce.sales import LOT_SALE_PREFIX, ROOM_ID, SaleBook, ScheduleSale

AUCTION_ID = re.compile(r"[A-Za-z0-9_-]{1,56}")
DURATION_MS_MIN: Final = 10_000
DURATION_MS_MAX: Final = 3_600_000
EXTEND_WINDOW_MS: Final = 10_000
EXTENDED_MAX_MS: Final = 3_600_000
PAY_WITHIN_MS: Final = 600_000
PAY_WITHIN_MS_MIN: Final = 5_000
PAY_WITHIN_MS_MAX: Final = 3_600_000
LOT_SALE_DURATION_MS: Final = 24 * 3600 * 1000
BANDS: Final = ((0, 100), (3_000, 200), (10_000, 500))
BANDS_MAX: Final = 8
PRICE_CENTS_MAX: Final = 10**11
BIDS_PER_AUCTION_MAX: Final = 100_000
AUCTIONS_MAX: Final = 100_000
BANNED_PER_AUCTION_MAX: Final = 10_000
BID_FRESHNESS_MS: Final = 60_000
CLOSES_PER_TICK_MAX: Final = 1_000


class Mode(StrEnum):
    EXTEND = "extend"
    SUDDEN_DEATH = "sudden_death"


class AuctionState(StrEnum):
    OPEN = "open"
    SOLD = "sold"  # closed with a winner (whose order may still be unpaid)
    UNSOLD = "unsold"  # closed without a bid
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class StartAuction:
    """From the host (the adapter checked the room's credential and found its merchant)."""

    auction_id: str
    room_id: str
    merchant_id: str
    product_id: str
    starting_cents: int
    duration_ms: int
    mode: str = Mode.EXTEND
    bands: list[list[int]] = field(default_factory=list)  # [] for BANDS
    pay_within_ms: int = PAY_WITHIN_MS


@dataclass(frozen=True, slots=True)
class PlaceBid:
    auction_id: str
    bidder_id: str
    amount_cents: int
    max_cents: int
    time_ms: int
    signature: str = ""

    def signed_fields(self) -> dict[str, object]:
        return {
            "amount_cents": self.amount_cents,
            "auction_id": self.auction_id,
            "bidder_id": self.bidder_id,
            "max_cents": self.max_cents,
            "time_ms": self.time_ms,
        }

    def signing_bytes(self) -> bytes:
        return signing_bytes(DOMAIN_BID, self.signed_fields())


class HostAction(StrEnum):
    CANCEL = "cancel"
    BAN = "ban"
    OFFER_SECOND = "offer_second"


@dataclass(frozen=True, slots=True)
class AuctionCommand:
    """From the host: cancel (before any bid), ban a bidder, offer to the second bidder."""

    action: str
    auction_id: str
    merchant_id: str
    bidder_id: str = ""  # ban


@dataclass
class Auction:
    spec: StartAuction
    bands: tuple[tuple[int, int], ...]
    started_at_ms: int
    ends_at_ms: int
    currency: str
    state: AuctionState = AuctionState.OPEN
    leader_id: str = ""
    leader_max_cents: int = 0
    price_cents: int = 0
    bids: int = 0
    best: dict[str, int] = field(default_factory=dict)  # bidder -> highest amount signed
    banned: set[str] = field(default_factory=set)
    winner_id: str = ""
    order_id: str = ""  # the winner's (or the second bidder's) order
    offered_second: bool = False
    closed_at_ms: int = 0

    @property
    def auction_id(self) -> str:
        return self.spec.auction_id

    @property
    def sale_id(self) -> str:
        return LOT_SALE_PREFIX + self.spec.auction_id

    def increment(self, price_cents: int) -> int:
        step = self.bands[0][1]
        for from_cents, increment in self.bands:
            if price_cents >= from_cents:
                step = increment
        return step

    def minimum_next(self) -> int:
        if not self.leader_id:
            return self.spec.starting_cents
        return self.price_cents + self.increment(self.price_cents)


@dataclass(frozen=True, slots=True)
class AuctionStarted(Event):
    auction: StartAuction
    bands: tuple[tuple[int, int], ...]
    currency: str
    ends_at_ms: int
    time_ms: int

    def to_entry(self) -> Entry:
        spec = self.auction
        return "auction/v1", {
            "action": "started",
            "auction_id": spec.auction_id,
            "room_id": spec.room_id,
            "merchant_id": spec.merchant_id,
            "product_id": spec.product_id,
            "starting_cents": spec.starting_cents,
            "duration_ms": spec.duration_ms,
            "mode": str(spec.mode),
            "bands": [list(band) for band in self.bands],
            "pay_within_ms": spec.pay_within_ms,
            "currency": self.currency,
            "ends_at_ms": self.ends_at_ms,
            "time_ms": self.time_ms,
        }


@dataclass(frozen=True, slots=True)
class BidTaken(Event):
    bid: PlaceBid
    leader_id: str
    price_cents: int
    ends_at_ms: int
    time_ms: int

    def to_entry(self) -> Entry:
        bid = self.bid
        return "auction/v1", {
            "action": "bid",
            "auction_id": bid.auction_id,
            "bidder_id": bid.bidder_id,
            "amount_cents": bid.amount_cents,
            "max_cents": bid.max_cents,
            "signed_time_ms": bid.time_ms,
            "signature": bid.signature,
            "leader_id": self.leader_id,
            "price_cents": self.price_cents,
            "ends_at_ms": self.ends_at_ms,
            "time_ms": self.time_ms,
        }


@dataclass(frozen=True, slots=True)
class AuctionChanged(Event):
    """closed / cancelled / banned / offered."""

    action: str
    auction_id: str
    bidder_id: str  # the winner (closed), the banned, the second bidder (offered)
    price_cents: int
    order_id: str
    bids: int
    time_ms: int

    def to_entry(self) -> Entry:
        return "auction/v1", {
            "action": self.action,
            "auction_id": self.auction_id,
            "bidder_id": self.bidder_id,
            "price_cents": self.price_cents,
            "order_id": self.order_id,
            "bids": self.bids,
            "time_ms": self.time_ms,
        }


AUCTION_EVENTS: Final = (AuctionStarted, BidTaken, AuctionChanged)


def auction_id_of(event: AuctionStarted | BidTaken | AuctionChanged) -> str:
    if isinstance(event, AuctionStarted):
        return event.auction.auction_id
    if isinstance(event, BidTaken):
        return event.bid.auction_id
    return event.auction_id


class AuctionBook:
    def __init__(
        self,
        identities: IdentityRegistry,
        catalog: Catalog,
        sales: SaleBook,
        orders: OrderBook,
    ) -> None:
        self.identities = identities
        self.catalog = catalog
        self.sales = sales
        self.orders = orders
        self._auctions: dict[str, Auction] = {}
        self._open: dict[str, Auction] = {}
        self._of_room: dict[str, list[str]] = {}

    def get(self, auction_id: str) -> Auction | None:
        return self._auctions.get(auction_id)

    def of_room(self, room_id: str) -> list[Auction]:
        return [self._auctions[a] for a in self._of_room.get(room_id, [])]

    def of_order(self, sale_id: str) -> Auction | None:
        if not sale_id.startswith(LOT_SALE_PREFIX):
            return None
        return self._auctions.get(sale_id.removeprefix(LOT_SALE_PREFIX))

    # The host's commands

    def start(
        self, command: StartAuction, now_ms: int, schedule_lot: bool = True
    ) -> list[Event] | Rejected:
        """`schedule_lot` False: replay, where the lot's sale has entries of its own."""
        refused = _check_start(command)
        if refused is not None:
            return refused
        bands = _bands(command.bands)
        if isinstance(bands, Rejected):
            return bands
        if command.auction_id in self._auctions:
            return Rejected(Reason.AUCTION_EXISTS, "an auction with this id exists")
        if len(self._auctions) >= AUCTIONS_MAX:
            return Rejected(Reason.CAPACITY, "too many auctions")
        lot = ScheduleSale(
            LOT_SALE_PREFIX + command.auction_id, command.room_id, command.product_id,
            command.merchant_id, 1, command.starting_cents, 1, now_ms, LOT_SALE_DURATION_MS,
            command.pay_within_ms,
        )  # fmt: skip
        scheduled = self.sales.schedule(lot, now_ms) if schedule_lot else []
        if isinstance(scheduled, Rejected):
            return scheduled
        product = self.catalog.get(command.product_id)
        assert product is not None
        ends_at_ms = now_ms + command.duration_ms
        auction = Auction(command, bands, now_ms, ends_at_ms, product.currency)
        self._auctions[command.auction_id] = auction
        self._open[command.auction_id] = auction
        self._of_room.setdefault(command.room_id, []).append(command.auction_id)
        started = AuctionStarted(command, bands, product.currency, ends_at_ms, now_ms)
        return [started, *scheduled]

    def host(
        self, command: AuctionCommand, now_ms: int, award: bool = True
    ) -> list[Event] | Rejected:
        """`award` False: replay (the second bidder's order is its own entry)."""
        if not all_text(command.action, command.auction_id, command.merchant_id, command.bidder_id):
            return Rejected(Reason.BAD_FIELD, "the command's fields are text")
        auction = self._auctions.get(command.auction_id)
        if auction is None:
            return Rejected(Reason.UNKNOWN_AUCTION, "no such auction")
        if auction.spec.merchant_id != command.merchant_id:
            return Rejected(Reason.NOT_MERCHANT, "only the auction's merchant")
        if command.action == HostAction.CANCEL:
            if auction.state is not AuctionState.OPEN:
                return Rejected(Reason.AUCTION_CLOSED, f"the auction is {auction.state}")
            if auction.bids:
                return Rejected(Reason.HAS_BIDS, "an auction with a bid cannot be cancelled")
            auction.state = AuctionState.CANCELLED
            auction.closed_at_ms = now_ms
            return [self._changed(auction, "cancelled", "", 0, now_ms)]
        if command.action == HostAction.BAN:
            if self.identities.get(command.bidder_id) is None:
                return Rejected(Reason.UNKNOWN_IDENTITY, "no such bidder")
            if command.bidder_id in auction.banned:
                return []
            if len(auction.banned) >= BANNED_PER_AUCTION_MAX:
                return Rejected(Reason.CAPACITY, "too many bans")
            auction.banned.add(command.bidder_id)
            return [self._changed(auction, "banned", command.bidder_id, 0, now_ms, order_id="")]
        if command.action == HostAction.OFFER_SECOND:
            return self._offer_second(auction, now_ms, award)
        return Rejected(Reason.BAD_FIELD, "action is cancel, ban or offer_second")

    def _offer_second(self, auction: Auction, now_ms: int, award: bool) -> list[Event] | Rejected:
        if auction.state is not AuctionState.SOLD:
            return Rejected(Reason.AUCTION_OPEN, "only a sold auction's lot is offered again")
        if auction.offered_second:
            return Rejected(Reason.WRONG_STAGE, "offered to the second bidder already")
        status = self.orders.status(auction.winner_id, auction.order_id)
        if status is not OrderStatus.EXPIRED:
            return Rejected(Reason.WRONG_STAGE, "the winner may still pay (or paid)")
        others = [(amount, b) for b, amount in auction.best.items() if b != auction.winner_id]
        others = [(amount, b) for amount, b in others if b not in auction.banned]
        if not others:
            return Rejected(Reason.NO_SECOND_BIDDER, "no other bidder")
        amount, bidder_id = max(others, key=lambda pair: pair[0])
        auction.offered_second = True
        auction.winner_id, auction.price_cents = bidder_id, amount
        auction.order_id = f"{auction.auction_id}-2"
        offered = self._changed(auction, "offered", bidder_id, amount, now_ms)
        return [offered, *(self._award(auction, now_ms) if award else [])]

    # Bids

    def bid(self, bid: PlaceBid, now_ms: int, verify: bool = True, fresh: bool = True) -> (
        list[Event] | Rejected
    ):  # fmt: skip
        if not all_text(bid.auction_id, bid.bidder_id, bid.signature):
            return Rejected(Reason.BAD_FIELD, "auction_id, bidder_id and signature are text")
        if not all_integers(bid.amount_cents, bid.max_cents, bid.time_ms):
            return Rejected(Reason.BAD_FIELD, "amount_cents, max_cents and time_ms are integers")
        auction = self._auctions.get(bid.auction_id)
        if auction is None:
            return Rejected(Reason.UNKNOWN_AUCTION, "no such auction")
        if self.identities.get(bid.bidder_id) is None:
            return Rejected(Reason.UNKNOWN_IDENTITY, "register the bidder's key first")
        if verify:
            try:
                signed = bid.signing_bytes()
            except CanonicalError as error:
                return Rejected(Reason.BAD_FIELD, str(error))
            bad = verify_signature(bid.bidder_id, signed, bid.signature)
            if bad is not None:
                return bad
        if fresh and abs(now_ms - bid.time_ms) > BID_FRESHNESS_MS:
            return Rejected(Reason.STALE, "the bid's time is too far from now")
        if auction.state is not AuctionState.OPEN or now_ms >= auction.ends_at_ms:
            return Rejected(Reason.AUCTION_CLOSED, "the auction has closed")
        if bid.bidder_id in auction.banned:
            return Rejected(Reason.BANNED, "this bidder may not bid in this auction")
        if not 1 <= bid.amount_cents <= PRICE_CENTS_MAX:
            return Rejected(Reason.BAD_AMOUNT, f"amount_cents is 1..{PRICE_CENTS_MAX}")
        if bid.max_cents != 0 and not bid.amount_cents <= bid.max_cents <= PRICE_CENTS_MAX:
            return Rejected(Reason.BAD_AMOUNT, "max_cents is 0 (none) or from the amount up")
        if auction.bids >= BIDS_PER_AUCTION_MAX:
            return Rejected(Reason.CAPACITY, "too many bids")
        ceiling = max(bid.amount_cents, bid.max_cents)
        if bid.bidder_id == auction.leader_id:
            # The leader raises its own maximum; the price stays.
            if ceiling <= auction.leader_max_cents:
                return Rejected(Reason.BID_TOO_LOW, "you lead with a higher maximum already")
            auction.leader_max_cents = ceiling
        else:
            minimum = auction.minimum_next()
            if bid.amount_cents < minimum:
                return Rejected(Reason.BID_TOO_LOW, f"the lowest bid now is {minimum}")
            if not auction.leader_id:
                auction.leader_id, auction.leader_max_cents = bid.bidder_id, ceiling
                auction.price_cents = bid.amount_cents
            elif ceiling > auction.leader_max_cents:
                beaten = auction.leader_max_cents
                auction.price_cents = min(
                    ceiling, max(bid.amount_cents, beaten + auction.increment(beaten))
                )
                auction.leader_id, auction.leader_max_cents = bid.bidder_id, ceiling
            else:  # the leader's maximum holds (ties: the earlier bid leads)
                auction.price_cents = min(
                    auction.leader_max_cents, ceiling + auction.increment(ceiling)
                )
        auction.bids += 1
        known = auction.best.get(bid.bidder_id, 0)
        auction.best[bid.bidder_id] = max(known, bid.amount_cents)
        if (
            auction.spec.mode == Mode.EXTEND
            and auction.ends_at_ms - now_ms < EXTEND_WINDOW_MS
            and now_ms + EXTEND_WINDOW_MS
            <= auction.started_at_ms + auction.spec.duration_ms + EXTENDED_MAX_MS
        ):
            auction.ends_at_ms = now_ms + EXTEND_WINDOW_MS
        return [BidTaken(bid, auction.leader_id, auction.price_cents, auction.ends_at_ms, now_ms)]

    # The clock

    def tick(self, now_ms: int) -> list[Event]:
        due = [a for a in self._open.values() if now_ms >= a.ends_at_ms]
        events: list[Event] = []
        for auction in sorted(due, key=lambda a: (a.ends_at_ms, a.auction_id))[
            :CLOSES_PER_TICK_MAX
        ]:
            events.extend(self.close(auction, now_ms))
        return events

    def close(self, auction: Auction, now_ms: int, award: bool = True) -> list[Event]:
        """The timer ended: the leader wins at the price (or nothing sold). `award` False:
        replay, where the winner's order is its own `order/v1` entry after this one."""
        assert auction.state is AuctionState.OPEN, auction
        self._open.pop(auction.auction_id, None)
        auction.closed_at_ms = now_ms
        if not auction.leader_id:
            auction.state = AuctionState.UNSOLD
            return [self._changed(auction, "closed", "", 0, now_ms)]
        auction.state = AuctionState.SOLD
        auction.winner_id = auction.leader_id
        auction.order_id = f"{auction.auction_id}-1"
        closed = self._changed(auction, "closed", auction.winner_id, auction.price_cents, now_ms)
        return [closed, *(self._award(auction, now_ms) if award else [])]

    def _award(self, auction: Auction, now_ms: int) -> list[Event]:
        sale = self.sales.get(auction.sale_id)
        assert sale is not None
        proof = hashlib.sha256(f"{auction.auction_id}:{auction.winner_id}".encode()).hexdigest()
        return self.orders.award(
            sale, auction.winner_id, auction.order_id, auction.price_cents, proof, now_ms
        )

    def _changed(
        self,
        auction: Auction,
        action: str,
        bidder_id: str,
        price_cents: int,
        now_ms: int,
        order_id: str | None = None,
    ) -> AuctionChanged:
        if auction.state is not AuctionState.OPEN:
            self._open.pop(auction.auction_id, None)
        order = auction.order_id if order_id is None else order_id
        return AuctionChanged(
            action, auction.auction_id, bidder_id, price_cents, order, auction.bids, now_ms
        )


def _check_start(command: StartAuction) -> Rejected | None:
    def bad(detail: str) -> Rejected:
        return Rejected(Reason.BAD_FIELD, detail)

    if not all_text(command.auction_id, command.room_id, command.merchant_id, command.mode):
        return bad("auction_id, room_id, merchant_id and mode are text")
    if not all_text(command.product_id):
        return bad("product_id is text")
    if AUCTION_ID.fullmatch(command.auction_id) is None:
        return bad("auction_id is 1..56 of [A-Za-z0-9_-]")
    if ROOM_ID.fullmatch(command.room_id) is None:
        return bad("room_id is 1..64 of [A-Za-z0-9_-]")
    if command.mode not in Mode.__members__.values():
        return bad("mode is extend or sudden_death")
    if not all_integers(command.starting_cents, command.duration_ms, command.pay_within_ms):
        return bad("starting_cents, duration_ms and pay_within_ms are integers")
    if not 1 <= command.starting_cents <= PRICE_CENTS_MAX:
        return bad(f"starting_cents is 1..{PRICE_CENTS_MAX}")
    if not DURATION_MS_MIN <= command.duration_ms <= DURATION_MS_MAX:
        return bad(f"duration_ms is {DURATION_MS_MIN}..{DURATION_MS_MAX}")
    if not PAY_WITHIN_MS_MIN <= command.pay_within_ms <= PAY_WITHIN_MS_MAX:
        return bad(f"pay_within_ms is {PAY_WITHIN_MS_MIN}..{PAY_WITHIN_MS_MAX}")
    return None


def _bands(raw: object) -> tuple[tuple[int, int], ...] | Rejected:
    if raw == []:
        return BANDS
    if not isinstance(raw, list) or not 1 <= len(raw) <= BANDS_MAX:
        return Rejected(Reason.BAD_FIELD, f"bands: 1..{BANDS_MAX} [from_cents, increment]")
    bands: list[tuple[int, int]] = []
    for band in raw:
        if not isinstance(band, list) or len(band) != 2 or not all_integers(*band):
            return Rejected(Reason.BAD_FIELD, "a band is [from_cents, increment_cents]")
        start, step = band
        if not 1 <= step <= PRICE_CENTS_MAX:
            return Rejected(Reason.BAD_FIELD, "an increment is at least 1")
        if (not bands and start != 0) or (bands and start <= bands[-1][0]):
            return Rejected(Reason.BAD_FIELD, "bands start at 0 and ascend")
        bands.append((start, step))
    return tuple(bands)


def start_of(fields: dict[str, object]) -> StartAuction:
    bands = fields["bands"]
    assert isinstance(bands, list)
    return StartAuction(
        str(fields["auction_id"]), str(fields["room_id"]), str(fields["merchant_id"]),
        str(fields["product_id"]), int(fields["starting_cents"]),  # type: ignore[call-overload]
        int(fields["duration_ms"]), str(fields["mode"]),  # type: ignore[call-overload]
        [list(band) for band in bands], int(fields["pay_within_ms"]),  # type: ignore[call-overload]
    )  # fmt: skip


def bid_of(fields: dict[str, object]) -> PlaceBid:
    return PlaceBid(
        str(fields["auction_id"]), str(fields["bidder_id"]),
        int(fields["amount_cents"]), int(fields["max_cents"]),  # type: ignore[call-overload]
        int(fields["signed_time_ms"]), str(fields["signature"]),  # type: ignore[call-overload]
    )  # fmt: skip
