"""Scaled out: the ledger writer's disk fills up while buyers order on two web processes.

The writer (`python -m livecommerce ledger-writer`) keeps its data on a real ext4
filesystem, loop-mounted; the test fills it while buyers order on both web processes and
a buyer pays (with shipping details, which the writer stores on the same disk). Held
`FAULT_HOLD_S`, then:

- the writer stops appending: its entries file does not grow, it says why once, and it
  neither spins nor floods its log;
- no web process tells a buyer "accepted" (or "paid") for anything not in the ledger,
  and while the writer is stopped every order and payment gets `unavailable` naming the
  disk, at once; rooms keep working across the processes;
- with space back and the writer restarted on the same data, every order on the sales'
  Redis streams is in the ledger and confirmed (its record holds its index), the log
  verifies, Redis's stock equals offered minus accepted, refused orders retried with the
  same id are accepted, and new ones are too.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as redis

from livecommerce import redis_keys as keys
from livecommerce.clients.signing import KeyPair
from livecommerce.stock.redis_lua import RedisStockStore, accepted_stream_key
from tests.conftest import RedisServer
from tests.faults.disk import SmallDisk, small_disk
from tests.faults.paced_buyers import Answer, Traffic, post_order
from tests.faults.promises import (
    check_accepted_are_recorded,
    checkpoint,
    comment_reaches_viewer,
    cpu_seconds,
    ledger_on_disk,
    reasons,
    until,
)
from tests.livecommerce.pipeline.flows import now_ms, register, room_with_sale, session
from tests.livecommerce.processes import ServerProcess, WriterProcess

pytestmark = pytest.mark.redis

FAULT_HOLD_S = 3.0
UNITS_OFFERED = 5_000
PER_BUYER_LIMIT = 100
DISK_ERROR = "No space left on device"
# Web processes wait this long for the writer before answering `unavailable` (20 s by
# default); shorter here so an order the writer never confirms is answered in the test.
CONFIRM_TIMEOUT_MS = 3_000
# The writer's CPU (user + system) from the fault to the end of the hold, and its log's
# growth. Measured on this 2-core VM: 0.02 s and 172 bytes (the writer's one line; the
# ledger adds one naming the file when its write, not the shipping store's, fails
# first). A loop retrying the disk or Redis would take a core, about 3 s, or log a line
# per try.
CPU_SECONDS_MAX = 0.75
LOG_BYTES_MAX = 2_048

Json = dict[str, Any]


async def stream_orders(redis_url: str, sale_id: str) -> dict[str, Json]:
    """order id -> record of every order on the sale's stream (stock taken in Redis)."""
    client = redis.Redis.from_url(redis_url)
    try:
        messages: Any = await client.xrange(accepted_stream_key(sale_id))
        records = [orjson.loads(fields[b"order"]) for _, fields in messages]
        return {record["order_id"]: record for record in records}
    finally:
        await client.aclose()


async def confirmed_index(redis_url: str, sale_id: str, buyer_id: str, order_id: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        record = await client.hget(
            keys.sale_ledger_key(sale_id), keys.order_field(buyer_id, order_id)
        )
    finally:
        await client.aclose()
    if record is None:
        return -1
    index = orjson.loads(record).get("ledger_index")
    return -1 if index is None else int(index)


async def redis_remaining(redis_url: str, sale_id: str) -> int | None:
    store = RedisStockStore.from_url(redis_url)
    try:
        return await store.remaining(sale_id)
    finally:
        await store.close()


async def test_the_writer_stops_on_a_full_disk_and_records_every_order_after_restart(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    await admin.flushdb()
    await admin.aclose()
    web_environment = {"LIVECOMMERCE_ORDER_CONFIRM_TIMEOUT_MS": str(CONFIRM_TIMEOUT_MS)}
    with small_disk(tmp_path) as disk:
        writer = await asyncio.to_thread(
            WriterProcess, disk.mount_point / "writer", redis_server.url, tmp_path / "w1.log", True
        )
        processes: list[ServerProcess | WriterProcess] = [writer]
        try:
            webs = []
            for number in range(2):
                web = await asyncio.to_thread(
                    ServerProcess,
                    tmp_path / f"web{number}",
                    redis_server.url,
                    None,
                    web_environment,
                )
                webs.append(web)
                processes.append(web)
            await run_writer_case(disk, writer, webs, redis_server.url, tmp_path, processes)
        finally:
            for process in processes:
                await asyncio.to_thread(process.stop)


async def run_writer_case(
    disk: SmallDisk,
    writer: WriterProcess,
    webs: list[ServerProcess],
    redis_url: str,
    tmp_path: Path,
    processes: list[ServerProcess | WriterProcess],
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        setup = await room_with_sale(
            client,
            webs[0].http,
            units_offered=UNITS_OFFERED,
            per_buyer_limit=PER_BUYER_LIMIT,
            duration_ms=600_000,
            payment_hold_ms=600_000,
        )

        async def sale_everywhere() -> bool:
            for web in webs:
                if (await client.get(f"{web.http}/api/sales/{setup.sale_id}")).status_code != 200:
                    return False
            return True

        await until(sale_everywhere, 10, "every web process knows the sale")
        payer = KeyPair()
        await register(client, webs[0].http, payer, "Payer")
        payer_token = await session(client, webs[0].http, payer)
        to_pay = []
        for number in range(3):
            order = payer.order(f"pay{number}", setup.sale_id, 1, setup.price_cents, now_ms())
            answer = await post_order(client, webs[0].http, order)
            assert answer.status == "accepted", answer
            to_pay.append(order)
        traffics = []
        for number, web in enumerate(webs):
            buyers = [KeyPair() for _ in range(6)]
            for buyer in buyers:
                await register(client, web.http, buyer, "buyer")
            traffics.append(
                Traffic(
                    web.http,
                    web.ws,
                    setup.room_id,
                    setup.sale_id,
                    setup.price_cents,
                    buyers[:4],
                    buyers[4:],
                    prefix=f"w{number}",
                    answer_timeout_s=CONFIRM_TIMEOUT_MS / 1000 + 2,
                )
            )
            traffics[-1].start()

        def all_answers() -> list[Answer]:
            return [answer for traffic in traffics for answer in traffic.answers]

        async def some_accepted() -> bool:
            return sum(a.status == "accepted" for a in all_answers()) >= 20

        await until(some_accepted, 10, "orders accepted before the fault")

        entries_wal = writer.data_dir / "ledger" / "entries.wal"
        cpu_before = cpu_seconds(writer.process.pid)
        log_before = writer.log_path.stat().st_size
        disk.fill()

        async def pay(order: Json) -> tuple[str, int, Json]:
            response = await client.post(
                f"{webs[1].http}/api/orders/{order['order_id']}/pay",
                json={"shipping": {"name": "Ann Example", "city": "Cork"}},
                headers={"Authorization": f"Bearer {payer_token}"},
            )
            return order["order_id"], response.status_code, response.json()

        # A payment whose shipping box the writer must store on the full disk first.
        payments = [await pay(to_pay[0])]

        async def writer_unhealthy() -> bool:
            health = await client.get(writer.ledger_url.removesuffix("/ledger") + "/healthz")
            return health.status_code == 503

        await until(writer_unhealthy, 10, "the writer notices its full disk")
        met_s = time.monotonic()
        health = await client.get(writer.ledger_url.removesuffix("/ledger") + "/healthz")
        assert DISK_ERROR in health.json()["reason"], health.json()
        entries_bytes = entries_wal.stat().st_size
        payments += [await pay(order) for order in to_pay[1:]]
        for web in webs:
            sale = await client.get(f"{web.http}/api/sales/{setup.sale_id}")
            assert sale.status_code == 200, sale.text
        await comment_reaches_viewer(webs[0].ws, webs[1].ws, setup.room_id, "still live")
        during = await checkpoint(client, writer.ledger_url)  # the log is still served
        await asyncio.sleep(max(0.0, FAULT_HOLD_S - (time.monotonic() - met_s)))
        assert writer.alive(), writer.log()[-2000:]
        cpu_used = cpu_seconds(writer.process.pid) - cpu_before
        log_grown = writer.log_path.stat().st_size - log_before
        held_s = time.monotonic() - met_s
        assert entries_wal.stat().st_size == entries_bytes, "the stopped writer appended"
        for traffic in traffics:
            await traffic.stop()
        answers = all_answers()
        disk.free()
        await asyncio.to_thread(writer.stop)

        assert held_s >= FAULT_HOLD_S
        assert cpu_used < CPU_SECONDS_MAX, cpu_used
        assert log_grown < LOG_BYTES_MAX, writer.log()[log_before:]
        since_fault = writer.log()[log_before:]
        assert since_fault.count("ledger writer stopped") == 1, since_fault
        assert "redis trouble" not in since_fault, since_fault
        silent = [a for a in answers if a.status in ("no_answer", "closed")]
        assert not silent, silent
        # Once the web processes have read the writer's word (every 0.25 s), orders are
        # refused at once, naming the disk.
        settled_s = met_s + 0.5
        during_fault = [a for a in answers if a.sent_s >= settled_s]
        assert during_fault
        for answer in during_fault:
            assert (answer.status, answer.reason) == ("rejected", "unavailable"), answer
            assert DISK_ERROR in answer.detail, answer
            assert answer.waited_s < 1.0, answer
        for _, status, body in payments:
            assert body["status"] in ("paid", "refused"), body
            if body["status"] == "refused":
                assert (status, body["reason"]) == (503, "unavailable"), body
                assert DISK_ERROR in body["detail"], body

        restarted = await asyncio.to_thread(
            WriterProcess, writer.data_dir, redis_url, tmp_path / "w2.log", True
        )
        processes.append(restarted)
        health = await client.get(restarted.ledger_url.removesuffix("/ledger") + "/healthz")
        assert health.status_code == 200, health.text
        streamed = await stream_orders(redis_url, setup.sale_id)

        async def all_confirmed() -> bool:
            for order_id, record in streamed.items():
                index = await confirmed_index(
                    redis_url, setup.sale_id, record["buyer_id"], order_id
                )
                if index < 0:
                    return False
            return True

        await until(all_confirmed, 15, "every order on the streams confirmed after the restart")
        orders = {order_id: t.orders[order_id] for t in traffics for order_id in t.orders}
        refused = [answer for answer in answers if answer.status != "accepted"]
        assert len(refused) > len(webs)
        retries = []
        # Each web process reads that the writer is back within a sweep (0.25 s): until
        # then a retry is refused again, as while the writer was stopped.
        for web, answer in zip(webs, refused, strict=False):

            async def taken_again(web: ServerProcess = web, answer: Answer = answer) -> bool:
                retry = await post_order(client, web.http, orders[answer.order_id])
                if retry.status != "accepted":
                    assert retry.reason == "unavailable", retry
                    return False
                retries.append(retry)
                return True

            await until(taken_again, 5, f"{web.http} takes orders after the restart")
        retries += [
            await post_order(client, webs[number % 2].http, orders[answer.order_id])
            for number, answer in enumerate(refused[len(webs) :])
        ]
        assert reasons(retries) == {"accepted:": len(refused)}
        paid_again = [await pay(order) for order in to_pay]
        assert all(body["status"] == "paid" for _, _, body in paid_again), paid_again
        after = [
            Traffic(
                web.http,
                web.ws,
                setup.room_id,
                setup.sale_id,
                setup.price_cents,
                [],
                traffic.http_buyers,
                prefix=f"after{number}",
            )
            for number, (web, traffic) in enumerate(zip(webs, traffics, strict=True))
        ]
        for traffic in after:
            traffic.start()
        await asyncio.sleep(1.0)
        for traffic in after:
            await traffic.stop()
        fresh = [answer for traffic in after for answer in traffic.answers]
        assert fresh
        assert reasons(fresh) == {"accepted:": len(fresh)}
        assert (await checkpoint(client, restarted.ledger_url)).size >= during.size
        await asyncio.to_thread(restarted.stop)

    on_disk = await ledger_on_disk(writer.data_dir / "ledger")
    told = check_accepted_are_recorded([*answers, *retries, *fresh], on_disk, setup.sale_id)
    recorded = on_disk.accepted(setup.sale_id)
    for order_id, record in streamed.items():
        assert order_id in recorded, f"on the stream, not in the ledger: {record}"
        index = await confirmed_index(redis_url, setup.sale_id, record["buyer_id"], order_id)
        assert index == recorded[order_id][0]
    assert set(told) <= set(recorded)
    paid = {
        fields["order_id"]: index
        for index, (entry_type, fields) in enumerate(on_disk.entries)
        if entry_type == "order/v1" and fields.get("action") == "paid"
    }
    for order_id, _, body in [*payments, *paid_again]:
        if body["status"] == "paid":
            assert body["ledger_index"] == paid[order_id], (body, paid)
    units = sum(fields["quantity"] for _, fields in recorded.values())
    assert units <= UNITS_OFFERED
    assert await redis_remaining(redis_url, setup.sale_id) == UNITS_OFFERED - units
