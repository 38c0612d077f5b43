"""Money as double-entry transfers between accounts, two-phase in the style of TigerBeetle.

Accounts, one set per currency (amounts are integers in the currency's minor unit):

| account              | kind              | holds                                        | floor |
|----------------------|-------------------|----------------------------------------------|-------|
| `buyer:<id>`         | buyer_funding     | what a buyer paid in (negative as they pay)  | none  |
| `escrow:<order ref>` | escrow            | one order's money until settled or refunded  | 0     |
| `merchant:<id>`      | merchant_payable  | settled money the platform owes the merchant | 0     |
| `fees:platform`      | platform_fees     | the platform's fees                          | 0     |
| `clearing:<id>`      | provider_clearing | paid out to the merchant by the provider     | 0     |
| `refunds:<id>`       | refunds           | paid back to the buyer by the provider       | 0     |

An order reference is `<buyer_id>/<order_id>` (order ids are unique per buyer).

Every account has four sums (TigerBeetle's): debits and credits, each posted and pending.
Its balance is credits minus debits. A transfer moves `amount` from `debit` to `credit`:

- `single`: posted at once.
- `pending`: held; it counts against the debit account's floor until resolved, and may
  time out (`timeout_ms` after its time; 0: never).
- `post`: resolves a pending transfer (`pending_id`), moving all of it or a part
  (`amount` <= the pending amount; the rest is released).
- `void`: resolves a pending transfer, moving nothing.
- `expire`: the pending transfer timed out (made by `tick`, never by a command).

A pending transfer is resolved at most once. Transfer ids are idempotency keys: the same
transfer again is `repeated` (nothing changes); the same id with other fields is refused.
A floor of 0 means `debits_posted + debits_pending <= credits_posted` at all times, so a
hold can never spend money that is not there.

Invariants, checked by `problems()` (and so by replaying the ledger): per currency the
sum of balances over all accounts is 0, posted and pending alike (every transfer debits
exactly what it credits); no account is below its floor; every resolution names a
pending transfer that was still pending.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from livecommerce.commerce.events import Entry, Event, flat_fields
from livecommerce.commerce.results import Reason, Rejected, all_integers, all_text

AMOUNT_MAX: Final = 2**53 - 1
TRANSFERS_MAX: Final = 10_000_000
EXPIRIES_PER_TICK_MAX: Final = 10_000
TRANSFER_ID = re.compile(r"[A-Za-z0-9_:/.-]{1,200}")
CURRENCY = re.compile(r"[A-Z]{3}")


class AccountKind(StrEnum):
    BUYER_FUNDING = "buyer"
    ESCROW = "escrow"
    MERCHANT_PAYABLE = "merchant"
    PLATFORM_FEES = "fees"
    PROVIDER_CLEARING = "clearing"
    REFUNDS = "refunds"


# Kinds whose balance may go below zero: only where the money comes from outside.
NO_FLOOR: Final = frozenset({AccountKind.BUYER_FUNDING})
PLATFORM: Final = "platform"


def account_name(kind: AccountKind, owner: str) -> str:
    return f"{kind.value}:{owner}"


def account_kind(name: str) -> AccountKind | None:
    prefix, colon, owner = name.partition(":")
    if not colon or not owner:
        return None
    try:
        return AccountKind(prefix)
    except ValueError:
        return None


class Phase(StrEnum):
    SINGLE = "single"
    PENDING = "pending"
    POST = "post"
    VOID = "void"
    EXPIRE = "expire"


class TransferCode(StrEnum):
    """Why money moved (TigerBeetle's `code`)."""

    PAYMENT = "payment"  # buyer -> escrow, pending while authorized, posted at capture
    SETTLEMENT = "settlement"  # escrow -> merchant
    FEE = "fee"  # escrow -> fees
    REFUND = "refund"  # escrow -> refunds, pending while the provider refunds
    PAYOUT = "payout"  # merchant -> clearing, pending while the provider pays out


@dataclass(frozen=True, slots=True)
class TransferRecorded(Event):
    """A transfer the funds accepted: the ledger entry `transfer/v1`. For `post`, `void`
    and `expire`, `debit`, `credit` and `currency` repeat the pending transfer's, and
    `amount` is what moved (0 for void and expire)."""

    transfer_id: str
    phase: Phase
    debit: str
    credit: str
    amount: int
    currency: str
    code: TransferCode
    reference: str  # the order reference, or the payout batch
    pending_id: str
    timeout_ms: int
    time_ms: int

    def to_entry(self) -> Entry:
        fields = flat_fields(self)
        fields["phase"] = str(self.phase)
        fields["code"] = str(self.code)
        return "transfer/v1", fields


@dataclass(frozen=True, slots=True)
class TransferRepeated(Event):
    """The same transfer again: nothing changed; `first` is what was recorded."""

    first: TransferRecorded

    def to_entry(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Balance:
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0

    @property
    def posted(self) -> int:
        return self.credits_posted - self.debits_posted

    @property
    def available(self) -> int:
        """What may still be debited: posted credits less posted and pending debits."""
        return self.credits_posted - self.debits_posted - self.debits_pending


class _Account:
    __slots__ = ("credits_pending", "credits_posted", "debits_pending", "debits_posted", "kind")

    def __init__(self, kind: AccountKind) -> None:
        self.kind = kind
        self.debits_pending = 0
        self.debits_posted = 0
        self.credits_pending = 0
        self.credits_posted = 0

    def snapshot(self) -> Balance:
        return Balance(
            self.debits_pending, self.debits_posted, self.credits_pending, self.credits_posted
        )


class PendingStatus(StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"
    EXPIRED = "expired"


class _Pending:
    __slots__ = ("amount", "expires_at_ms", "status", "transfer")

    def __init__(self, transfer: TransferRecorded) -> None:
        self.transfer = transfer
        self.amount = transfer.amount
        self.status = PendingStatus.PENDING
        self.expires_at_ms = transfer.time_ms + transfer.timeout_ms if transfer.timeout_ms else 0


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """What a caller asks for; the funds fill in the rest of `TransferRecorded`. For
    `post` and `void`, `debit`, `credit` and `currency` may be "" (the pending's)."""

    transfer_id: str
    phase: Phase
    debit: str
    credit: str
    amount: int
    currency: str
    code: TransferCode
    reference: str = ""
    pending_id: str = ""
    timeout_ms: int = 0


class Funds:
    """Every account and transfer. Mutated only through `transfer`, `tick` and `restore`."""

    def __init__(
        self,
        transfers_max: int = TRANSFERS_MAX,
        expiries_per_tick_max: int = EXPIRIES_PER_TICK_MAX,
    ) -> None:
        assert transfers_max > 0
        assert expiries_per_tick_max > 0
        self.transfers_max = transfers_max
        self.expiries_per_tick_max = expiries_per_tick_max
        self._accounts: dict[tuple[str, str], _Account] = {}
        self._transfers: dict[str, TransferRecorded] = {}
        self._pending: dict[str, _Pending] = {}
        self._timeouts: list[tuple[int, str]] = []  # (expires at ms, pending id), a heap

    # Reading

    def balance(self, currency: str, account: str) -> Balance:
        found = self._accounts.get((currency, account))
        return Balance() if found is None else found.snapshot()

    def accounts(self) -> list[tuple[str, str, Balance]]:
        """(currency, account, balance) of every account, sorted."""
        return [
            (currency, name, account.snapshot())
            for (currency, name), account in sorted(self._accounts.items())
        ]

    def get(self, transfer_id: str) -> TransferRecorded | None:
        return self._transfers.get(transfer_id)

    def pending_status(self, pending_id: str) -> PendingStatus | None:
        pending = self._pending.get(pending_id)
        return None if pending is None else pending.status

    def pending_amount(self, pending_id: str) -> int:
        """What a pending transfer still holds (0 once resolved or if unknown)."""
        pending = self._pending.get(pending_id)
        if pending is None or pending.status is not PendingStatus.PENDING:
            return 0
        return pending.amount

    def transfers(self) -> Iterator[TransferRecorded]:
        """Every transfer recorded, oldest first."""
        return iter(self._transfers.values())

    def transfers_recorded(self) -> int:
        return len(self._transfers)

    # Changing

    def transfer(
        self, request: TransferRequest, now_ms: int
    ) -> TransferRecorded | TransferRepeated | Rejected:
        """Check and apply one transfer. A repeat of a recorded transfer (same fields)
        changes nothing and answers with the recorded one."""
        refused = _check_request(request)
        if refused is not None:
            return refused
        seen = self._transfers.get(request.transfer_id)
        if seen is not None:
            if _same_request(seen, request):
                return TransferRepeated(seen)
            return Rejected(
                Reason.TRANSFER_EXISTS, "this transfer_id was used for another transfer"
            )
        if len(self._transfers) >= self.transfers_max:
            return Rejected(Reason.CAPACITY, "transfer table is full")
        recorded = self._resolve(request, now_ms)
        if isinstance(recorded, Rejected):
            return recorded
        refused = self._apply(recorded)
        if refused is not None:
            return refused
        return recorded

    def _resolve(self, request: TransferRequest, now_ms: int) -> TransferRecorded | Rejected:
        if request.phase in (Phase.POST, Phase.VOID):
            pending = self._pending.get(request.pending_id)
            if pending is None:
                return Rejected(Reason.UNKNOWN_TRANSFER, "no such pending transfer")
            if pending.status is not PendingStatus.PENDING:
                return Rejected(
                    Reason.TRANSFER_RESOLVED, f"the pending transfer is already {pending.status}"
                )
            held = pending.transfer
            for given, own in (
                (request.debit, held.debit),
                (request.credit, held.credit),
                (request.currency, held.currency),
            ):
                if given and given != own:
                    return Rejected(Reason.BAD_FIELD, "accounts and currency are the pending's")
            amount = request.amount if request.phase is Phase.POST else 0
            if request.phase is Phase.POST and not 1 <= amount <= pending.amount:
                return Rejected(Reason.BAD_AMOUNT, f"post 1..{pending.amount} of the pending")
            return TransferRecorded(
                request.transfer_id,
                request.phase,
                held.debit,
                held.credit,
                amount,
                held.currency,
                request.code,
                request.reference or held.reference,
                request.pending_id,
                0,
                now_ms,
            )
        return TransferRecorded(
            request.transfer_id,
            request.phase,
            request.debit,
            request.credit,
            request.amount,
            request.currency,
            request.code,
            request.reference,
            "",
            request.timeout_ms if request.phase is Phase.PENDING else 0,
            now_ms,
        )

    def _account(self, currency: str, name: str) -> _Account:
        account = self._accounts.get((currency, name))
        if account is None:
            kind = account_kind(name)
            assert kind is not None, name
            account = self._accounts[(currency, name)] = _Account(kind)
        return account

    def _apply(self, recorded: TransferRecorded) -> Rejected | None:
        """Apply a resolved transfer, or refuse it (nothing changed) if it would take an
        account below its floor or resolve what is not pending."""
        amount = recorded.amount
        if recorded.phase in (Phase.SINGLE, Phase.PENDING):
            kind = account_kind(recorded.debit)
            available = self.balance(recorded.currency, recorded.debit).available
            if kind not in NO_FLOOR and amount > available:
                return Rejected(
                    Reason.INSUFFICIENT_FUNDS, f"{recorded.debit} has {available} available"
                )
            debit = self._account(recorded.currency, recorded.debit)
            credit = self._account(recorded.currency, recorded.credit)
            if recorded.phase is Phase.SINGLE:
                debit.debits_posted += amount
                credit.credits_posted += amount
            else:
                debit.debits_pending += amount
                credit.credits_pending += amount
                held = self._pending[recorded.transfer_id] = _Pending(recorded)
                if held.expires_at_ms:
                    heapq.heappush(self._timeouts, (held.expires_at_ms, recorded.transfer_id))
        else:
            found = self._pending.get(recorded.pending_id)
            if found is None or found.status is not PendingStatus.PENDING:
                return Rejected(Reason.TRANSFER_RESOLVED, "not a pending transfer now")
            pending = found
            if recorded.phase is Phase.POST and not 0 < amount <= pending.amount:
                return Rejected(Reason.BAD_AMOUNT, "more than the pending transfer holds")
            debit = self._account(recorded.currency, recorded.debit)
            credit = self._account(recorded.currency, recorded.credit)
            held_amount = pending.amount
            debit.debits_pending -= held_amount
            credit.credits_pending -= held_amount
            if recorded.phase is Phase.POST:
                debit.debits_posted += amount
                credit.credits_posted += amount
                pending.status = PendingStatus.POSTED
            elif recorded.phase is Phase.VOID:
                pending.status = PendingStatus.VOIDED
            else:
                pending.status = PendingStatus.EXPIRED
            pending.amount = 0
        self._transfers[recorded.transfer_id] = recorded
        return None

    def tick(self, now_ms: int) -> list[Event]:
        """Expire pending transfers whose timeout has passed (at most
        `expiries_per_tick_max` a call), each an `expire` transfer."""
        events: list[Event] = []
        for _ in range(self.expiries_per_tick_max):
            if not self._timeouts or self._timeouts[0][0] > now_ms:
                break
            _, pending_id = heapq.heappop(self._timeouts)
            expired = self.expire(pending_id, now_ms)
            if expired is not None:
                events.append(expired)
        return events

    def expire(self, pending_id: str, now_ms: int) -> TransferRecorded | None:
        """Expire one pending transfer (None: it is not pending, or not due yet)."""
        pending = self._pending.get(pending_id)
        if pending is None or pending.status is not PendingStatus.PENDING:
            return None
        if not pending.expires_at_ms or pending.expires_at_ms > now_ms:
            return None
        held = pending.transfer
        expired = TransferRecorded(
            f"expire:{pending_id}",
            Phase.EXPIRE,
            held.debit,
            held.credit,
            0,
            held.currency,
            held.code,
            held.reference,
            pending_id,
            0,
            now_ms,
        )
        refused = self._apply(expired)
        assert refused is None, refused
        return expired

    # Replay from the ledger

    def restore(self, recorded: TransferRecorded) -> Rejected | None:
        """Apply a transfer from the ledger. A refusal means the ledger breaks a rule at
        this entry (the caller names it); nothing is applied then."""
        if self._transfers.get(recorded.transfer_id) is not None:
            return Rejected(Reason.TRANSFER_EXISTS, f"{recorded.transfer_id} appears twice")
        if recorded.phase is not Phase.EXPIRE:
            refused = _check_request(
                TransferRequest(
                    recorded.transfer_id,
                    recorded.phase,
                    recorded.debit,
                    recorded.credit,
                    recorded.amount,
                    recorded.currency,
                    recorded.code,
                    recorded.reference,
                    recorded.pending_id,
                    recorded.timeout_ms,
                )
            )
            if refused is not None:
                return refused
        if recorded.phase in (Phase.POST, Phase.VOID, Phase.EXPIRE):
            found = self._pending.get(recorded.pending_id)
            if found is None:
                return Rejected(Reason.UNKNOWN_TRANSFER, "resolves no known pending transfer")
            held = found.transfer
            if (recorded.debit, recorded.credit, recorded.currency) != (
                held.debit,
                held.credit,
                held.currency,
            ):
                return Rejected(Reason.BAD_FIELD, "accounts differ from the pending transfer's")
            if recorded.phase is not Phase.POST and recorded.amount != 0:
                return Rejected(Reason.BAD_AMOUNT, "a void or expiry moves nothing")
        return self._apply(recorded)

    # Invariants

    def problems(self) -> list[str]:
        """Every broken invariant, in words (empty: all hold)."""
        found: list[str] = []
        totals: dict[str, list[int]] = {}
        for (currency, name), account in sorted(self._accounts.items()):
            sums = totals.setdefault(currency, [0, 0])
            sums[0] += account.credits_posted - account.debits_posted
            sums[1] += account.credits_pending - account.debits_pending
            if account.kind not in NO_FLOOR and (
                account.debits_posted + account.debits_pending > account.credits_posted
            ):
                found.append(f"{currency} {name} is below its floor: {account.snapshot()}")
            if (
                min(
                    account.debits_pending,
                    account.debits_posted,
                    account.credits_pending,
                    account.credits_posted,
                )
                < 0
            ):
                found.append(f"{currency} {name} has a negative sum: {account.snapshot()}")
        for currency, (posted, pending) in sorted(totals.items()):
            if posted or pending:
                found.append(f"{currency} accounts sum to {posted} posted, {pending} pending")
        return found


def _check_request(request: TransferRequest) -> Rejected | None:
    if not all_text(
        request.transfer_id,
        request.debit,
        request.credit,
        request.currency,
        request.reference,
        request.pending_id,
    ) or not all_integers(request.amount, request.timeout_ms):
        return Rejected(Reason.BAD_FIELD, "transfer fields have the wrong types")
    if TRANSFER_ID.fullmatch(request.transfer_id) is None:
        return Rejected(Reason.BAD_FIELD, "transfer_id must be 1..200 of [A-Za-z0-9_:/.-]")
    if request.phase not in (Phase.SINGLE, Phase.PENDING, Phase.POST, Phase.VOID):
        return Rejected(Reason.BAD_FIELD, "phase must be single, pending, post or void")
    if request.phase in (Phase.POST, Phase.VOID):
        if not request.pending_id:
            return Rejected(Reason.BAD_FIELD, "post and void name a pending_id")
        if request.phase is Phase.VOID and request.amount != 0:
            return Rejected(Reason.BAD_AMOUNT, "a void moves nothing (amount 0)")
        return None
    if request.pending_id:
        return Rejected(Reason.BAD_FIELD, "only post and void name a pending_id")
    if CURRENCY.fullmatch(request.currency) is None:
        return Rejected(Reason.BAD_FIELD, "currency must be three capital letters")
    if account_kind(request.debit) is None or account_kind(request.credit) is None:
        return Rejected(Reason.BAD_FIELD, "unknown account kind")
    if request.debit == request.credit:
        return Rejected(Reason.BAD_FIELD, "debit and credit are the same account")
    if not 1 <= request.amount <= AMOUNT_MAX:
        return Rejected(Reason.BAD_AMOUNT, f"amount must be 1..{AMOUNT_MAX}")
    if request.timeout_ms < 0 or (request.timeout_ms and request.phase is not Phase.PENDING):
        return Rejected(Reason.BAD_FIELD, "only a pending transfer has a timeout (ms >= 0)")
    return None


def _same_request(seen: TransferRecorded, request: TransferRequest) -> bool:
    if seen.phase is not request.phase or seen.code is not request.code:
        return False
    if request.phase in (Phase.POST, Phase.VOID):
        return (
            seen.pending_id == request.pending_id
            and seen.amount == request.amount
            and all(
                not given or given == own
                for given, own in (
                    (request.debit, seen.debit),
                    (request.credit, seen.credit),
                    (request.currency, seen.currency),
                )
            )
        )
    return (seen.debit, seen.credit, seen.amount, seen.currency, seen.timeout_ms) == (
        request.debit,
        request.credit,
        request.amount,
        request.currency,
        request.timeout_ms,
    )
