"""The HTTP surface under /ledger: checkpoint, vkey, tiles, proofs and blocks."""

from __future__ import annotations

from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from ledger import Ledger, LedgerSettings, encode_entry
from ledger.http import create_app as create_ledger_app
from ledger.merkle import leaf_hash
from ledger.note import Verifier
from ledger.receipt import verify_receipt
from ledger.tiles import decode_bundle

SETTINGS = LedgerSettings(origin="http.example/log", checkpoint_interval_ms=20)


async def test_endpoints(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path, SETTINGS)
    entries = [encode_entry("order/v1", {"n": i}) for i in range(300)]
    await ledger.append_many(entries)
    await ledger.wait_covered(299)
    app = Starlette(routes=[Mount("/ledger", create_ledger_app(ledger))])
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/ledger/checkpoint")
            assert response.content == ledger.latest_checkpoint
            assert response.headers["cache-control"] == "no-cache"
            vkey = (await client.get("/ledger/vkey")).text.strip()
            verifier = Verifier.parse(vkey)

            full = await client.get("/ledger/tile/entries/000")
            assert decode_bundle(full.content) == entries[:256]
            assert "immutable" in full.headers["cache-control"]
            partial = await client.get("/ledger/tile/entries/001.p/44")
            assert decode_bundle(partial.content) == entries[256:]
            assert "immutable" not in partial.headers["cache-control"]
            hashes = await client.get("/ledger/tile/0/000")
            assert hashes.content[:32] == leaf_hash(entries[0])
            assert len(hashes.content) == 256 * 32
            level_one = await client.get("/ledger/tile/1/000.p/1")
            assert len(level_one.content) == 32
            for missing in ("tile/0/001", "tile/entries/001.p/45", "tile/2/000.p/1", "tile/x"):
                assert (await client.get(f"/ledger/{missing}")).status_code == 404

            receipt = await client.get("/ledger/proof/123")
            assert verify_receipt(receipt.content, verifier, entries[123]).index == 123
            assert (await client.get("/ledger/proof/300")).status_code == 404
            assert (await client.get("/ledger/proof/01")).status_code == 404

            latest = int((await client.get("/ledger/blocks/latest")).text)
            assert latest == ledger.block_height
            blocks = decode_bundle((await client.get("/ledger/blocks/0")).content)
            assert len(blocks) == 2 * (latest + 1)
            assert blocks[-1] == ledger.latest_checkpoint
            assert (await client.get("/ledger/blocks/1")).status_code == 404
    finally:
        await ledger.close()
