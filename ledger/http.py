"""Serving the log under a mount point (the server mounts it at /ledger).

    checkpoint                      latest signed checkpoint (tlog-checkpoint)
    tile/<L>/<N>[.p/<W>]            hash tiles (tlog-tiles)
    tile/entries/<N>[.p/<W>]        entry bundles (tlog-tiles)
    vkey                            the verifier key, signed-note format
    proof/<index>                   a tlog-proof receipt against the latest checkpoint
    blocks/latest                   the latest block height, decimal
    blocks/<N>                      blocks 256N..: per block a uint16-length-prefixed block
                                    note then checkpoint note; complete groups of 256 are
                                    immutable

Tiles are immutable once full, so they are served cacheable forever (tlog-tiles).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ledger.checkpoint import CheckpointError, parse_decimal
from ledger.tiles import TILE_WIDTH, TilePathError, encode_bundle, parse_tile_path

if TYPE_CHECKING:
    from ledger.log import Ledger

IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "no-cache"
BLOCKS_PER_BUNDLE = 256


def _not_found(reason: str) -> Response:
    return PlainTextResponse(reason + "\n", status_code=404, headers={"Cache-Control": SHORT})


def _index(text: str) -> int | None:
    try:
        return parse_decimal(text, "index")
    except CheckpointError:
        return None


def create_app(ledger: Ledger) -> Starlette:
    async def checkpoint(request: Request) -> Response:
        return Response(
            ledger.latest_checkpoint,
            media_type="text/plain; charset=utf-8",
            headers={"Cache-Control": SHORT},
        )

    async def vkey(request: Request) -> Response:
        return PlainTextResponse(ledger.verifier_key + "\n", headers={"Cache-Control": SHORT})

    async def tile(request: Request) -> Response:
        try:
            parsed = parse_tile_path("tile/" + request.path_params["path"])
        except TilePathError as error:
            return _not_found(f"bad tile path: {error}")
        data = ledger.tile(parsed)
        if data is None:
            return _not_found("tile is beyond the latest checkpoint")
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"Cache-Control": IMMUTABLE if parsed.is_full else SHORT},
        )

    async def proof(request: Request) -> Response:
        index = _index(request.path_params["index"])
        if index is None:
            return _not_found("index must be a decimal")
        try:
            body = ledger.proof(index)
        except IndexError as error:
            return _not_found(str(error))
        return Response(body, media_type="text/plain; charset=utf-8")

    async def blocks_latest(request: Request) -> Response:
        return PlainTextResponse(f"{ledger.block_height}\n", headers={"Cache-Control": SHORT})

    async def blocks(request: Request) -> Response:
        group = _index(request.path_params["group"])
        if group is None:
            return _not_found("block group must be a decimal")
        start = group * BLOCKS_PER_BUNDLE
        end = min(start + BLOCKS_PER_BUNDLE, ledger.block_height + 1)
        if start >= end:
            return _not_found("no such block group")
        items: list[bytes] = []
        for height in range(start, end):
            items.extend(ledger.block_record(height))
        full = end - start == BLOCKS_PER_BUNDLE
        return Response(
            encode_bundle(items),
            media_type="application/octet-stream",
            headers={"Cache-Control": IMMUTABLE if full else SHORT},
        )

    assert TILE_WIDTH == BLOCKS_PER_BUNDLE
    return Starlette(
        routes=[
            Route("/checkpoint", checkpoint),
            Route("/vkey", vkey),
            Route("/tile/{path:path}", tile),
            Route("/proof/{index}", proof),
            Route("/blocks/latest", blocks_latest),
            Route("/blocks/{group}", blocks),
        ]
    )
