"""A small blocking HTTP client for set-up and the check (standard library only, so it
works in and out of gevent), with errors that say what went wrong and where."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

TIMEOUT_S = 30.0


class ApiError(Exception):
    """The server could not be reached, or answered something else than expected."""


def _open(method: str, url: str, body: Any = None, token: str = "") -> tuple[int, bytes]:
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except urllib.error.URLError as error:
        raise ApiError(f"cannot reach {url}: {error.reason}") from None
    except (OSError, ValueError) as error:  # timeouts, resets, a URL that is not one
        raise ApiError(f"cannot reach {url}: {error}") from None


def call(
    method: str, url: str, body: Any = None, token: str = "", expect: tuple[int, ...] = (200,)
) -> Any:
    """The decoded JSON answer, or ApiError naming the status and the server's message."""
    status, data = _open(method, url, body, token)
    if status not in expect:
        detail = data.decode(errors="replace")[:300]
        try:
            answer = json.loads(data)
            if isinstance(answer, dict) and "error" in answer:
                detail = f"{answer['error']}: {answer.get('message', '')}"
        except ValueError:
            pass
        raise ApiError(f"{method} {url}: HTTP {status} {detail}")
    try:
        return json.loads(data)
    except ValueError:
        raise ApiError(f"{method} {url}: the answer is not JSON: {data[:200]!r}") from None


def get_bytes(url: str) -> bytes:
    status, data = _open("GET", url)
    if status != 200:
        raise ApiError(f"GET {url}: HTTP {status} {data[:200].decode(errors='replace')}")
    return data
