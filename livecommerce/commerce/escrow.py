"""An order's life after payment: escrow, shipping, confirmation, refunds, disputes,
settlement and payouts. Every step moves money only through `Funds` (funds.py).

    paid ──ship──► shipped ──deliver──► delivered ──confirm (buyer, or the clock)──► settled
     │               │  capture: the payment's pending transfer is posted
     │               └──────────── refund request ─► refund_requested ─► merchant answers
     └─cancel──► cancelled (void)        dispute ─► disputed ─► an arbiter resolves

- `paid`: the provider authorized the payment; `payment:<ref>`, buyer -> escrow, is
  pending (it times out with the authorization, `authorization_valid_ms`).
- `ship` (the merchant signs carrier and tracking number) asks the adapter to capture;
  the capture's result posts the pending transfer (or voids it: `capture_failed`).
- The auto-confirm clock (`confirm_after_ms`) starts at shipping and again at delivery;
  a refund request or a dispute pauses it, and their end resumes it with what was left.
- `confirm` (the buyer signs), or the clock, settles once the payment is captured:
  escrow -> merchant less the platform fee (`fee_bps` of what is settled), escrow -> fees.
- A refund (accepted by the merchant, full or part, or decided by an arbiter) is a
  pending transfer escrow -> refunds:<buyer> until the provider confirms it; a full
  refund ends the order `refunded`; after a part, the rest settles as usual (at once when
  an arbiter decided).
- `cancel` before shipping voids the payment; the units go back to the product's
  inventory. (A hold not paid yet is cancelled by the order book: units back to the sale.)
- Payouts: a batch moves each merchant's available balance to `clearing:<merchant>`,
  pending until the provider confirms it.

Steps by people are signed (`livecommerce/order-step/v1`, `OrderStep`): by the buyer
(cancel, confirm, refund_request, dispute), by the order's merchant (ship, deliver,
refund_answer) or by an arbiter key (resolve). Provider results are commands from the
adapter, which checked the provider's signature. Every step is a ledger entry
(`order/v1` with the signed fields, `payment/v1` for provider results) beside its
transfers (`transfer/v1`). Illegal transitions are refused and change nothing.
"""

from __future__ import annotations

import dataclasses
import heapq
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from livecommerce.commerce.canonical import DOMAIN_ORDER_STEP, CanonicalError, signing_bytes
from livecommerce.commerce.catalog import Catalog
from livecommerce.commerce.events import Entry, Event, flat_fields
from livecommerce.commerce.funds import (
    PLATFORM,
    AccountKind,
    Funds,
    PendingStatus,
    Phase,
    TransferCode,
    TransferRecorded,
    TransferRepeated,
    TransferRequest,
    account_name,
)
from livecommerce.commerce.identity import IdentityRegistry, verify_signature
from livecommerce.commerce.results import Reason, Rejected, all_integers, all_text

DAY_MS: Final = 24 * 3600 * 1000
CONFIRM_AFTER_MS: Final = 7 * DAY_MS
AUTHORIZATION_VALID_MS: Final = 7 * DAY_MS
FEE_BPS: Final = 500  # 5 % of what is settled
FEE_BPS_MAX: Final = 10_000
STEP_FRESHNESS_MS: Final = 300_000
LIVES_MAX: Final = 2_000_000
STEPS_PER_ORDER_MAX: Final = 32
CONFIRMS_PER_TICK_MAX: Final = 10_000
STEP_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
SHORT_TEXT = re.compile(r"[A-Za-z0-9 ._/#-]{1,64}")
PROVIDER_REF = re.compile(r"[A-Za-z0-9_:.-]{1,120}")


class Stage(StrEnum):
    PAID = "paid"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    REFUND_REQUESTED = "refund_requested"
    REFUNDING = "refunding"
    DISPUTED = "disputed"
    CONFIRMED = "confirmed"  # settles as soon as the payment is captured
    SETTLED = "settled"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"
    CAPTURE_FAILED = "capture_failed"


FINAL: Final = frozenset({Stage.SETTLED, Stage.REFUNDED, Stage.CANCELLED, Stage.CAPTURE_FAILED})
# Where the auto-confirm clock runs; REFUND_REQUESTED, REFUNDING and DISPUTED pause it.
CLOCK_RUNS: Final = frozenset({Stage.SHIPPED, Stage.DELIVERED})


class StepKind(StrEnum):
    CANCEL = "cancel"
    SHIP = "ship"
    DELIVER = "deliver"
    CONFIRM = "confirm"
    REFUND_REQUEST = "refund_request"
    REFUND_ANSWER = "refund_answer"
    DISPUTE = "dispute"
    RESOLVE = "resolve"


class RefundReason(StrEnum):
    NOT_RECEIVED = "not_received"
    DAMAGED = "damaged"
    NOT_AS_DESCRIBED = "not_as_described"
    CHANGED_MIND = "changed_mind"
    OTHER = "other"


BUYER_STEPS: Final = frozenset(
    {StepKind.CANCEL, StepKind.CONFIRM, StepKind.REFUND_REQUEST, StepKind.DISPUTE}
)
MERCHANT_STEPS: Final = frozenset({StepKind.SHIP, StepKind.DELIVER, StepKind.REFUND_ANSWER})


@dataclass(frozen=True)
class EscrowRules:
    confirm_after_ms: int = CONFIRM_AFTER_MS
    authorization_valid_ms: int = AUTHORIZATION_VALID_MS
    fee_bps: int = FEE_BPS
    step_freshness_ms: int = STEP_FRESHNESS_MS
    arbiter_ids: frozenset[str] = frozenset()
    lives_max: int = LIVES_MAX

    def __post_init__(self) -> None:
        assert self.confirm_after_ms > 0
        assert self.authorization_valid_ms > 0
        assert 0 <= self.fee_bps <= FEE_BPS_MAX
        assert self.step_freshness_ms > 0
        assert self.lives_max > 0


@dataclass(frozen=True, slots=True)
class SetRules:
    """Command from the server's settings at start: the rules from now on. They are on
    the ledger (`rules/v1`), so anyone replaying it applies the fee, the periods and the
    arbiters that were in force at each step."""

    rules: EscrowRules


@dataclass(frozen=True, slots=True)
class RulesSet(Event):
    rules: EscrowRules
    time_ms: int

    def to_entry(self) -> Entry:
        return "rules/v1", {"action": "set", **rules_fields(self.rules), "time_ms": self.time_ms}


def rules_fields(rules: EscrowRules) -> dict[str, object]:
    return {
        "confirm_after_ms": rules.confirm_after_ms,
        "authorization_valid_ms": rules.authorization_valid_ms,
        "fee_bps": rules.fee_bps,
        "step_freshness_ms": rules.step_freshness_ms,
        "arbiter_ids": sorted(rules.arbiter_ids),
    }


def rules_of(fields: dict[str, object]) -> EscrowRules:
    arbiters = fields["arbiter_ids"]
    assert isinstance(arbiters, list)
    return EscrowRules(
        confirm_after_ms=int(fields["confirm_after_ms"]),  # type: ignore[call-overload]
        authorization_valid_ms=int(fields["authorization_valid_ms"]),  # type: ignore[call-overload]
        fee_bps=int(fields["fee_bps"]),  # type: ignore[call-overload]
        step_freshness_ms=int(fields["step_freshness_ms"]),  # type: ignore[call-overload]
        arbiter_ids=frozenset(str(arbiter) for arbiter in arbiters),
    )


def order_ref(buyer_id: str, order_id: str) -> str:
    return f"{buyer_id}/{order_id}"


@dataclass(frozen=True, slots=True)
class OrderStep:
    """A signed step of an order's life. `buyer_id` and `order_id` name the order;
    `signer_id` signs `livecommerce/order-step/v1\\n` + canonical JSON of every field but
    `signature`. `step_id` (client-made) makes the step idempotent. Per step:
    ship: `carrier`, `tracking`; refund_request: `amount_cents`, `reason`;
    refund_answer: `decision` (accept | decline) and, to accept, `amount_cents`;
    dispute: `reason`; resolve: `amount_cents` (what goes back to the buyer, 0..all)."""

    step: str
    step_id: str
    buyer_id: str
    order_id: str
    signer_id: str
    time_ms: int
    carrier: str = ""
    tracking: str = ""
    amount_cents: int = 0
    decision: str = ""
    reason: str = ""
    signature: str = ""

    def signed_fields(self) -> dict[str, object]:
        return {
            "amount_cents": self.amount_cents,
            "buyer_id": self.buyer_id,
            "carrier": self.carrier,
            "decision": self.decision,
            "order_id": self.order_id,
            "reason": self.reason,
            "signer_id": self.signer_id,
            "step": self.step,
            "step_id": self.step_id,
            "time_ms": self.time_ms,
            "tracking": self.tracking,
        }

    def signing_bytes(self) -> bytes:
        return signing_bytes(DOMAIN_ORDER_STEP, self.signed_fields())


class ProviderOperation(StrEnum):
    CAPTURE = "capture"
    REFUND = "refund"
    PAYOUT = "payout"


@dataclass(frozen=True, slots=True)
class ProviderResult:
    """What the payment provider answered for an operation the escrow asked for (the
    adapter checked the provider's signature): `reference` is the escrow's id for it
    (an order reference for a capture, a refund id, a payout id)."""

    operation: str
    reference: str
    succeeded: bool
    provider: str
    provider_ref: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RunPayouts:
    """Start a payout batch: every merchant's available balance, per currency. Asked for
    by the platform (the adapter checks who); idempotent per `batch_id`."""

    batch_id: str


# Events: each a ledger entry (or an answer that changes nothing).


@dataclass(frozen=True, slots=True)
class StepTaken(Event):
    """A signed step the escrow took: `order/v1` with the step's signed fields, so anyone
    can check who asked. `stage` is where it left the order."""

    action: str
    step: OrderStep
    stage: Stage
    merchant_id: str
    refund_id: str  # refund_answer (accept) and resolve: the refund it started
    time_ms: int

    def to_entry(self) -> Entry:
        fields = flat_fields(self.step)
        fields.update(
            action=self.action,
            stage=str(self.stage),
            merchant_id=self.merchant_id,
            refund_id=self.refund_id,
            signed_time_ms=self.step.time_ms,
            time_ms=self.time_ms,
        )
        return "order/v1", fields


@dataclass(frozen=True, slots=True)
class ResultRecorded(Event):
    """A provider's answer the escrow acted on: `payment/v1`."""

    result: ProviderResult
    buyer_id: str
    order_id: str
    stage: Stage
    time_ms: int

    def to_entry(self) -> Entry:
        fields = flat_fields(self.result)
        fields.update(
            action=f"{self.result.operation}_{'succeeded' if self.result.succeeded else 'failed'}",
            buyer_id=self.buyer_id,
            order_id=self.order_id,
            stage=str(self.stage),
            time_ms=self.time_ms,
        )
        return "payment/v1", fields


@dataclass(frozen=True, slots=True)
class StageChanged(Event):
    """A change the clock made (auto-confirm, authorization expired) or a settlement:
    `order/v1` with action `stage`."""

    buyer_id: str
    order_id: str
    merchant_id: str
    stage: Stage
    cause: str
    time_ms: int

    def to_entry(self) -> Entry:
        return "order/v1", {"action": "stage", **flat_fields(self), "stage": str(self.stage)}


@dataclass(frozen=True, slots=True)
class ProviderCall(Event):
    """What the adapter must ask the provider, once the entries before it are durable:
    capture, cancel (an authorization), refund, payout. Not an entry: the escrow's state
    says what is outstanding (`outstanding_calls`), so a restart asks again."""

    operation: str  # capture | cancel | refund | payout
    reference: str
    provider: str
    authorization_id: str
    amount_cents: int
    currency: str
    merchant_id: str = ""

    def to_entry(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class PayoutBatchStarted(Event):
    batch_id: str
    payouts: int
    time_ms: int

    def to_entry(self) -> Entry:
        return "payout/v1", {"action": "started", **flat_fields(self)}


@dataclass(frozen=True, slots=True)
class StepRefused(Event):
    """A step or result refused: nothing changed."""

    reference: str
    reason: Reason
    detail: str

    def to_entry(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class StepRepeated(Event):
    """The same step (or provider result) again: nothing changed; `stage` is now."""

    reference: str
    stage: Stage

    def to_entry(self) -> None:
        return None


@dataclass
class _Refund:
    refund_id: str
    amount_cents: int
    settle_after: bool  # an arbiter decided: the rest settles once the refund is done


@dataclass
class Life:
    """One paid order's state."""

    buyer_id: str
    order_id: str
    merchant_id: str
    product_id: str
    quantity: int
    amount_cents: int
    currency: str
    provider: str
    authorization_id: str
    paid_at_ms: int
    stage: Stage = Stage.PAID
    captured: bool = False
    capture_asked: bool = False
    carrier: str = ""
    tracking: str = ""
    shipped_at_ms: int = 0
    delivered_at_ms: int = 0
    confirm_due_ms: int = 0  # 0: the clock is not running
    paused_left_ms: int = 0
    resume_stage: Stage = Stage.SHIPPED
    refund_requested_cents: int = 0
    refund_reason: str = ""
    refund: _Refund | None = None
    refunds_done: int = 0
    refunded_cents: int = 0
    settled_cents: int = 0
    fee_cents: int = 0
    steps: dict[str, bytes] = field(default_factory=dict)  # step_id -> signed bytes

    @property
    def ref(self) -> str:
        return order_ref(self.buyer_id, self.order_id)

    @property
    def payment_id(self) -> str:
        return f"payment:{self.ref}"

    @property
    def escrow(self) -> str:
        return account_name(AccountKind.ESCROW, self.ref)


def _refused(reference: str, reason: Reason, detail: str) -> list[Event]:
    return [StepRefused(reference, reason, detail)]


class EscrowBook:
    def __init__(
        self, identities: IdentityRegistry, catalog: Catalog, funds: Funds, rules: EscrowRules
    ) -> None:
        self.identities = identities
        self.catalog = catalog
        self.funds = funds
        self.rules = rules
        self._lives: dict[tuple[str, str], Life] = {}
        self._refunds: dict[str, tuple[str, str]] = {}  # refund id -> order key
        self._payouts: dict[str, tuple[str, str, int]] = {}  # payout id -> merchant, cur, amt
        self._batches: set[str] = set()
        self._due: list[tuple[int, str, str]] = []  # (confirm due ms, buyer, order): a heap

    # Reading

    def get(self, buyer_id: str, order_id: str) -> Life | None:
        return self._lives.get((buyer_id, order_id))

    def lives(self) -> list[Life]:
        return list(self._lives.values())

    def of_merchant(self, merchant_id: str) -> list[Life]:
        return [life for life in self._lives.values() if life.merchant_id == merchant_id]

    def merchant_balances(self, merchant_id: str) -> dict[str, dict[str, int]]:
        """Per currency: `pending` (in escrow for the merchant's orders not settled),
        `available` (settled, not paid out or being paid out), `paying_out`, `paid_out`."""
        balances: dict[str, dict[str, int]] = {}

        def of(currency: str) -> dict[str, int]:
            return balances.setdefault(
                currency, {"pending": 0, "available": 0, "paying_out": 0, "paid_out": 0}
            )

        for life in self.of_merchant(merchant_id):
            if life.stage not in FINAL:
                held = self.funds.balance(life.currency, life.escrow)
                of(life.currency)["pending"] += held.credits_posted + held.credits_pending
                of(life.currency)["pending"] -= held.debits_posted + held.debits_pending
        payable = account_name(AccountKind.MERCHANT_PAYABLE, merchant_id)
        cleared = account_name(AccountKind.PROVIDER_CLEARING, merchant_id)
        for currency, name, balance in self.funds.accounts():
            if name == payable:
                of(currency)["available"] += balance.available
                of(currency)["paying_out"] += balance.debits_pending
            elif name == cleared:
                of(currency)["paid_out"] += balance.posted
        return balances

    def outstanding_calls(self) -> list[ProviderCall]:
        """Provider calls the escrow's state still waits for (after a restart: ask again;
        the provider's idempotency keys make a second ask harmless)."""
        calls: list[ProviderCall] = []
        for life in self._lives.values():
            if life.capture_asked and not life.captured and life.stage not in FINAL:
                calls.append(self._capture_call(life))
            if life.refund is not None:
                calls.append(self._refund_call(life, life.refund))
        for payout_id, (merchant_id, currency, amount) in self._payouts.items():
            if self.funds.pending_status(payout_id) is PendingStatus.PENDING:
                calls.append(
                    ProviderCall("payout", payout_id, "", "", amount, currency, merchant_id)
                )
        return calls

    # Payment: the order book took it; the money is held in escrow

    def open(
        self,
        buyer_id: str,
        order_id: str,
        merchant_id: str,
        product_id: str,
        quantity: int,
        amount_cents: int,
        currency: str,
        provider: str,
        authorization_id: str,
        now_ms: int,
    ) -> list[Event]:
        """A paid order: its life starts, and the payment is held in escrow (pending)."""
        key = (buyer_id, order_id)
        assert key not in self._lives, key
        life = Life(
            buyer_id, order_id, merchant_id, product_id, quantity, amount_cents, currency,
            provider, authorization_id, now_ms,
        )  # fmt: skip
        self._lives[key] = life
        held = self._transfer(
            TransferRequest(
                life.payment_id,
                Phase.PENDING,
                account_name(AccountKind.BUYER_FUNDING, buyer_id),
                life.escrow,
                amount_cents,
                currency,
                TransferCode.PAYMENT,
                life.ref,
                timeout_ms=self.rules.authorization_valid_ms,
            ),
            now_ms,
        )
        return [held]

    def set_rules(self, command: SetRules, now_ms: int) -> list[Event]:
        """New rules (nothing when they are the ones in force). `lives_max` is this
        process's limit, not a rule of the record."""
        rules = dataclasses.replace(command.rules, lives_max=self.rules.lives_max)
        if rules_fields(rules) == rules_fields(self.rules):
            return []
        self.rules = rules
        return [RulesSet(rules, now_ms)]

    def has_room(self) -> bool:
        return len(self._lives) < self.rules.lives_max

    # Signed steps

    def take_step(self, step: OrderStep, now_ms: int, verify: bool = True) -> list[Event]:
        """Check a signed step and take it, or refuse it (nothing changes). `verify`
        False skips the signature and freshness checks: replaying the server's own
        ledger, whose steps were checked when they were taken."""
        ref = (
            order_ref(step.buyer_id, step.order_id)
            if all_text(step.buyer_id, step.order_id)
            else ""
        )
        refused = self._check_step(step)
        if refused is not None:
            return _refused(ref, refused.reason, refused.detail)
        life = self._lives.get((step.buyer_id, step.order_id))
        if life is None:
            return _refused(ref, Reason.UNKNOWN_ORDER, "no paid order with this buyer and id")
        kind = StepKind(step.step)
        refused = self._signer_may(kind, step.signer_id, life)
        if refused is not None:
            return _refused(ref, refused.reason, refused.detail)
        signed = self._signed(step, verify)
        if isinstance(signed, Rejected):
            return _refused(ref, signed.reason, signed.detail)
        seen = life.steps.get(step.step_id)
        if seen is not None:
            if seen != signed:
                return _refused(
                    ref, Reason.DUPLICATE_CONFLICT, "this step_id was used for another step"
                )
            return [StepRepeated(ref, life.stage)]
        if len(life.steps) >= STEPS_PER_ORDER_MAX:
            return _refused(ref, Reason.CAPACITY, "too many steps for one order")
        if verify and abs(now_ms - step.time_ms) > self.rules.step_freshness_ms:
            return _refused(ref, Reason.STALE, "the step's time is too far from now")
        events = self._transition(kind, step, life, now_ms)
        if isinstance(events, Rejected):
            return _refused(ref, events.reason, events.detail)
        life.steps[step.step_id] = signed
        return events

    def check_signed(
        self, step: OrderStep, signer_id: str, now_ms: int, verify: bool = True
    ) -> Rejected | None:
        """For a step the order book takes (cancelling an unpaid hold): well formed,
        signed by `signer_id`, fresh."""
        refused = self._check_step(step)
        if refused is not None:
            return refused
        if step.signer_id != signer_id:
            return Rejected(Reason.NOT_YOUR_ORDER, f"only the buyer may {step.step}")
        signed = self._signed(step, verify)
        if isinstance(signed, Rejected):
            return signed
        if verify and abs(now_ms - step.time_ms) > self.rules.step_freshness_ms:
            return Rejected(Reason.STALE, "the step's time is too far from now")
        return None

    @staticmethod
    def _signed(step: OrderStep, verify: bool) -> bytes | Rejected:
        """The step's signed bytes, once its signature is checked (`verify`)."""
        try:
            signed = step.signing_bytes()
        except CanonicalError as error:
            return Rejected(Reason.BAD_FIELD, str(error))
        refused = verify_signature(step.signer_id, signed, step.signature) if verify else None
        return signed if refused is None else refused

    def _check_step(self, step: OrderStep) -> Rejected | None:
        text = (step.step, step.step_id, step.buyer_id, step.order_id, step.signer_id)
        if not all_text(*text, step.carrier, step.tracking, step.decision, step.reason):
            return Rejected(Reason.BAD_FIELD, "step fields are text")
        if not all_text(step.signature) or not all_integers(step.time_ms, step.amount_cents):
            return Rejected(Reason.BAD_FIELD, "signature is text; time_ms, amount_cents integers")
        if step.step not in StepKind.__members__.values():
            return Rejected(Reason.BAD_FIELD, f"step is one of {', '.join(StepKind)}")
        if STEP_ID.fullmatch(step.step_id) is None:
            return Rejected(Reason.BAD_FIELD, "step_id must be 1..64 of [A-Za-z0-9_-]")
        if self.identities.get(step.signer_id) is None:
            return Rejected(Reason.UNKNOWN_IDENTITY, "the signer's key is not registered")
        return None

    def _signer_may(self, kind: StepKind, signer_id: str, life: Life) -> Rejected | None:
        if kind in BUYER_STEPS and signer_id != life.buyer_id:
            return Rejected(Reason.NOT_YOUR_ORDER, f"only the buyer may {kind}")
        if kind in MERCHANT_STEPS and signer_id != life.merchant_id:
            return Rejected(Reason.NOT_MERCHANT, f"only the order's merchant may {kind}")
        if kind is StepKind.RESOLVE and signer_id not in self.rules.arbiter_ids:
            return Rejected(Reason.NOT_ARBITER, "only an arbiter may resolve a dispute")
        return None

    def _transition(
        self, kind: StepKind, step: OrderStep, life: Life, now_ms: int
    ) -> list[Event] | Rejected:
        def illegal() -> Rejected:
            return Rejected(Reason.WRONG_STAGE, f"cannot {kind} an order that is {life.stage}")

        def taken(action: str, refund_id: str = "") -> StepTaken:
            return StepTaken(action, step, life.stage, life.merchant_id, refund_id, now_ms)

        if kind is StepKind.CANCEL:
            if life.stage is not Stage.PAID:
                return illegal()
            life.stage = Stage.CANCELLED
            voided = self._transfer(self._void(life.payment_id), now_ms)
            returned = self.catalog.return_units(
                life.product_id, life.quantity, f"cancel:{life.ref}", now_ms
            )
            return [
                taken("cancelled"),
                voided,
                returned,
                ProviderCall(
                    "cancel",
                    life.ref,
                    life.provider,
                    life.authorization_id,
                    life.amount_cents,
                    life.currency,
                ),
            ]
        if kind is StepKind.SHIP:
            if life.stage is not Stage.PAID:
                return illegal()
            if SHORT_TEXT.fullmatch(step.carrier) is None:
                return Rejected(Reason.BAD_FIELD, "carrier: 1..64 of letters, digits, ._/#- ")
            if SHORT_TEXT.fullmatch(step.tracking) is None:
                return Rejected(Reason.BAD_FIELD, "tracking: 1..64 of letters, digits, ._/#- ")
            life.stage = Stage.SHIPPED
            life.carrier, life.tracking = step.carrier, step.tracking
            life.shipped_at_ms = now_ms
            self._run_clock(life, now_ms + self.rules.confirm_after_ms)
            life.capture_asked = True
            return [taken("shipped"), self._capture_call(life)]
        if kind is StepKind.DELIVER:
            if life.stage is not Stage.SHIPPED:
                return illegal()
            life.stage = Stage.DELIVERED
            life.delivered_at_ms = now_ms
            self._run_clock(life, now_ms + self.rules.confirm_after_ms)
            return [taken("delivered")]
        if kind is StepKind.CONFIRM:
            if life.stage not in CLOCK_RUNS:
                return illegal()
            life.stage = Stage.CONFIRMED
            life.confirm_due_ms = 0
            return [taken("confirmed"), *self._settle_if_captured(life, "confirmed", now_ms)]
        if kind is StepKind.REFUND_REQUEST:
            if life.stage not in CLOCK_RUNS:
                return illegal()
            if not life.captured:
                return Rejected(Reason.PAYMENT_PENDING, "the payment is not captured yet; retry")
            left = self._escrow_left(life)
            if not 1 <= step.amount_cents <= left:
                return Rejected(Reason.BAD_AMOUNT, f"a refund is 1..{left}")
            if step.reason not in RefundReason.__members__.values():
                return Rejected(Reason.BAD_FIELD, f"reason is one of {', '.join(RefundReason)}")
            self._pause(life, Stage.REFUND_REQUESTED, now_ms)
            life.refund_requested_cents = step.amount_cents
            life.refund_reason = step.reason
            return [taken("refund_requested")]
        if kind is StepKind.REFUND_ANSWER:
            if life.stage is not Stage.REFUND_REQUESTED:
                return illegal()
            if step.decision == "decline":
                self._resume(life, now_ms)
                return [taken("refund_declined")]
            if step.decision != "accept":
                return Rejected(Reason.BAD_FIELD, "decision is accept or decline")
            if not 1 <= step.amount_cents <= life.refund_requested_cents:
                return Rejected(
                    Reason.BAD_AMOUNT, f"accept 1..{life.refund_requested_cents} (as asked)"
                )
            refund_id = self._start_refund(life, step.amount_cents, False)
            return [taken("refund_accepted", refund_id), *self._refund_started(life, now_ms)]
        if kind is StepKind.DISPUTE:
            if life.stage not in (*CLOCK_RUNS, Stage.REFUND_REQUESTED):
                return illegal()
            if not life.captured:
                return Rejected(Reason.PAYMENT_PENDING, "the payment is not captured yet; retry")
            if step.reason not in RefundReason.__members__.values():
                return Rejected(Reason.BAD_FIELD, f"reason is one of {', '.join(RefundReason)}")
            if life.stage is Stage.REFUND_REQUESTED:
                life.stage = Stage.DISPUTED  # the clock is paused already
            else:
                self._pause(life, Stage.DISPUTED, now_ms)
            return [taken("disputed")]
        assert kind is StepKind.RESOLVE
        if life.stage is not Stage.DISPUTED:
            return illegal()
        left = self._escrow_left(life)
        if not 0 <= step.amount_cents <= left:
            return Rejected(Reason.BAD_AMOUNT, f"resolve with 0..{left} back to the buyer")
        if step.amount_cents == 0:
            life.stage = Stage.CONFIRMED
            life.confirm_due_ms = 0
            return [taken("resolved"), *self._settle_if_captured(life, "resolved", now_ms)]
        refund_id = self._start_refund(life, step.amount_cents, True)
        return [taken("resolved", refund_id), *self._refund_started(life, now_ms)]

    # Group buying (groups.py): the group's close decides for its paid members

    def reprice(self, life: Life, amount_cents: int) -> None:
        """The group succeeded at a lower price: the capture takes `amount_cents`, the
        rest of the authorization is released (the pending transfer posted in part)."""
        assert life.stage is Stage.PAID, life
        assert not life.capture_asked, life
        assert 1 <= amount_cents <= life.amount_cents, (amount_cents, life.amount_cents)
        life.amount_cents = amount_cents

    def void_paid(self, life: Life, cause: str, now_ms: int) -> list[Event]:
        """The group failed: the payment is voided and the units go back, as when the
        buyer cancels before shipping, with `cause` on the stage entry."""
        assert life.stage is Stage.PAID, life
        life.stage = Stage.CANCELLED
        return [
            self._transfer(self._void(life.payment_id), now_ms),
            self._stage(life, cause, now_ms),
            self.catalog.return_units(life.product_id, life.quantity, f"cancel:{life.ref}", now_ms),
            ProviderCall(
                "cancel", life.ref, life.provider, life.authorization_id, life.amount_cents,
                life.currency,
            ),
        ]  # fmt: skip

    # Provider results

    def record_result(self, result: ProviderResult, now_ms: int) -> list[Event]:
        if not all_text(result.operation, result.reference, result.provider, result.provider_ref):
            return _refused("", Reason.BAD_FIELD, "result fields are text")
        if PROVIDER_REF.fullmatch(result.provider_ref) is None:
            return _refused(result.reference, Reason.BAD_FIELD, "provider_ref is malformed")
        if result.operation == ProviderOperation.CAPTURE:
            return self._captured(result, now_ms)
        if result.operation == ProviderOperation.REFUND:
            return self._refunded(result, now_ms)
        if result.operation == ProviderOperation.PAYOUT:
            return self._paid_out(result, now_ms)
        return _refused(result.reference, Reason.BAD_FIELD, "operation: capture, refund, payout")

    def _life_of_ref(self, ref: str) -> Life | None:
        buyer_id, slash, order_id = ref.rpartition("/")
        return self._lives.get((buyer_id, order_id)) if slash else None

    def _captured(self, result: ProviderResult, now_ms: int) -> list[Event]:
        life = self._life_of_ref(result.reference)
        if life is None or not life.capture_asked:
            return _refused(result.reference, Reason.UNKNOWN_ORDER, "no capture was asked for")
        status = self.funds.pending_status(life.payment_id)
        if life.captured or status is not PendingStatus.PENDING:
            return [StepRepeated(result.reference, life.stage)]  # twice, or after an expiry
        events: list[Event] = []
        if result.succeeded:
            life.captured = True
            events.append(self._transfer(self._post(life.payment_id, life.amount_cents), now_ms))
        else:
            life.stage = Stage.CAPTURE_FAILED
            life.confirm_due_ms = 0
            events.append(self._transfer(self._void(life.payment_id), now_ms))
        events.insert(0, ResultRecorded(result, life.buyer_id, life.order_id, life.stage, now_ms))
        if result.succeeded and life.stage is Stage.CONFIRMED:
            events.extend(self._settle_if_captured(life, "confirmed", now_ms))
        return events

    def _refunded(self, result: ProviderResult, now_ms: int) -> list[Event]:
        key = self._refunds.get(result.reference)
        life = None if key is None else self._lives.get(key)
        if life is None:
            return _refused(result.reference, Reason.UNKNOWN_TRANSFER, "no such refund")
        refund = life.refund
        if refund is None or refund.refund_id != result.reference:
            return [StepRepeated(result.reference, life.stage)]
        life.refund = None
        events: list[Event] = []
        if result.succeeded:
            life.refunded_cents += refund.amount_cents
            events.append(self._transfer(self._post(refund.refund_id, refund.amount_cents), now_ms))
            if self._escrow_left(life) == 0:
                life.stage = Stage.REFUNDED
                life.confirm_due_ms = 0
            elif refund.settle_after:
                life.stage = Stage.CONFIRMED
            else:
                self._resume(life, now_ms)
        else:
            events.append(self._transfer(self._void(refund.refund_id), now_ms))
            if refund.settle_after:
                life.stage = Stage.DISPUTED  # the arbiter decides again
            else:
                self._resume(life, now_ms)
        events.insert(0, ResultRecorded(result, life.buyer_id, life.order_id, life.stage, now_ms))
        if life.stage is Stage.CONFIRMED:
            events.extend(self._settle_if_captured(life, "resolved", now_ms))
        return events

    def _paid_out(self, result: ProviderResult, now_ms: int) -> list[Event]:
        if result.reference not in self._payouts:
            return _refused(result.reference, Reason.UNKNOWN_TRANSFER, "no such payout")
        if self.funds.pending_status(result.reference) is not PendingStatus.PENDING:
            return [StepRepeated(result.reference, Stage.SETTLED)]
        _, _, amount = self._payouts[result.reference]
        request = self._post(result.reference, amount) if result.succeeded else None
        moved = self._transfer(request or self._void(result.reference), now_ms)
        return [ResultRecorded(result, "", "", Stage.SETTLED, now_ms), moved]

    # Payouts

    def run_payouts(self, command: RunPayouts, now_ms: int) -> list[Event]:
        if not all_text(command.batch_id) or STEP_ID.fullmatch(command.batch_id) is None:
            return _refused("", Reason.BAD_FIELD, "batch_id must be 1..64 of [A-Za-z0-9_-]")
        if command.batch_id in self._batches:
            return [StepRepeated(command.batch_id, Stage.SETTLED)]
        self._batches.add(command.batch_id)
        events: list[Event] = []
        calls: list[Event] = []
        for currency, name, balance in self.funds.accounts():
            if not name.startswith(f"{AccountKind.MERCHANT_PAYABLE.value}:"):
                continue
            if balance.available <= 0:
                continue
            merchant_id = name.partition(":")[2]
            payout_id = f"payout:{command.batch_id}:{merchant_id}:{currency}"
            self._payouts[payout_id] = (merchant_id, currency, balance.available)
            events.append(
                self._transfer(
                    TransferRequest(
                        payout_id,
                        Phase.PENDING,
                        name,
                        account_name(AccountKind.PROVIDER_CLEARING, merchant_id),
                        balance.available,
                        currency,
                        TransferCode.PAYOUT,
                        command.batch_id,
                    ),
                    now_ms,
                )
            )
            calls.append(
                ProviderCall("payout", payout_id, "", "", balance.available, currency, merchant_id)
            )
        return [PayoutBatchStarted(command.batch_id, len(calls), now_ms), *events, *calls]

    # The clock: authorizations that lapse, auto-confirm

    def expired(self, transfer: TransferRecorded, now_ms: int) -> list[Event]:
        """What follows `Funds` expiring a pending transfer: a payment whose authorization
        lapsed before shipping cancels the order (units back to inventory); after
        shipping, the capture failed."""
        if transfer.code is not TransferCode.PAYMENT:
            return []
        life = self._life_of_ref(transfer.reference)
        if life is None or life.stage in FINAL:
            return []
        events: list[Event] = []
        if life.stage is Stage.PAID:
            life.stage = Stage.CANCELLED
            events.append(
                self.catalog.return_units(
                    life.product_id, life.quantity, f"cancel:{life.ref}", now_ms
                )
            )
        else:
            life.stage = Stage.CAPTURE_FAILED
        life.confirm_due_ms = 0
        events.append(self._stage(life, "authorization_expired", now_ms))
        return events

    def tick(self, now_ms: int) -> list[Event]:
        """Confirm what the clock says is due (at most `CONFIRMS_PER_TICK_MAX` a call)."""
        events: list[Event] = []
        for _ in range(CONFIRMS_PER_TICK_MAX):
            if not self._due or self._due[0][0] > now_ms:
                break
            due_ms, buyer_id, order_id = heapq.heappop(self._due)
            life = self._lives.get((buyer_id, order_id))
            if life is None or life.confirm_due_ms != due_ms or life.stage not in CLOCK_RUNS:
                continue  # the clock was reset, paused or stopped since
            events.extend(self.auto_confirm(life, now_ms))
        return events

    def auto_confirm(self, life: Life, now_ms: int) -> list[Event]:
        assert life.stage in CLOCK_RUNS, life.stage
        life.stage = Stage.CONFIRMED
        life.confirm_due_ms = 0
        return [
            self._stage(life, "auto_confirmed", now_ms),
            *self._settle_if_captured(life, "auto_confirmed", now_ms),
        ]

    def _run_clock(self, life: Life, due_ms: int) -> None:
        life.confirm_due_ms = due_ms
        heapq.heappush(self._due, (due_ms, life.buyer_id, life.order_id))

    # Helpers

    def _escrow_left(self, life: Life) -> int:
        """What is in escrow and not already being refunded."""
        return self.funds.balance(life.currency, life.escrow).available

    def _pause(self, life: Life, stage: Stage, now_ms: int) -> None:
        life.resume_stage = life.stage
        life.paused_left_ms = max(0, life.confirm_due_ms - now_ms)
        life.confirm_due_ms = 0
        life.stage = stage

    def _resume(self, life: Life, now_ms: int) -> None:
        life.stage = life.resume_stage
        self._run_clock(life, now_ms + life.paused_left_ms)

    def _start_refund(self, life: Life, amount_cents: int, settle_after: bool) -> str:
        """The order is refunding `amount_cents`: its id (the transfer follows the step)."""
        life.refunds_done += 1
        refund_id = f"refund:{life.ref}:{life.refunds_done}"
        life.refund = _Refund(refund_id, amount_cents, settle_after)
        self._refunds[refund_id] = (life.buyer_id, life.order_id)
        life.stage = Stage.REFUNDING
        return refund_id

    def _refund_started(self, life: Life, now_ms: int) -> list[Event]:
        """The refund's money held (escrow -> refunds, pending), and the provider asked."""
        refund = life.refund
        assert refund is not None
        held = self._transfer(
            TransferRequest(
                refund.refund_id,
                Phase.PENDING,
                life.escrow,
                account_name(AccountKind.REFUNDS, life.buyer_id),
                refund.amount_cents,
                life.currency,
                TransferCode.REFUND,
                life.ref,
            ),
            now_ms,
        )
        return [held, self._refund_call(life, refund)]

    def _settle_if_captured(self, life: Life, cause: str, now_ms: int) -> list[Event]:
        if not life.captured:
            return []  # settles when the capture comes back
        left = self._escrow_left(life)
        fee = left * self.rules.fee_bps // FEE_BPS_MAX
        events: list[Event] = []
        if left - fee > 0:
            events.append(
                self._transfer(
                    TransferRequest(
                        f"settle:{life.ref}",
                        Phase.SINGLE,
                        life.escrow,
                        account_name(AccountKind.MERCHANT_PAYABLE, life.merchant_id),
                        left - fee,
                        life.currency,
                        TransferCode.SETTLEMENT,
                        life.ref,
                    ),
                    now_ms,
                )
            )
        if fee > 0:
            events.append(
                self._transfer(
                    TransferRequest(
                        f"fee:{life.ref}",
                        Phase.SINGLE,
                        life.escrow,
                        account_name(AccountKind.PLATFORM_FEES, PLATFORM),
                        fee,
                        life.currency,
                        TransferCode.FEE,
                        life.ref,
                    ),
                    now_ms,
                )
            )
        life.stage = Stage.SETTLED
        life.settled_cents = left - fee
        life.fee_cents = fee
        events.append(self._stage(life, cause, now_ms))
        return events

    def _stage(self, life: Life, cause: str, now_ms: int) -> StageChanged:
        return StageChanged(
            life.buyer_id, life.order_id, life.merchant_id, life.stage, cause, now_ms
        )

    def _capture_call(self, life: Life) -> ProviderCall:
        return ProviderCall(
            "capture", life.ref, life.provider, life.authorization_id, life.amount_cents,
            life.currency,
        )  # fmt: skip

    def _refund_call(self, life: Life, refund: _Refund) -> ProviderCall:
        return ProviderCall(
            "refund", refund.refund_id, life.provider, life.authorization_id,
            refund.amount_cents, life.currency,
        )  # fmt: skip

    @staticmethod
    def _post(pending_id: str, amount: int) -> TransferRequest:
        code = _code_of(pending_id)
        return TransferRequest(
            f"post:{pending_id}", Phase.POST, "", "", amount, "", code, pending_id=pending_id
        )

    @staticmethod
    def _void(pending_id: str) -> TransferRequest:
        code = _code_of(pending_id)
        return TransferRequest(
            f"void:{pending_id}", Phase.VOID, "", "", 0, "", code, pending_id=pending_id
        )

    def _transfer(self, request: TransferRequest, now_ms: int) -> TransferRecorded:
        """A transfer the escrow's own rules make: refusing it would be a bug here."""
        result = self.funds.transfer(request, now_ms)
        assert not isinstance(result, Rejected), (request, result)
        assert not isinstance(result, TransferRepeated), request
        return result


def _code_of(pending_id: str) -> TransferCode:
    prefix = pending_id.partition(":")[0]
    return {
        "payment": TransferCode.PAYMENT,
        "refund": TransferCode.REFUND,
        "payout": TransferCode.PAYOUT,
    }[prefix]
