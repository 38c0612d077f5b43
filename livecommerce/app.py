"""The one app factory: `create_app(settings)` wires the adapters around the core."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from livecommerce import __version__
from livecommerce.settings import Settings


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield

    routes = [
        Route("/healthz", healthz),
        Mount("/", app=StaticFiles(directory=settings.static_dir, html=True), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.settings = settings
    return app
