"""Order signatures checked in the verifier's child process: the same answers as the core's
own check, and the same answers again (inline) when the child is gone or the batch is
under the child's minimum."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from livecommerce.clients.signing import KeyPair
from livecommerce.commerce.orders import PlaceOrder, SignatureCheck, check_order_signature
from livecommerce.pipeline.verifying import SignatureVerifier
from tests.livecommerce.pipeline.flows import SaleSetup, now_ms, register, room_with_sale
from tests.livecommerce.server import RunningServer, running_server


def orders() -> list[PlaceOrder]:
    buyer, other = KeyPair(), KeyPair()

    def order(key: KeyPair, order_id: str) -> PlaceOrder:
        fields = key.order(order_id, "sale-1", 2, 1999, 1_760_000_000_000)
        return PlaceOrder(**fields)

    good = [order(buyer, f"o{n}") for n in range(20)]
    return [
        *good,
        dataclasses.replace(good[0], quantity=3),  # signed for 2
        dataclasses.replace(good[1], signature=other.sign(b"something else")),
        dataclasses.replace(good[2], signature="not base64url!"),
        dataclasses.replace(good[3], buyer_id="short"),
        dataclasses.replace(good[4], quantity=1.5),  # type: ignore[arg-type]
        dataclasses.replace(good[5], sale_id="é\n\u2028"),
    ]


@contextlib.asynccontextmanager
async def running(verifier: SignatureVerifier) -> AsyncIterator[SignatureVerifier]:
    """`verifier` with its child started; closed (its child stopped) on the way out."""
    await verifier.start()
    try:
        yield verifier
    finally:
        await verifier.close()


async def test_the_child_answers_as_the_core_and_so_does_the_fallback() -> None:
    commands = orders()
    expected = [check_order_signature(command) for command in commands]
    assert sum(check.refused is None for check in expected) == 20
    async with running(SignatureVerifier(restart_interval_s=1.0)) as verifier:
        assert await verifier.check(commands) == expected
        assert verifier.checked_in_child == len(commands)
        assert await verifier.check([]) == []
        # The child dies: answers still come, checked here, until a new child starts.
        pid = verifier.child_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert await verifier.check(commands) == expected
        assert verifier.checked_inline == len(commands)
        await asyncio.sleep(1.1)
        assert verifier.child_pid not in (None, pid)
        assert await verifier.check(commands) == expected
        assert verifier.checked_in_child == 2 * len(commands)


async def test_batches_under_the_minimum_are_checked_here_the_rest_in_the_child() -> None:
    commands = orders()
    expected = [check_order_signature(command) for command in commands]
    async with running(SignatureVerifier(child_batch_min=len(commands))) as verifier:
        assert await verifier.check(commands[:-1]) == expected[:-1]
        assert (verifier.checked_inline, verifier.checked_in_child) == (len(commands) - 1, 0)
        assert await verifier.check(commands) == expected
        assert (verifier.checked_inline, verifier.checked_in_child) == (
            len(commands) - 1,
            len(commands),
        )


async def test_requests_are_pipelined_and_answered_in_order() -> None:
    commands = orders()
    expected = [check_order_signature(command) for command in commands]
    async with running(SignatureVerifier(orders_in_flight_max=len(commands))) as verifier:
        answered: list[tuple[int, list[SignatureCheck]]] = []
        # Five requests in one turn: all go down the pipe before any answer is back.
        for n, start in enumerate(range(0, len(commands), 6)):
            chunk = commands[start : start + 6]
            verifier.submit(chunk, lambda checks, n=n: answered.append((n, checks)))
        assert verifier.room() == 0
        assert len(verifier._in_flight) == 5
        while len(answered) < 5:
            await asyncio.sleep(0.01)
        assert [n for n, _ in answered] == [0, 1, 2, 3, 4]
        assert [check for _, checks in answered for check in checks] == expected
        assert verifier.room() == len(commands)
        assert verifier.checked_in_child == len(commands)


async def test_a_child_that_stops_answering_is_replaced_and_nothing_is_lost() -> None:
    commands = orders()
    expected = [check_order_signature(command) for command in commands]
    async with running(SignatureVerifier(answer_timeout_s=0.3, restart_interval_s=0.5)) as verifier:
        pid = verifier.child_pid
        assert pid is not None
        try:
            os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing
            started = time.monotonic()
            assert await verifier.check(commands) == expected
            assert 0.3 <= time.monotonic() - started < 5
            assert (verifier.checked_in_child, verifier.checked_inline) == (0, len(commands))
            await asyncio.sleep(0.6)
            assert verifier.child_pid not in (None, pid)
            assert await verifier.check(commands) == expected
            assert verifier.checked_in_child == len(commands)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def a_sale_and_a_buyer(
    tmp_path: Path, **settings: int
) -> AsyncIterator[tuple[RunningServer, httpx.AsyncClient, SaleSetup, KeyPair]]:
    """A server with the signature child (and `settings`), a sale of 100 units, 100 per
    buyer, and one registered buyer."""
    async with (
        running_server(
            tmp_path, order_signatures_in_child=True, order_signatures_child_batch_min=1, **settings
        ) as server,
        httpx.AsyncClient() as client,
    ):
        setup = await room_with_sale(client, server.http, units_offered=100, per_buyer_limit=100)
        buyer = KeyPair()
        await register(client, server.http, buyer, "Ann")
        yield server, client, setup, buyer


async def test_the_service_holds_orders_while_the_child_is_full(tmp_path: Path) -> None:
    full = a_sale_and_a_buyer(tmp_path, order_signatures_in_flight_max=2)
    async with full as (server, client, setup, buyer):
        sent = [
            buyer.order(f"o{n}", setup.sale_id, 1, setup.price_cents, now_ms()) for n in range(20)
        ]
        answers = await asyncio.gather(
            *(client.post(f"{server.http}/api/orders", json=order) for order in sent)
        )
        assert [answer.status_code for answer in answers] == [201] * 20
        verifier = server.app.state.orders.verifier
        assert verifier is not None
        assert verifier.checked_in_child == 20
        assert verifier.room() == 2


async def test_a_burst_goes_to_the_child_a_few_orders_per_request(tmp_path: Path) -> None:
    async with a_sale_and_a_buyer(tmp_path, order_signatures_request_max=4) as (
        server,
        _,
        setup,
        buyer,
    ):
        service = server.app.state.orders
        verifier = service.verifier
        assert verifier is not None
        before = verifier.requests_to_child
        burst = [
            PlaceOrder(**buyer.order(f"o{n}", setup.sale_id, 1, setup.price_cents, now_ms()))
            for n in range(18)
        ]
        # Submitted in one turn of the loop: one batch for the verifier, sent as requests
        # of at most 4 orders.
        results = await asyncio.gather(*(service.place_order(order) for order in burst))
        assert [result.status for result in results] == ["accepted"] * 18
        assert verifier.requests_to_child - before == 5
        assert verifier.checked_in_child == 18


async def test_the_embedded_server_takes_orders_checked_in_the_child(tmp_path: Path) -> None:
    async with (
        running_server(
            tmp_path, order_signatures_in_child=True, order_signatures_child_batch_min=1
        ) as server,
        httpx.AsyncClient() as client,
    ):
        setup = await room_with_sale(client, server.http, units_offered=2)
        buyer = KeyPair()
        await register(client, server.http, buyer, "Ann")
        order = buyer.order("o1", setup.sale_id, 2, setup.price_cents, now_ms())
        first = await client.post(f"{server.http}/api/orders", json=order)
        assert first.status_code == 201, first.text
        forged = {**buyer.order("o2", setup.sale_id, 1, setup.price_cents, now_ms())}
        forged["quantity"] = 2
        refused = await client.post(f"{server.http}/api/orders", json=forged)
        assert refused.json()["reason"] == "bad_signature"
        again = await client.post(f"{server.http}/api/orders", json=order)
        assert again.json()["repeated"] is True
        verifier = server.app.state.orders.verifier
        assert verifier is not None
        assert verifier.checked_in_child == 3
        assert verifier.checked_inline == 0
