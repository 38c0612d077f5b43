"""Many buyers at once over real sockets, embedded: never oversold, limits hold, repeats get
the first answer, forgeries are refused, and the ledger replays to the live stock."""

from __future__ import annotations

from pathlib import Path

import httpx
import websockets

from ledger import decode_entry
from livecommerce.commerce.core import CommerceCore
from livecommerce.commerce.replay import apply_entry
from tests.livecommerce.pipeline.crowd import check_answers, make_crowd, register_crowd, send_crowd
from tests.livecommerce.pipeline.flows import room_with_sale
from tests.livecommerce.pipeline.test_orders_embedded import stock_seen
from tests.livecommerce.server import running_server

BUYERS = 1_500
SOCKETS = 150
OFFERED = 500
LIMIT = 2


async def test_thousands_of_buyers_never_oversell_and_the_ledger_replays_to_the_stock(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient(timeout=30) as client:
        setup = await room_with_sale(
            client, server.http, units_offered=OFFERED, per_buyer_limit=LIMIT
        )
        crowd = make_crowd(BUYERS, SOCKETS, setup.sale_id, setup.price_cents, LIMIT)
        await register_crowd(client, [server.http], crowd, SOCKETS)
        watcher = await websockets.connect(f"{server.ws}/ws/rooms/{setup.room_id}")
        answers = await send_crowd([server.ws], setup.room_id, crowd)
        accepted = check_answers(answers, crowd, OFFERED, LIMIT)
        await stock_seen(watcher, "mug", 0, timeout_s=10)
        await watcher.close()

        ledger = server.app.state.ledger
        replayed = CommerceCore()
        recorded = stock_entries = 0
        for index in range(ledger.size):
            entry_type, fields = decode_entry(ledger.entry(index))
            # Every stock/v1 entry is checked against the counts replayed up to it.
            apply_entry(replayed, (entry_type, fields))
            if entry_type == "order/v1" and fields["action"] == "accepted":
                recorded += 1
                assert accepted[fields["order_id"]]["ledger_index"] == index
            stock_entries += entry_type == "stock/v1" and fields["sale_id"] == setup.sale_id
        assert recorded == len(accepted)
        # One stock count per sale per batch of orders, not one per order.
        assert 0 < stock_entries < recorded
        live = server.app.state.orders.core.sales.get(setup.sale_id)
        sale = replayed.sales.get(setup.sale_id)
        assert sale is not None
        assert (sale.units_remaining, sale.units_held, sale.units_sold) == (
            live.units_remaining,
            live.units_held,
            live.units_sold,
        )
        assert sale.units_remaining == 0
