"""The OpenAPI document at /openapi.json: every route the app serves is in it, nothing else
is, and it is a valid OpenAPI 3.1 document; routes answer methods they do not take with
405 and their `Allow`, not with the static files' answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from livecommerce.api.openapi import openapi_path
from tests.livecommerce.server import running_server

Json = dict[str, Any]


def served(routes: list[BaseRoute], prefix: str = "") -> tuple[set[tuple[str, str]], set[str]]:
    """(method, path) of every HTTP route, and the WebSocket paths, mounted apps included."""
    http: set[tuple[str, str]] = set()
    sockets: set[str] = set()
    for route in routes:
        if isinstance(route, Route):
            # Starlette adds HEAD to every GET route by itself.
            for method in (route.methods or set()) - {"HEAD"}:
                http.add((method, openapi_path(prefix + route.path)))
        elif isinstance(route, WebSocketRoute):
            sockets.add(openapi_path(prefix + route.path))
        elif isinstance(route, Mount):
            inner = getattr(route.app, "routes", None)
            assert inner is not None, f"the mount at {route.path} has no routes to list"
            more_http, more_sockets = served(inner, prefix + route.path)
            http |= more_http
            sockets |= more_sockets
        else:
            raise AssertionError(f"a route of an unknown kind: {route!r}")
    return http, sockets


async def test_every_route_of_the_app_is_in_the_document_and_nothing_else(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        response = await client.get(f"{server.http}/openapi.json")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        document: Json = response.json()
        app = server.app
        # The ledger's routes are made when it opens (the lifespan); the app forwards
        # /ledger to them.
        routes = [r for r in app.routes if not (isinstance(r, Mount) and r.path == "/ledger")]
        http, sockets = served(routes)
        ledger_http, _ = served(app.state.ledger_app.routes, "/ledger")
        listed = {
            (method.upper(), path)
            for path, operations in document["paths"].items()
            for method in operations
        }
        assert listed == http | ledger_http
        assert set(document["x-websockets"]) == sockets
        assert document["openapi"].startswith("3.1")


def test_the_document_is_valid_openapi_and_its_bodies_resolve() -> None:
    import schemathesis

    from livecommerce.api.openapi import document

    schema = schemathesis.openapi.from_dict(document())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(item) for item in document()["paths"].values())
    for operation in operations:
        # Every error answer is the one error shape, or a documented result object.
        for status, response in operation.definition.raw["responses"].items():
            assert response["description"], (operation.label, status)


async def test_a_route_answers_a_method_it_does_not_take_with_405_and_allow(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server, httpx.AsyncClient() as client:
        for method, path, allowed in [
            ("GET", "/api/orders", "POST"),
            ("OPTIONS", "/api/rooms", "POST"),
            ("DELETE", "/api/rooms/demo", "GET, HEAD"),
            ("PUT", "/whip/demo", "POST"),
        ]:
            response = await client.request(method, f"{server.http}{path}")
            assert response.status_code == 405, (method, path, response.status_code)
            # Starlette lists the methods from a set: in no particular order.
            allow = {name.strip() for name in response.headers["allow"].split(",")}
            assert allow == set(allowed.split(", ")), (method, path, allow)
        # Static files are still served, and an unknown path is still a 404.
        assert (await client.get(f"{server.http}/")).status_code == 200
        assert (await client.get(f"{server.http}/no-such-page")).status_code == 404
