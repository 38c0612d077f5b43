"""What the pages read of a product's reviews: each review with the ledger index of its
entries and of the order entries that show the reviewer bought and received it.

`ReviewIndexes` remembers the index of every `review/v1` entry (the review, its reply,
each hide), fed where entries become durable (the embedded ledger part, the ledger writer)
and at replay, like `Timelines` (views.py), whose order entries give the proof of
purchase: the order's `paid` entry and the entry that took it to delivered, confirmed or
settled. A page fetches each one's proof (`/ledger/proof/<index>`) and checks it as it
checks receipts (static/js/reviews.js).
"""

from __future__ import annotations

from typing import Any, Final

from livecommerce.commerce.core import CommerceCore
from livecommerce.commerce.events import Event
from livecommerce.commerce.reviews import Review, ReviewTaken
from livecommerce.pipeline.views import Timelines

PRODUCT_REVIEWS_MAX: Final = 100
RECEIVED_ACTIONS: Final = frozenset({"delivered", "confirmed", "settled"})

OrderKey = tuple[str, str]


class ReviewIndexes:
    """(buyer_id, order_id) -> {"reviewed": i, "replied": i, "hidden:review": i, ...}.
    Bounded by the core's review table (one per review, a few indexes each)."""

    def __init__(self) -> None:
        self._items: dict[OrderKey, dict[str, int]] = {}

    def add_event(self, event: Event, index: int) -> None:
        entry = event.to_entry()
        if isinstance(event, ReviewTaken) and entry is not None:
            self.add(entry[0], entry[1], index)

    def add(self, entry_type: str, fields: dict[str, Any], index: int) -> None:
        if entry_type != "review/v1":
            return
        action = str(fields["action"])
        if action == "hidden":
            action = f"hidden:{fields['target']}"
        key = (str(fields["buyer_id"]), str(fields["order_id"]))
        self._items.setdefault(key, {})[action] = index

    def of(self, key: OrderKey) -> dict[str, int]:
        return dict(self._items.get(key, {}))


def rating_view(core: CommerceCore, product_id: str) -> dict[str, Any]:
    summary = core.reviews.summary(product_id)
    return {
        "product_id": product_id,
        "count": summary.count,
        "average_hundredths": summary.average_hundredths,
        "histogram": summary.histogram,
    }


def review_view(
    review: Review, indexes: dict[str, int], timeline: list[dict[str, Any]]
) -> dict[str, Any]:
    """A review as the pages show and check it. Hidden text is not served (it stays in
    its ledger entry: hiding is a display rule)."""
    paid = next((item for item in timeline if item["action"] == "paid"), None)
    received = next((item for item in timeline if item["action"] in RECEIVED_ACTIONS), None)
    view: dict[str, Any] = {
        "buyer_id": review.buyer_id,
        "order_id": review.order_id,
        "product_id": review.product_id,
        "merchant_id": review.merchant_id,
        "stars": review.stars,
        "text": "" if review.hidden_review else review.text,
        "hidden": bool(review.hidden_review),
        "hidden_reason": review.hidden_review,
        "stage": review.stage,
        "time_ms": review.time_ms,
        "signed_time_ms": review.signed_time_ms,
        "signature": review.signature,
        "ledger_index": indexes.get("reviewed"),
        "paid_index": paid["ledger_index"] if paid else None,
        "received_index": received["ledger_index"] if received else None,
        "reply": None,
        "hidden_index": indexes.get("hidden:review"),
    }
    if review.reply_signature:
        view["reply"] = {
            "text": "" if review.hidden_reply else review.reply_text,
            "hidden": bool(review.hidden_reply),
            "hidden_reason": review.hidden_reply,
            "time_ms": review.reply_time_ms,
            "ledger_index": indexes.get("replied"),
            "hidden_index": indexes.get("hidden:reply"),
        }
    return view


def product_reviews_view(
    core: CommerceCore,
    indexes: ReviewIndexes,
    timelines: Timelines,
    product_id: str,
    limit: int,
) -> dict[str, Any]:
    """A product's rating and its newest reviews (at most `limit`)."""
    limit = max(1, min(limit, PRODUCT_REVIEWS_MAX))
    reviews = [
        review_view(review, indexes.of(key), timelines.of(key))
        for review in core.reviews.of_product(product_id, limit)
        for key in [(review.buyer_id, review.order_id)]
    ]
    return {**rating_view(core, product_id), "reviews": reviews}
