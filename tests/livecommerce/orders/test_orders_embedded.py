"""The order path end to end, embedded: a real server, real sockets, the real ledger."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from ledger import decode_entry
from ledger.note import Verifier
from ledger.receipt import verify_receipt
from livecommerce.orders.signing import KeyPair
from tests.livecommerce.hub.test_hub_embedded import recv, recv_type
from tests.livecommerce.orders.flows import now_ms, register, room_with_sale
from tests.livecommerce.server import RunningServer, running_server

Json = dict[str, Any]


async def order_over(
    ws: ClientConnection, buyer: KeyPair, order_id: str, sale_id: str, quantity: int, price: int
) -> Json:
    order = buyer.order(order_id, sale_id, quantity, price, now_ms())
    await ws.send(json.dumps({"type": "order/v1", **order}))
    return await recv_type(ws, "order.result/v1")


async def stock_seen(
    ws: ClientConnection, product_id: str, wanted: int, timeout_s: float = 5
) -> None:
    """Read state pushes until the product's stock reads `wanted`."""
    async with asyncio.timeout(timeout_s):
        while True:
            message = await recv(ws)
            if (
                message["type"] == "state/v1"
                and (message.get("stock") or {}).get(product_id) == wanted
            ):
                return


def verifier(server: RunningServer) -> Verifier:
    return Verifier.parse(server.app.state.ledger.verifier_key)


async def test_accepted_only_once_in_the_ledger_then_a_receipt_and_stock_on_screens(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        setup = await room_with_sale(client, server.http, units_offered=5)
        watcher = await websockets.connect(f"{server.ws}/ws/rooms/{setup.room_id}")
        snapshot = await recv_type(watcher, "snapshot/v1")
        assert snapshot["sale"]["sale_id"] == setup.sale_id
        assert snapshot["pinned"]["product_id"] == "mug"
        buyer = KeyPair()
        await register(client, server.http, buyer, "Ann")
        ws = await websockets.connect(f"{server.ws}/ws/rooms/{setup.room_id}")
        result = await order_over(ws, buyer, "o1", setup.sale_id, 2, setup.price_cents)
        assert result["status"] == "accepted", result
        assert result["quantity"] == 2
        ledger = server.app.state.ledger
        # "accepted" came after the append: the entry is there, with the buyer's signature.
        entry = ledger.entry(result["ledger_index"])
        entry_type, fields = decode_entry(entry)
        assert (entry_type, fields["action"], fields["order_id"]) == ("order/v1", "accepted", "o1")
        assert fields["buyer_id"] == buyer.identity_id
        receipt = await recv_type(ws, "receipt/v1", timeout_s=10)
        assert receipt["ledger_index"] == result["ledger_index"]
        proven = verify_receipt(receipt["proof"].encode(), verifier(server), entry)
        assert proven.index == result["ledger_index"]
        over_http = await client.get(
            f"{server.http}/api/orders/o1/receipt", params={"buyer_id": buyer.identity_id}
        )
        assert over_http.status_code == 200
        verify_receipt(over_http.content, verifier(server), entry)
        await stock_seen(watcher, "mug", 3)
        await ws.close()
        await watcher.close()
