"""An order's life after payment: every transition and refusal, the money it moves, and a
replay of the ledger that takes every step again."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from livecommerce.commerce.core import CommerceCore
from livecommerce.commerce.escrow import (
    EscrowRules,
    OrderStep,
    ProviderCall,
    ProviderResult,
    RunPayouts,
    SetRules,
    Stage,
    StepRefused,
    StepRepeated,
)
from livecommerce.commerce.events import Entry, Event
from livecommerce.commerce.funds import PendingStatus, TransferRecorded
from livecommerce.commerce.orders import OrderAccepted, OrderStatus, PaymentRefused, PayOrder
from livecommerce.commerce.replay import ReplayError, replay
from livecommerce.commerce.results import Reason
from tests.livecommerce.commerce.helpers import (
    NOW_MS,
    Signer,
    add_stock_command,
    list_product_command,
    order_command,
    register_command,
    schedule_command,
)

PRICE = 999
FINAL_STAGES = (Stage.SETTLED, Stage.REFUNDED, Stage.CANCELLED, Stage.CAPTURE_FAILED)
CONFIRM_AFTER_MS = 50_000
FEE_BPS = 500


class World:
    """A core with a merchant, buyers and an arbiter, one open sale, and every event it
    made (to replay)."""

    def __init__(self, buyers: int = 3, units: int = 50) -> None:
        self.merchant = Signer("merchant")
        self.other_merchant = Signer("other merchant")
        self.arbiter = Signer("arbiter")
        self.buyers = [Signer(f"buyer{i}") for i in range(buyers)]
        self.rules = EscrowRules(
            confirm_after_ms=CONFIRM_AFTER_MS,
            authorization_valid_ms=10 * CONFIRM_AFTER_MS,
            fee_bps=FEE_BPS,
            arbiter_ids=frozenset({self.arbiter.identity_id}),
        )
        self.core = CommerceCore()
        self.now_ms = NOW_MS
        self.events: list[Event] = []
        self.steps = 0
        (_rules_set,) = self.run(SetRules(self.rules))
        assert self.core.escrow.rules == self.rules
        assert self.run(SetRules(self.rules)) == []
        people = [self.merchant, self.other_merchant, self.arbiter, *self.buyers]
        for signer in people:
            self.run(register_command(signer, "Someone"))
        self.run(list_product_command(self.merchant))
        self.run(add_stock_command(self.merchant, 1_000))
        self.run(schedule_command(self.merchant, units_offered=units, per_buyer_limit=100,
                                  duration_ms=3_600_000, payment_hold_ms=600_000))  # fmt: skip

    def run(self, command: Any, advance_ms: int = 1) -> list[Event]:
        self.now_ms += advance_ms
        events = self.core.handle(command, self.now_ms)
        self.events.extend(events)
        return events

    def tick(self, advance_ms: int) -> list[Event]:
        self.now_ms += advance_ms
        events = self.core.tick(self.now_ms)
        self.events.extend(events)
        return events

    def entries(self) -> list[Entry]:
        return [entry for event in self.events if (entry := event.to_entry()) is not None]

    def order(self, buyer: Signer, order_id: str, quantity: int = 1) -> None:
        accepted = self.run(order_command(buyer, order_id, quantity=quantity, time_ms=self.now_ms))
        assert any(isinstance(event, OrderAccepted) for event in accepted), accepted

    def pay(self, buyer: Signer, order_id: str, authorization: str = "") -> list[Event]:
        return self.run(PayOrder(buyer.identity_id, order_id, "", "test", authorization or
                                 f"auth_{order_id}"))  # fmt: skip

    def paid(self, buyer: Signer, order_id: str, quantity: int = 1) -> None:
        self.order(buyer, order_id, quantity)
        self.pay(buyer, order_id)

    def step(
        self, signer: Signer, kind: str, buyer: Signer, order_id: str, **fields: Any
    ) -> list[Event]:
        self.steps += 1
        unsigned = OrderStep(
            kind, fields.pop("step_id", f"s{self.steps}"), buyer.identity_id, order_id,
            signer.identity_id, fields.pop("time_ms", self.now_ms + 1), **fields,
        )  # fmt: skip
        signature = fields.pop("signature", None) or signer.sign(unsigned.signing_bytes())
        return self.run(dataclasses.replace(unsigned, signature=signature))

    def ship(self, buyer: Signer, order_id: str) -> list[Event]:
        return self.step(self.merchant, "ship", buyer, order_id, carrier="DHL", tracking="JJD01")

    def result(self, operation: str, reference: str, succeeded: bool = True) -> list[Event]:
        return self.run(ProviderResult(operation, reference, succeeded, "test", f"ref_{reference}"
                                       .replace("/", "_")))  # fmt: skip

    def capture(self, buyer: Signer, order_id: str, succeeded: bool = True) -> list[Event]:
        return self.result("capture", f"{buyer.identity_id}/{order_id}", succeeded)

    def stage(self, buyer: Signer, order_id: str) -> Stage:
        life = self.core.escrow.get(buyer.identity_id, order_id)
        assert life is not None
        return life.stage

    def balance(self, account: str) -> int:
        return self.core.funds.balance("EUR", account).posted

    def escrow_of(self, buyer: Signer, order_id: str) -> str:
        return f"escrow:{buyer.identity_id}/{order_id}"

    def check_replay(self) -> CommerceCore:
        """Replaying every entry, with every signature checked again, gives the live state."""
        replayed = replay(self.entries())
        assert replayed.funds.accounts() == self.core.funds.accounts()
        assert self.core.funds.problems() == []
        for life in self.core.escrow.lives():
            again = replayed.escrow.get(life.buyer_id, life.order_id)
            assert again is not None
            assert again.stage is life.stage, (life.order_id, again.stage, life.stage)
        return replayed


def refused(events: list[Event]) -> Reason:
    found = [event for event in events if isinstance(event, StepRefused | PaymentRefused)]
    assert found, events
    return found[-1].reason


def calls(events: list[Event]) -> list[ProviderCall]:
    return [event for event in events if isinstance(event, ProviderCall)]


def test_one_order_from_payment_to_settlement_and_payout() -> None:
    world = World()
    ann = world.buyers[0]
    world.paid(ann, "o1", quantity=2)
    amount = 2 * PRICE
    escrow = world.escrow_of(ann, "o1")
    held = world.core.funds.balance("EUR", escrow)
    assert (held.credits_pending, held.posted) == (amount, 0)
    assert world.stage(ann, "o1") is Stage.PAID
    (capture,) = calls(world.ship(ann, "o1"))
    assert (capture.operation, capture.authorization_id) == ("capture", "auth_o1")
    assert world.stage(ann, "o1") is Stage.SHIPPED
    world.capture(ann, "o1")
    assert world.balance(escrow) == amount
    assert world.balance(f"buyer:{ann.identity_id}") == -amount
    world.step(world.merchant, "deliver", ann, "o1")
    assert world.stage(ann, "o1") is Stage.DELIVERED
    world.step(ann, "confirm", ann, "o1")
    assert world.stage(ann, "o1") is Stage.SETTLED
    fee = amount * FEE_BPS // 10_000
    merchant = f"merchant:{world.merchant.identity_id}"
    assert (world.balance(escrow), world.balance(merchant)) == (0, amount - fee)
    assert world.balance("fees:platform") == fee
    assert world.core.escrow.merchant_balances(world.merchant.identity_id)["EUR"] == {
        "pending": 0, "available": amount - fee, "paying_out": 0, "paid_out": 0,
    }  # fmt: skip
    started = world.run(RunPayouts("day-1"))
    (payout,) = calls(started)
    assert (payout.amount_cents, payout.merchant_id) == (amount - fee, world.merchant.identity_id)
    assert isinstance(world.run(RunPayouts("day-1"))[-1], StepRepeated)
    assert world.core.escrow.merchant_balances(world.merchant.identity_id)["EUR"] == {
        "pending": 0, "available": 0, "paying_out": amount - fee, "paid_out": 0,
    }  # fmt: skip
    world.result("payout", payout.reference)
    assert world.balance(f"clearing:{world.merchant.identity_id}") == amount - fee
    assert world.balance(merchant) == 0
    # A second batch finds nothing to pay.
    assert calls(world.run(RunPayouts("day-2"))) == []
    world.check_replay()


def test_the_clock_confirms_and_a_refund_request_pauses_it() -> None:
    world = World()
    ann, bob = world.buyers[:2]
    for buyer, order_id in ((ann, "a1"), (bob, "b1")):
        world.paid(buyer, order_id)
        world.ship(buyer, order_id)
        world.capture(buyer, order_id)
    world.tick(CONFIRM_AFTER_MS // 2)
    world.step(bob, "refund_request", bob, "b1", amount_cents=PRICE, reason="damaged")
    assert world.stage(bob, "b1") is Stage.REFUND_REQUESTED
    world.tick(CONFIRM_AFTER_MS // 2 + 10)
    assert world.stage(ann, "a1") is Stage.SETTLED  # the clock ran out
    assert world.stage(bob, "b1") is Stage.REFUND_REQUESTED  # paused
    world.tick(10 * CONFIRM_AFTER_MS)
    assert world.stage(bob, "b1") is Stage.REFUND_REQUESTED
    world.step(world.merchant, "refund_answer", bob, "b1", decision="decline")
    assert world.stage(bob, "b1") is Stage.SHIPPED
    world.tick(CONFIRM_AFTER_MS // 2 - 100)  # what was left of the clock, not yet all
    assert world.stage(bob, "b1") is Stage.SHIPPED
    world.tick(200)
    assert world.stage(bob, "b1") is Stage.SETTLED
    world.check_replay()


def test_refunds_full_partial_and_failed() -> None:
    world = World()
    ann, bob, cat = world.buyers
    for buyer, order_id in ((ann, "a1"), (bob, "b1"), (cat, "c1")):
        world.paid(buyer, order_id, quantity=2)
        world.ship(buyer, order_id)
        world.capture(buyer, order_id)
        world.step(world.merchant, "deliver", buyer, order_id)
    amount = 2 * PRICE
    # Full refund.
    world.step(ann, "refund_request", ann, "a1", amount_cents=amount, reason="not_as_described")
    assert refused(world.step(world.merchant, "refund_answer", ann, "a1", decision="accept",
                              amount_cents=amount + 1)) is Reason.BAD_AMOUNT  # fmt: skip
    (refund,) = calls(world.step(world.merchant, "refund_answer", ann, "a1", decision="accept",
                                 amount_cents=amount))  # fmt: skip
    assert world.stage(ann, "a1") is Stage.REFUNDING
    assert world.core.funds.pending_status(refund.reference) is PendingStatus.PENDING
    world.result("refund", refund.reference)
    assert world.stage(ann, "a1") is Stage.REFUNDED
    assert world.balance(f"refunds:{ann.identity_id}") == amount
    assert world.balance(world.escrow_of(ann, "a1")) == 0
    # A part: the rest settles when the buyer confirms.
    world.step(bob, "refund_request", bob, "b1", amount_cents=PRICE, reason="damaged")
    (part,) = calls(world.step(world.merchant, "refund_answer", bob, "b1", decision="accept",
                               amount_cents=300))  # fmt: skip
    world.result("refund", part.reference)
    assert world.stage(bob, "b1") is Stage.DELIVERED
    world.step(bob, "confirm", bob, "b1")
    rest = amount - 300
    fee = rest * FEE_BPS // 10_000
    assert world.balance(f"merchant:{world.merchant.identity_id}") == rest - fee
    # The provider fails a refund: the money stays in escrow, the clock runs again.
    world.step(cat, "refund_request", cat, "c1", amount_cents=amount, reason="other")
    (failing,) = calls(world.step(world.merchant, "refund_answer", cat, "c1", decision="accept",
                                  amount_cents=amount))  # fmt: skip
    world.result("refund", failing.reference, succeeded=False)
    assert world.stage(cat, "c1") is Stage.DELIVERED
    assert world.balance(world.escrow_of(cat, "c1")) == amount
    assert world.core.funds.pending_status(failing.reference) is PendingStatus.VOIDED
    world.check_replay()


def test_a_dispute_is_decided_by_an_arbiter_only() -> None:
    world = World()
    ann, bob = world.buyers[:2]
    for buyer, order_id in ((ann, "a1"), (bob, "b1")):
        world.paid(buyer, order_id)
        world.ship(buyer, order_id)
        world.capture(buyer, order_id)
    world.step(ann, "refund_request", ann, "a1", amount_cents=PRICE, reason="not_received")
    world.step(world.merchant, "refund_answer", ann, "a1", decision="decline")
    world.step(ann, "dispute", ann, "a1", reason="not_received")
    assert world.stage(ann, "a1") is Stage.DISPUTED
    world.tick(10 * CONFIRM_AFTER_MS)
    assert world.stage(ann, "a1") is Stage.DISPUTED  # the clock waits for the arbiter
    assert refused(world.step(world.merchant, "resolve", ann, "a1", amount_cents=0)) is (
        Reason.NOT_ARBITER
    )
    assert refused(world.step(ann, "resolve", ann, "a1", amount_cents=PRICE)) is Reason.NOT_ARBITER
    assert refused(world.step(world.arbiter, "resolve", ann, "a1", amount_cents=PRICE + 1)) is (
        Reason.BAD_AMOUNT
    )
    (refund,) = calls(world.step(world.arbiter, "resolve", ann, "a1", amount_cents=400))
    world.result("refund", refund.reference)
    assert world.stage(ann, "a1") is Stage.SETTLED  # the rest went to the merchant at once
    assert world.balance(f"refunds:{ann.identity_id}") == 400
    # Decided for the merchant: settled at once.
    world.step(bob, "dispute", bob, "b1", reason="damaged")
    assert calls(world.step(world.arbiter, "resolve", bob, "b1", amount_cents=0)) == []
    assert world.stage(bob, "b1") is Stage.SETTLED
    world.check_replay()


def test_cancelling_before_shipping_voids_and_gives_the_units_back() -> None:
    world = World()
    ann, bob = world.buyers[:2]
    world.paid(ann, "a1", quantity=3)
    inventory = world.core.catalog.inventory_units("mug")
    events = world.step(ann, "cancel", ann, "a1")
    (cancel,) = calls(events)
    assert (cancel.operation, cancel.authorization_id) == ("cancel", "auth_a1")
    assert world.stage(ann, "a1") is Stage.CANCELLED
    assert world.core.catalog.inventory_units("mug") == inventory + 3
    held = world.core.funds.balance("EUR", world.escrow_of(ann, "a1"))
    assert (held.credits_pending, held.posted) == (0, 0)
    assert refused(world.step(ann, "confirm", ann, "a1")) is Reason.WRONG_STAGE
    # Not paid yet: the units go back to the sale.
    world.order(bob, "b1", quantity=2)
    sale = world.core.sales.get("s1")
    assert sale is not None
    remaining = sale.units_remaining
    world.step(bob, "cancel", bob, "b1")
    assert world.core.orders.status(bob.identity_id, "b1") is OrderStatus.CANCELLED
    assert sale.units_remaining == remaining + 2
    assert refused(world.pay(bob, "b1")) is Reason.ORDER_EXPIRED
    # After shipping it is too late.
    world.paid(bob, "b2")
    world.ship(bob, "b2")
    assert refused(world.step(bob, "cancel", bob, "b2")) is Reason.WRONG_STAGE
    world.check_replay()


def test_who_may_take_which_step() -> None:
    world = World()
    ann, bob = world.buyers[:2]
    world.paid(ann, "a1")
    assert refused(world.step(bob, "cancel", ann, "a1")) is Reason.NOT_YOUR_ORDER
    assert refused(world.step(world.merchant, "cancel", ann, "a1")) is Reason.NOT_YOUR_ORDER
    assert refused(world.step(ann, "ship", ann, "a1", carrier="DHL", tracking="1")) is (
        Reason.NOT_MERCHANT
    )
    other = world.other_merchant
    assert refused(world.step(other, "ship", ann, "a1", carrier="DHL", tracking="1")) is (
        Reason.NOT_MERCHANT
    )
    assert refused(world.step(world.merchant, "deliver", ann, "a1")) is Reason.WRONG_STAGE
    assert refused(world.step(ann, "confirm", ann, "a1")) is Reason.WRONG_STAGE
    assert refused(world.step(world.merchant, "ship", ann, "a1", carrier="", tracking="1")) is (
        Reason.BAD_FIELD
    )
    assert refused(world.step(world.merchant, "ship", ann, "a1", carrier="D<b>", tracking="1")) is (
        Reason.BAD_FIELD
    )
    forged = world.step(world.merchant, "ship", ann, "a1", carrier="DHL", tracking="1",
                        signature=bob.sign(b"something else"))  # fmt: skip
    assert refused(forged) is Reason.BAD_SIGNATURE
    stale = world.step(ann, "cancel", ann, "a1", time_ms=world.now_ms - 10 * 60_000)
    assert refused(stale) is Reason.STALE
    assert refused(world.step(ann, "teleport", ann, "a1")) is Reason.BAD_FIELD
    assert refused(world.step(ann, "cancel", ann, "a1", step_id="bad id")) is Reason.BAD_FIELD
    assert refused(world.step(ann, "cancel", ann, "nothing")) is Reason.UNKNOWN_ORDER
    assert world.stage(ann, "a1") is Stage.PAID
    # A step is idempotent by its id: the same again is a repeat, other bytes a conflict.
    shipped = world.step(world.merchant, "ship", ann, "a1", carrier="DHL", tracking="1",
                         step_id="ship-1", time_ms=world.now_ms)  # fmt: skip
    assert world.stage(ann, "a1") is Stage.SHIPPED
    again = world.run(next(e.step for e in shipped if hasattr(e, "step")))
    assert isinstance(again[-1], StepRepeated)
    assert refused(world.step(world.merchant, "ship", ann, "a1", carrier="UPS", tracking="1",
                              step_id="ship-1")) is Reason.DUPLICATE_CONFLICT  # fmt: skip
    world.check_replay()


def test_provider_results_twice_or_out_of_order_change_nothing_twice() -> None:
    world = World()
    ann, bob = world.buyers[:2]
    world.paid(ann, "a1")
    assert refused(world.capture(ann, "a1")) is Reason.UNKNOWN_ORDER  # nothing asked yet
    world.ship(ann, "a1")
    world.capture(ann, "a1")
    before = world.core.funds.accounts()
    assert isinstance(world.capture(ann, "a1")[-1], StepRepeated)
    assert isinstance(world.capture(ann, "a1", succeeded=False)[-1], StepRepeated)
    assert world.core.funds.accounts() == before
    assert refused(world.result("refund", "refund:nobody/x:1")) is Reason.UNKNOWN_TRANSFER
    assert refused(world.result("payout", "payout:x:y:EUR")) is Reason.UNKNOWN_TRANSFER
    # A second authorization for a paid order is refused (the adapter cancels it).
    assert refused(world.pay(ann, "a1", authorization="auth_other")) is Reason.ALREADY_PAID
    # The capture fails: the payment is voided; the order ends.
    world.paid(bob, "b1")
    world.ship(bob, "b1")
    world.capture(bob, "b1", succeeded=False)
    assert world.stage(bob, "b1") is Stage.CAPTURE_FAILED
    assert world.core.funds.pending_status(f"payment:{bob.identity_id}/b1") is (
        PendingStatus.VOIDED
    )
    assert isinstance(world.capture(bob, "b1")[-1], StepRepeated)
    world.check_replay()


def test_an_authorization_that_lapses_cancels_the_order() -> None:
    world = World()
    ann = world.buyers[0]
    world.paid(ann, "a1")
    inventory = world.core.catalog.inventory_units("mug")
    expired = world.tick(10 * CONFIRM_AFTER_MS + 10)
    assert any(isinstance(e, TransferRecorded) and e.phase == "expire" for e in expired)
    assert world.stage(ann, "a1") is Stage.CANCELLED
    assert world.core.catalog.inventory_units("mug") == inventory + 1
    assert refused(world.ship(ann, "a1")) is Reason.WRONG_STAGE
    world.check_replay()


def test_a_changed_or_missing_money_entry_is_named_by_replay() -> None:
    world = World()
    ann = world.buyers[0]
    world.paid(ann, "a1")
    world.ship(ann, "a1")
    world.capture(ann, "a1")
    world.step(ann, "confirm", ann, "a1")
    entries = world.entries()
    replay(entries)
    settle = next(
        i for i, (kind, fields) in enumerate(entries)
        if kind == "transfer/v1" and fields["code"] == "settlement"
    )  # fmt: skip
    altered = [*entries]
    altered[settle] = ("transfer/v1", {**entries[settle][1], "amount": 1})
    with pytest.raises(ReplayError, match=f"entry {settle} "):
        replay(altered)
    # Dropped: the next money entry stands where the rules put the settlement...
    with pytest.raises(ReplayError, match=f"entry {settle} "):
        replay(entries[:settle] + entries[settle + 1 :])
    # ...or the ledger ends short of what the last step made.
    with pytest.raises(ReplayError, match="the ledger ends without order/v1"):
        replay(entries[:-1])
    extra = ("transfer/v1", {**entries[settle][1], "transfer_id": "settle:again"})
    with pytest.raises(ReplayError, match=f"entry {len(entries)} "):
        replay([*entries, extra])
    confirm = next(i for i, (_, f) in enumerate(entries) if f.get("action") == "confirmed")
    forged = [*entries]
    forged[confirm] = ("order/v1", {**entries[confirm][1], "signer_id": world.merchant.identity_id})
    with pytest.raises(ReplayError, match=f"entry {confirm} "):
        replay(forged)


class OrderLives(RuleBasedStateMachine):
    """Random lives of random orders: whatever happens, each currency's accounts sum to
    zero, no account is below its floor, each order's escrow is empty once it ends, and
    replaying the ledger (every step taken again) gives the live balances and stages."""

    def __init__(self) -> None:
        super().__init__()
        self.world = World(buyers=3, units=200)
        self.orders: list[tuple[int, str]] = []
        self.count = 0

    def pick(self, which: int) -> tuple[Signer, str]:
        buyer, order_id = self.orders[which % len(self.orders)]
        return self.world.buyers[buyer], order_id

    @precondition(lambda self: len(self.orders) < 4)  # a few orders, so that they get far
    @rule(buyer=st.integers(0, 2), quantity=st.integers(1, 3), pay=st.booleans())
    def new_order(self, buyer: int, quantity: int, pay: bool) -> None:
        self.count += 1
        order_id = f"o{self.count}"
        self.world.order(self.world.buyers[buyer], order_id, quantity)
        if pay:
            self.world.pay(self.world.buyers[buyer], order_id)
        self.orders.append((buyer, order_id))

    @precondition(lambda self: self.orders)
    @rule(
        which=st.integers(0, 100),
        who=st.sampled_from(["right"] * 6 + ["buyer", "merchant", "arbiter", "stranger"]),
        kind=st.sampled_from(
            [
                "cancel",
                "ship",
                "deliver",
                "confirm",
                "refund_request",
                "refund_answer",
                "dispute",
                "resolve",
            ]
        ),
        amount=st.sampled_from(["all", "part", "zero", "too much"]),
        accept=st.booleans(),
    )
    def take_a_step(self, which: int, who: str, kind: str, amount: str, accept: bool) -> None:
        """Mostly the step's rightful signer, with an amount that may or may not fit."""
        buyer, order_id = self.pick(which)
        world = self.world
        if who == "right":
            who = {"ship": "merchant", "deliver": "merchant", "refund_answer": "merchant",
                   "resolve": "arbiter"}.get(kind, "buyer")  # fmt: skip
        signer = {
            "buyer": buyer,
            "merchant": world.merchant,
            "arbiter": world.arbiter,
            "stranger": world.other_merchant,
        }[who]
        life = world.core.escrow.get(buyer.identity_id, order_id)
        left = 0 if life is None else world.core.funds.balance("EUR", life.escrow).available
        if kind == "refund_answer" and life is not None:
            left = life.refund_requested_cents
        cents = {"all": left, "part": max(1, left // 3), "zero": 0, "too much": left + 1}[amount]
        world.step(
            signer, kind, buyer, order_id, amount_cents=cents, carrier="DHL", tracking="T1",
            reason="damaged", decision="accept" if accept else "decline",
        )  # fmt: skip

    @precondition(lambda self: self.orders)
    @rule(which=st.integers(0, 100), choice=st.integers(0, 100))
    def advance(self, which: int, choice: int) -> None:
        """One of the steps that fit the order's stage, by its rightful signer (so that
        lives get far: to refunds, disputes, settlement)."""
        buyer, order_id = self.pick(which)
        world = self.world
        life = world.core.escrow.get(buyer.identity_id, order_id)
        if life is None:
            if world.core.orders.status(buyer.identity_id, order_id) is OrderStatus.HELD:
                [lambda: world.pay(buyer, order_id),
                 lambda: world.step(buyer, "cancel", buyer, order_id)][choice % 2]()  # fmt: skip
            return
        left = world.core.funds.balance("EUR", life.escrow).available
        merchant, arbiter = world.merchant, world.arbiter
        options = {
            Stage.PAID: [
                *[lambda: world.ship(buyer, order_id)] * 3,
                lambda: world.step(buyer, "cancel", buyer, order_id),
            ],
            Stage.SHIPPED: [
                lambda: world.step(merchant, "deliver", buyer, order_id),
                lambda: world.step(buyer, "confirm", buyer, order_id),
                lambda: world.step(buyer, "refund_request", buyer, order_id,
                                   amount_cents=max(1, left // (1 + choice % 2)), reason="damaged"),
                lambda: world.step(buyer, "dispute", buyer, order_id, reason="not_received"),
            ],
            Stage.REFUND_REQUESTED: [
                lambda: world.step(merchant, "refund_answer", buyer, order_id, decision="accept",
                                   amount_cents=max(1, life.refund_requested_cents // 2)),
                lambda: world.step(merchant, "refund_answer", buyer, order_id, decision="decline"),
                lambda: world.step(buyer, "dispute", buyer, order_id, reason="damaged"),
            ],
            Stage.DISPUTED: [
                lambda: world.step(arbiter, "resolve", buyer, order_id, amount_cents=0),
                lambda: world.step(arbiter, "resolve", buyer, order_id, amount_cents=left),
                lambda: world.step(arbiter, "resolve", buyer, order_id, amount_cents=left // 2),
            ],
        }  # fmt: skip
        options[Stage.DELIVERED] = options[Stage.SHIPPED][1:]
        if not life.captured and life.capture_asked and life.stage not in FINAL_STAGES:
            options[life.stage] = [
                *[lambda: world.capture(buyer, order_id)] * 3,
                lambda: world.capture(buyer, order_id, succeeded=False),
            ]
        if life.refund is not None:
            refund_id = life.refund.refund_id
            options[life.stage] = [
                lambda: world.result("refund", refund_id),
                lambda: world.result("refund", refund_id, succeeded=False),
            ]
        fitting = options.get(life.stage, [])
        if fitting:
            fitting[choice % len(fitting)]()

    @precondition(lambda self: self.world.core.escrow.outstanding_calls())
    @rule(which=st.integers(0, 100), succeeded=st.booleans(), twice=st.booleans())
    def provider_answers(self, which: int, succeeded: bool, twice: bool) -> None:
        outstanding = [
            c for c in self.world.core.escrow.outstanding_calls() if c.operation != "cancel"
        ]
        if not outstanding:
            return
        call = outstanding[which % len(outstanding)]
        for _ in range(2 if twice else 1):
            self.world.result(call.operation, call.reference, succeeded)

    @rule(batch=st.integers(0, 5))
    def payouts(self, batch: int) -> None:
        self.world.run(RunPayouts(f"batch-{batch}"))

    @rule(elapsed_ms=st.sampled_from([1_000, CONFIRM_AFTER_MS // 10, CONFIRM_AFTER_MS // 3]))
    def time_passes(self, elapsed_ms: int) -> None:
        self.world.tick(elapsed_ms)

    @invariant()
    def money_adds_up(self) -> None:
        funds = self.world.core.funds
        assert funds.problems() == []
        for life in self.world.core.escrow.lives():
            held = funds.balance(life.currency, life.escrow)
            if life.stage in (Stage.SETTLED, Stage.REFUNDED, Stage.CANCELLED,
                              Stage.CAPTURE_FAILED):  # fmt: skip
                assert (held.posted, held.credits_pending, held.debits_pending) == (0, 0, 0), life
            assert life.refunded_cents + life.settled_cents + life.fee_cents <= life.amount_cents

    def teardown(self) -> None:
        self.world.check_replay()


TestOrderLives = OrderLives.TestCase
TestOrderLives.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
