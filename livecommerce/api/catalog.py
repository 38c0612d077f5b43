"""The catalog: list a product, add stock, read products."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from livecommerce.api.common import (
    Short,
    Text,
    body_of,
    endpoint,
    error,
    rejected,
    run,
    service_of,
)
from livecommerce.commerce.catalog import AddStock, Catalog, ListProduct, Product

MERCHANT_PRODUCTS_MAX = 500


class ListProductBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    product_id: Short
    merchant_id: Short
    title: Text
    description: Text
    price_cents: int
    currency: Short
    sku: Short
    image_url: Annotated[str, msgspec.Meta(max_length=600)]
    time_ms: int
    signature: Short


class AddStockBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    change_id: Short
    merchant_id: Short
    quantity: int
    time_ms: int
    signature: Short


@endpoint
async def list_product(request: Request) -> Response:
    body = await body_of(request, ListProductBody)
    command = ListProduct(**msgspec.structs.asdict(body))
    outcome = await run(request, command)
    refusal = rejected(outcome)
    if refusal is not None:
        return refusal
    return JSONResponse(
        {"product_id": body.product_id, "ledger_index": outcome.index_of("ProductListed")},
        status_code=201,
    )


@endpoint
async def add_stock(request: Request) -> Response:
    body = await body_of(request, AddStockBody)
    product_id = request.path_params["product_id"]
    command = AddStock(
        body.change_id, product_id, body.merchant_id, body.quantity, body.time_ms, body.signature
    )
    outcome = await run(request, command)
    refusal = rejected(outcome)
    if refusal is not None:
        return refusal
    catalog = service_of(request).core.catalog
    return JSONResponse(
        {
            "product_id": product_id,
            "inventory_units": catalog.inventory_units(product_id),
            "ledger_index": outcome.index_of("InventoryChanged"),
        },
        status_code=201,
    )


def _product_view(catalog: Catalog, product: Product) -> dict[str, Any]:
    view: dict[str, Any] = asdict(product)
    view["inventory_units"] = catalog.inventory_units(product.product_id)
    return view


@endpoint
async def get_product(request: Request) -> Response:
    catalog = service_of(request).core.catalog
    product = catalog.get(request.path_params["product_id"])
    if product is None:
        return error(404, "unknown_product", "no such product")
    return JSONResponse(_product_view(catalog, product))


@endpoint
async def merchant_products(request: Request) -> Response:
    catalog = service_of(request).core.catalog
    products = catalog.of_merchant(request.path_params["merchant_id"], MERCHANT_PRODUCTS_MAX)
    return JSONResponse({"products": [_product_view(catalog, p) for p in products]})


def routes() -> list[BaseRoute]:
    return [
        Route("/api/products", list_product, methods=["POST"]),
        Route("/api/products/{product_id}", get_product, methods=["GET"]),
        Route("/api/products/{product_id}/stock", add_stock, methods=["POST"]),
        Route("/api/merchants/{merchant_id}/products", merchant_products, methods=["GET"]),
    ]
