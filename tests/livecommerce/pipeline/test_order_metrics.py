"""`GET /metrics` counts every order answer the process gave and how long each took."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import websockets
from prometheus_client import Histogram
from prometheus_client.parser import text_string_to_metric_families

from livecommerce.clients.signing import KeyPair
from livecommerce.pipeline.stats import ANSWER_SECONDS_BUCKETS, AnswerTimes
from tests.livecommerce.hub.test_hub_embedded import recv_type
from tests.livecommerce.pipeline.flows import now_ms, register, room_with_sale
from tests.livecommerce.server import running_server


async def test_metrics_count_answers_by_status_and_reason_with_their_times(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        setup = await room_with_sale(client, server.http, units_offered=2, per_buyer_limit=2)
        sale, price = setup.sale_id, setup.price_cents
        ann, bob = KeyPair(), KeyPair()
        await register(client, server.http, ann, "Ann")
        await register(client, server.http, bob, "Bob")
        ws = await websockets.connect(f"{server.ws}/ws/rooms/{setup.room_id}")
        first = ann.order("a1", sale, 1, price, now_ms())
        statuses = []
        for order in [first, first, ann.order("a2", sale, 1, price, now_ms())]:
            await ws.send(json.dumps({"type": "order/v1", **order}))
            statuses.append((await recv_type(ws, "order.result/v1"))["status"])
        assert statuses == ["accepted", "accepted", "accepted"]  # the second is a repeat
        await ws.close()
        # Over HTTP: one refused for stock, one altered after signing.
        sold_out = await client.post(
            f"{server.http}/api/orders", json=bob.order("b1", sale, 1, price, now_ms())
        )
        assert sold_out.json()["reason"] == "sold_out"
        altered = {**bob.order("b2", sale, 1, price, now_ms()), "quantity": 2}
        forged = await client.post(f"{server.http}/api/orders", json=altered)
        assert forged.json()["reason"] == "bad_signature"

        scraped = await client.get(f"{server.http}/metrics")
        assert scraped.status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(scraped.text)}

    answers = {
        (sample.labels["status"], sample.labels["reason"]): sample.value
        for sample in families["livecommerce_order_answers"].samples
    }
    assert answers == {
        ("accepted", ""): 3,
        ("rejected", "sold_out"): 1,
        ("rejected", "bad_signature"): 1,
    }
    seconds = families["livecommerce_order_answer_seconds"].samples
    count = [s.value for s in seconds if s.name.endswith("_count")]
    assert count == [5]
    buckets = [(s.labels["le"], s.value) for s in seconds if s.name.endswith("_bucket")]
    assert buckets[-1] == ("+Inf", 5)
    assert [value for _, value in buckets] == sorted(value for _, value in buckets)
    # Accepted answers waited for an fsync'd ledger append: the times add up to something.
    [total_s] = [s.value for s in seconds if s.name.endswith("_sum")]
    assert 0 < total_s < 60


def test_answer_times_bucket_as_prometheus_does() -> None:
    # Values on, just over and just under bucket bounds, and past the last one.
    values = [0.0, 0.001, 0.0010001, 0.0009999, 0.05, 0.0500001, 2.5, 2.5000001, 60.0]
    ours = AnswerTimes()
    reference = Histogram("reference", "x", buckets=ANSWER_SECONDS_BUCKETS, registry=None)
    for value in values:
        ours.observe(value)
        reference.observe(value)
    [family] = reference.collect()
    expected = [
        (sample.labels["le"], sample.value)
        for sample in family.samples
        if sample.name.endswith("_bucket")
    ]
    assert [(bound, float(count)) for bound, count in ours.cumulative()] == expected
    assert ours.sum_s == sum(values)
