"""Operating metrics: activity, transaction success and satisfaction, per room, per
merchant and for the platform, by hour and by day.

Sans-I/O counters in time buckets. Two feeds fill separate instances, and a read adds
them together (`merge`):

- the ledger (`take_entry`, `take_accepted`): new identities, orders accepted, paid,
  settled, refunded, refund requests, disputes, reviews and their stars. Whoever holds
  the ledger feeds these (the embedded server; scaled out, the ledger writer), live and
  at replay, so they survive a restart.
- the process's own traffic (`joined`, `left`, `commented`, `liked`, `attempted`): active
  viewers (distinct viewer ids), joins, watch time, comments, likes, and order attempts
  (every first answer, accepted or not: rejections are not on the ledger). Each web
  process counts its own; they start again from nothing when it does.

Buckets are UTC hours and days (`HOUR_MS`, `DAY_MS`); at most `BUCKETS_MAX` are kept
(the least recently touched go first) and at most `DISTINCT_MAX` viewer ids a bucket
(beyond it, `active_viewers` reads as at least that many).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any, Final

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS
BUCKETS_MAX: Final = 200_000
DISTINCT_MAX: Final = 50_000
SERIES_POINTS_MAX: Final = 24 * 31

LEDGER_COUNTS: Final = (
    "new_identities", "orders_accepted", "units_accepted", "orders_paid", "orders_settled",
    "orders_refunded", "refund_requests", "disputes", "reviews", "review_stars",
)  # fmt: skip
TRAFFIC_COUNTS: Final = (
    "active_viewers", "joins", "watch_ms", "comments", "likes", "orders_attempted",
)  # fmt: skip


class Scope(StrEnum):
    PLATFORM = "platform"
    ROOM = "room"
    MERCHANT = "merchant"


class Period(StrEnum):
    HOUR = "hour"
    DAY = "day"


PERIOD_MS: Final = {Period.HOUR: HOUR_MS, Period.DAY: DAY_MS}

BucketKey = tuple[Scope, str, Period, int]
# (room_id, merchant_id) of a sale, of a buyer's order, of a room: None when unknown.
SaleWhere = Callable[[str], tuple[str, str] | None]
OrderWhere = Callable[[str, str], tuple[str, str] | None]
RoomMerchant = Callable[[str], str | None]


class _Bucket:
    __slots__ = ("counts", "viewers")

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.viewers: set[str] = set()


class OperatingMetrics:
    def __init__(
        self,
        sale_where: SaleWhere | None = None,
        order_where: OrderWhere | None = None,
        room_merchant: RoomMerchant | None = None,
    ) -> None:
        self.sale_where = sale_where or (lambda sale_id: None)
        self.order_where = order_where or (lambda buyer_id, order_id: None)
        self.room_merchant = room_merchant or (lambda room_id: None)
        self._buckets: OrderedDict[BucketKey, _Bucket] = OrderedDict()
        # The platform's counts since this instance began (for Prometheus counters).
        self.totals: Counter[str] = Counter()

    # Counting

    def _scopes(self, room_id: str, merchant_id: str) -> list[tuple[Scope, str]]:
        scopes = [(Scope.PLATFORM, "")]
        if room_id:
            scopes.append((Scope.ROOM, room_id))
        if merchant_id:
            scopes.append((Scope.MERCHANT, merchant_id))
        return scopes

    def _buckets_of(self, room_id: str, merchant_id: str, time_ms: int) -> Iterable[_Bucket]:
        for scope, scope_id in self._scopes(room_id, merchant_id):
            for period, length_ms in PERIOD_MS.items():
                key = (scope, scope_id, period, time_ms - time_ms % length_ms)
                bucket = self._buckets.get(key)
                if bucket is None:
                    bucket = self._buckets[key] = _Bucket()
                    if len(self._buckets) > BUCKETS_MAX:
                        self._buckets.popitem(last=False)
                else:
                    self._buckets.move_to_end(key)
                yield bucket

    def add(self, name: str, amount: int, room_id: str, merchant_id: str, time_ms: int) -> None:
        self.totals[name] += amount
        for bucket in self._buckets_of(room_id, merchant_id, time_ms):
            bucket.counts[name] += amount

    # The ledger's feed

    def take_accepted(self, sale_id: str, quantity: int, time_ms: int) -> None:
        """An accepted order (the hot path: typed, without building its entry)."""
        room_id, merchant_id = self.sale_where(sale_id) or ("", "")
        self.totals["orders_accepted"] += 1
        self.totals["units_accepted"] += quantity
        for bucket in self._buckets_of(room_id, merchant_id, time_ms):
            bucket.counts["orders_accepted"] += 1
            bucket.counts["units_accepted"] += quantity

    def take_entry(self, entry_type: str, fields: dict[str, Any]) -> None:
        """One durable ledger entry (live, or read back at replay)."""
        time_ms = fields.get("time_ms")
        if not isinstance(time_ms, int):
            return
        action = fields.get("action")
        if entry_type == "identity/v1" and action == "registered":
            self.add("new_identities", 1, "", "", time_ms)
        elif entry_type == "order/v1":
            if action == "accepted":
                self.take_accepted(str(fields["sale_id"]), int(fields["quantity"]), time_ms)
                return
            where = self.order_where(str(fields.get("buyer_id")), str(fields.get("order_id")))
            room_id, merchant_id = where or ("", str(fields.get("merchant_id") or ""))
            name = {"paid": "orders_paid", "refund_requested": "refund_requests",
                    "disputed": "disputes"}.get(str(action))  # fmt: skip
            if name is not None:
                self.add(name, 1, room_id, merchant_id, time_ms)
            if action == "stage" and fields.get("stage") == "settled":
                self.add("orders_settled", 1, room_id, merchant_id, time_ms)
        elif entry_type == "payment/v1" and action == "refund_succeeded":
            if fields.get("stage") == "refunded":  # in full (a part leaves it where it was)
                where = self.order_where(str(fields.get("buyer_id")), str(fields.get("order_id")))
                room_id, merchant_id = where or ("", "")
                self.add("orders_refunded", 1, room_id, merchant_id, time_ms)
        elif entry_type == "review/v1" and action == "reviewed":
            where = self.order_where(str(fields.get("buyer_id")), str(fields.get("order_id")))
            room_id, merchant_id = where or ("", str(fields.get("merchant_id") or ""))
            stars = fields.get("stars")
            self.add("reviews", 1, room_id, merchant_id, time_ms)
            if isinstance(stars, int):
                self.add("review_stars", stars, room_id, merchant_id, time_ms)

    # The process's traffic

    def joined(self, room_id: str, viewer_id: str, now_ms: int) -> None:
        self.totals["joins"] += 1
        for bucket in self._buckets_of(room_id, self.room_merchant(room_id) or "", now_ms):
            bucket.counts["joins"] += 1
            if len(bucket.viewers) < DISTINCT_MAX:
                bucket.viewers.add(viewer_id)

    def left(self, room_id: str, watched_ms: int, now_ms: int) -> None:
        self.add("watch_ms", max(0, watched_ms), room_id, self.room_merchant(room_id) or "", now_ms)

    def commented(self, room_id: str, now_ms: int) -> None:
        self.add("comments", 1, room_id, self.room_merchant(room_id) or "", now_ms)

    def liked(self, room_id: str, count: int, now_ms: int) -> None:
        self.add("likes", count, room_id, self.room_merchant(room_id) or "", now_ms)

    def attempted(self, sale_id: str, now_ms: int) -> None:
        room_id, merchant_id = self.sale_where(sale_id) or ("", "")
        self.add("orders_attempted", 1, room_id, merchant_id, now_ms)

    # Reading

    def counts(
        self, scope: Scope, scope_id: str, period: Period, from_ms: int, to_ms: int
    ) -> dict[int, dict[str, int]]:
        """Bucket start (ms) -> counts, for the buckets that start in [from_ms, to_ms)."""
        length_ms = PERIOD_MS[period]
        start = from_ms - from_ms % length_ms
        points: dict[int, dict[str, int]] = {}
        for _ in range(SERIES_POINTS_MAX):
            if start >= to_ms:
                break
            bucket = self._buckets.get((scope, scope_id, period, start))
            if bucket is not None:
                counts = dict(bucket.counts)
                if bucket.viewers:
                    counts["active_viewers"] = len(bucket.viewers)
                points[start] = counts
            start += length_ms
        return points


def merge(*parts: dict[int, dict[str, int]]) -> dict[int, dict[str, int]]:
    merged: dict[int, Counter[str]] = {}
    for part in parts:
        for start, counts in part.items():
            merged.setdefault(start, Counter()).update(counts)
    return {start: dict(merged[start]) for start in sorted(merged)}


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def derived(counts: dict[str, int]) -> dict[str, float | None]:
    """The rates a dashboard shows, from one bucket's counts (None: nothing to divide by)."""
    get = counts.get
    viewers = get("active_viewers", 0)
    return {
        "accepted_of_attempted": _ratio(get("orders_accepted", 0), get("orders_attempted", 0)),
        "paid_of_accepted": _ratio(get("orders_paid", 0), get("orders_accepted", 0)),
        "settled_of_paid": _ratio(get("orders_settled", 0), get("orders_paid", 0)),
        "refund_rate": _ratio(get("orders_refunded", 0), get("orders_paid", 0)),
        "dispute_rate": _ratio(get("disputes", 0), get("orders_paid", 0)),
        "average_rating": _ratio(get("review_stars", 0), get("reviews", 0)),
        "comments_per_viewer": _ratio(get("comments", 0), viewers),
        "likes_per_viewer": _ratio(get("likes", 0), viewers),
        "watch_minutes_per_viewer": _ratio(get("watch_ms", 0) // 60_000, viewers),
    }


def series(points: dict[int, dict[str, int]], period: Period) -> list[dict[str, Any]]:
    return [
        {"start_ms": start, "end_ms": start + PERIOD_MS[period], "counts": counts,
         "rates": derived(counts)}
        for start, counts in points.items()
    ]  # fmt: skip
