"""What to show a viewer next: "more from this stream" and "you may also like".

Sans-I/O, fed by the core (every paid order, live or replayed from the ledger) and by the
adapter (views and clicks, which are not on the ledger and start again from nothing when
the process does). Two signals:

- Popularity with time decay, per room and over the whole platform: each view adds
  `VIEW_WEIGHT`, each click `CLICK_WEIGHT`, each paid order `ORDER_WEIGHT`, and a score
  halves every `half_life_ms` (kept as (score, as-of time) and decayed when read or
  added to, so nothing runs on a timer).
- Item-to-item co-purchase: two products bought by the same buyer count once for that
  pair; similarity is the count over the geometric mean of the products' buyer counts
  (cosine over binary buyer vectors). A buyer's list scores each candidate by its
  similarity to what the buyer recently bought (weight 1) and viewed or clicked
  (weight `SEEN_SEED_WEIGHT`). With no seed that says anything (a new viewer: cold
  start) the list falls back to popularity, and popularity fills what is left.

Never recommended: a product that is sold out (no inventory and no sale with units
left), one the buyer has bought, one that is not the room's merchant's in a room linked
to a merchant (a linked room sells its own merchant's products only), and the product
the list is shown beside. Every table is bounded (`*_MAX`); the oldest entries go first.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

HALF_LIFE_MS: Final = 6 * 3600 * 1000
VIEW_WEIGHT: Final = 1.0
CLICK_WEIGHT: Final = 3.0
ORDER_WEIGHT: Final = 10.0
SEEN_SEED_WEIGHT: Final = 0.3
RECENT_PER_BUYER: Final = 20  # seeds: a buyer's most recent distinct products
BOUGHT_PER_BUYER_MAX: Final = 200
NEIGHBOURS_MAX: Final = 200  # co-purchase partners kept per product
BUYERS_MAX: Final = 200_000
PRODUCTS_MAX: Final = 100_000
ROOMS_MAX: Final = 10_000
LIST_LENGTH_MAX: Final = 50


class Signal(StrEnum):
    VIEW = "view"
    CLICK = "click"
    ORDER = "order"


WEIGHTS: Final = {Signal.VIEW: VIEW_WEIGHT, Signal.CLICK: CLICK_WEIGHT, Signal.ORDER: ORDER_WEIGHT}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A product that could be shown, as the catalog knows it now."""

    product_id: str
    merchant_id: str
    available: bool  # inventory left, or a sale with units left


@dataclass(frozen=True, slots=True)
class Pick:
    product_id: str
    score: float
    why: str  # "co_purchase" or "popular"


class _Decayed:
    """Scores by key that halve every `half_life_ms`; at most `limit` keys (the least
    recently added to goes first)."""

    def __init__(self, half_life_ms: int, limit: int) -> None:
        self._rate = math.log(2) / half_life_ms
        self._limit = limit
        self._scores: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def add(self, key: str, weight: float, now_ms: int) -> None:
        self._scores[key] = (self.get(key, now_ms) + weight, now_ms)
        self._scores.move_to_end(key)
        if len(self._scores) > self._limit:
            self._scores.popitem(last=False)

    def get(self, key: str, now_ms: int) -> float:
        known = self._scores.get(key)
        if known is None:
            return 0.0
        score, as_of_ms = known
        return score * math.exp(-self._rate * max(0, now_ms - as_of_ms))


class _Buyer:
    __slots__ = ("bought", "recent")

    def __init__(self) -> None:
        self.bought: OrderedDict[str, None] = OrderedDict()
        # product id -> seed weight, most recent last
        self.recent: OrderedDict[str, float] = OrderedDict()

    def saw(self, product_id: str, weight: float) -> None:
        self.recent[product_id] = max(weight, self.recent.pop(product_id, 0.0))
        while len(self.recent) > RECENT_PER_BUYER:
            self.recent.popitem(last=False)


class Recommender:
    def __init__(self, half_life_ms: int = HALF_LIFE_MS) -> None:
        self.half_life_ms = half_life_ms
        self._platform = _Decayed(half_life_ms, PRODUCTS_MAX)
        self._rooms: OrderedDict[str, _Decayed] = OrderedDict()
        self._buyers: OrderedDict[str, _Buyer] = OrderedDict()
        self._buyer_counts: dict[str, int] = {}  # product -> distinct buyers
        self._pairs: dict[str, dict[str, int]] = {}  # product -> partner -> buyers of both

    # What happened

    def seen(
        self, signal: Signal, room_id: str, product_id: str, buyer_id: str, now_ms: int
    ) -> None:
        """A view, click or paid order of `product_id` in `room_id` (`buyer_id` may be ""
        for a viewer without an identity: popularity only)."""
        weight = WEIGHTS[signal]
        self._platform.add(product_id, weight, now_ms)
        self._room(room_id).add(product_id, weight, now_ms)
        if not buyer_id:
            return
        buyer = self._buyer(buyer_id)
        if signal is Signal.ORDER:
            if product_id not in buyer.bought:
                self._count_pairs(product_id, buyer.bought)
                buyer.bought[product_id] = None
                while len(buyer.bought) > BOUGHT_PER_BUYER_MAX:
                    buyer.bought.popitem(last=False)
            buyer.saw(product_id, 1.0)
        else:
            buyer.saw(product_id, SEEN_SEED_WEIGHT)

    def _count_pairs(self, product_id: str, bought: Iterable[str]) -> None:
        self._buyer_counts[product_id] = self._buyer_counts.get(product_id, 0) + 1
        partners = self._pairs.setdefault(product_id, {})
        for other in bought:
            partners[other] = partners.get(other, 0) + 1
            theirs = self._pairs.setdefault(other, {})
            theirs[product_id] = theirs.get(product_id, 0) + 1
            _prune(theirs)
        _prune(partners)
        if len(self._pairs) > PRODUCTS_MAX:  # the first one counted goes
            oldest = next(iter(self._pairs))
            del self._pairs[oldest]
            self._buyer_counts.pop(oldest, None)

    def _room(self, room_id: str) -> _Decayed:
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = _Decayed(self.half_life_ms, PRODUCTS_MAX)
            if len(self._rooms) > ROOMS_MAX:
                self._rooms.popitem(last=False)
        self._rooms.move_to_end(room_id)
        return room

    def _buyer(self, buyer_id: str) -> _Buyer:
        buyer = self._buyers.get(buyer_id)
        if buyer is None:
            buyer = self._buyers[buyer_id] = _Buyer()
            if len(self._buyers) > BUYERS_MAX:
                self._buyers.popitem(last=False)
        self._buyers.move_to_end(buyer_id)
        return buyer

    # What to show

    def bought_by(self, buyer_id: str) -> set[str]:
        buyer = self._buyers.get(buyer_id)
        return set(buyer.bought) if buyer is not None else set()

    def similarity(self, first: str, second: str) -> float:
        both = self._pairs.get(first, {}).get(second, 0)
        if not both:
            return 0.0
        return both / math.sqrt(self._buyer_counts[first] * self._buyer_counts[second])

    def popularity(self, product_id: str, room_id: str, now_ms: int) -> float:
        """In the room first; the platform's breaks ties and ranks what the room never saw."""
        room = self._rooms.get(room_id)
        in_room = room.get(product_id, now_ms) if room is not None else 0.0
        return in_room + 1e-6 * self._platform.get(product_id, now_ms)

    def more_from_stream(
        self,
        room_id: str,
        room_merchant_id: str | None,
        candidates: Sequence[Candidate],
        buyer_id: str,
        now_ms: int,
        count: int = 10,
        beside: str = "",
    ) -> list[Pick]:
        """The room's products by popularity in the room, with the rules above."""
        count = max(0, min(count, LIST_LENGTH_MAX))
        allowed = self._allowed(candidates, room_merchant_id, buyer_id, beside)
        scored = [(self.popularity(c.product_id, room_id, now_ms), c.product_id) for c in allowed]
        return [Pick(p, s, "popular") for s, p in _top(scored, count)]

    def you_may_also_like(
        self,
        room_id: str,
        room_merchant_id: str | None,
        candidates: Sequence[Candidate],
        buyer_id: str,
        now_ms: int,
        count: int = 10,
        beside: str = "",
    ) -> list[Pick]:
        """Co-purchase neighbours of what the buyer recently bought and saw; popularity
        where they run out (all of it for a buyer with no history)."""
        count = max(0, min(count, LIST_LENGTH_MAX))
        allowed = self._allowed(candidates, room_merchant_id, buyer_id, beside)
        buyer = self._buyers.get(buyer_id) if buyer_id else None
        seeds = dict(buyer.recent) if buyer is not None else {}
        if beside:
            seeds[beside] = max(1.0, seeds.get(beside, 0.0))
        related: list[tuple[float, str]] = []
        rest: list[tuple[float, str]] = []
        for candidate in allowed:
            product_id = candidate.product_id
            score = sum(
                weight * self.similarity(seed, product_id) for seed, weight in seeds.items()
            )
            if score > 0:
                related.append((score, product_id))
            else:
                rest.append((self.popularity(product_id, room_id, now_ms), product_id))
        picks = [Pick(p, s, "co_purchase") for s, p in _top(related, count)]
        picks += [Pick(p, s, "popular") for s, p in _top(rest, count - len(picks))]
        return picks

    def _allowed(
        self,
        candidates: Sequence[Candidate],
        room_merchant_id: str | None,
        buyer_id: str,
        beside: str,
    ) -> list[Candidate]:
        buyer = self._buyers.get(buyer_id) if buyer_id else None
        bought = buyer.bought if buyer is not None else {}
        return [
            c
            for c in candidates
            if c.available
            and c.product_id not in bought
            and c.product_id != beside
            and (room_merchant_id is None or c.merchant_id == room_merchant_id)
        ]


def _prune(partners: dict[str, int]) -> None:
    if len(partners) > NEIGHBOURS_MAX:
        weakest = min(partners, key=partners.__getitem__)
        del partners[weakest]


def _top(scored: list[tuple[float, str]], count: int) -> list[tuple[float, str]]:
    """The `count` best, highest score first; ties by product id, so lists are stable."""
    if count <= 0:
        return []
    return heapq.nsmallest(count, scored, key=lambda pair: (-pair[0], pair[1]))
