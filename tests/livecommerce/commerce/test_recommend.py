"""recommend.py: popularity with time decay, co-purchase neighbours, cold start, and the
rules on what is never shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from livecommerce.commerce.recommend import HALF_LIFE_MS, Candidate, Recommender, Signal

ROOT = Path(__file__).resolve().parents[3]
M = "merchant-a"
OTHER = "merchant-b"


def shop(*ids: str, merchant: str = M, available: bool = True) -> list[Candidate]:
    return [Candidate(product_id, merchant, available) for product_id in ids]


def ids(picks: list) -> list[str]:  # type: ignore[type-arg]
    return [pick.product_id for pick in picks]


def test_popularity_in_the_room_ranks_and_halves_with_time() -> None:
    rec = Recommender()
    for _ in range(3):
        rec.seen(Signal.VIEW, "r1", "mug", "", 0)
    rec.seen(Signal.CLICK, "r1", "tea", "", 0)  # 3 views == 1 click
    rec.seen(Signal.VIEW, "r1", "tea", "", 0)
    rec.seen(Signal.ORDER, "r2", "tote", "b9", 0)  # another room's order
    picks = rec.more_from_stream("r1", M, shop("mug", "tea", "tote"), "", now_ms=0)
    assert ids(picks) == ["tea", "mug", "tote"]
    assert abs(rec.popularity("tea", "r1", HALF_LIFE_MS) - 2.0) < 1e-3
    # An order now outweighs old views.
    rec.seen(Signal.ORDER, "r1", "tote", "b1", 3 * HALF_LIFE_MS)
    later = rec.more_from_stream("r1", M, shop("mug", "tea", "tote"), "", 3 * HALF_LIFE_MS)
    assert ids(later)[0] == "tote"


def test_co_purchase_neighbours_come_first_and_popularity_fills() -> None:
    rec = Recommender()
    for number in range(5):  # five buyers bought mug and tea together
        rec.seen(Signal.ORDER, "r1", "mug", f"b{number}", number)
        rec.seen(Signal.ORDER, "r1", "tea", f"b{number}", number)
    for number in range(20):  # the tote is the most popular, alone
        rec.seen(Signal.ORDER, "r1", "tote", f"c{number}", number)
    rec.seen(Signal.ORDER, "r1", "mug", "ann", 100)
    picks = rec.you_may_also_like("r1", M, shop("mug", "tea", "tote", "cap"), "ann", 100)
    assert [(p.product_id, p.why) for p in picks] == [
        ("tea", "co_purchase"),
        ("tote", "popular"),
        ("cap", "popular"),
    ]
    assert rec.similarity("mug", "tea") == rec.similarity("tea", "mug") > 0.8
    assert rec.similarity("mug", "tote") == 0


def test_a_new_viewer_gets_popularity_and_a_view_seeds_the_list() -> None:
    rec = Recommender()
    for number in range(4):
        rec.seen(Signal.ORDER, "r1", "mug", f"b{number}", 0)
        rec.seen(Signal.ORDER, "r1", "tea", f"b{number}", 0)
    for number in range(9):
        rec.seen(Signal.ORDER, "r1", "tote", f"c{number}", 0)
    cold = rec.you_may_also_like("r1", M, shop("mug", "tea", "tote"), "new", 0)
    assert [p.why for p in cold] == ["popular"] * 3
    assert ids(cold)[0] == "tote"
    rec.seen(Signal.VIEW, "r1", "mug", "new", 1)
    seeded = rec.you_may_also_like("r1", M, shop("mug", "tea", "tote"), "new", 1)
    assert (seeded[0].product_id, seeded[0].why) == ("tea", "co_purchase")


def test_never_sold_out_bought_beside_or_another_merchants_in_a_linked_room() -> None:
    rec = Recommender()
    for product in ("mug", "tea", "cap", "pen"):
        rec.seen(Signal.ORDER, "r1", product, "someone", 0)
    rec.seen(Signal.ORDER, "r1", "mug", "ann", 0)
    candidates = [
        *shop("mug", "tea"),
        *shop("cap", available=False),
        *shop("pen", merchant=OTHER),
        *shop("hat"),
    ]
    for lister in (rec.more_from_stream, rec.you_may_also_like):
        picks = ids(lister("r1", M, candidates, "ann", 0, 10, "tea"))
        assert picks == ["hat"], lister
        # A room linked to no merchant shows any merchant's product.
        assert "pen" in ids(lister("r1", None, candidates, "ann", 0, 10, ""))


def test_a_list_is_at_most_count_long_and_stable_on_ties() -> None:
    rec = Recommender()
    names = [f"p{n:02d}" for n in range(30)]
    first = ids(rec.you_may_also_like("r1", M, shop(*names), "", 0, count=5))
    assert first == names[:5]
    assert first == ids(rec.you_may_also_like("r1", M, shop(*reversed(names)), "", 0, count=5))
    assert rec.more_from_stream("r1", M, shop(*names), "", 0, count=0) == []


def test_the_offline_evaluation_beats_popularity_on_a_small_history(tmp_path: Path) -> None:
    """bench/recommend.py, small: planted co-purchase structure is found (it exits 1 if
    the recommender does not beat popularity alone), and a seed gives the same figures."""
    figures = []
    for run in range(2):
        out = tmp_path / f"run{run}.json"
        done = subprocess.run(
            [
                sys.executable,
                "bench/recommend.py",
                "--orders",
                "4000",
                "--eval-buyers",
                "300",
                "--json",
                str(out),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        figures.append(json.loads(out.read_text()))
    first, second = figures
    assert first["evaluated_buyers"] == 300
    assert first["hit_rate_at_10"] > first["popularity_hit_rate_at_10"]
    for name in ("hit_rate_at_10", "ndcg_at_10", "popularity_ndcg_at_10"):
        assert first[name] == second[name], name
