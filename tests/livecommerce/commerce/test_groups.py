"""Group buying in the core: offers, opening and joining, success at the group price (with
tiers, the difference released), failure voiding every payment, every refusal changing
nothing, and a replay of the ledger that takes every group entry again."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from livecommerce.commerce.core import CommandRejected
from livecommerce.commerce.escrow import ProviderCall, Stage, StepRefused
from livecommerce.commerce.events import Event
from livecommerce.commerce.groups import (
    Group,
    GroupClosed,
    GroupRepeated,
    GroupStep,
    GroupStepTaken,
    OfferGroup,
    Outcome,
)
from livecommerce.commerce.orders import OrderAccepted, OrderStatus, PaymentRefused
from livecommerce.commerce.replay import ReplayError, replay
from livecommerce.commerce.results import Reason
from tests.livecommerce.commerce.helpers import Signer, order_command
from tests.livecommerce.commerce.test_escrow import PRICE, World

WINDOW_MS = 60_000


class GroupWorld(World):
    def __init__(self, buyers: int = 5, units: int = 50) -> None:
        super().__init__(buyers, units)
        self.numbers = 0

    def offer(self, size: int = 3, tiers: list[list[int]] | None = None) -> list[Event]:
        command = OfferGroup(self.merchant.identity_id, "s1", size, WINDOW_MS, tiers or [])
        return self.run(command)

    def group_step(
        self, buyer: Signer, action: str, group_id: str, order_id: str, **changes: object
    ) -> list[Event]:
        signature = changes.pop("signature", None)
        unsigned = GroupStep(action, group_id, buyer.identity_id, order_id, self.now_ms)
        unsigned = dataclasses.replace(unsigned, **changes)  # type: ignore[arg-type]
        signature = signature or buyer.sign(unsigned.signing_bytes())
        return self.run(dataclasses.replace(unsigned, signature=signature))

    def place(self, buyer: Signer, action: str, group_id: str, quantity: int = 1) -> str:
        """An order held, then opened or joined with: its id."""
        self.numbers += 1
        order_id = f"g{self.numbers}"
        self.order(buyer, order_id, quantity)
        taken = self.group_step(buyer, action, group_id, order_id)
        assert isinstance(taken[-1], GroupStepTaken), taken
        return order_id

    def member(self, buyer: Signer, action: str, group_id: str, quantity: int = 1) -> str:
        order_id = self.place(buyer, action, group_id, quantity)
        paid = self.pay(buyer, order_id)
        assert not any(isinstance(e, PaymentRefused) for e in paid), paid
        return order_id


def rejected(events: list[Event]) -> Reason:
    found = [e for e in events if isinstance(e, CommandRejected | PaymentRefused)]
    assert found, events
    return found[-1].reason


def closed(events: list[Event]) -> GroupClosed:
    (close,) = [e for e in events if isinstance(e, GroupClosed)]
    return close


def test_a_group_succeeds_when_every_place_is_paid() -> None:
    world = GroupWorld()
    world.offer(size=3)
    ann, bob, cat = world.buyers[:3]
    first = world.member(ann, "open", "grp1")
    second = world.member(bob, "join", "grp1")
    group = world.core.groups.get("grp1")
    assert group is not None
    assert group.outcome is Outcome.OPEN
    # Not shipped before the group succeeded.
    assert world.stage(ann, first) is Stage.PAID
    (refusal,) = world.ship(ann, first)
    assert isinstance(refusal, StepRefused)
    assert refusal.reason is Reason.GROUP_OPEN
    assert world.stage(ann, first) is Stage.PAID
    third = world.place(cat, "join", "grp1")
    paid = world.pay(cat, third)
    close = closed(paid)
    assert close.outcome is Outcome.SUCCEEDED
    assert close.price_cents == PRICE
    assert [(b, o, back) for b, o, _, back in close.paid] == [
        (ann.identity_id, first, 0), (bob.identity_id, second, 0), (cat.identity_id, third, 0),
    ]  # fmt: skip
    world.ship(ann, first)
    assert world.stage(ann, first) is Stage.SHIPPED
    world.capture(ann, first)
    assert world.balance(world.escrow_of(ann, first)) == PRICE
    world.check_replay()


def test_with_tiers_the_more_join_the_lower_the_price_and_the_rest_comes_back() -> None:
    world = GroupWorld()
    world.offer(size=2, tiers=[[3, 800], [4, 700]])
    ann, bob, cat = world.buyers[:3]
    first = world.member(ann, "open", "grp1", quantity=2)
    world.member(bob, "join", "grp1")
    third = world.member(cat, "join", "grp1")
    # Two paid: the size is reached, but tiers keep the group open to its window's end.
    group = world.core.groups.get("grp1")
    assert group is not None
    assert group.outcome is Outcome.OPEN
    close = closed(world.tick(WINDOW_MS))
    assert close.outcome is Outcome.SUCCEEDED
    assert close.price_cents == 800
    assert close.paid[0] == (ann.identity_id, first, 2 * PRICE, 2 * (PRICE - 800))
    (capture,) = [c for c in world.ship(ann, first) if isinstance(c, ProviderCall)]
    assert capture.amount_cents == 1600
    world.capture(ann, first)
    escrow = world.escrow_of(ann, first)
    assert world.balance(escrow) == 1600
    # The buyer's funding account is charged the group price only.
    assert world.balance(f"buyer:{ann.identity_id}") == -1600
    assert world.core.funds.balance("EUR", world.escrow_of(cat, third)).credits_pending == PRICE
    replayed = world.check_replay()
    life = replayed.escrow.get(cat.identity_id, third)
    assert life is not None
    assert life.amount_cents == 800


def test_a_group_short_at_the_window_end_voids_every_payment() -> None:
    world = GroupWorld()
    world.offer(size=3)
    ann, bob = world.buyers[:2]
    first = world.member(ann, "open", "grp1")
    unpaid = world.place(bob, "join", "grp1")
    inventory = world.core.catalog.inventory_units("mug")
    sale = world.core.sales.get("s1")
    assert sale is not None
    held = sale.units_held
    events = world.tick(WINDOW_MS)
    close = closed(events)
    assert close.outcome is Outcome.FAILED
    assert close.paid == ((ann.identity_id, first, PRICE, PRICE),)
    assert close.released == ((bob.identity_id, unpaid),)
    assert world.stage(ann, first) is Stage.CANCELLED
    assert world.core.funds.balance("EUR", world.escrow_of(ann, first)).credits_pending == 0
    assert [c.operation for c in events if isinstance(c, ProviderCall)] == ["cancel"]
    assert world.core.catalog.inventory_units("mug") == inventory + 1
    assert world.core.orders.status(bob.identity_id, unpaid) is OrderStatus.CANCELLED
    assert sale.units_held == held - 1
    # Too late to pay now, and nothing else closes.
    assert rejected(world.pay(bob, unpaid)) in (Reason.GROUP_CLOSED, Reason.ORDER_EXPIRED)
    assert world.tick(WINDOW_MS) == []
    world.check_replay()


def test_refusals_change_nothing() -> None:
    world = GroupWorld()
    ann, bob, cat, dan, eve = world.buyers
    # No offer yet: a step is refused; then offers that are not right.
    world.order(ann, "o1")
    assert rejected(world.group_step(ann, "open", "grp1", "o1")) is Reason.NO_GROUP_OFFER
    other = OfferGroup(world.other_merchant.identity_id, "s1", 3, WINDOW_MS)
    assert rejected(world.run(other)) is Reason.NOT_MERCHANT
    for size, window_ms, tiers in [
        (1, WINDOW_MS, []), (51, WINDOW_MS, []), (3, 10, []), (3, WINDOW_MS, [[2, 500]]),
        (3, WINDOW_MS, [[4, PRICE]]), (3, WINDOW_MS, [[4, 500], [5, 600]]), (3, WINDOW_MS, [[4]]),
    ]:  # fmt: skip
        command = OfferGroup(world.merchant.identity_id, "s1", size, window_ms, tiers)
        assert rejected(world.run(command)) is Reason.BAD_FIELD, (size, window_ms, tiers)
    assert world.core.groups.offer("s1") is None
    world.offer(size=2, tiers=[[3, 900]])
    assert world.offer(size=2, tiers=[[3, 900]]) == []  # the same offer again
    assert rejected(world.offer(size=4)) is Reason.GROUP_EXISTS
    entries = len(world.entries())
    # Steps: a bad signature, another buyer's order, stale, an unknown group.
    forged = world.group_step(ann, "open", "grp1", "o1", signature=bob.sign(b"x"))
    assert rejected(forged) is Reason.BAD_SIGNATURE
    assert rejected(world.group_step(bob, "open", "grp1", "o1")) is Reason.UNKNOWN_ORDER
    stale = world.group_step(ann, "open", "grp1", "o1", time_ms=world.now_ms - 600_000)
    assert rejected(stale) is Reason.STALE
    assert rejected(world.group_step(ann, "join", "nope", "o1")) is Reason.UNKNOWN_GROUP
    assert rejected(world.group_step(ann, "leave", "grp1", "o1")) is Reason.BAD_FIELD
    assert rejected(world.group_step(ann, "open", "g r p", "o1")) is Reason.BAD_FIELD
    # Paying before joining a group is refused.
    assert rejected(world.pay(ann, "o1")) is Reason.GROUP_NEEDED
    assert len(world.entries()) == entries
    # Open; the same step again is a repeat; a second group with the same order is not.
    assert isinstance(world.group_step(ann, "open", "grp1", "o1")[-1], GroupStepTaken)
    assert isinstance(world.group_step(ann, "open", "grp1", "o1")[-1], GroupRepeated)
    assert rejected(world.group_step(ann, "open", "grp2", "o1")) is Reason.ALREADY_IN_GROUP
    # One place per buyer; a taken id.
    world.order(ann, "o2")
    assert rejected(world.group_step(ann, "join", "grp1", "o2")) is Reason.ALREADY_IN_GROUP
    world.order(bob, "b1")
    assert rejected(world.group_step(bob, "open", "grp1", "b1")) is Reason.GROUP_EXISTS
    # Three places at most (the last tier): the fourth is refused.
    world.place(bob, "join", "grp1")
    world.place(cat, "join", "grp1")
    world.order(dan, "d1")
    assert rejected(world.group_step(dan, "join", "grp1", "d1")) is Reason.GROUP_FULL
    # A place whose hold is given up frees up.
    world.step(cat, "cancel", cat, "g2")
    assert world.core.orders.status(cat.identity_id, "g2") is OrderStatus.CANCELLED
    world.order(eve, "e1")
    assert isinstance(world.group_step(eve, "join", "grp1", "e1")[-1], GroupStepTaken)
    world.check_replay()


def test_a_changed_group_entry_is_named_by_replay() -> None:
    world = GroupWorld()
    world.offer(size=2)
    ann, bob = world.buyers[:2]
    world.member(ann, "open", "grp1")
    world.member(bob, "join", "grp1")
    entries = world.entries()
    replay(entries)
    at = next(i for i, (kind, f) in enumerate(entries) if f.get("action") == "succeeded")
    kind, fields = entries[at]
    changed = [*entries[:at], (kind, {**fields, "price_cents": 1}), *entries[at + 1 :]]
    with pytest.raises(ReplayError, match=f"entry {at} "):
        replay(changed)
    dropped = [e for e in entries if e[1].get("action") != "joined"]
    with pytest.raises(ReplayError):
        replay(dropped)


class GroupLives(RuleBasedStateMachine):
    """Random groups (with a tier): buyers open, join, pay, cancel; time runs; payments
    are captured. Whatever happens: no group has more places than its last tier, no buyer
    two places in one group, the sale never sells more than it has, the money adds up, a
    succeeded group's paid members owe its price and a failed one's nothing, and replaying
    the ledger gives the live groups, stages and balances."""

    def __init__(self) -> None:
        super().__init__()
        self.world = GroupWorld(buyers=5, units=12)
        self.world.offer(size=2, tiers=[[3, 800]])
        self.groups: list[str] = []

    @rule(buyer=st.integers(0, 4), join=st.integers(0, 10), open_new=st.booleans())
    def take_a_place(self, buyer: int, join: int, open_new: bool) -> None:
        world = self.world
        signer = world.buyers[buyer]
        world.numbers += 1
        order_id = f"g{world.numbers}"
        placed = world.run(order_command(signer, order_id, time_ms=world.now_ms))
        if not any(isinstance(e, OrderAccepted) for e in placed):
            return  # sold out, or the buyer's limit
        if open_new or not self.groups:
            group_id = f"grp{len(self.groups)}"
            taken = world.group_step(signer, "open", group_id, order_id)
            if isinstance(taken[-1], GroupStepTaken):
                self.groups.append(group_id)
        else:
            world.group_step(signer, "join", self.groups[join % len(self.groups)], order_id)

    @rule(which=st.integers(0, 100), choice=st.integers(0, 3))
    def act(self, which: int, choice: int) -> None:
        world = self.world
        members = [
            (buyer_id, order_id)
            for group_id in self.groups
            for buyer_id, order_id in self._group(group_id).members.items()
        ]
        if not members:
            return
        buyer_id, order_id = members[which % len(members)]
        buyer = next(b for b in world.buyers if b.identity_id == buyer_id)
        life = world.core.escrow.get(buyer_id, order_id)
        if life is None:
            if choice < 3:
                world.pay(buyer, order_id)
            else:
                world.step(buyer, "cancel", buyer, order_id)
        elif life.stage is Stage.PAID:
            [lambda: world.ship(buyer, order_id), lambda: world.ship(buyer, order_id),
             lambda: world.step(buyer, "cancel", buyer, order_id),
             lambda: world.tick(1)][choice]()  # fmt: skip
        elif life.capture_asked and not life.captured and life.stage is Stage.SHIPPED:
            world.capture(buyer, order_id)

    @rule(advance_ms=st.sampled_from([1_000, 20_000, WINDOW_MS]))
    def time_passes(self, advance_ms: int) -> None:
        self.world.tick(advance_ms)

    def _group(self, group_id: str) -> Group:
        group = self.world.core.groups.get(group_id)
        assert group is not None
        return group

    @invariant()
    def promises_hold(self) -> None:
        core = self.world.core
        sale = core.sales.get("s1")
        assert sale is not None
        assert sale.units_held + sale.units_sold <= sale.spec.units_offered
        assert core.funds.problems() == []
        for group_id in self.groups:
            group = self._group(group_id)
            assert core.groups.places_taken(group) <= 3
            paid = core.groups.paid_members(group)
            if group.outcome is Outcome.SUCCEEDED:
                assert group.price_cents in (800, PRICE)
            for buyer_id, order_id in paid:
                life = core.escrow.get(buyer_id, order_id)
                assert life is not None
                if group.outcome is Outcome.SUCCEEDED:
                    assert life.amount_cents == life.quantity * group.price_cents
                assert group.outcome is not Outcome.FAILED
            if group.outcome is not Outcome.OPEN:
                assert core.groups.held_members(group) == []

    def teardown(self) -> None:
        world = self.world
        replayed = world.check_replay()
        for group_id in self.groups:
            live, again = self._group(group_id), replayed.groups.get(group_id)
            assert again is not None
            assert (again.outcome, again.price_cents, again.members) == (
                live.outcome, live.price_cents, live.members,
            )  # fmt: skip


TestGroupLives = GroupLives.TestCase
TestGroupLives.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
