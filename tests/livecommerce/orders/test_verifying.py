"""Order signatures checked in the verifier's child process: the same answers as the core's
own check, and the same answers again (inline) when the child is gone or the batch is
under the child's minimum."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import httpx

from livecommerce.commerce.orders import PlaceOrder, check_order_signature
from livecommerce.orders.signing import KeyPair
from livecommerce.orders.verifying import SignatureVerifier
from tests.livecommerce.orders.flows import now_ms, register, room_with_sale
from tests.livecommerce.server import running_server


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


async def test_the_child_answers_as_the_core_and_so_does_the_fallback() -> None:
    commands = orders()
    expected = [check_order_signature(command) for command in commands]
    assert sum(check.refused is None for check in expected) == 20
    verifier = SignatureVerifier(restart_interval_s=1.0)
    await verifier.start()
    try:
        assert await verifier.check(commands) == expected
        assert verifier.checked_in_child == len(commands)
        assert await verifier.check([]) == []
        # The child dies: answers still come, checked here, until a new child starts.
        child = verifier._child
        assert child is not None
        child.kill()
        await child.wait()
        assert await verifier.check(commands) == expected
        assert verifier.checked_inline == len(commands)
        await asyncio.sleep(1.1)
        assert await verifier.check(commands) == expected
        assert verifier.checked_in_child == 2 * len(commands)
    finally:
        await verifier.close()


async def test_batches_under_the_minimum_are_checked_here_the_rest_in_the_child() -> None:
    commands = orders()
    expected = [check_order_signature(command) for command in commands]
    verifier = SignatureVerifier(child_batch_min=len(commands))
    await verifier.start()
    try:
        assert await verifier.check(commands[:-1]) == expected[:-1]
        assert (verifier.checked_inline, verifier.checked_in_child) == (len(commands) - 1, 0)
        assert await verifier.check(commands) == expected
        assert (verifier.checked_inline, verifier.checked_in_child) == (
            len(commands) - 1,
            len(commands),
        )
    finally:
        await verifier.close()


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
