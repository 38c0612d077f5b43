from __future__ import annotations

import dataclasses

import pytest

from livecommerce.commerce.catalog import Catalog, InventoryChanged, ProductListed
from livecommerce.commerce.identity import IdentityRegistry, Registered
from livecommerce.commerce.results import Reason, Rejected
from tests.livecommerce.commerce.helpers import (
    NOW_MS,
    Signer,
    add_stock_command,
    list_product_command,
    register_command,
)


@pytest.fixture
def catalog() -> tuple[Catalog, Signer]:
    registry = IdentityRegistry()
    merchant = Signer("merchant")
    assert isinstance(registry.register(register_command(merchant, "Shop"), NOW_MS), Registered)
    return Catalog(registry), merchant


def test_list_and_restock(catalog: tuple[Catalog, Signer]) -> None:
    shop, merchant = catalog
    listed = shop.list_product(list_product_command(merchant), NOW_MS)
    assert isinstance(listed, ProductListed)
    entry_type, fields = listed.to_entry()
    assert entry_type == "product/v1"
    assert fields["price_cents"] == 1500
    added = shop.add_stock(add_stock_command(merchant, 50), NOW_MS)
    assert isinstance(added, InventoryChanged)
    assert added.inventory_units == 50
    assert shop.inventory_units("mug") == 50
    again = shop.add_stock(add_stock_command(merchant, 50), NOW_MS)
    assert isinstance(again, Rejected)
    assert again.reason is Reason.DUPLICATE_CONFLICT
    assert shop.inventory_units("mug") == 50
    taken = shop.take_for_sale("mug", 60, "s1", NOW_MS)
    assert isinstance(taken, Rejected)
    assert taken.reason is Reason.INSUFFICIENT_STOCK


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"title": ""}, Reason.BAD_FIELD),
        ({"title": "x" * 121}, Reason.BAD_FIELD),
        ({"description": "x" * 2001}, Reason.BAD_FIELD),
        ({"price_cents": 0}, Reason.BAD_FIELD),
        ({"price_cents": 10**9 + 1}, Reason.BAD_FIELD),
        ({"price_cents": 12.5}, Reason.BAD_FIELD),
        ({"currency": "eur"}, Reason.BAD_FIELD),
        ({"currency": "EURO"}, Reason.BAD_FIELD),
        ({"sku": "has space"}, Reason.BAD_FIELD),
        ({"image_url": "javascript:alert(1)"}, Reason.BAD_FIELD),
        ({"image_url": "http://example.com/a.png"}, Reason.BAD_FIELD),
        ({"product_id": "../x"}, Reason.BAD_FIELD),
        ({"time_ms": NOW_MS - 10**7}, Reason.STALE),
        ({"signature": "A" * 86}, Reason.BAD_SIGNATURE),
    ],
)
def test_listing_refusals(
    catalog: tuple[Catalog, Signer], overrides: dict[str, object], reason: Reason
) -> None:
    shop, merchant = catalog
    refused = shop.list_product(list_product_command(merchant, **overrides), NOW_MS)
    assert isinstance(refused, Rejected)
    assert refused.reason is reason
    assert shop.get("mug") is None


def test_https_image_and_limits_at_edges(catalog: tuple[Catalog, Signer]) -> None:
    shop, merchant = catalog
    command = list_product_command(
        merchant,
        title="x" * 120,
        description="y" * 2000,
        price_cents=10**9,
        image_url="https://cdn.example.com/a/b.png?v=2",
    )
    assert isinstance(shop.list_product(command, NOW_MS), ProductListed)
    duplicate = shop.list_product(command, NOW_MS)
    assert isinstance(duplicate, Rejected)
    assert duplicate.reason is Reason.PRODUCT_EXISTS


def test_only_the_merchant_restocks_and_signature_covers_quantity(
    catalog: tuple[Catalog, Signer],
) -> None:
    shop, merchant = catalog
    assert isinstance(shop.list_product(list_product_command(merchant), NOW_MS), ProductListed)
    stranger = Signer("stranger")
    assert isinstance(
        shop.identities.register(register_command(stranger, "Other"), NOW_MS), Registered
    )
    not_theirs = shop.add_stock(add_stock_command(stranger, 5), NOW_MS)
    assert isinstance(not_theirs, Rejected)
    assert not_theirs.reason is Reason.NOT_MERCHANT
    altered = dataclasses.replace(add_stock_command(merchant, 5), quantity=500)
    refused = shop.add_stock(altered, NOW_MS)
    assert isinstance(refused, Rejected)
    assert refused.reason is Reason.BAD_SIGNATURE
    for quantity in (0, -1, 1_000_001):
        bad = shop.add_stock(
            add_stock_command(merchant, quantity, change_id=f"q{quantity}"), NOW_MS
        )
        assert isinstance(bad, Rejected)
        assert bad.reason is Reason.BAD_QUANTITY
    unknown = shop.add_stock(add_stock_command(merchant, 5, product_id="nope"), NOW_MS)
    assert isinstance(unknown, Rejected)
    assert unknown.reason is Reason.UNKNOWN_PRODUCT
    assert shop.inventory_units("mug") == 0
