"""The payment provider boundary, modelled on card processors' manual-capture flow.

    authorize(card)  at payment: the money is reserved on the card (escrow.py holds it)
    capture          at shipping: the reserved money is taken
    cancel           an authorization not captured (the buyer cancelled before shipping)
    refund           part or all of a capture, back to the card
    payout           a merchant's settled balance, to the merchant's account

Every call carries the escrow's own id for it (`reference`), which the provider treats
as an idempotency key: asking twice gets the first answer, never a second charge. An
answer is `succeeded`, `failed` (with a reason) or `pending`: the result comes later as
a signed webhook (webhooks.py) naming the same reference. No card data is kept or
logged past the call to `authorize`, and none goes on the ledger: only the provider's
name and its id for the authorization.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

CARD_NUMBER = re.compile(r"[0-9]{12,19}")


class AnswerStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class ProviderAnswer:
    status: AnswerStatus
    provider_ref: str  # the provider's id for what it did (authorization, capture...)
    reason: str = ""  # why it failed: card_declined, insufficient_funds, ...


@dataclass(frozen=True, slots=True)
class Card:
    """What the buyer typed, held only for the call to `authorize`."""

    number: str
    exp_month: int
    exp_year: int
    cvc: str

    def __repr__(self) -> str:  # never print a card number
        return f"Card(**** {self.number[-4:]})"


class CardError(ValueError):
    """The card details cannot be a card (before any provider is asked)."""


def check_card(card: Card, now_year: int, now_month: int) -> None:
    """Raise CardError unless `card` is well formed: digits, Luhn checksum, not expired."""
    if not isinstance(card.number, str) or CARD_NUMBER.fullmatch(card.number) is None:
        raise CardError("the card number is 12 to 19 digits")
    if not luhn_valid(card.number):
        raise CardError("the card number is mistyped (its check digit is wrong)")
    if not isinstance(card.cvc, str) or re.fullmatch(r"[0-9]{3,4}", card.cvc) is None:
        raise CardError("the security code is 3 or 4 digits")
    if type(card.exp_month) is not int or not 1 <= card.exp_month <= 12:
        raise CardError("the expiry month is 1..12")
    if type(card.exp_year) is not int or (card.exp_year, card.exp_month) < (now_year, now_month):
        raise CardError("the card has expired")


def luhn_valid(number: str) -> bool:
    """The Luhn (mod 10) check digit of payment card numbers (ISO/IEC 7812-1)."""
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


class PaymentProvider(Protocol):
    """What the order path needs of a provider. `name` goes on the ledger with each
    authorization; `test` marks the built-in provider that moves no real money."""

    @property
    def name(self) -> str: ...

    @property
    def test(self) -> bool: ...

    async def authorize(
        self, reference: str, amount_cents: int, currency: str, card: Card
    ) -> ProviderAnswer: ...

    async def capture(
        self, reference: str, authorization_id: str, amount_cents: int, currency: str
    ) -> ProviderAnswer: ...

    async def cancel(self, reference: str, authorization_id: str) -> ProviderAnswer: ...

    async def refund(
        self, reference: str, authorization_id: str, amount_cents: int, currency: str
    ) -> ProviderAnswer: ...

    async def payout(
        self, reference: str, merchant_id: str, amount_cents: int, currency: str
    ) -> ProviderAnswer: ...
