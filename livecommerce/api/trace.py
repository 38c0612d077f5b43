"""Traceability over HTTP (docs/traceability.md): signed trace commands in; a unit's
history with the ledger index of every event, its verdict, EPCIS 2.0 exports, the QR code
a merchant prints, and the public trace page at `/t/<unit>` and at the unit's GS1 Digital
Link path `/01/<gtin>/21/<serial>`.

Writes are signed by the key that may make them (the core checks the role); reads are
public, as the ledger is. Opening the trace page counts a scan of the code (off the
ledger, in this process: `ScanCounts`)."""

from __future__ import annotations

import hashlib
import io
from typing import Annotated, Any

import msgspec
import segno
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from livecommerce.api.common import (
    Short,
    body_of,
    endpoint,
    error,
    rejected,
    run,
    service_of,
)
from livecommerce.commerce.canonical import CanonicalError
from livecommerce.commerce.gs1 import GTIN, SERIAL, digital_link
from livecommerce.commerce.trace import (
    DOCUMENT_CHARS_MAX,
    Kind,
    ScanCounts,
    TraceBook,
    TraceCommand,
    lot_epcis,
    merchant_flags,
    unit_epcis,
    unit_view,
)

EPCIS_MEDIA_TYPE = "application/ld+json"
UNITS_OF_ORDER_MAX = 100


class TraceBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`signed`: exactly the fields signed under `livecommerce/trace/v1` (their `kind`
    names the route); `document`: an import's EPCIS document, as text."""

    signed: dict[str, Any]
    signature: Short
    document: Annotated[str, msgspec.Meta(max_length=DOCUMENT_CHARS_MAX)] = ""


def book_of(request: Request) -> TraceBook:
    return service_of(request).core.trace


def scans_of(request: Request) -> ScanCounts:
    scans: ScanCounts | None = getattr(request.app.state, "trace_scans", None)
    if scans is None:
        scans = request.app.state.trace_scans = ScanCounts()
    return scans


def origin_of(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _digest(command: TraceCommand) -> str | None:
    try:
        return hashlib.sha256(command.signing_bytes()).hexdigest()
    except CanonicalError:
        return None


def _taker(kind: Kind) -> Any:
    async def take(request: Request) -> Response:
        body = await body_of(request, TraceBody)
        if body.signed.get("kind") != kind:
            return error(400, "invalid_request", f"this route takes signed fields of kind {kind}")
        command = TraceCommand(dict(body.signed), body.signature, body.document)
        outcome = await run(request, command)
        refusal = rejected(outcome)
        if refusal is not None:
            return refusal
        digest = _digest(command)
        record = book_of(request).record_of_digest(digest) if digest else None
        index = outcome.index_of("TraceRecorded")
        answer: dict[str, Any] = {
            "kind": str(kind),
            "digest": digest,
            "ledger_index": index if index is not None else (record.ledger_index if record else -1),
            "repeated": index is None,
        }
        if kind is Kind.UNITS:
            book = book_of(request)
            gtin = body.signed.get("gtin")
            serials = body.signed.get("serials")
            known = book.gtin_of(gtin) if isinstance(gtin, str) else None
            if known is not None and isinstance(serials, list):
                origin = origin_of(request)
                answer["units"] = [
                    {
                        "unit": book.resolve(f"01{gtin}21{serial}"),
                        "digital_link": digital_link(origin, str(gtin), str(serial)),
                    }
                    for serial in serials
                ]
        return JSONResponse(answer, status_code=200 if index is None else 201)

    take.__name__ = f"take_{kind}"
    return endpoint(take)


@endpoint
async def unit_history(request: Request) -> Response:
    """The unit's product, lot, every event (with its ledger index) and the verdict. An
    unknown code is answered too (200): its verdict is the point."""
    code = request.path_params["unit"]
    book = book_of(request)
    return JSONResponse(unit_view(book, code, scans_of(request).of(book.resolve(code))))


@endpoint
async def unit_export(request: Request) -> Response:
    document = unit_epcis(
        book_of(request), request.path_params["unit"], origin_of(request), _now_ms(request)
    )
    if document is None:
        return error(404, "unknown_unit", "no such unit")
    return JSONResponse(document, media_type=EPCIS_MEDIA_TYPE)


@endpoint
async def lot_export(request: Request) -> Response:
    document = lot_epcis(
        book_of(request), request.path_params["lot"], origin_of(request), _now_ms(request)
    )
    if document is None:
        return error(404, "unknown_lot", "no such lot (its urn:epc:class:lgtin:… URI)")
    return JSONResponse(document, media_type=EPCIS_MEDIA_TYPE)


def _now_ms(request: Request) -> int:
    return service_of(request).clock_ms()


@endpoint
async def unit_qr(request: Request) -> Response:
    """The QR code to print on the unit: its GS1 Digital Link on this server, as SVG."""
    book = book_of(request)
    unit = book.units.get(book.resolve(request.path_params["unit"]))
    if unit is None:
        return error(404, "unknown_unit", "no such unit")
    link = digital_link(origin_of(request), unit.gtin, unit.serial)
    svg = io.BytesIO()
    # A standalone SVG document (with its namespace), four pixels a module, the quiet zone
    # of four modules QR codes need around them (ISO/IEC 18004).
    segno.make_qr(link, error="m").save(svg, kind="svg", scale=4, border=4, title=link)
    headers = {"Link": f'<{link}>; rel="item"'}
    return Response(svg.getvalue(), media_type="image/svg+xml", headers=headers)


@endpoint
async def order_units(request: Request) -> Response:
    buyer_id = request.query_params.get("buyer_id", "")
    units = book_of(request).units_of_order(buyer_id, request.path_params["order_id"])
    book = book_of(request)
    return JSONResponse(
        {
            "order_id": request.path_params["order_id"],
            "buyer_id": buyer_id,
            "units": [
                {
                    "unit": urn,
                    "trace_page": f"/01/{book.units[urn].gtin}/21/{book.units[urn].serial}",
                }
                for urn in units[:UNITS_OF_ORDER_MAX]
            ],
        }
    )


@endpoint
async def flags(request: Request) -> Response:
    merchant_id = request.path_params["merchant_id"]
    return JSONResponse(merchant_flags(book_of(request), scans_of(request), merchant_id))


@endpoint
async def product_trace(request: Request) -> Response:
    """Whether a product is traceable (it has a lot), and a sample unit's trace page."""
    book = book_of(request)
    lots = book.lots_of_product(request.path_params["product_id"])
    sample = None
    for lot in lots:
        units = book.units_of_lot(lot.urn, 1)
        if units:
            sample = units[0]
            break
    return JSONResponse(
        {
            "product_id": request.path_params["product_id"],
            "traceable": bool(lots),
            "lots": [lot.urn for lot in lots[:20]],
            "sample_unit": sample.urn if sample else None,
            "sample_page": f"/01/{sample.gtin}/21/{sample.serial}" if sample else None,
        }
    )


def _page(request: Request, code: str) -> Response:
    book = book_of(request)
    urn = book.resolve(code)
    known = urn in book.units
    scans_of(request).count(urn, None if known else book.merchant_of_code(urn))
    page = request.app.state.settings.static_dir / "trace.html"
    return FileResponse(page, media_type="text/html", headers={"Cache-Control": "no-store"})


@endpoint
async def trace_page(request: Request) -> Response:
    return _page(request, request.path_params["unit"])


@endpoint
async def digital_link_page(request: Request) -> Response:
    gtin, serial = request.path_params["gtin"], request.path_params["serial"]
    if GTIN.fullmatch(gtin) is None or SERIAL.fullmatch(serial) is None:
        return PlainTextResponse("not a GS1 Digital Link of a unit\n", status_code=404)
    return _page(request, f"01{gtin}21{serial}")


def routes() -> list[BaseRoute]:
    return [
        Route("/api/trace/actors", _taker(Kind.ACTOR), methods=["POST"]),
        Route("/api/trace/lots", _taker(Kind.LOT), methods=["POST"]),
        Route("/api/trace/units", _taker(Kind.UNITS), methods=["POST"]),
        Route("/api/trace/events", _taker(Kind.EVENT), methods=["POST"]),
        Route("/api/trace/imports", _taker(Kind.IMPORT), methods=["POST"]),
        Route("/api/trace/units/{unit}", unit_history, methods=["GET"]),
        Route("/api/trace/units/{unit}/epcis", unit_export, methods=["GET"]),
        Route("/api/trace/units/{unit}/qr.svg", unit_qr, methods=["GET"]),
        Route("/api/trace/lots/{lot}/epcis", lot_export, methods=["GET"]),
        Route("/api/trace/orders/{order_id}", order_units, methods=["GET"]),
        Route("/api/trace/merchants/{merchant_id}/flags", flags, methods=["GET"]),
        Route("/api/trace/products/{product_id}", product_trace, methods=["GET"]),
        Route("/t/{unit}", trace_page, methods=["GET"]),
        Route("/01/{gtin}/21/{serial}", digital_link_page, methods=["GET"]),
    ]
