"""Request bodies read with a limit: refused as soon as they are known to be too large.

Starlette's `request.body()` reads the whole body into memory, however large, before the
endpoint can look at its size; so did every endpoint here, checking the length after. A
client declaring 50 MB was read to the end. `read_body` refuses a declared
`Content-Length` over the limit before reading a byte, and a body without one (chunked) as
soon as what arrived passes it, and `too_large` answers 413 and closes the connection.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse


async def read_body(request: Request, bytes_max: int) -> bytes | None:
    """The body, or None when it is over `bytes_max` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > bytes_max):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > bytes_max:
            return None
    return bytes(body)


def too_large(bytes_max: int) -> JSONResponse:
    """413, and the connection closes after it (RFC 9110 §15.5.14): without `Connection:
    close` uvicorn would go on reading, and discarding, the rest of the body."""
    return JSONResponse(
        {"error": "too_large", "message": f"request bodies are at most {bytes_max} bytes"},
        status_code=413,
        headers={"Connection": "close"},
    )
