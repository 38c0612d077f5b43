"""The WebSocket protocol's messages, version 1 (docs/protocol.md is the prose of this file).

Every frame is a JSON object whose `type` names the message and its version (`comment/v1`).
Client messages are decoded into frozen structs in one step, which validates field types,
ranges and lengths and rejects unknown types and unknown fields. Server messages are encoded
once per broadcast and the same bytes go to every socket.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import msgspec

PROTOCOL_VERSION = 1
T = TypeVar("T")

ViewerId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
CommentId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
# Raw lengths before sanitising; the room applies the real limits to the cleaned text.
RawText = Annotated[str, msgspec.Meta(max_length=4000)]
RawName = Annotated[str, msgspec.Meta(max_length=200)]
Keyword = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]


class _Client(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, frozen=True):
    """A message from a client."""


class PostComment(_Client, tag="comment/v1", frozen=True):
    text: RawText
    name: RawName


class Like(_Client, tag="like/v1", frozen=True):
    # Clients batch taps and send a count; the server adds, never relays one by one.
    count: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1


class Share(_Client, tag="share/v1", frozen=True):
    pass


class Ping(_Client, tag="ping/v1", frozen=True):
    id: Annotated[int, msgspec.Meta(ge=0, le=2**53)] = 0


class HostAuth(_Client, tag="host.auth/v1", frozen=True):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class PinnedProduct(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    product_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=120)]
    price_cents: Annotated[int, msgspec.Meta(ge=0, le=10**9)]
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
    image: Annotated[str, msgspec.Meta(max_length=500)] = ""


class HostPin(_Client, tag="host.pin/v1", frozen=True):
    product: PinnedProduct | None


class HostLive(_Client, tag="host.live/v1", frozen=True):
    live: bool


class HostEnd(_Client, tag="host.end/v1", frozen=True):
    pass


class HostDeleteComment(_Client, tag="host.delete_comment/v1", frozen=True):
    comment_id: CommentId


class HostMute(_Client, tag="host.mute/v1", frozen=True):
    viewer_id: ViewerId
    duration_ms: Annotated[int, msgspec.Meta(ge=1000, le=7 * 24 * 3600 * 1000)] = 10 * 60 * 1000


class HostBan(_Client, tag="host.ban/v1", frozen=True):
    viewer_id: ViewerId


class HostUnban(_Client, tag="host.unban/v1", frozen=True):
    viewer_id: ViewerId


class HostKeywords(_Client, tag="host.keywords/v1", frozen=True):
    words: Annotated[list[Keyword], msgspec.Meta(max_length=200)]


class HostSlowMode(_Client, tag="host.slow_mode/v1", frozen=True):
    interval_ms: Annotated[int, msgspec.Meta(ge=0, le=10 * 60 * 1000)]


# Polls: the host asks, viewers answer once each (per viewer id), counts go to every screen.
PollId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
PollOption = Annotated[str, msgspec.Meta(min_length=1, max_length=80)]
POLL_OPTIONS_MAX = 6


class HostPoll(_Client, tag="host.poll/v1", frozen=True):
    """Open a poll (or a question whose answers are offered): 2..6 options, open for
    `duration_ms`. One poll is open at a time in a room."""

    poll_id: PollId
    question: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    options: Annotated[list[PollOption], msgspec.Meta(min_length=2, max_length=POLL_OPTIONS_MAX)]
    duration_ms: Annotated[int, msgspec.Meta(ge=5_000, le=3_600_000)] = 60_000
    kind: Annotated[str, msgspec.Meta(pattern=r"^(poll|question)$")] = "poll"


class HostPollClose(_Client, tag="host.poll_close/v1", frozen=True):
    poll_id: PollId


class PollAnswer(_Client, tag="poll.answer/v1", frozen=True):
    poll_id: PollId
    option: Annotated[int, msgspec.Meta(ge=0, lt=POLL_OPTIONS_MAX)]


# Orders. Field contents (id patterns, ranges, the signature) are checked by the commerce
# core, which answers with a reason code; here only types and sizes.
ShortText = Annotated[str, msgspec.Meta(max_length=200)]
ShippingValue = Annotated[str, msgspec.Meta(max_length=200)]


class PlaceOrder(_Client, tag="order/v1", frozen=True):
    """A signed order; see docs/commerce.md for the bytes the buyer signs."""

    order_id: ShortText
    sale_id: ShortText
    buyer_id: ShortText
    quantity: int
    price_cents: int
    time_ms: int
    signature: ShortText


class CardDetails(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What the buyer types: held only for the provider's authorization, never stored."""

    number: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{12,19}$")]
    exp_month: Annotated[int, msgspec.Meta(ge=1, le=12)]
    exp_year: Annotated[int, msgspec.Meta(ge=2000, le=2199)]
    cvc: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{3,4}$")]


class Pay(_Client, tag="pay/v1", frozen=True):
    """Payment of a held order, with the buyer's session token: the provider authorizes
    `card` (the test provider's card that succeeds when none is given) and the money is
    held in escrow. `shipping` is sealed to the merchant before anything is stored; the
    ledger gets a commitment."""

    order_id: ShortText
    token: ShortText
    shipping: Annotated[dict[str, ShippingValue], msgspec.Meta(max_length=12)] | None = None
    card: CardDetails | None = None


class Bid(_Client, tag="bid/v1", frozen=True):
    """A signed bid (docs/commerce.md, "Auctions"); `max_cents` 0 bids no more than
    `amount_cents`, above it the server bids for the bidder up to it."""

    auction_id: ShortText
    bidder_id: ShortText
    amount_cents: int
    max_cents: int
    time_ms: int
    signature: ShortText


OrderMessage = PlaceOrder | Pay | Bid

HostCommand = (
    HostPin
    | HostLive
    | HostEnd
    | HostDeleteComment
    | HostMute
    | HostBan
    | HostUnban
    | HostKeywords
    | HostSlowMode
    | HostPoll
    | HostPollClose
)
ClientMessage = (
    PostComment | Like | Share | Ping | HostAuth | PollAnswer | OrderMessage | HostCommand
)
HOST_COMMANDS: tuple[type[_Client], ...] = (
    HostPin,
    HostLive,
    HostEnd,
    HostDeleteComment,
    HostMute,
    HostBan,
    HostUnban,
    HostKeywords,
    HostSlowMode,
    HostPoll,
    HostPollClose,
)

# Annotated rather than cast at each decode: older mypy infers Decoder[Any] from a union,
# newer mypy infers the union itself and calls a cast redundant.
client_decoder: msgspec.json.Decoder[ClientMessage] = msgspec.json.Decoder(ClientMessage)
host_command_decoder: msgspec.json.Decoder[HostCommand] = msgspec.json.Decoder(HostCommand)


class ProtocolError(ValueError):
    """A frame that is not a valid client message; `code` is stable, the text says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decode_client(frame: str | bytes) -> ClientMessage:
    return _decode(client_decoder, frame)


def decode_host_command(body: bytes) -> HostCommand:
    """A host command from the HTTP API (the socket's rules, without the other types)."""
    return _decode(host_command_decoder, body)


def _decode(decoder: msgspec.json.Decoder[T], frame: str | bytes) -> T:
    try:
        return decoder.decode(frame)
    except msgspec.ValidationError as error:
        # The typed decoder stops at the first wrong type, before it has read the rest:
        # `[1, 2` or `0:` would be "invalid", though they are not JSON. Only refused frames
        # are parsed again, untyped, to tell which.
        try:
            msgspec.json.decode(frame)
        except msgspec.DecodeError as not_json:
            raise ProtocolError("malformed_json", f"not a JSON object: {not_json}") from None
        except RecursionError:
            raise ProtocolError("invalid_message", NESTED_TOO_DEEPLY) from None
        text = str(error)
        if "at `$.type`" in text or "missing required field `type`" in text:
            raise ProtocolError(
                "unknown_type", f"unknown or missing message type: {text}"
            ) from None
        raise ProtocolError("invalid_message", text) from None
    except msgspec.DecodeError as error:
        raise ProtocolError("malformed_json", f"not a JSON object: {error}") from None
    except RecursionError:
        # A tagged union reads past members that come before `type`; nested deeper than
        # the interpreter's recursion limit (about 1,000, well inside a 16 KiB frame)
        # msgspec raises this rather than a decode error.
        raise ProtocolError("invalid_message", NESTED_TOO_DEEPLY) from None


NESTED_TOO_DEEPLY = "nested too deeply: no client message nests more than three levels"


# Events: what the room's log holds. Each carries the server time it was made (`ts_ms`); the
# sequence number is added in front when the event is sequenced (see `with_sequence`).


class _Event(msgspec.Struct, tag_field="type", frozen=True, kw_only=True):
    ts_ms: int


class CommentPosted(_Event, tag="comment/v1", frozen=True):
    id: str
    viewer_id: str
    name: str
    text: str


class CommentRemoved(_Event, tag="comment.removed/v1", frozen=True):
    id: str


class ProductPinned(_Event, tag="pin/v1", frozen=True):
    product: PinnedProduct | None


class LiveChanged(_Event, tag="room.live/v1", frozen=True):
    live: bool


class RoomEnded(_Event, tag="room.ended/v1", frozen=True):
    pass


class SlowModeChanged(_Event, tag="slow_mode/v1", frozen=True):
    interval_ms: int


class SaleChanged(_Event, tag="sale/v1", frozen=True):
    # The commerce core's view of a flash sale; opened, closed and scheduled all come here.
    sale: dict[str, Any]


class AuctionChanged(_Event, tag="auction/v1", frozen=True):
    """An auction started, took a bid, closed (winner and price), was cancelled, or its
    lot was offered to the second bidder: the auction as pages show it
    (pipeline/auctions.py `auction_view`)."""

    auction: dict[str, Any]


class PollChanged(_Event, tag="poll/v1", frozen=True):
    """A poll opened (`closed` false, counts zero) or closed (`closed` true, the final
    `counts` and `closed_at_ms`): poll_id, kind, question, options, opened_at_ms,
    closes_at_ms, closed, counts."""

    poll: dict[str, Any]


class ViewerMuted(_Event, tag="viewer.muted/v1", frozen=True):
    viewer_id: str
    until_ms: int


class ViewerBanned(_Event, tag="viewer.banned/v1", frozen=True):
    viewer_id: str


class ViewerUnbanned(_Event, tag="viewer.unbanned/v1", frozen=True):
    viewer_id: str


class KeywordsChanged(_Event, tag="keywords/v1", frozen=True):
    words: list[str]


RoomEvent = (
    CommentPosted
    | CommentRemoved
    | ProductPinned
    | LiveChanged
    | RoomEnded
    | SlowModeChanged
    | SaleChanged
    | PollChanged
    | AuctionChanged
    | ViewerMuted
    | ViewerBanned
    | ViewerUnbanned
    | KeywordsChanged
)
# Moderation state every process must know but viewers must not see (the keyword list would
# teach spammers what to avoid). They take a sequence number like any event, so viewers see
# gaps in `seq`: the protocol promises increasing numbers, not consecutive ones.
PRIVATE_EVENTS: tuple[type[_Event], ...] = (
    ViewerMuted,
    ViewerBanned,
    ViewerUnbanned,
    KeywordsChanged,
)

event_encoder = msgspec.json.Encoder()
event_decoder: msgspec.json.Decoder[RoomEvent] = msgspec.json.Decoder(RoomEvent)


def encode_event(event: RoomEvent) -> bytes:
    return event_encoder.encode(event)


def decode_event(body: bytes) -> RoomEvent:
    return event_decoder.decode(body)


def with_sequence(sequence: int, body: bytes) -> bytes:
    """`{"seq":N,` + the event's own members: the wire form of a sequenced event."""
    assert body[:1] == b"{"
    assert sequence > 0
    return b'{"seq":%d,%s' % (sequence, body[1:])


# Messages that are not in the log: addressed to one connection, or coalesced state.


class Welcome(msgspec.Struct, tag_field="type", tag="welcome/v1", frozen=True):
    protocol: int
    room_id: str
    viewer_id: str
    viewer_token: str
    mode: str  # "snapshot": a snapshot follows; "resume": the missed events follow, then state
    limits: dict[str, int]


class Comment(msgspec.Struct, frozen=True):
    seq: int
    id: str
    viewer_id: str
    name: str
    text: str
    ts_ms: int


class Snapshot(msgspec.Struct, tag_field="type", tag="snapshot/v1", frozen=True):
    seq: int
    ts_ms: int
    room_id: str
    title: str
    host_name: str
    live: bool
    ended: bool
    pinned: PinnedProduct | None
    slow_mode_ms: int
    likes: int
    shares: int
    viewers: int
    comments: list[Comment]
    stock: dict[str, int]
    sale: dict[str, Any] | None
    poll: dict[str, Any] | None = None  # the room's newest poll, with its counts now
    auction: dict[str, Any] | None = None  # the room's newest auction, as last changed


class State(msgspec.Struct, tag_field="type", tag="state/v1", frozen=True, omit_defaults=True):
    seq: int
    ts_ms: int
    likes: int | None = None
    shares: int | None = None
    viewers: int | None = None
    stock: dict[str, int] | None = None
    poll: dict[str, Any] | None = None  # {"poll_id", "counts"}: the open poll's live counts


class Error(msgspec.Struct, tag_field="type", tag="error/v1", frozen=True):
    code: str
    message: str


class Ack(msgspec.Struct, tag_field="type", tag="ack/v1", frozen=True):
    ref: str


class Pong(msgspec.Struct, tag_field="type", tag="pong/v1", frozen=True):
    id: int
    ts_ms: int


class OrderResult(
    msgspec.Struct, tag_field="type", tag="order.result/v1", frozen=True, omit_defaults=True
):
    """The answer to `order/v1`: `accepted` only once the order is durable in the ledger
    (`ledger_index`), or `rejected` with the core's `reason` code. A repeated order id gets
    the first answer again (`repeated`), with `order_status` telling where it is now."""

    order_id: str
    sale_id: str
    status: str  # "accepted" or "rejected"
    reason: str = ""
    detail: str = ""
    ledger_index: int = -1
    quantity: int = 0
    hold_expires_at_ms: int = 0
    order_status: str = ""  # held, paid, expired or rejected
    repeated: bool = False


class BidResult(
    msgspec.Struct, tag_field="type", tag="bid.result/v1", frozen=True, omit_defaults=True
):
    """The answer to `bid/v1`: `accepted` once the bid is durable in the ledger, with the
    auction's leader, price and end after it; or `rejected` with the core's `reason`."""

    auction_id: str
    status: str  # "accepted" or "rejected"
    reason: str = ""
    detail: str = ""
    ledger_index: int = -1
    leader_id: str = ""
    price_cents: int = 0
    ends_at_ms: int = 0


class OrderReceipt(msgspec.Struct, tag_field="type", tag="receipt/v1", frozen=True):
    """Proof that an accepted order is in the log: a c2sp.org/tlog-proof (inclusion proof
    and the signed checkpoint it verifies against), sent once a checkpoint covers it."""

    order_id: str
    ledger_index: int
    proof: str


class PayResult(msgspec.Struct, tag_field="type", tag="pay.result/v1", frozen=True):
    order_id: str
    status: str  # "paid", "pending" (the card's bank answers later) or "refused"
    reason: str = ""
    detail: str = ""
    ledger_index: int = -1


def encode(message: msgspec.Struct) -> bytes:
    return event_encoder.encode(message)


class StepResult(msgspec.Struct, tag_field="type", tag="order.step.result/v1", frozen=True):
    """The answer to a signed step of an order's life (POST /api/orders/{id}/steps): `taken`
    (with the ledger index of its entry), `repeated` (the same step again) or `refused`."""

    order_id: str
    step: str
    status: str
    stage: str = ""
    reason: str = ""
    detail: str = ""
    ledger_index: int = -1
