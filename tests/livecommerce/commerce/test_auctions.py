"""Live auctions in the core: the timer (extend and sudden death), increments by band,
signed bids, proxy bidding, ties, bans, the winner's order paid into escrow, the second
bidder's offer, every refusal changing nothing, and replays of random auctions."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from livecommerce.commerce.auctions import (
    EXTEND_WINDOW_MS,
    AuctionChanged,
    AuctionCommand,
    AuctionState,
    BidTaken,
    PlaceBid,
    StartAuction,
)
from livecommerce.commerce.core import CommandRejected
from livecommerce.commerce.escrow import Stage
from livecommerce.commerce.events import Event
from livecommerce.commerce.orders import OrderAccepted, OrderRejected, OrderStatus
from livecommerce.commerce.replay import ReplayError, replay
from livecommerce.commerce.results import Reason
from livecommerce.commerce.rooms import LinkRoom
from tests.livecommerce.commerce.helpers import Signer, order_command
from tests.livecommerce.commerce.test_escrow import World

DURATION_MS = 30_000


class AuctionWorld(World):
    def __init__(self, buyers: int = 4) -> None:
        super().__init__(buyers)
        self.run(LinkRoom("room1", self.merchant.identity_id))

    def start(self, auction_id: str = "a1", **changes: object) -> list[Event]:
        command = StartAuction(
            auction_id, "room1", self.merchant.identity_id, "mug", 1_000, DURATION_MS
        )
        return self.run(dataclasses.replace(command, **changes))  # type: ignore[arg-type]

    def bid(
        self,
        bidder: Signer,
        amount: int,
        max_cents: int = 0,
        auction_id: str = "a1",
        **changes: object,
    ) -> list[Event]:
        signature = changes.pop("signature", None)
        unsigned = PlaceBid(auction_id, bidder.identity_id, amount, max_cents, self.now_ms)
        unsigned = dataclasses.replace(unsigned, **changes)  # type: ignore[arg-type]
        signed = signature or bidder.sign(unsigned.signing_bytes())
        return self.run(dataclasses.replace(unsigned, signature=signed))

    def host(
        self, action: str, auction_id: str = "a1", bidder: Signer | None = None
    ) -> list[Event]:
        bidder_id = bidder.identity_id if bidder else ""
        return self.run(AuctionCommand(action, auction_id, self.merchant.identity_id, bidder_id))

    def auction(self, auction_id: str = "a1"):  # type: ignore[no-untyped-def]
        auction = self.core.auctions.get(auction_id)
        assert auction is not None
        return auction


def refused(events: list[Event]) -> Reason:
    found = [e for e in events if isinstance(e, CommandRejected | OrderRejected)]
    assert found, events
    return found[-1].reason


def taken(events: list[Event]) -> BidTaken:
    (bid,) = [e for e in events if isinstance(e, BidTaken)]
    return bid


def test_the_highest_bid_wins_and_its_order_is_paid_into_escrow() -> None:
    world = AuctionWorld()
    ann, bob = world.buyers[:2]
    inventory = world.core.catalog.inventory_units("mug")
    world.start()
    assert world.core.catalog.inventory_units("mug") == inventory - 1
    assert refused(world.bid(ann, 999)) is Reason.BID_TOO_LOW  # below the starting price
    assert taken(world.bid(ann, 1_000)).price_cents == 1_000
    assert refused(world.bid(bob, 1_050)) is Reason.BID_TOO_LOW  # increment 100 below 3,000
    assert taken(world.bid(bob, 1_100)).leader_id == bob.identity_id
    # Nobody may order the lot as a flash-sale order.
    lot = world.run(order_command(ann, "sneak", sale_id="auction-a1", price_cents=1_000,
                                  time_ms=world.now_ms))  # fmt: skip
    assert refused(lot) is Reason.SALE_NOT_OPEN
    # No cancel once it has a bid.
    assert refused(world.host("cancel")) is Reason.HAS_BIDS
    events = world.tick(DURATION_MS)
    (closed,) = [e for e in events if isinstance(e, AuctionChanged)]
    assert (closed.action, closed.bidder_id, closed.price_cents) == (
        "closed",
        bob.identity_id,
        1_100,
    )
    (order,) = [e for e in events if isinstance(e, OrderAccepted)]
    assert (order.buyer_id, order.order_id, order.price_cents) == (bob.identity_id, "a1-1", 1_100)
    assert refused(world.bid(ann, 2_000)) is Reason.AUCTION_CLOSED
    world.pay(bob, "a1-1")
    assert world.stage(bob, "a1-1") is Stage.PAID
    world.ship(bob, "a1-1")
    world.capture(bob, "a1-1")
    assert world.balance(world.escrow_of(bob, "a1-1")) == 1_100
    world.check_replay()


def test_extend_resets_the_timer_sudden_death_does_not() -> None:
    world = AuctionWorld()
    ann, bob = world.buyers[:2]
    world.start("ext")
    world.start("sd", mode="sudden_death")
    world.now_ms += DURATION_MS - 3_000  # 3 s left
    late = taken(world.bid(ann, 1_000, auction_id="ext"))
    assert late.ends_at_ms == world.now_ms + EXTEND_WINDOW_MS
    kept = taken(world.bid(ann, 1_000, auction_id="sd"))
    assert kept.ends_at_ms == world.auction("sd").started_at_ms + DURATION_MS
    world.tick(4_000)
    assert world.auction("sd").state is AuctionState.SOLD
    assert world.auction("ext").state is AuctionState.OPEN
    taken(world.bid(bob, 1_100, auction_id="ext"))
    world.tick(EXTEND_WINDOW_MS)
    assert world.auction("ext").winner_id == bob.identity_id
    world.check_replay()


def test_proxy_bids_for_its_bidder_and_ties_go_to_the_earlier() -> None:
    world = AuctionWorld()
    ann, bob, cat = world.buyers[:3]
    world.start(bands=[[0, 100], [2_000, 500]])
    assert taken(world.bid(ann, 1_000, max_cents=2_500)).price_cents == 1_000
    # Bob's 1,500 is beaten by Ann's maximum: Ann leads at 1,600.
    bob_bid = taken(world.bid(bob, 1_500))
    assert (bob_bid.leader_id, bob_bid.price_cents) == (ann.identity_id, 1_600)
    # Cat matches Ann's maximum: the earlier (Ann) leads at it.
    cat_bid = taken(world.bid(cat, 2_500))
    assert (cat_bid.leader_id, cat_bid.price_cents) == (ann.identity_id, 2_500)
    # Bob bids above with a maximum: he leads at Ann's maximum plus the increment there.
    over = taken(world.bid(bob, 3_000, max_cents=5_000))
    assert (over.leader_id, over.price_cents) == (bob.identity_id, 3_000)
    # The leader raises its own maximum; the price stays.
    raised = taken(world.bid(bob, 3_500, max_cents=6_000))
    assert (raised.leader_id, raised.price_cents) == (bob.identity_id, 3_000)
    assert refused(world.bid(bob, 3_500, max_cents=5_500)) is Reason.BID_TOO_LOW
    world.tick(DURATION_MS)
    assert (world.auction().winner_id, world.auction().price_cents) == (bob.identity_id, 3_000)
    world.check_replay()


def test_refusals_change_nothing() -> None:
    world = AuctionWorld()
    ann, bob = world.buyers[:2]
    for changes in ({"duration_ms": 1_000}, {"mode": "forever"}, {"starting_cents": 0},
                    {"auction_id": "a b"}, {"bands": [[5, 100]]}, {"bands": [[0, 0]]},
                    {"pay_within_ms": 10}):  # fmt: skip
        assert refused(world.start(**changes)) is Reason.BAD_FIELD, changes
    other = StartAuction("a1", "room1", world.other_merchant.identity_id, "mug", 1_000, DURATION_MS)
    assert refused(world.run(other)) is Reason.NOT_MERCHANT
    entries = len(world.entries())
    assert world.core.auctions.get("a1") is None
    world.start()
    assert refused(world.start()) is Reason.AUCTION_EXISTS
    entries = len(world.entries())
    forged = world.bid(ann, 1_000, signature=bob.sign(b"not this"))
    assert refused(forged) is Reason.BAD_SIGNATURE
    assert refused(world.bid(ann, 1_000, time_ms=world.now_ms - 120_000)) is Reason.STALE
    assert refused(world.bid(ann, 1_000, auction_id="nope")) is Reason.UNKNOWN_AUCTION
    assert refused(world.bid(ann, 1_000, max_cents=500)) is Reason.BAD_AMOUNT
    assert refused(world.bid(ann, "1000")) is Reason.BAD_FIELD  # type: ignore[arg-type]
    world.host("ban", bidder=ann)
    assert refused(world.bid(ann, 1_000)) is Reason.BANNED
    assert world.auction().bids == 0
    assert len(world.entries()) == entries + 1  # only the ban
    assert refused(world.host("offer_second")) is Reason.AUCTION_OPEN
    world.host("cancel")
    assert world.auction().state is AuctionState.CANCELLED
    assert refused(world.bid(bob, 1_000)) is Reason.AUCTION_CLOSED
    world.check_replay()


def test_a_winner_who_does_not_pay_lets_the_host_offer_it_to_the_second() -> None:
    world = AuctionWorld()
    ann, bob = world.buyers[:2]
    world.start(pay_within_ms=60_000)
    world.bid(ann, 1_000)
    world.bid(bob, 1_200)
    world.tick(DURATION_MS)
    assert refused(world.host("offer_second")) is Reason.WRONG_STAGE  # bob may still pay
    world.tick(60_000)
    assert world.core.orders.status(bob.identity_id, "a1-1") is OrderStatus.EXPIRED
    offered = world.host("offer_second")
    (change,) = [e for e in offered if isinstance(e, AuctionChanged)]
    assert (change.action, change.bidder_id, change.price_cents) == (
        "offered",
        ann.identity_id,
        1_000,
    )
    assert world.core.orders.status(ann.identity_id, "a1-2") is OrderStatus.HELD
    assert refused(world.host("offer_second")) is Reason.WRONG_STAGE
    world.pay(ann, "a1-2")
    assert world.stage(ann, "a1-2") is Stage.PAID
    world.check_replay()


def test_a_bid_after_the_end_in_a_ledger_is_named_by_replay() -> None:
    world = AuctionWorld()
    ann = world.buyers[0]
    world.start()
    world.bid(ann, 1_000)
    entries = world.entries()
    at = next(i for i, (kind, f) in enumerate(entries) if f.get("action") == "bid")
    kind, fields = entries[at]
    late = {**fields, "time_ms": world.auction().ends_at_ms + 1}
    changed = [*entries[:at], (kind, late), *entries[at + 1 :]]
    with pytest.raises(ReplayError, match=f"entry {at} .*closed"):
        replay(changed)


class AuctionLives(RuleBasedStateMachine):
    """Random bids (with proxies) on two auctions, one extend and one sudden death, and
    time passing: the price never falls, the leader's maximum covers the price, no bid is
    taken after the end, the winner is the leader at the close, and replay agrees."""

    def __init__(self) -> None:
        super().__init__()
        self.world = AuctionWorld(buyers=4)
        self.world.start("e")
        self.world.start("s", mode="sudden_death")
        self.prices = {"e": 0, "s": 0}

    @rule(
        which=st.sampled_from(["e", "s"]),
        bidder=st.integers(0, 3),
        over=st.integers(0, 400),
        proxy=st.integers(0, 1_000),
    )
    def bid(self, which: str, bidder: int, over: int, proxy: int) -> None:
        auction = self.world.auction(which)
        amount = auction.minimum_next() + over - 100
        events = self.world.bid(self.world.buyers[bidder], amount, amount + proxy if proxy > 500
                                else 0, auction_id=which)  # fmt: skip
        for event in events:
            if isinstance(event, BidTaken):
                assert event.time_ms < event.ends_at_ms

    @rule(advance_ms=st.sampled_from([500, 5_000, 15_000]))
    def time_passes(self, advance_ms: int) -> None:
        self.world.tick(advance_ms)

    @invariant()
    def promises_hold(self) -> None:
        for which in ("e", "s"):
            auction = self.world.auction(which)
            assert auction.price_cents >= self.prices[which]
            self.prices[which] = auction.price_cents
            if auction.leader_id:
                assert auction.leader_max_cents >= auction.price_cents
            if auction.state is AuctionState.SOLD:
                assert auction.winner_id == auction.leader_id

    def teardown(self) -> None:
        replayed = self.world.check_replay()
        for which in ("e", "s"):
            live, again = self.world.auction(which), replayed.auctions.get(which)
            assert again is not None
            assert (again.state, again.leader_id, again.price_cents, again.ends_at_ms) == (
                live.state, live.leader_id, live.price_cents, live.ends_at_ms,
            )  # fmt: skip


TestAuctionLives = AuctionLives.TestCase
TestAuctionLives.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
