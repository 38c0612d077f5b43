"""Offline evaluation of livecommerce/commerce/recommend.py against popularity alone.

A generated purchase history with planted co-purchase structure: `--products` products
in `--clusters` clusters; each buyer likes one cluster and takes each order from it with
probability `--affinity` (a Zipf choice inside the cluster), otherwise from the whole
catalog by Zipf popularity. Orders are spread over a week. Each buyer's last order of a
product not bought before is held out; everything else is fed to the recommender in time
order. For each held-out buyer (at most `--eval-buyers`), "you may also like" (10
products) is scored by whether the held-out product is in it (hit rate@10) and where
(NDCG@10, one relevant item: 1 / log2(rank + 2)), and so is the list popularity alone
gives (the same recommender, for a viewer without history). Deterministic for `--seed`.
Also the time to compute one list with the whole history loaded (median over the
evaluated buyers). Exits 1 if the recommender does not beat popularity on both.

    PYTHONPATH=. .venv/bin/python bench/recommend.py                 # 100,000 orders
    PYTHONPATH=. .venv/bin/python bench/recommend.py --orders 5000 --json out.json
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass

from livecommerce.commerce.recommend import Candidate, Recommender, Signal

ROOM = "room-1"
MERCHANT = "merchant-1"
WEEK_MS = 7 * 24 * 3600 * 1000
LIST_LENGTH = 10


@dataclass(frozen=True)
class Order:
    time_ms: int
    buyer: str
    product: str


def zipf_table(count: int, exponent: float) -> list[float]:
    weights = [1 / (rank + 1) ** exponent for rank in range(count)]
    return list(itertools.accumulate(weights))


def draw(rng: random.Random, items: list[str], table: list[float]) -> str:
    return items[bisect.bisect_left(table, rng.random() * table[-1])]


def history(args: argparse.Namespace) -> list[Order]:
    rng = random.Random(args.seed)
    products = [f"p{n:04d}" for n in range(args.products)]
    shuffled = products[:]
    rng.shuffle(shuffled)  # global popularity does not follow the clusters
    clusters = [products[c :: args.clusters] for c in range(args.clusters)]
    global_table = zipf_table(len(shuffled), 1.0)
    cluster_tables = [zipf_table(len(cluster), 0.6) for cluster in clusters]
    orders: list[Order] = []
    buyer_number = 0
    while len(orders) < args.orders:
        buyer = f"b{buyer_number}"
        buyer_number += 1
        liked = rng.randrange(args.clusters)
        for _ in range(rng.randint(2, 12)):
            if rng.random() < args.affinity:
                product = draw(rng, clusters[liked], cluster_tables[liked])
            else:
                product = draw(rng, shuffled, global_table)
            orders.append(Order(rng.randrange(WEEK_MS), buyer, product))
    orders.sort(key=lambda order: order.time_ms)
    return orders[: args.orders]


def split(orders: list[Order]) -> tuple[list[Order], dict[str, str]]:
    """(orders to learn from, buyer -> held-out product): each buyer's last order of a
    product they had not bought before it."""
    held: dict[str, Order] = {}
    bought: dict[str, set[str]] = {}
    for order in orders:
        before = bought.setdefault(order.buyer, set())
        if order.product not in before and before:
            held[order.buyer] = order
        before.add(order.product)
    held_ids = {id(order) for order in held.values()}
    train = [order for order in orders if id(order) not in held_ids]
    return train, {buyer: order.product for buyer, order in held.items()}


def score(rank: int | None) -> tuple[float, float]:
    if rank is None:
        return 0.0, 0.0
    return 1.0, 1 / math.log2(rank + 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--products", type=int, default=1_000)
    parser.add_argument("--clusters", type=int, default=40)
    parser.add_argument("--affinity", type=float, default=0.6)
    parser.add_argument("--eval-buyers", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()

    started = time.perf_counter()
    orders = history(args)
    train, held = split(orders)
    recommender = Recommender()
    feed_started = time.perf_counter()
    for order in train:
        recommender.seen(Signal.ORDER, ROOM, order.product, order.buyer, order.time_ms)
    feed_s = time.perf_counter() - feed_started
    candidates = [Candidate(f"p{n:04d}", MERCHANT, True) for n in range(args.products)]
    now_ms = WEEK_MS
    rng = random.Random(args.seed + 1)
    buyers = sorted(held)
    evaluated = rng.sample(buyers, min(args.eval_buyers, len(buyers)))
    totals = {"recommender": [0.0, 0.0], "popularity": [0.0, 0.0]}
    list_ms: list[float] = []
    popular = [p.product_id for p in recommender.you_may_also_like(
        ROOM, MERCHANT, candidates, "", now_ms, LIST_LENGTH + 200
    )]  # fmt: skip
    for buyer in evaluated:
        target = held[buyer]
        began = time.perf_counter()
        picks = recommender.you_may_also_like(ROOM, MERCHANT, candidates, buyer, now_ms)
        list_ms.append((time.perf_counter() - began) * 1000)
        ranked = [pick.product_id for pick in picks]
        # Popularity alone, with the same rules (never what the buyer bought).
        bought = recommender.bought_by(buyer)
        popular_list = [p for p in popular if p not in bought][:LIST_LENGTH]
        for name, listed in (("recommender", ranked), ("popularity", popular_list)):
            hit, gain = score(listed.index(target) if target in listed else None)
            totals[name][0] += hit
            totals[name][1] += gain
    count = len(evaluated)
    figures = {
        "orders": len(orders),
        "learned_from": len(train),
        "held_out_buyers": len(held),
        "evaluated_buyers": count,
        "products": args.products,
        "seed": args.seed,
        "hit_rate_at_10": totals["recommender"][0] / count,
        "ndcg_at_10": totals["recommender"][1] / count,
        "popularity_hit_rate_at_10": totals["popularity"][0] / count,
        "popularity_ndcg_at_10": totals["popularity"][1] / count,
        "list_ms_median": statistics.median(list_ms),
        "list_ms_p99": sorted(list_ms)[int(0.99 * (count - 1))],
        "feed_orders_per_s": len(train) / feed_s,
        "total_s": time.perf_counter() - started,
    }
    print(f"recommend: {figures['orders']:,} orders, {args.products:,} products in "
          f"{args.clusters} clusters, affinity {args.affinity}, seed {args.seed}")  # fmt: skip
    print(f"evaluated {count:,} held-out buyers (of {len(held):,})")
    print(f"{'':24}{'hit rate@10':>12}{'NDCG@10':>10}")
    for name, prefix in (("recommender", ""), ("popularity alone", "popularity_")):
        print(
            f"{name:24}{figures[prefix + 'hit_rate_at_10']:>12.4f}"
            f"{figures[prefix + 'ndcg_at_10']:>10.4f}"
        )
    ratio = figures["hit_rate_at_10"] / max(figures["popularity_hit_rate_at_10"], 1e-9)
    print(f"hit rate ratio (recommender / popularity): {ratio:.2f}x")
    print(
        f"one list with the history loaded: median {figures['list_ms_median']:.2f} ms, "
        f"p99 {figures['list_ms_p99']:.2f} ms; orders learned {figures['feed_orders_per_s']:,.0f}/s"
    )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(figures, file, indent=2)
    beats = (
        figures["hit_rate_at_10"] > figures["popularity_hit_rate_at_10"]
        and figures["ndcg_at_10"] > figures["popularity_ndcg_at_10"]
    )
    if not beats:
        print("FAIL: the recommender does not beat popularity alone", file=sys.stderr)
    return 0 if beats else 1


if __name__ == "__main__":
    sys.exit(main())
