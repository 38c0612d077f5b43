"""Double-entry funds: two-phase transfers, floors, idempotency, expiry, and replay."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from livecommerce.commerce.funds import (
    Funds,
    PendingStatus,
    Phase,
    TransferCode,
    TransferRecorded,
    TransferRepeated,
    TransferRequest,
)
from livecommerce.commerce.results import Reason, Rejected

BUYER, ESCROW, MERCHANT, FEES = "buyer:ann", "escrow:ann/o1", "merchant:mugs", "fees:platform"


def pay(transfer_id: str, amount: int, timeout_ms: int = 0) -> TransferRequest:
    return TransferRequest(
        transfer_id, Phase.PENDING, BUYER, ESCROW, amount, "EUR", TransferCode.PAYMENT, "ann/o1",
        timeout_ms=timeout_ms,
    )  # fmt: skip


def resolve(transfer_id: str, pending_id: str, phase: Phase, amount: int = 0) -> TransferRequest:
    return TransferRequest(
        transfer_id, phase, "", "", amount, "", TransferCode.PAYMENT, pending_id=pending_id
    )


def move(transfer_id: str, debit: str, credit: str, amount: int) -> TransferRequest:
    return TransferRequest(
        transfer_id, Phase.SINGLE, debit, credit, amount, "EUR", TransferCode.SETTLEMENT
    )


def recorded(result: object) -> TransferRecorded:
    assert isinstance(result, TransferRecorded), result
    return result


def refused(result: object) -> Reason:
    assert isinstance(result, Rejected), result
    return result.reason


def test_a_hold_is_pending_until_posted_then_money_moves_on() -> None:
    funds = Funds()
    recorded(funds.transfer(pay("pay-1", 1800), 10))
    assert funds.balance("EUR", ESCROW).credits_pending == 1800
    assert funds.balance("EUR", ESCROW).posted == 0
    assert funds.balance("EUR", BUYER).debits_pending == 1800
    # Nothing posted yet: escrow cannot pay anyone.
    assert refused(funds.transfer(move("settle-1", ESCROW, MERCHANT, 1), 11)) is (
        Reason.INSUFFICIENT_FUNDS
    )
    posted = recorded(funds.transfer(resolve("capture-1", "pay-1", Phase.POST, 1800), 12))
    assert (posted.debit, posted.credit, posted.currency) == (BUYER, ESCROW, "EUR")
    assert funds.balance("EUR", ESCROW).posted == 1800
    assert funds.balance("EUR", BUYER).posted == -1800
    recorded(funds.transfer(move("settle-1", ESCROW, MERCHANT, 1710), 13))
    recorded(funds.transfer(move("fee-1", ESCROW, FEES, 90), 13))
    assert funds.balance("EUR", ESCROW).posted == 0
    assert funds.balance("EUR", MERCHANT).posted == 1710
    assert refused(funds.transfer(move("settle-2", ESCROW, MERCHANT, 1), 14)) is (
        Reason.INSUFFICIENT_FUNDS
    )
    assert funds.problems() == []


def test_a_partial_post_releases_the_rest_and_a_pending_resolves_once() -> None:
    funds = Funds()
    recorded(funds.transfer(pay("pay-1", 1000), 10))
    assert refused(funds.transfer(resolve("c", "pay-1", Phase.POST, 1001), 11)) is Reason.BAD_AMOUNT
    recorded(funds.transfer(resolve("capture-1", "pay-1", Phase.POST, 600), 11))
    balance = funds.balance("EUR", ESCROW)
    assert (balance.credits_posted, balance.credits_pending) == (600, 0)
    assert funds.pending_status("pay-1") is PendingStatus.POSTED
    assert refused(funds.transfer(resolve("void-1", "pay-1", Phase.VOID), 12)) is (
        Reason.TRANSFER_RESOLVED
    )
    assert refused(funds.transfer(resolve("capture-2", "pay-1", Phase.POST, 1), 12)) is (
        Reason.TRANSFER_RESOLVED
    )
    assert refused(funds.transfer(resolve("void-2", "nothing", Phase.VOID), 12)) is (
        Reason.UNKNOWN_TRANSFER
    )
    assert funds.problems() == []


def test_ids_are_idempotency_keys() -> None:
    funds = Funds()
    first = recorded(funds.transfer(pay("pay-1", 1000), 10))
    again = funds.transfer(pay("pay-1", 1000), 99)
    assert isinstance(again, TransferRepeated)
    assert again.first == first
    assert funds.balance("EUR", ESCROW).credits_pending == 1000
    assert refused(funds.transfer(pay("pay-1", 999), 99)) is Reason.TRANSFER_EXISTS
    recorded(funds.transfer(resolve("void-1", "pay-1", Phase.VOID), 11))
    assert isinstance(funds.transfer(resolve("void-1", "pay-1", Phase.VOID), 12), TransferRepeated)
    assert funds.balance("EUR", ESCROW) == funds.balance("EUR", "escrow:nobody")


def test_a_pending_transfer_times_out_once() -> None:
    funds = Funds()
    recorded(funds.transfer(pay("pay-1", 500, timeout_ms=100), 1_000))
    assert funds.tick(1_099) == []
    (expired,) = funds.tick(1_100)
    assert isinstance(expired, TransferRecorded)
    assert (expired.phase, expired.pending_id, expired.amount) == (Phase.EXPIRE, "pay-1", 0)
    assert funds.pending_status("pay-1") is PendingStatus.EXPIRED
    assert funds.tick(5_000) == []
    assert refused(funds.transfer(resolve("capture-1", "pay-1", Phase.POST, 500), 1_200)) is (
        Reason.TRANSFER_RESOLVED
    )
    assert funds.balance("EUR", ESCROW).credits_pending == 0
    assert funds.problems() == []


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (move("x", BUYER, BUYER, 1), Reason.BAD_FIELD),
        (move("x", BUYER, "savings:ann", 1), Reason.BAD_FIELD),
        (move("x", BUYER, ESCROW, 0), Reason.BAD_AMOUNT),
        (move("x", BUYER, ESCROW, -5), Reason.BAD_AMOUNT),
        (move("x", BUYER, ESCROW, 2**53), Reason.BAD_AMOUNT),
        (move("bad id!", BUYER, ESCROW, 1), Reason.BAD_FIELD),
        (TransferRequest("x", Phase.SINGLE, BUYER, ESCROW, 1, "eur", TransferCode.FEE), None),
        (TransferRequest("x", Phase.EXPIRE, BUYER, ESCROW, 1, "EUR", TransferCode.FEE), None),
        (TransferRequest("x", Phase.SINGLE, BUYER, ESCROW, True, "EUR", TransferCode.FEE), None),
        (TransferRequest("x", Phase.VOID, "", "", 5, "", TransferCode.FEE, pending_id="p"), None),
        (move("x", MERCHANT, ESCROW, 1), Reason.INSUFFICIENT_FUNDS),
    ],
)
def test_bad_transfers_are_refused_and_change_nothing(
    request_: TransferRequest, reason: Reason | None
) -> None:
    funds = Funds()
    recorded(funds.transfer(pay("pay-1", 100), 1))
    before = funds.accounts()
    got = refused(funds.transfer(request_, 2))
    if reason is not None:
        assert got is reason
    assert funds.accounts() == before
    assert funds.transfers_recorded() == 1


def test_replayed_transfers_give_the_same_balances_and_bad_history_is_named() -> None:
    live = Funds()
    entries: list[TransferRecorded] = []
    for request_ in [pay("p1", 900), resolve("c1", "p1", Phase.POST, 900), pay("p2", 50)]:
        entries.append(recorded(live.transfer(request_, 5)))
    entries.append(recorded(live.transfer(move("s1", ESCROW, MERCHANT, 850), 6)))
    replayed = Funds()
    for entry in entries:
        assert replayed.restore(entry) is None
    assert replayed.accounts() == live.accounts()
    # A history that spends escrow twice, or resolves a hold twice, is refused at the entry.
    assert refused(replayed.restore(entries[-1])) is Reason.TRANSFER_EXISTS
    twice = TransferRecorded(**{**_fields(entries[-1]), "transfer_id": "s2"})
    assert refused(replayed.restore(twice)) is Reason.INSUFFICIENT_FUNDS
    again = TransferRecorded(**{**_fields(entries[1]), "transfer_id": "c2"})
    assert refused(replayed.restore(again)) is Reason.TRANSFER_RESOLVED
    assert replayed.accounts() == live.accounts()


def _fields(entry: TransferRecorded) -> dict[str, object]:
    return {name: getattr(entry, name) for name in entry.__dataclass_fields__}


ACCOUNTS = [BUYER, "buyer:bob", ESCROW, "escrow:bob/o2", MERCHANT, FEES, "refunds:ann"]


class FundsMachine(RuleBasedStateMachine):
    """Random transfers (most of them refused): the invariants hold after every step, and
    replaying what was recorded gives the live balances."""

    def __init__(self) -> None:
        super().__init__()
        self.funds = Funds()
        self.recorded: list[TransferRecorded] = []
        self.now_ms = 0
        self.number = 0

    def _record(self, result: object) -> None:
        if isinstance(result, TransferRecorded):
            self.recorded.append(result)

    def _id(self) -> str:
        self.number += 1
        return f"t{self.number}"

    @rule(
        debit=st.sampled_from(ACCOUNTS),
        credit=st.sampled_from(ACCOUNTS),
        amount=st.integers(-5, 3_000),
        pending=st.booleans(),
        timeout_ms=st.sampled_from([0, 50, 500]),
    )
    def open_transfer(
        self, debit: str, credit: str, amount: int, pending: bool, timeout_ms: int
    ) -> None:
        phase = Phase.PENDING if pending else Phase.SINGLE
        request_ = TransferRequest(
            self._id(), phase, debit, credit, amount, "EUR", TransferCode.PAYMENT,
            timeout_ms=timeout_ms if pending else 0,
        )  # fmt: skip
        self._record(self.funds.transfer(request_, self.now_ms))

    @rule(which=st.integers(0, 200), post=st.booleans(), part=st.integers(-10, 3_000))
    def resolve_pending(self, which: int, post: bool, part: int) -> None:
        pendings = [t for t in self.recorded if t.phase is Phase.PENDING]
        if not pendings:
            return
        target = pendings[which % len(pendings)]
        phase = Phase.POST if post else Phase.VOID
        request_ = resolve(self._id(), target.transfer_id, phase, part if post else 0)
        before = self.funds.pending_status(target.transfer_id)
        result = self.funds.transfer(request_, self.now_ms)
        self._record(result)
        if before is not PendingStatus.PENDING:
            assert isinstance(result, Rejected), "a pending transfer resolves at most once"

    @rule(which=st.integers(0, 200))
    def repeat_one(self, which: int) -> None:
        if not self.recorded:
            return
        seen = self.recorded[which % len(self.recorded)]
        if seen.phase is Phase.EXPIRE:
            return
        before = self.funds.accounts()
        again = TransferRequest(
            seen.transfer_id, seen.phase, seen.debit, seen.credit, seen.amount, seen.currency,
            seen.code, seen.reference, seen.pending_id, seen.timeout_ms,
        )  # fmt: skip
        assert isinstance(self.funds.transfer(again, self.now_ms), TransferRepeated)
        assert self.funds.accounts() == before

    @rule(elapsed_ms=st.integers(0, 300))
    def time_passes(self, elapsed_ms: int) -> None:
        self.now_ms += elapsed_ms
        for event in self.funds.tick(self.now_ms):
            self._record(event)

    @invariant()
    def sums_are_zero_and_floors_hold(self) -> None:
        assert self.funds.problems() == []

    @invariant()
    def replay_gives_the_live_balances(self) -> None:
        replayed = Funds()
        for entry in self.recorded:
            assert replayed.restore(entry) is None, entry
        assert replayed.accounts() == self.funds.accounts()


TestFundsMachine = FundsMachine.TestCase
TestFundsMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
