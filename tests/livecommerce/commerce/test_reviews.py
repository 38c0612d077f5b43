"""Verified-purchase reviews: who may review, reply and hide, when, how often; every
refusal changes nothing; replay takes every action again and gives the same reviews."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from livecommerce.commerce.core import CommerceCore
from livecommerce.commerce.events import Event
from livecommerce.commerce.replay import ReplayError, apply_entry, replay
from livecommerce.commerce.results import Reason
from livecommerce.commerce.reviews import (
    REVIEW_TEXT_CHARS_MAX,
    ReviewRefused,
    ReviewRepeated,
    ReviewStep,
    ReviewTaken,
)
from tests.livecommerce.commerce.helpers import Signer
from tests.livecommerce.commerce.test_escrow import World


class Reviews(World):
    def act(
        self, signer: Signer, action: str, buyer: Signer, order_id: str, **fields: Any
    ) -> list[Event]:
        unsigned = ReviewStep(
            action, buyer.identity_id, order_id, signer.identity_id,
            fields.pop("time_ms", self.now_ms + 1), **fields,
        )  # fmt: skip
        signature = fields.get("signature") or signer.sign(unsigned.signing_bytes())
        return self.run(dataclasses.replace(unsigned, signature=signature))

    def review(
        self, buyer: Signer, order_id: str, stars: int = 5, text: str = "Great"
    ) -> list[Event]:
        return self.act(buyer, "review", buyer, order_id, stars=stars, text=text)

    def delivered(self, buyer: Signer, order_id: str) -> None:
        self.paid(buyer, order_id)
        self.ship(buyer, order_id)
        self.capture(buyer, order_id)
        self.step(self.merchant, "deliver", buyer, order_id)

    def snapshot(self) -> tuple[Any, ...]:
        book = self.core.reviews
        return (
            len(book),
            [vars(r).copy() for r in book.of_product("mug", 100)],
            book.summary("mug"),
        )


def reason(events: list[Event]) -> Reason:
    (event,) = [e for e in events if isinstance(e, ReviewRefused)]
    return event.reason


def test_a_buyer_reviews_a_delivered_order_once_the_merchant_replies_an_arbiter_hides() -> None:
    world = Reviews()
    ann = world.buyers[0]
    world.delivered(ann, "o1")
    (taken,) = world.review(ann, "o1", stars=4, text="Nice mug\nheavy")
    assert isinstance(taken, ReviewTaken)
    entry_type, fields = taken.to_entry()
    assert entry_type == "review/v1"
    assert (fields["action"], fields["stars"], fields["product_id"], fields["stage"]) == (
        "reviewed", 4, "mug", "delivered",
    )  # fmt: skip
    assert fields["merchant_id"] == world.merchant.identity_id
    summary = world.core.reviews.summary("mug")
    assert (summary.count, summary.average_hundredths, summary.histogram) == (
        1,
        400,
        [0, 0, 0, 1, 0],
    )
    (replied,) = world.act(world.merchant, "reply", ann, "o1", text="Thank you!")
    assert replied.to_entry()[1]["action"] == "replied"
    (hidden,) = world.act(world.arbiter, "hide", ann, "o1", target="review", text="spam link")
    assert hidden.to_entry()[1]["action"] == "hidden"
    review = world.core.reviews.get(ann.identity_id, "o1")
    assert review is not None
    assert (review.stars, review.reply_text, review.hidden_review, review.hidden_reply) == (
        4, "Thank you!", "spam link", "",
    )  # fmt: skip
    assert world.core.reviews.summary("mug").count == 1  # hiding never changes the rating
    world.act(world.arbiter, "hide", ann, "o1", target="reply", text="rude")
    assert world.core.reviews.get(ann.identity_id, "o1").hidden_reply == "rude"  # type: ignore[union-attr]
    world.check_replay()
    again = replay(world.entries())
    assert [vars(r) for r in again.reviews.of_product("mug", 10)] == [
        vars(r) for r in world.core.reviews.of_product("mug", 10)
    ]


def test_only_received_orders_are_reviewed_and_a_partly_refunded_one_once_settled() -> None:
    world = Reviews()
    ann, bob, cat = world.buyers
    world.order(ann, "held")
    assert reason(world.review(ann, "held")) is Reason.UNKNOWN_ORDER  # not paid
    world.paid(ann, "paid")
    assert reason(world.review(ann, "paid")) is Reason.WRONG_STAGE
    world.ship(ann, "paid")
    assert reason(world.review(ann, "paid")) is Reason.WRONG_STAGE  # shipped, not received
    world.capture(ann, "paid")
    world.step(ann, "confirm", ann, "paid")  # the buyer says it came: settled
    assert isinstance(world.review(ann, "paid")[-1], ReviewTaken)
    # A refund request pauses it; a part refund, then settlement: reviewable.
    world.delivered(bob, "part")
    world.step(bob, "refund_request", bob, "part", amount_cents=100, reason="damaged")
    assert reason(world.review(bob, "part")) is Reason.WRONG_STAGE
    world.step(world.merchant, "refund_answer", bob, "part", decision="accept", amount_cents=100)
    refund = world.core.escrow.get(bob.identity_id, "part")
    assert refund is not None
    assert refund.refund is not None
    world.result("refund", refund.refund.refund_id)
    world.step(bob, "confirm", bob, "part")
    assert isinstance(world.review(bob, "part")[-1], ReviewTaken)
    # A full refund: no purchase stands.
    world.delivered(cat, "full")
    world.step(cat, "refund_request", cat, "full", amount_cents=999, reason="damaged")
    world.step(world.merchant, "refund_answer", cat, "full", decision="accept", amount_cents=999)
    full = world.core.escrow.get(cat.identity_id, "full")
    assert full is not None
    assert full.refund is not None
    world.result("refund", full.refund.refund_id)
    assert str(world.stage(cat, "full")) == "refunded"
    assert reason(world.review(cat, "full")) is Reason.WRONG_STAGE
    world.check_replay()


@pytest.mark.parametrize(
    ("who", "action", "fields", "expected"),
    [
        ("bob", "review", {"stars": 5, "text": "x"}, Reason.NOT_YOUR_ORDER),
        ("merchant", "review", {"stars": 5}, Reason.NOT_YOUR_ORDER),
        ("ann", "review", {"stars": 0}, Reason.BAD_FIELD),
        ("ann", "review", {"stars": 6}, Reason.BAD_FIELD),
        ("ann", "review", {"stars": True}, Reason.BAD_FIELD),
        (
            "ann",
            "review",
            {"stars": 5, "text": "x" * (REVIEW_TEXT_CHARS_MAX + 1)},
            Reason.BAD_FIELD,
        ),
        ("ann", "review", {"stars": 5, "text": "bell\x07"}, Reason.BAD_FIELD),
        ("ann", "review", {"stars": 5, "text": "rtl\u202e"}, Reason.BAD_FIELD),
        ("ann", "review", {"stars": 5, "target": "review"}, Reason.BAD_FIELD),
        ("ann", "review", {"stars": 5, "time_ms": 0}, Reason.STALE),
        ("ann", "review", {"stars": 5, "signature": "A" * 86}, Reason.BAD_SIGNATURE),
        ("ann", "rate", {"stars": 5}, Reason.BAD_FIELD),
        ("ann", "reply", {"text": "me too"}, Reason.NOT_MERCHANT),
        ("merchant", "reply", {"text": "thanks"}, Reason.UNKNOWN_REVIEW),
        ("merchant", "reply", {"text": ""}, Reason.BAD_FIELD),
        ("merchant", "reply", {"text": "x", "stars": 1}, Reason.BAD_FIELD),
        ("merchant", "hide", {"target": "review", "text": "mine"}, Reason.NOT_ARBITER),
        ("arbiter", "hide", {"target": "review", "text": "spam"}, Reason.UNKNOWN_REVIEW),
        ("arbiter", "hide", {"target": "everything", "text": "spam"}, Reason.BAD_FIELD),
        ("arbiter", "hide", {"target": "review", "text": ""}, Reason.BAD_FIELD),
        ("stranger", "review", {"stars": 5}, Reason.UNKNOWN_IDENTITY),
    ],
)
def test_every_refusal_changes_nothing(
    who: str, action: str, fields: dict[str, Any], expected: Reason
) -> None:
    world = Reviews()
    ann, bob = world.buyers[0], world.buyers[1]
    world.delivered(ann, "o1")
    signers = {"ann": ann, "bob": bob, "merchant": world.merchant, "arbiter": world.arbiter,
               "stranger": Signer("stranger")}  # fmt: skip
    before = world.snapshot()
    assert reason(world.act(signers[who], action, ann, "o1", **fields)) is expected
    assert world.snapshot() == before


def test_once_each_the_same_bytes_again_is_a_repeat_other_bytes_are_refused() -> None:
    world = Reviews()
    ann = world.buyers[0]
    world.delivered(ann, "o1")
    first = ReviewStep("review", ann.identity_id, "o1", ann.identity_id, world.now_ms, 5, "", "ok")
    first = dataclasses.replace(first, signature=ann.sign(first.signing_bytes()))
    assert isinstance(world.run(first)[-1], ReviewTaken)
    assert isinstance(world.run(first)[-1], ReviewRepeated)  # a retry: the first stands
    assert (
        reason(world.review(ann, "o1", stars=1, text="changed my mind")) is Reason.ALREADY_REVIEWED
    )
    world.act(world.merchant, "reply", ann, "o1", text="thanks")
    assert (
        reason(world.act(world.merchant, "reply", ann, "o1", text="again"))
        is Reason.ALREADY_REPLIED
    )
    world.act(world.arbiter, "hide", ann, "o1", target="review", text="a")
    assert reason(world.act(world.arbiter, "hide", ann, "o1", target="review", text="b")) is (
        Reason.ALREADY_HIDDEN
    )
    assert world.core.reviews.summary("mug").count == 1


def test_the_review_table_has_a_limit() -> None:
    world = Reviews()
    ann, bob = world.buyers[0], world.buyers[1]
    world.core.reviews.reviews_max = 1
    world.delivered(ann, "o1")
    world.delivered(bob, "o2")
    world.review(ann, "o1")
    assert reason(world.review(bob, "o2")) is Reason.CAPACITY


def test_replay_refuses_a_review_the_rules_refuse_and_a_changed_one() -> None:
    world = Reviews()
    ann = world.buyers[0]
    world.delivered(ann, "o1")
    world.review(ann, "o1", stars=5)
    entries = world.entries()
    position = next(i for i, (kind, _) in enumerate(entries) if kind == "review/v1")
    kind, fields = entries[position]
    forged = [*entries[:position], (kind, {**fields, "stars": 1}), *entries[position + 1 :]]
    with pytest.raises(ReplayError, match="signature"):
        replay(forged)
    early = [e for i, e in enumerate(entries) if i != position]
    early.insert(position - 3, entries[position])  # before the delivery
    with pytest.raises(ReplayError):
        replay(early)


def test_a_replica_restores_reviews_as_written() -> None:
    world = Reviews()
    ann = world.buyers[0]
    world.delivered(ann, "o1")
    world.review(ann, "o1", stars=3, text="fine")
    world.act(world.merchant, "reply", ann, "o1", text="ok")
    world.act(world.arbiter, "hide", ann, "o1", target="reply", text="rude")
    replica = CommerceCore(external_stock=True)
    feed = {"identity/v1", "product/v1", "review/v1"}
    for entry in world.entries():
        if entry[0] in feed:
            apply_entry(replica, entry)
    assert [vars(r) for r in replica.reviews.of_product("mug", 10)] == [
        vars(r) for r in world.core.reviews.of_product("mug", 10)
    ]
    assert replica.reviews.summary("mug") == world.core.reviews.summary("mug")
