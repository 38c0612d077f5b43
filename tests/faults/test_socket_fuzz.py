"""Hypothesis against the room socket of a real server, over real sockets: every client
message type, in frames it must refuse, each answered by a documented error or close code,
and the room, the sale, the stock, the ledger and the moderation lists unchanged after.

Three kinds of frames:
- schema-invalid: a valid message of each type (with the real ids, the real host credential
  and the buyer's real session token) with one to three members made wrong from the type's
  own JSON Schema (msgspec's, the one /openapi.json publishes): a wrong JSON type, a number
  out of range (huge and negative too), a string too long or too short or off its pattern,
  a list too long, a nested object made wrong, a missing or an extra member, a changed
  `type`. The server must answer `invalid_message` (`unknown_type` for a changed `type`),
  on a plain socket and on one that is the host's: decoding comes first, so not one of
  these can reach the room, and a host socket proves it (a valid host.end/v1 would end it);
- well-typed junk for the messages whose content the server checks itself: orders (huge,
  negative, off-by-one numbers, real and made-up ids, no valid signature), payments
  (made-up and altered tokens), host credentials, comments that clean to nothing or to too
  much. Each gets its own refusal (`order.result/v1` rejected, `pay.result/v1` refused,
  `error/v1`) with a documented code;
- frames the socket itself refuses, each on a fresh connection: text frames with broken
  UTF-8 (1007), binary frames (1003), 1 MB frames, whole or in fragments (1009), text that
  is not JSON (`malformed_json`, the connection stays).

Hypothesis runs in a worker thread with the websockets sync client while the server runs
on the test's event loop; its database is off and it has no deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from livecommerce import protocol as m
from tests.faults.world import World, differences, observe, populated
from tests.livecommerce.pipeline.flows import now_ms
from tests.livecommerce.server import running_server

Json = dict[str, Any]

EXAMPLES_PER_TYPE = 60
EXAMPLES_PER_JUNK_KIND = 50
EXAMPLES_PER_FRAME_KIND = 25
# The server closes a socket that sends more than 60 frames in a burst (1008); a fresh one
# is opened before that.
FRAMES_PER_CONNECTION = 40
ANSWER_TIMEOUT_S = 5
MEGABYTE = 1 << 20
FRAME_BYTES_MAX = 16 * 1024  # the server's frame_bytes_max

# The codes docs/protocol.md lists ("Errors" and "Buying").
ERROR_CODES = {
    "malformed_json",
    "unknown_type",
    "invalid_message",
    "empty_comment",
    "comment_too_long",
    "bad_name",
    "rate_limited",
    "slow_mode",
    "blocked_word",
    "muted",
    "banned",
    "room_ended",
    "not_host",
    "bad_credential",
    "too_many_failures",
    "unavailable",
    "busy",
    "no_poll",
    "poll_closed",
    "bad_option",
    "already_answered",
    "poll_open",
    "poll_exists",
    "bad_poll",
}
# What a well-typed answer gets in a room with no poll open (docs/protocol.md, "Polls").
POLL_ANSWER_CODES = {"no_poll", "poll_closed", "bad_option", "already_answered"}
ORDER_REASONS = {
    "bad_order_id",
    "bad_quantity",
    "bad_field",
    "unknown_identity",
    "bad_signature",
    "duplicate_conflict",
    "stale",
    "unknown_sale",
    "sale_not_open",
    "price_changed",
    "limit_reached",
    "sold_out",
    "capacity",
    "stock_unavailable",
    "busy",
    "unavailable",
}
PAY_REASONS = {"unknown_order", "order_expired", "bad_token", "token_expired", "bad_field"}
# docs/commerce.md, "Auctions": the refusals of a bid.
BID_REASONS = {
    "bad_field", "bad_amount", "bad_signature", "unknown_identity", "unknown_auction", "stale",
    "bid_too_low", "auction_closed", "banned", "capacity", "busy", "unavailable",
}  # fmt: skip
COMMENT_CODES = {"empty_comment", "comment_too_long", "bad_name", "rate_limited", "slow_mode"}
COMMENT_CODES |= {"blocked_word"}

FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

# The client messages' JSON Schemas, by tag.
_REFS, COMPONENTS = msgspec.json.schema_components([m.ClientMessage])
SCHEMAS: dict[str, Json] = {
    schema["properties"]["type"]["enum"][0]: schema
    for schema in COMPONENTS.values()
    if "type" in schema.get("properties", {})
}
TAGS = sorted(SCHEMAS)
HOST_TAGS = [tag for tag in TAGS if tag.startswith("host.") and tag != "host.auth/v1"]

# Invalid values, from a member's JSON Schema.

ANY_JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
VALUES_OF_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "integer": st.integers(min_value=-(2**70), max_value=2**70),
    # Not whole: msgspec refuses 1.0 for an int too, but the test need not rely on it.
    "number": st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()),
    "string": st.text(max_size=12),
    "array": st.lists(st.integers(), max_size=3),
    "object": st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
}


def resolve(schema: Json) -> Json:
    reference = schema.get("$ref")
    if reference is None:
        return schema
    resolved: Json = COMPONENTS[reference.rsplit("/", 1)[-1]]
    return resolved


def json_types(schema: Json) -> set[str]:
    schema = resolve(schema)
    if "anyOf" in schema:
        return set().union(*(json_types(option) for option in schema["anyOf"]))
    if "enum" in schema:
        return {"string"}
    kind = schema["type"]
    return {"integer", "number"} if kind == "number" else {kind}


def invalid_for_every_option(schema: Json) -> st.SearchStrategy[Any]:
    """A value no option of `schema` accepts: of a type none takes, or an object that the
    one object option refuses."""
    schema = resolve(schema)
    allowed = json_types(schema)
    wrong = [VALUES_OF_TYPE[t] for t in VALUES_OF_TYPE if t not in allowed]
    objects = [resolve(o) for o in schema["anyOf"] if "object" in json_types(o)]
    assert len(objects) <= 1, schema
    return st.one_of(*wrong, *(invalid_members(o) for o in objects))


def invalid_value(schema: Json) -> st.SearchStrategy[Any]:
    schema = resolve(schema)
    if "anyOf" in schema:
        return invalid_for_every_option(schema)
    allowed = json_types(schema)
    options = [VALUES_OF_TYPE[t] for t in VALUES_OF_TYPE if t not in allowed]
    kind = schema.get("type")
    if kind == "integer":
        if "minimum" in schema:
            low = schema["minimum"]
            options += [st.integers(low - 1000, low - 1), st.integers(max_value=low - 1)]
            options.append(st.sampled_from([-(2**63) - 1, -(2**64), -(2**53) - 1]))
        if "maximum" in schema:
            high = schema["maximum"]
            options += [st.integers(high + 1, high + 1000), st.integers(min_value=high + 1)]
            options.append(st.sampled_from([2**63, 2**64, 2**53 + 1]))
    elif kind == "string":
        if "maxLength" in schema:
            longest = schema["maxLength"]
            options += [
                st.text(min_size=longest + 1, max_size=longest + 8),
                st.integers(longest + 1, longest + 2000).map(lambda n: "x" * n),
            ]
        if schema.get("minLength", 0) > 0:
            options.append(st.just(""))
        if "pattern" in schema:
            pattern = re.compile(schema["pattern"])
            options.append(st.text(max_size=64).filter(lambda v: pattern.search(v) is None))
    elif kind == "array":
        items = schema["items"]
        if "maxItems" in schema:
            options.append(
                st.integers(schema["maxItems"] + 1, schema["maxItems"] + 5).map(
                    lambda n: [f"w{i}" for i in range(n)]
                )
            )
        options.append(
            st.tuples(st.lists(st.just("ok"), max_size=3), invalid_value(items)).map(
                lambda pair: [*pair[0], pair[1]]
            )
        )
    elif kind == "object":
        options.append(invalid_members(schema))
    assert options, f"no invalid value for {schema}"
    return st.one_of(*options)


def invalid_members(schema: Json) -> st.SearchStrategy[Any]:
    """An object (the JSON type `schema` takes) whose members `schema` refuses."""
    if "properties" in schema:
        return invalid_object(schema, valid_nested(schema))
    options: list[st.SearchStrategy[Any]] = []
    values = schema.get("additionalProperties", {})
    if "maxProperties" in schema:
        most = schema["maxProperties"]
        options.append(
            st.integers(most + 1, most + 5).map(lambda n: {f"k{i}": "v" for i in range(n)})
        )
    options.append(
        st.tuples(st.text(max_size=5), invalid_value(values)).map(lambda kv: {kv[0]: kv[1]})
    )
    return st.one_of(*options)


VALID_NESTED: dict[str, Json] = {
    "PinnedProduct": {
        "product_id": "mug",
        "title": "Stoneware mug",
        "price_cents": 1800,
        "currency": "EUR",
        "image": "",
    },
    "CardDetails": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2099, "cvc": "123"},
}


def valid_nested(schema: Json) -> Json:
    """A valid value of a nested object member (a new one fails here until it is added)."""
    assert schema["title"] in VALID_NESTED, schema
    return VALID_NESTED[schema["title"]]


def invalid_object(schema: Json, base: Json) -> st.SearchStrategy[Json]:
    """`base` (valid for `schema`) with one to three members made wrong."""
    properties: Json = schema["properties"]
    required = [name for name in schema.get("required", []) if name != "type"]
    mutable = [name for name in properties if name != "type"]

    @st.composite
    def mutated(draw: st.DrawFn) -> Json:
        value = dict(base)
        kinds = ["extra"] + (["member"] if mutable else []) + (["missing"] if required else [])
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(kinds))
            if kind == "member":
                name = draw(st.sampled_from(mutable))
                value[name] = draw(invalid_value(properties[name]))
            elif kind == "missing":
                value.pop(draw(st.sampled_from(required)), None)
            else:
                extra = draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in properties))
                value[extra] = draw(ANY_JSON)
        return value

    return mutated()


BAD_TAGS = st.one_of(
    st.sampled_from(TAGS).map(lambda tag: tag.replace("/v1", "/v2")),
    st.sampled_from(TAGS).map(str.upper),
    st.sampled_from(TAGS).map(lambda tag: tag + " "),
    st.text(max_size=30).filter(lambda text: text not in SCHEMAS),
    st.none() | st.integers() | st.booleans() | st.lists(st.sampled_from(TAGS), max_size=2),
)


def schema_invalid(tag: str, base: Json) -> st.SearchStrategy[tuple[str, str]]:
    """(expected code, frame): `base` of type `tag` made invalid."""
    schema = SCHEMAS[tag]
    body = {name: value for name, value in base.items() if name != "type"}

    @st.composite
    def frame(draw: st.DrawFn) -> tuple[str, str]:
        message = {"type": tag, **draw(invalid_object(schema, body))}
        if draw(st.integers(0, 9)) == 0:  # now and then the type itself
            if draw(st.booleans()):
                del message["type"]
            else:
                message["type"] = draw(BAD_TAGS)
            return "unknown_type", json_text(message)
        return "invalid_message", json_text(message)

    return frame()


def valid_bases(world: World) -> dict[str, Json]:
    """A valid message of every type, with the real ids and credentials: made invalid
    before it is sent, it shows the mutation alone is what the server refused."""
    sale = world.sale
    product = {
        "product_id": sale.product_id,
        "title": "Stoneware mug",
        "price_cents": sale.price_cents,
        "currency": "EUR",
        "image": "",
    }
    order = world.buyer.order("fuzz-order", sale.sale_id, 1, sale.price_cents, now_ms())
    bases: dict[str, Json] = {
        "comment/v1": {"text": "hello", "name": "Ann"},
        "like/v1": {"count": 1},
        "share/v1": {},
        "ping/v1": {"id": 1},
        "host.auth/v1": {"token": world.host_token},
        "host.pin/v1": {"product": product},
        "host.live/v1": {"live": False},
        "host.end/v1": {},
        "host.delete_comment/v1": {"comment_id": world.comment_id},
        "host.mute/v1": {"viewer_id": world.banned_viewer, "duration_ms": 60_000},
        "host.ban/v1": {"viewer_id": world.muted_viewer},
        "host.unban/v1": {"viewer_id": world.banned_viewer},
        "host.keywords/v1": {"words": []},
        "host.slow_mode/v1": {"interval_ms": 0},
        "host.poll/v1": {
            "poll_id": "p1",
            "question": "Red or blue?",
            "options": ["Red", "Blue"],
            "duration_ms": 60_000,
            "kind": "poll",
        },
        "host.poll_close/v1": {"poll_id": "p1"},
        "poll.answer/v1": {"poll_id": "p1", "option": 0},
        "order/v1": order,
        "pay/v1": {
            "order_id": world.order_id,
            "token": world.buyer_token,
            "shipping": {"name": "Ann"},
        },
        "bid/v1": world.buyer.bid("fuzz-lot", 1_000, now_ms()),
    }
    assert set(bases) == set(SCHEMAS), "a client message type has no fuzz base"
    for tag, base in bases.items():
        m.decode_client(json_text({"type": tag, **base}))  # the bases are valid
    return bases


# Well-typed junk, checked by the server's own rules.

NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([0, -1, 1, 2**53 - 1, 2**53, -(2**53), 2**63 - 1, 2**63, 2**64, -(2**63)]),
)
TEXT_200 = st.text(max_size=200)
ID_TEXT = st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z")


def junk_orders(world: World) -> st.SearchStrategy[Json]:
    sale = world.sale
    return st.fixed_dictionaries(
        {
            "type": st.just("order/v1"),
            "order_id": st.one_of(TEXT_200, ID_TEXT, st.just(world.order_id)),
            "sale_id": st.one_of(TEXT_200, st.just(sale.sale_id)),
            "buyer_id": st.one_of(
                TEXT_200, st.sampled_from([world.buyer.identity_id, sale.merchant.identity_id])
            ),
            "quantity": st.one_of(NUMBERS, st.integers(-2, 8)),
            "price_cents": st.one_of(NUMBERS, st.just(sale.price_cents)),
            "time_ms": st.one_of(NUMBERS, st.just(now_ms())),
            "signature": st.one_of(TEXT_200, st.from_regex(r"\A[A-Za-z0-9_-]{86}\Z")),
        }
    )


def junk_bids(world: World) -> st.SearchStrategy[Json]:
    return st.fixed_dictionaries(
        {
            "type": st.just("bid/v1"),
            "auction_id": st.one_of(TEXT_200, ID_TEXT, st.just("fuzz-lot")),
            "bidder_id": st.one_of(TEXT_200, st.just(world.buyer.identity_id)),
            "amount_cents": st.one_of(NUMBERS, st.integers(-2, 2_000)),
            "max_cents": st.one_of(NUMBERS, st.integers(-2, 2_000)),
            "time_ms": st.one_of(NUMBERS, st.just(now_ms())),
            "signature": st.one_of(TEXT_200, st.from_regex(r"\A[A-Za-z0-9_-]{86}\Z")),
        }
    )


def altered(token: str) -> st.SearchStrategy[str]:
    return (
        st.tuples(st.integers(0, len(token) - 1), st.sampled_from("Ab0_-."))
        .map(lambda change: token[: change[0]] + change[1] + token[change[0] + 1 :])
        .filter(lambda forged: forged != token)
    )


def junk_payments(world: World) -> st.SearchStrategy[Json]:
    return st.fixed_dictionaries(
        {
            "type": st.just("pay/v1"),
            "order_id": st.one_of(TEXT_200, st.just(world.order_id)),
            "token": st.one_of(TEXT_200, altered(world.buyer_token)),
            "shipping": st.none()
            | st.dictionaries(st.text(max_size=20), st.text(max_size=200), max_size=12),
        }
    )


def junk_credentials(world: World) -> st.SearchStrategy[Json]:
    tokens = st.one_of(
        st.text(min_size=1, max_size=200),
        altered(world.host_token),
        st.just(world.other_host_token),
        st.just(world.host_token + " "),
    ).filter(lambda token: token != world.host_token)
    return st.fixed_dictionaries({"type": st.just("host.auth/v1"), "token": tokens})


NOTHING_LEFT = st.text(alphabet="\x00\x01\x07\x1b\t\n\r \u202e\u2066", max_size=40)
ANY_NAME = st.text(max_size=200)
ANY_TEXT = st.text(max_size=400)
TOO_LONG_NAME = st.integers(41, 200).map(lambda n: "n" * n)
TOO_LONG_TEXT = st.integers(301, 3000).map(lambda n: "t" * n)


def junk_comments() -> st.SearchStrategy[Json]:
    bad_name = st.fixed_dictionaries({"name": NOTHING_LEFT | TOO_LONG_NAME, "text": ANY_TEXT})
    bad_text = st.fixed_dictionaries({"name": ANY_NAME, "text": NOTHING_LEFT | TOO_LONG_TEXT})
    return st.one_of(bad_name, bad_text).map(lambda body: {"type": "comment/v1", **body})


# The socket client, in the worker thread.


class Sockets:
    """Room sockets of one kind (plain, or authenticated as the host), replaced before the
    server's frame budget closes one."""

    def __init__(self, url: str, host_token: str | None = None) -> None:
        self.url = url
        self.host_token = host_token
        self.ws: ClientConnection | None = None
        self.sent = 0
        self.opened = 0
        self._stack = contextlib.ExitStack()

    def _fresh(self) -> ClientConnection:
        self.close()
        ws = self._stack.enter_context(connect(self.url, max_size=None, open_timeout=5))
        assert json.loads(ws.recv(timeout=ANSWER_TIMEOUT_S))["type"] == "welcome/v1"
        assert json.loads(ws.recv(timeout=ANSWER_TIMEOUT_S))["type"] == "snapshot/v1"
        self.ws, self.sent = ws, 0
        self.opened += 1
        if self.host_token is not None:
            answer = self.exchange(json_text({"type": "host.auth/v1", "token": self.host_token}))
            assert answer == {"type": "ack/v1", "ref": "host.auth/v1"}, answer
        return ws

    def exchange(self, frame: str) -> Json | None:
        """Send one frame; the first answer that is not a state push. A frame over the
        server's 16 KiB is answered by the close (1009): then None."""
        ws = self.ws
        if ws is None or self.sent >= FRAMES_PER_CONNECTION:
            ws = self._fresh()
        self.sent += 1
        ws.send(frame)
        if len(frame.encode()) > FRAME_BYTES_MAX:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    ws.recv(timeout=ANSWER_TIMEOUT_S)
            assert ws.close_code == 1009, (frame[:200], ws.close_code)
            self.close()
            return None
        while True:
            answer: Json = json.loads(ws.recv(timeout=ANSWER_TIMEOUT_S))
            if answer["type"] != "state/v1":
                return answer

    def close(self) -> None:
        self._stack.close()
        self.ws = None


def closed_with(url: str, send: Callable[[ClientConnection], None]) -> tuple[int | None, str]:
    """On a fresh socket: send, then read to the end; the close code and reason."""
    with connect(url, max_size=None, open_timeout=5) as ws:
        ws.recv(timeout=ANSWER_TIMEOUT_S)  # welcome
        ws.recv(timeout=ANSWER_TIMEOUT_S)  # snapshot
        try:
            send(ws)
            while True:
                ws.recv(timeout=ANSWER_TIMEOUT_S)
        except ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason or ""


def check_error(answer: Json | None, codes: set[str], frame: str) -> None:
    if answer is None:
        return  # over 16 KiB: closed with 1009, as documented
    assert answer["type"] == "error/v1", (frame[:300], answer)
    assert answer["code"] in codes, (frame[:300], answer)
    assert answer["message"], answer


def run_fuzz(world: World, url: str) -> dict[str, int]:
    """Every kind of frame, every type; how many frames of each kind were sent."""
    counts = {"schema-invalid": 0, "junk": 0, "frames": 0}
    plain, host = Sockets(url), Sockets(url, world.host_token)
    bases = valid_bases(world)

    def schema_invalid_on(sockets: Sockets, tag: str) -> None:
        @settings(FUZZ_SETTINGS, max_examples=EXAMPLES_PER_TYPE)
        @given(case=schema_invalid(tag, bases[tag]))
        def fuzz(case: tuple[str, str]) -> None:
            code, frame = case
            check_error(sockets.exchange(frame), {code}, frame)
            counts["schema-invalid"] += 1

        fuzz()

    def junk(
        strategy: st.SearchStrategy[Json],
        check: Callable[[Json | None, str], None],
        sockets: Sockets = plain,
    ) -> None:
        @settings(FUZZ_SETTINGS, max_examples=EXAMPLES_PER_JUNK_KIND)
        @given(message=strategy)
        def fuzz(message: Json) -> None:
            frame = json_text(message)
            check(sockets.exchange(frame), frame)
            counts["junk"] += 1

        fuzz()

    def order_rejected(answer: Json | None, frame: str) -> None:
        assert answer is not None
        assert answer["type"] == "order.result/v1", (frame[:300], answer)
        assert answer["status"] == "rejected", (frame[:300], answer)
        assert answer["reason"] in ORDER_REASONS, (frame[:300], answer)

    def payment_refused(answer: Json | None, frame: str) -> None:
        assert answer is not None
        assert answer["type"] == "pay.result/v1", (frame[:300], answer)
        assert answer["status"] == "refused", (frame[:300], answer)
        assert answer["reason"] in PAY_REASONS, (frame[:300], answer)

    def bid_rejected(answer: Json | None, frame: str) -> None:
        assert answer is not None
        assert answer["type"] == "bid.result/v1", (frame[:300], answer)
        assert answer["status"] == "rejected", (frame[:300], answer)
        assert answer["reason"] in BID_REASONS, (frame[:300], answer)

    try:
        for tag in TAGS:
            schema_invalid_on(plain, tag)
        for tag in HOST_TAGS:
            schema_invalid_on(host, tag)
        junk(junk_orders(world), order_rejected)
        junk(junk_payments(world), payment_refused)
        junk(junk_bids(world), bid_rejected)
        junk(junk_comments(), lambda a, f: check_error(a, COMMENT_CODES, f))
        junk(junk_poll_answers(), lambda a, f: check_error(a, POLL_ANSWER_CODES, f))
        # Credentials on sockets of their own: five wrong ones and a socket stops trying.
        credentials = Sockets(url)
        junk(
            junk_credentials(world),
            lambda a, f: check_error(a, {"bad_credential", "too_many_failures"}, f),
            credentials,
        )
        credentials.close()
        counts["frames"] = run_frame_fuzz(url)
    finally:
        plain.close()
        host.close()
    return counts


def run_frame_fuzz(url: str) -> int:
    sent = 0

    @settings(FUZZ_SETTINGS, max_examples=EXAMPLES_PER_FRAME_KIND)
    @given(
        prefix=st.sampled_from([b'{"type":"comment/v1","text":"', b'{"type":"ping/v1"', b""]),
        broken=st.sampled_from(
            [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82", b"\x80"]
        ),
        suffix=st.binary(max_size=20).filter(lambda b: b.isascii()),
    )
    def broken_utf8(prefix: bytes, broken: bytes, suffix: bytes) -> None:
        nonlocal sent
        code, _ = closed_with(url, lambda ws: ws.send(prefix + broken + suffix, text=True))
        assert code == 1007, (prefix, broken, code)
        sent += 1

    @settings(FUZZ_SETTINGS, max_examples=EXAMPLES_PER_FRAME_KIND)
    @given(payload=st.binary(max_size=2000))
    def binary(payload: bytes) -> None:
        nonlocal sent
        assert closed_with(url, lambda ws: ws.send(payload))[0] == 1003
        sent += 1

    @settings(FUZZ_SETTINGS, max_examples=EXAMPLES_PER_FRAME_KIND)
    @given(
        size=st.sampled_from([16 * 1024 + 1, 64 * 1024, MEGABYTE]) | st.integers(17_000, MEGABYTE),
        how=st.sampled_from(["text", "binary", "fragments"]),
    )
    def too_large(size: int, how: str) -> None:
        nonlocal sent
        payload = '{"type":"comment/v1","text":"' + "x" * size + '","name":"A"}'

        def send(ws: ClientConnection) -> None:
            if how == "text":
                ws.send(payload)
            elif how == "binary":
                ws.send(payload.encode())
            else:
                ws.send(iter([payload[i : i + 4096] for i in range(0, len(payload), 4096)]))

        assert closed_with(url, send)[0] == 1009, (size, how)
        sent += 1

    not_json = st.text(max_size=200).filter(lambda text: not _parses(text))
    not_json |= st.just('{"type":"like/v1"')
    not_json |= st.integers(1, 500).map(lambda n: "[" * n)  # deeper: deeply_nested
    sockets = Sockets(url)

    @settings(FUZZ_SETTINGS, max_examples=EXAMPLES_PER_FRAME_KIND * 2)
    @given(text=not_json)
    def malformed(text: str) -> None:
        nonlocal sent
        check_error(sockets.exchange(text), {"malformed_json"}, text)
        sent += 1

    @settings(FUZZ_SETTINGS, max_examples=EXAMPLES_PER_FRAME_KIND)
    @given(
        depth=st.integers(1, 3000),
        opening=st.sampled_from(["[", '{"a":']),
        tag=st.sampled_from(TAGS),
    )
    def deeply_nested(depth: int, opening: str, tag: str) -> None:
        nonlocal sent
        # Ahead of the type, where the decoder has to read past it.
        closing = "]" if opening == "[" else "}"
        inner = "1" if opening != "[" else ""
        value = opening * depth + inner + closing * depth
        frame = '{"x":' + value + ',"type":"' + tag + '"}'
        check_error(sockets.exchange(frame), {"invalid_message"}, frame)
        sent += 1

    broken_utf8()
    binary()
    too_large()
    malformed()
    deeply_nested()
    sockets.close()
    return sent


def junk_poll_answers() -> st.SearchStrategy[Json]:
    """Well-typed answers to polls the room does not have open."""
    ids = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
    return st.fixed_dictionaries(
        {"type": st.just("poll.answer/v1"), "poll_id": ids, "option": st.integers(0, 5)}
    )


def json_text(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


def _parses(text: str) -> bool:
    try:
        msgspec.json.decode(text)
    except msgspec.DecodeError:
        return False
    return True


async def test_every_client_message_fuzzed_gets_a_documented_refusal_and_changes_nothing(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server:
        world = await populated(server)
        before = observe(world)
        url = f"{server.ws}/ws/rooms/{world.room_id}"
        counts = await asyncio.to_thread(run_fuzz, world, url)
        assert counts["schema-invalid"] >= (len(TAGS) + len(HOST_TAGS)) * EXAMPLES_PER_TYPE // 2
        assert counts["junk"] >= 3 * EXAMPLES_PER_JUNK_KIND
        assert counts["frames"] >= 4 * EXAMPLES_PER_FRAME_KIND
        after = observe(world)
        assert after == before, differences(before, after)


async def test_host_commands_over_the_socket_need_this_rooms_credential(tmp_path: Path) -> None:
    """Without host.auth/v1, after a wrong one, after another room's: `not_host` for every
    host command (with valid members); five wrong credentials and even the right one is
    refused on that socket (`too_many_failures`). Nothing changes."""
    import websockets

    from tests.livecommerce.hub.test_hub_embedded import recv_type

    async with running_server(tmp_path) as server:
        world = await populated(server)
        before = observe(world)
        bases = valid_bases(world)

        async def answer(ws: Any, message: Json) -> Json:
            await ws.send(json_text(message))
            while True:
                received: Json = json.loads(await asyncio.wait_for(ws.recv(), ANSWER_TIMEOUT_S))
                if received["type"] != "state/v1":
                    return received

        async def no_host_command_passes(ws: Any) -> None:
            for tag in HOST_TAGS:
                refused = await answer(ws, {"type": tag, **bases[tag]})
                assert refused["type"] == "error/v1", (tag, refused)
                assert refused["code"] == "not_host", (tag, refused)

        url = f"{server.ws}/ws/rooms/{world.room_id}"
        async with websockets.connect(url) as ws:
            await recv_type(ws, "snapshot/v1")
            await no_host_command_passes(ws)
            wrong = [world.other_host_token, "wrong", world.host_token[:-1], " " + world.host_token]
            for token in [*wrong, world.host_token.upper()]:
                refused = await answer(ws, {"type": "host.auth/v1", "token": token})
                assert refused["code"] == "bad_credential", (token, refused)
                if token == world.other_host_token:
                    await no_host_command_passes(ws)
            # Five wrong: the right one no longer helps on this socket.
            refused = await answer(ws, {"type": "host.auth/v1", "token": world.host_token})
            assert refused["code"] == "too_many_failures", refused
            await no_host_command_passes(ws)
        # This room's credential on the other room's socket.
        other = f"{server.ws}/ws/rooms/{world.other_room_id}"
        async with websockets.connect(other) as ws:
            await recv_type(ws, "snapshot/v1")
            refused = await answer(ws, {"type": "host.auth/v1", "token": world.host_token})
            assert refused["code"] == "bad_credential", refused
            await no_host_command_passes(ws)
        after = observe(world)
        assert after == before, differences(before, after)
