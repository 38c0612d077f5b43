"""static/js/sealed.js in a real browser (Debian's Chromium through Playwright), served by
the real app: Python seals shipping details with `seal_shipping`; the page opens them with
WebCrypto alone from the merchant's seed, checks the commitments, and refuses altered
boxes, another merchant's key and a low-order enc. The page also opens RFC 9180's own
vector A.1.1, and the merchant identity (identity.js) keeps a working X25519 key in
IndexedDB, imported or created, never extractable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright

from livecommerce.commerce.canonical import DOMAIN_SESSION, signing_bytes
from livecommerce.commerce.identity import b64url_encode, verify_signature
from livecommerce.commerce.privacy import (
    OpenedShipping,
    SealedShipping,
    open_shipping,
    seal_shipping,
)
from tests.browser import CHROMIUM_ARGS, require_chromium
from tests.livecommerce.commerce.helpers import Signer
from tests.livecommerce.commerce.rfc9180 import A_1_1
from tests.livecommerce.commerce.test_privacy import (
    GOOD_PLAINTEXT,
    LEGACY_BOXES,
    MALFORMED_PLAINTEXTS,
    seal_raw,
)
from tests.livecommerce.server import running_server

pytestmark = pytest.mark.browser

DETAILS = [
    {"name": "Ann Example", "street": "1 Quay Street", "city": "Cork"},
    {"name": "Zoë Ångström", "street": "Große Straße 5", "city": "Malmö"},
    {"name": "山田 太郎", "street": "千代田区千代田1-1", "city": "東京", "note": "🚚📦 置き配OK"},
    {"name": "محمد علي", "street": "شارع التحرير ١٢", "city": "القاهرة"},
    {"name": 'a "quoted" \\ name', "note": "one\ntwo\ttab \u0001 \u007f \u2028 \u2029 </script>"},
    # The limits: 12 fields of 200 characters, the last one outside the BMP (201 UTF-16 units).
    {f"field_{i}": "é" * 199 + "🚚" for i in range(12)},
]

OPEN_JS = """async ({ boxes, seed, otherSeed, legacy, vector, malformed, good }) => {
  const s = await import('/js/sealed.js');
  const b = await import('/js/b64.js');
  const hex = (bytes) => Array.from(bytes, (x) => x.toString(16).padStart(2, '0')).join('');
  const fromHex = (text) => new Uint8Array(text.match(/../g).map((x) => parseInt(x, 16)));
  const refusal = async (run) => {
    try { await run(); return 'opened'; } catch (error) {
      return error instanceof s.SealedError ? error.code : error.name;
    }
  };
  const key = await s.shippingKeyFromSeed(b.b64urlToBytes(seed));
  const opened = [];
  for (const box of boxes) {
    const { details, salt } = await s.openShipping(b.b64urlToBytes(box.sealed), key);
    opened.push({
      details,
      salt: b.bytesToB64url(salt),
      committed: await s.verifyCommitment(details, salt, box.commitment),
      otherDetails: await s.verifyCommitment({ ...details, name: 'x' }, salt, box.commitment),
      otherSalt: await s.verifyCommitment(details, new Uint8Array(32), box.commitment),
    });
  }
  const first = b.b64urlToBytes(boxes[0].sealed);
  const flipped = (at) => { const copy = first.slice(); copy[at] ^= 1; return copy; };
  const lowOrder = first.slice();
  lowOrder.fill(0, 1, 33);
  const refused = {
    tag: await refusal(() => s.openShipping(flipped(0), key)),
    enc: await refusal(() => s.openShipping(flipped(5), key)),
    ciphertext: await refusal(() => s.openShipping(flipped(40), key)),
    aeadTag: await refusal(() => s.openShipping(flipped(first.length - 1), key)),
    truncated: await refusal(() => s.openShipping(first.subarray(0, first.length - 1), key)),
    short: await refusal(() => s.openShipping(first.subarray(0, 40), key)),
    lowOrderEnc: await refusal(() => s.openShipping(lowOrder, key)),
    otherMerchant: await refusal(() => s.openShipping(first, b.b64urlToBytes(otherSeed))),
    legacy: await refusal(() => s.openShipping(b.b64urlToBytes(legacy), key)),
    tooLarge: await refusal(() => s.openShipping(new Uint8Array(8 * 1024 + 1).fill(1), key)),
  };
  const malformedCodes = [];
  for (const box of malformed) {
    malformedCodes.push(await refusal(() => s.openShipping(b.b64urlToBytes(box), key)));
  }
  const goodRaw = (await s.openShipping(b.b64urlToBytes(good), key)).details;
  const bySeed = await s.openShipping(first, b.b64urlToBytes(seed));
  const rfcKey = await s.importX25519PrivateKey(fromHex(vector.skRm));
  const rfcPlaintext = await s.openBase(
    rfcKey, fromHex(vector.enc), fromHex(vector.ct), fromHex(vector.info), fromHex(vector.aad));
  const rfcOtherAad = await refusal(() => s.openBase(
    rfcKey, fromHex(vector.enc), fromHex(vector.ct), fromHex(vector.info), new Uint8Array(0)));
  return {
    opened, refused, malformedCodes, goodRaw,
    bySeed: bySeed.details,
    publicKey: b.bytesToB64url(key.publicKey),
    extractable: key.privateKey.extractable,
    exported: await refusal(() => crypto.subtle.exportKey('pkcs8', key.privateKey)),
    rfcPublicKey: hex(rfcKey.publicKey),
    rfcPlaintext: hex(rfcPlaintext),
    rfcOtherAad,
  };
}"""

STORED_JS = """async () => (await import('/js/identity.js')).loadIdentity('merchant')
  .then((stored) => stored !== null)"""

IDENTITY_JS = """async (box) => {
  const id = await import('/js/identity.js');
  const s = await import('/js/sealed.js');
  const b = await import('/js/b64.js');
  const stored = await id.loadIdentity('merchant');  // what host.js imported, from IndexedDB
  const { details } = await s.openShipping(b.b64urlToBytes(box), stored.shippingKey);
  const made = await id.createIdentity('merchant-new', 'Max', { shippingKey: true });
  const viewer = await id.createIdentity('viewer', 'Ann');
  return {
    id: stored.id, details, extractable: stored.shippingKey.privateKey.extractable,
    madeId: made.id,
    madeSignature: await made.sign(
      'livecommerce/session/v1', { challenge: 'c', public_key: made.id }),
    viewerShippingKey: viewer.shippingKey,
  };
}"""

MADE_JS = """async (box) => {
  const id = await import('/js/identity.js');
  const s = await import('/js/sealed.js');
  const b = await import('/js/b64.js');
  const made = await id.loadIdentity('merchant-new');
  return (await s.openShipping(b.b64urlToBytes(box), made.shippingKey)).details;
}"""


@asynccontextmanager
async def page_on(tmp_path: Path) -> AsyncIterator[Page]:
    executable = require_chromium()
    async with running_server(tmp_path) as server, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(f"{server.http}/healthz")  # the app's origin: /js/ and IndexedDB
            yield page
            assert errors == []
        finally:
            await browser.close()


def sealed_to(details: dict[str, str], merchant_id: str) -> SealedShipping:
    sealed = seal_shipping(details, merchant_id)
    assert isinstance(sealed, SealedShipping), sealed
    return sealed


async def test_the_browser_opens_what_python_seals_and_refuses_the_rest(tmp_path: Path) -> None:
    merchant, other = Signer("merchant"), Signer("someone else")
    seed = b64url_encode(bytes(merchant.signing_key))
    boxes = [sealed_to(details, merchant.identity_id) for details in DETAILS]
    vector = {name: A_1_1[name] for name in ("skRm", "enc", "ct", "info", "aad")}
    async with page_on(tmp_path) as page:
        result: dict[str, Any] = await page.evaluate(
            OPEN_JS,
            {
                "boxes": [
                    {"sealed": b64url_encode(box.sealed), "commitment": box.commitment_hex}
                    for box in boxes
                ],
                "seed": seed,
                "otherSeed": b64url_encode(bytes(other.signing_key)),
                "legacy": LEGACY_BOXES[0],
                "vector": vector,
                "malformed": [
                    b64url_encode(seal_raw(merchant, raw)) for raw in MALFORMED_PLAINTEXTS
                ],
                "good": b64url_encode(seal_raw(merchant, GOOD_PLAINTEXT)),
            },
        )
    for box, details, opened in zip(boxes, DETAILS, result["opened"], strict=True):
        in_python = open_shipping(box.sealed, merchant.signing_key)
        assert isinstance(in_python, OpenedShipping)
        assert opened["details"] == details
        assert opened["salt"] == b64url_encode(in_python.salt)
        assert opened["committed"] is True
        assert opened["otherDetails"] is False
        assert opened["otherSalt"] is False
    # What an anonymous sender seals that seal_shipping would not write: refused, as in Python.
    assert result["malformedCodes"] == ["malformed"] * len(MALFORMED_PLAINTEXTS)
    assert result["goodRaw"] == {"name": "Ann"}
    assert result["bySeed"] == DETAILS[0]
    assert result["refused"] == {
        "tag": "old_format",
        "enc": "cannot_open",
        "ciphertext": "cannot_open",
        "aeadTag": "cannot_open",
        "truncated": "cannot_open",
        "short": "cannot_open",
        "lowOrderEnc": "cannot_open",
        "otherMerchant": "cannot_open",
        "legacy": "old_format",
        "tooLarge": "too_large",
    }
    # The page's X25519 public key is the one Python seals to; the private key stays inside.
    public_key = bytes(merchant.signing_key.verify_key.to_curve25519_public_key())
    assert result["publicKey"] == b64url_encode(public_key)
    assert result["extractable"] is False
    assert result["exported"] == "InvalidAccessError"
    assert result["rfcPublicKey"] == A_1_1["pkRm"]
    assert result["rfcPlaintext"] == A_1_1["pt"]
    assert result["rfcOtherAad"] == "cannot_open"


async def test_the_merchant_identity_keeps_its_shipping_key(tmp_path: Path) -> None:
    merchant = Signer("merchant")
    box = sealed_to(DETAILS[2], merchant.identity_id)
    seed = b64url_encode(bytes(merchant.signing_key))
    async with page_on(tmp_path) as page:
        # The demo's link: the host panel imports the merchant's seed from the fragment.
        await page.goto(page.url.replace("/healthz", f"/host.html#merchant_key={seed}"))
        for _ in range(200):
            if await page.evaluate(STORED_JS):
                break
            await asyncio.sleep(0.025)
        result: dict[str, Any] = await page.evaluate(IDENTITY_JS, b64url_encode(box.sealed))
        assert result["id"] == merchant.identity_id
        assert result["details"] == DETAILS[2]
        assert result["extractable"] is False
        assert result["viewerShippingKey"] is None  # a viewer's key is made as before
        # A merchant key made in the page: its Ed25519 half signs, its X25519 half opens.
        made_id = result["madeId"]
        message = signing_bytes(DOMAIN_SESSION, {"challenge": "c", "public_key": made_id})
        assert verify_signature(made_id, message, result["madeSignature"]) is None
        made_box = sealed_to(DETAILS[1], made_id)
        assert await page.evaluate(MADE_JS, b64url_encode(made_box.sealed)) == DETAILS[1]
