"""`--demo`: a room, a host, a merchant with a product in stock, and the commands to run.

The merchant's key is kept in the data directory (`demo_merchant.key`, mode 0600), so a
restart finds the same merchant, product and stock in the ledger instead of making new
ones.
"""

from __future__ import annotations

import sys
import time

from starlette.applications import Starlette

from livecommerce import protocol as m
from livecommerce.clients.signing import KeyPair
from livecommerce.commerce.catalog import AddStock, ListProduct
from livecommerce.commerce.core import Command
from livecommerce.commerce.identity import Register, b64url_encode, registration_bytes
from livecommerce.commerce.rooms import LinkRoom
from livecommerce.hub.hub import Hub
from livecommerce.keyfiles import load_or_create_secret
from livecommerce.pipeline.pipeline import OrderPipeline
from livecommerce.settings import Settings

DEMO_ROOM_ID = "demo"
DEMO_PRODUCT_ID = "mug-1"
DEMO_STOCK_UNITS = 500
DEMO_PRODUCT_IMAGE = "/img/mug.svg"


async def create_demo(app: Starlette, settings: Settings) -> None:
    hub: Hub = app.state.hub
    try:
        room_id, host_token = await hub.create_room(
            "Spring flash sale", "Mia", room_id=DEMO_ROOM_ID
        )
    except ValueError:
        # Scaled out, another process (or an earlier run on the same Redis) made it already.
        print(f"demo room {DEMO_ROOM_ID!r} exists already; its host credential is unchanged")
        return
    product = m.PinnedProduct(
        product_id=DEMO_PRODUCT_ID,
        title="Stoneware mug",
        price_cents=1800,
        currency="EUR",
        image=DEMO_PRODUCT_IMAGE,
    )
    await hub.host_command(room_id, host_token, m.HostPin(product=product))
    await hub.host_command(room_id, host_token, m.HostLive(live=True))
    orders: OrderPipeline | None = getattr(app.state, "orders", None)
    panel_secrets = f"host_token={host_token}"
    if orders is not None and settings.embedded:
        merchant = await create_demo_merchant(orders, settings)
        # The panel signs listings and restocks with the merchant's key, so the demo hands
        # it over in the URL fragment (never sent to the server); the page imports it into
        # WebCrypto as non-extractable and keeps it in IndexedDB.
        panel_secrets += f"&merchant_key={b64url_encode(bytes(merchant.signing_key))}"
    base = settings.base_url
    sale = (
        f'{{"sale_id":"flash-{int(time.time())}","product_id":"{DEMO_PRODUCT_ID}",'
        '"units_offered":50,"per_buyer_limit":2,"starts_in_ms":10000,'
        '"duration_ms":300000,"payment_hold_ms":120000}'
    )
    print(
        "\n".join(
            [
                "",
                "livecommerce demo is ready:",
                f"  viewer page:     {base}/?room={room_id}",
                f"  host panel:      {base}/host.html?room={room_id}#{panel_secrets}",
                f"  host credential: {host_token}",
                f"  ledger:          {base}/ledger.html",
                f"  room API:        {base}/api/rooms/{room_id}",
                "",
                "start a flash sale (50 mugs, 2 per buyer, opens in 10 s):",
                f"  curl -X POST {base}/api/rooms/{room_id}/sales \\",
                f"    -H 'Authorization: Bearer {host_token}' -d '{sale}'",
                "then buy (a new key, signed orders over the room socket):",
                f"  python -m livecommerce buy --url {base} --room {room_id} --quantity 1",
                "",
            ]
        ),
        file=sys.stdout,
        flush=True,
    )


async def create_demo_merchant(orders: OrderPipeline, settings: Settings) -> KeyPair:
    """A merchant identity, a listed product with stock, and the demo room linked to it.
    Each step that the ledger already holds (a restart) is refused and skipped."""
    merchant = KeyPair(load_or_create_secret(settings.data_dir / "demo_merchant.key"))
    now_ms = orders.clock_ms()
    name = "Mugs & Co"
    signed_registration = merchant.sign(registration_bytes(merchant.identity_id, name, now_ms))
    listing = merchant.listing(
        DEMO_PRODUCT_ID,
        "Stoneware mug",
        1800,
        now_ms,
        description="Hand-thrown stoneware, 350 ml, dishwasher safe.",
        image_url=DEMO_PRODUCT_IMAGE,
    )
    stock = merchant.stock(f"demo-{now_ms}", DEMO_PRODUCT_ID, DEMO_STOCK_UNITS, now_ms)
    commands: list[Command] = [
        Register(merchant.identity_id, name, now_ms, signed_registration),
        ListProduct(**listing),
        LinkRoom(DEMO_ROOM_ID, merchant.identity_id),
    ]
    if orders.core.catalog.inventory_units(DEMO_PRODUCT_ID) < DEMO_STOCK_UNITS // 2:
        commands.append(AddStock(product_id=DEMO_PRODUCT_ID, **stock))
    for command in commands:
        outcome = await orders.run(command)
        refused = outcome.rejection
        skipped = ("already_registered", "product_exists", "room_linked")
        if refused is not None and refused[0] not in skipped:
            print(f"demo: {type(command).__name__} refused: {refused[1]}", file=sys.stderr)
    return merchant
