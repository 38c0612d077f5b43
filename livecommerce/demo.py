"""`--demo`: a room, a host and a pinned product, and the URLs to open."""

from __future__ import annotations

import sys

from starlette.applications import Starlette

from livecommerce.hub import messages as m
from livecommerce.hub.hub import Hub
from livecommerce.settings import Settings

DEMO_ROOM_ID = "demo"


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
        product_id="mug-1", title="Stoneware mug", price_cents=1800, currency="EUR"
    )
    await hub.host_command(room_id, host_token, m.HostPin(product=product))
    await hub.host_command(room_id, host_token, m.HostLive(live=True))
    base = settings.base_url
    print(
        "\n".join(
            [
                "",
                "livecommerce demo is ready:",
                f"  viewer page:     {base}/?room={room_id}",
                f"  host panel:      {base}/host.html?room={room_id}",
                f"  host credential: {host_token}",
                f"  room API:        {base}/api/rooms/{room_id}",
                "",
            ]
        ),
        file=sys.stdout,
        flush=True,
    )
