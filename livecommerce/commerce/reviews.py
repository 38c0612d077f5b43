"""Verified-purchase reviews: a buyer who received an order reviews it once, its merchant
replies once, an arbiter may hide either text. Sans-I/O; every refusal changes nothing.

    order delivered / confirmed / settled --review (the buyer signs)--> reviewed
        --reply (the order's merchant signs)--> replied
        --hide review|reply (an arbiter signs)--> that text hidden (the stars stay)

Every action is signed: `livecommerce/review/v1\\n` + canonical JSON of `{action, buyer_id,
order_id, signer_id, stars, target, text, time_ms}` (all present; 0 and "" where an
action has none), and each one taken is a `review/v1` entry holding the signed fields
and the signature, beside the product and the order's stage the core found, so anyone
can check who wrote it and that the order it names is the reviewer's (its `order/v1`
entries). A review is keyed by its order (`buyer_id`, `order_id`): one per order.

Which orders may be reviewed: the buyer must have received it, so its escrow stage is
`delivered`, `confirmed` or `settled`. An order settled after a partial refund (the
buyer kept it, part of the money came back) may be reviewed; a fully `refunded` order
may not (no purchase stands), nor one whose refund or dispute is still open
(`refund_requested`, `refunding`, `disputed`: review once it ends). An order cancelled,
or never paid, has nothing to review.

Hiding is a display rule, not a deletion: the ledger is append-only, so the hidden text
stays in its entry; pages and the API show "hidden" instead, never the rating changed.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from livecommerce.commerce.canonical import DOMAIN_REVIEW, CanonicalError, signing_bytes
from livecommerce.commerce.escrow import EscrowBook, Stage
from livecommerce.commerce.events import Entry, Event, flat_fields
from livecommerce.commerce.identity import IdentityRegistry, verify_signature
from livecommerce.commerce.results import Reason, Rejected, all_integers, all_text

REVIEWS_MAX: Final = 1_000_000
REVIEW_TEXT_CHARS_MAX: Final = 2_000
REPLY_TEXT_CHARS_MAX: Final = 1_000
HIDE_REASON_CHARS_MAX: Final = 200
REVIEW_FRESHNESS_MS: Final = 300_000
STARS_MIN: Final = 1
STARS_MAX: Final = 5
# Where the buyer has the goods and the purchase stands.
REVIEWABLE: Final = frozenset({Stage.DELIVERED, Stage.CONFIRMED, Stage.SETTLED})


class ReviewAction(StrEnum):
    REVIEW = "review"
    REPLY = "reply"
    HIDE = "hide"


class HideTarget(StrEnum):
    REVIEW = "review"
    REPLY = "reply"


ENTRY_ACTION: Final = {
    ReviewAction.REVIEW: "reviewed",
    ReviewAction.REPLY: "replied",
    ReviewAction.HIDE: "hidden",
}


@dataclass(frozen=True, slots=True)
class ReviewStep:
    """A signed review action. review: `stars` 1..5, `text` 0..2000 characters; reply:
    `text` 1..1000; hide: `target` review | reply, `text` the reason (1..200)."""

    action: str
    buyer_id: str
    order_id: str
    signer_id: str
    time_ms: int
    stars: int = 0
    target: str = ""
    text: str = ""
    signature: str = ""

    def signed_fields(self) -> dict[str, object]:
        return {
            "action": self.action,
            "buyer_id": self.buyer_id,
            "order_id": self.order_id,
            "signer_id": self.signer_id,
            "stars": self.stars,
            "target": self.target,
            "text": self.text,
            "time_ms": self.time_ms,
        }

    def signing_bytes(self) -> bytes:
        return signing_bytes(DOMAIN_REVIEW, self.signed_fields())


@dataclass(frozen=True, slots=True)
class ReviewTaken(Event):
    """`review/v1`: the signed action, the product reviewed and the order's stage then."""

    step: ReviewStep
    product_id: str
    merchant_id: str
    stage: str
    time_ms: int

    def to_entry(self) -> Entry:
        fields = flat_fields(self.step)
        fields.update(
            action=ENTRY_ACTION[ReviewAction(self.step.action)],
            product_id=self.product_id,
            merchant_id=self.merchant_id,
            stage=self.stage,
            signed_time_ms=self.step.time_ms,
            time_ms=self.time_ms,
        )
        return "review/v1", fields


@dataclass(frozen=True, slots=True)
class ReviewRefused(Event):
    reference: str
    reason: Reason
    detail: str

    def to_entry(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class ReviewRepeated(Event):
    """The same signed action again: nothing changed."""

    reference: str
    action: str

    def to_entry(self) -> None:
        return None


@dataclass
class Review:
    """One order's review, its reply and what was hidden (as the entries say)."""

    buyer_id: str
    order_id: str
    product_id: str
    merchant_id: str
    stars: int
    text: str
    signed_time_ms: int
    signature: str
    stage: str
    time_ms: int
    reply_text: str = ""
    reply_signed_time_ms: int = 0
    reply_signature: str = ""
    reply_time_ms: int = 0
    hidden_review: str = ""  # the arbiter's reason, "" while shown
    hidden_reply: str = ""
    signed: dict[str, bytes] = field(default_factory=dict)  # action/target -> signed bytes

    @property
    def ref(self) -> str:
        return f"{self.buyer_id}/{self.order_id}"


@dataclass
class RatingSummary:
    count: int = 0
    stars_total: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * STARS_MAX)  # 1..5 stars

    @property
    def average_hundredths(self) -> int:
        """The average in hundredths of a star (integers only: 4.5 is 450)."""
        return (self.stars_total * 100 + self.count // 2) // self.count if self.count else 0


def _has_control(text: str) -> bool:
    """Control and format characters other than newline (Unicode Cc, Cf). Signed text
    cannot be cleaned (that would change what was signed), so it is refused."""
    return any(c != "\n" and unicodedata.category(c) in ("Cc", "Cf") for c in text)


def _slot(step: ReviewStep) -> str:
    return step.action if step.action != ReviewAction.HIDE else f"hide:{step.target}"


class ReviewBook:
    def __init__(
        self,
        identities: IdentityRegistry,
        escrow: EscrowBook,
        reviews_max: int = REVIEWS_MAX,
        freshness_ms: int = REVIEW_FRESHNESS_MS,
    ) -> None:
        assert reviews_max > 0
        assert freshness_ms > 0
        self.identities = identities
        self.escrow = escrow
        self.reviews_max = reviews_max
        self.freshness_ms = freshness_ms
        self._reviews: dict[tuple[str, str], Review] = {}
        self._of_product: dict[str, list[tuple[str, str]]] = {}
        self._summaries: dict[str, RatingSummary] = {}

    # Reading

    def get(self, buyer_id: str, order_id: str) -> Review | None:
        return self._reviews.get((buyer_id, order_id))

    def __len__(self) -> int:
        return len(self._reviews)

    def of_product(self, product_id: str, limit: int, newest_first: bool = True) -> list[Review]:
        keys = self._of_product.get(product_id, [])
        ordered = reversed(keys) if newest_first else iter(keys)
        found: list[Review] = []
        for key in ordered:
            if len(found) >= limit:
                break
            found.append(self._reviews[key])
        return found

    def summary(self, product_id: str) -> RatingSummary:
        known = self._summaries.get(product_id)
        if known is None:
            return RatingSummary()
        return dataclasses.replace(known, histogram=list(known.histogram))

    # Taking an action

    def take(self, step: ReviewStep, now_ms: int, verify: bool = True) -> list[Event]:
        """Check a signed action and take it, or refuse it (nothing changes). `verify`
        False skips the signature and freshness checks (replaying the server's own
        ledger, whose actions were checked when taken)."""
        ref = f"{step.buyer_id}/{step.order_id}" if all_text(step.buyer_id, step.order_id) else ""
        result = self._take(step, now_ms, verify)
        if isinstance(result, Rejected):
            return [ReviewRefused(ref, result.reason, result.detail)]
        return [result]

    def _take(
        self, step: ReviewStep, now_ms: int, verify: bool
    ) -> ReviewTaken | ReviewRepeated | Rejected:
        refused = self._check_shape(step)
        if refused is not None:
            return refused
        try:
            signed = step.signing_bytes()
        except CanonicalError as error:
            return Rejected(Reason.BAD_FIELD, str(error))
        if self.identities.get(step.signer_id) is None:
            return Rejected(Reason.UNKNOWN_IDENTITY, "the signer's key is not registered")
        life = self.escrow.get(step.buyer_id, step.order_id)
        if life is None:
            return Rejected(Reason.UNKNOWN_ORDER, "no paid order with this buyer and id")
        action = ReviewAction(step.action)
        review = self._reviews.get((step.buyer_id, step.order_id))
        who = self._signer_may(action, step.signer_id, life.buyer_id, life.merchant_id)
        if who is not None:
            return who
        if verify:
            bad = verify_signature(step.signer_id, signed, step.signature)
            if bad is not None:
                return bad
        if review is not None:
            seen = review.signed.get(_slot(step))
            if seen == signed:
                return ReviewRepeated(review.ref, step.action)
            if seen is not None:
                reason = {
                    ReviewAction.REVIEW: (Reason.ALREADY_REVIEWED, "this order has its review"),
                    ReviewAction.REPLY: (Reason.ALREADY_REPLIED, "this review has its reply"),
                    ReviewAction.HIDE: (Reason.ALREADY_HIDDEN, f"this {step.target} is hidden"),
                }[action]
                return Rejected(*reason)
        if verify and abs(now_ms - step.time_ms) > self.freshness_ms:
            return Rejected(Reason.STALE, "the action's time is too far from now")
        if action is ReviewAction.REVIEW:
            if life.stage not in REVIEWABLE:
                return Rejected(
                    Reason.WRONG_STAGE,
                    f"an order is reviewed once delivered, confirmed or settled; this one is "
                    f"{life.stage}",
                )
            if len(self._reviews) >= self.reviews_max:
                return Rejected(Reason.CAPACITY, "the review table is full")
            review = Review(
                step.buyer_id, step.order_id, life.product_id, life.merchant_id, step.stars,
                step.text, step.time_ms, step.signature, str(life.stage), now_ms,
            )  # fmt: skip
            self._add(review)
        elif review is None:
            return Rejected(Reason.UNKNOWN_REVIEW, "this order has no review yet")
        elif action is ReviewAction.REPLY:
            review.reply_text = step.text
            review.reply_signed_time_ms = step.time_ms
            review.reply_signature = step.signature
            review.reply_time_ms = now_ms
        else:
            if step.target == HideTarget.REPLY and not review.reply_signature:
                return Rejected(Reason.UNKNOWN_REVIEW, "this review has no reply to hide")
            if step.target == HideTarget.REVIEW:
                review.hidden_review = step.text
            else:
                review.hidden_reply = step.text
        review.signed[_slot(step)] = signed
        stage = review.stage if action is not ReviewAction.REVIEW else str(life.stage)
        return ReviewTaken(step, review.product_id, review.merchant_id, stage, now_ms)

    def _check_shape(self, step: ReviewStep) -> Rejected | None:
        text_fields = (step.action, step.buyer_id, step.order_id, step.signer_id, step.target)
        if not all_text(*text_fields, step.text, step.signature):
            return Rejected(Reason.BAD_FIELD, "review fields are text")
        if not all_integers(step.time_ms, step.stars):
            return Rejected(Reason.BAD_FIELD, "time_ms and stars are integers")
        if step.action not in ReviewAction.__members__.values():
            return Rejected(Reason.BAD_FIELD, f"action is one of {', '.join(ReviewAction)}")
        if _has_control(step.text):
            return Rejected(Reason.BAD_FIELD, "text has control characters (only newlines)")
        action = ReviewAction(step.action)
        if action is ReviewAction.REVIEW:
            if not STARS_MIN <= step.stars <= STARS_MAX:
                return Rejected(Reason.BAD_FIELD, f"stars are {STARS_MIN}..{STARS_MAX}")
            if len(step.text) > REVIEW_TEXT_CHARS_MAX:
                return Rejected(Reason.BAD_FIELD, f"a review is 0..{REVIEW_TEXT_CHARS_MAX} chars")
        else:
            if step.stars != 0:
                return Rejected(Reason.BAD_FIELD, f"stars are 0 for a {action}")
            limit = REPLY_TEXT_CHARS_MAX if action is ReviewAction.REPLY else HIDE_REASON_CHARS_MAX
            if not len(step.text.strip()) >= 1 or len(step.text) > limit:
                return Rejected(Reason.BAD_FIELD, f"a {action}'s text is 1..{limit} characters")
        if action is ReviewAction.HIDE:
            if step.target not in HideTarget.__members__.values():
                return Rejected(Reason.BAD_FIELD, "target is review or reply")
        elif step.target != "":
            return Rejected(Reason.BAD_FIELD, "target is only for hide")
        return None

    def _signer_may(
        self, action: ReviewAction, signer_id: str, buyer_id: str, merchant_id: str
    ) -> Rejected | None:
        if action is ReviewAction.REVIEW and signer_id != buyer_id:
            return Rejected(Reason.NOT_YOUR_ORDER, "only the order's buyer may review it")
        if action is ReviewAction.REPLY and signer_id != merchant_id:
            return Rejected(Reason.NOT_MERCHANT, "only the order's merchant may reply")
        if action is ReviewAction.HIDE and signer_id not in self.escrow.rules.arbiter_ids:
            return Rejected(Reason.NOT_ARBITER, "only an arbiter may hide a text")
        return None

    def _add(self, review: Review) -> None:
        key = (review.buyer_id, review.order_id)
        assert key not in self._reviews, key
        assert STARS_MIN <= review.stars <= STARS_MAX
        self._reviews[key] = review
        self._of_product.setdefault(review.product_id, []).append(key)
        summary = self._summaries.setdefault(review.product_id, RatingSummary())
        summary.count += 1
        summary.stars_total += review.stars
        summary.histogram[review.stars - 1] += 1

    # Replay (a replica without the escrow: the entry is trusted)

    def restore(self, fields: dict[str, object]) -> None:
        """A `review/v1` entry from the writer's feed (a web process's replica has no
        escrow to check it against; the writer checked it, an audit checks it again)."""
        step = step_of(fields)
        key = (step.buyer_id, step.order_id)
        action = ReviewAction(step.action)
        if action is ReviewAction.REVIEW:
            time_ms = fields["time_ms"]
            assert isinstance(time_ms, int)
            self._add(
                Review(
                    step.buyer_id,
                    step.order_id,
                    str(fields["product_id"]),
                    str(fields["merchant_id"]),
                    step.stars,
                    step.text,
                    step.time_ms,
                    step.signature,
                    str(fields["stage"]),
                    time_ms,
                )
            )
        review = self._reviews[key]
        if action is ReviewAction.REPLY:
            time_ms = fields["time_ms"]
            assert isinstance(time_ms, int)
            review.reply_text = step.text
            review.reply_signed_time_ms = step.time_ms
            review.reply_signature = step.signature
            review.reply_time_ms = time_ms
        elif action is ReviewAction.HIDE:
            if step.target == HideTarget.REVIEW:
                review.hidden_review = step.text
            else:
                review.hidden_reply = step.text
        review.signed[_slot(step)] = step.signing_bytes()


_STEP_FIELDS: Final = [name for name in ReviewStep.__dataclass_fields__ if name != "time_ms"]


_ACTION_OF_ENTRY: Final = {entry: str(action) for action, entry in ENTRY_ACTION.items()}


def step_of(fields: dict[str, object]) -> ReviewStep:
    """The signed action a `review/v1` entry holds."""
    values = {name: fields[name] for name in _STEP_FIELDS}
    values["action"] = _ACTION_OF_ENTRY[str(fields["action"])]
    return ReviewStep(time_ms=fields["signed_time_ms"], **values)  # type: ignore[arg-type]
