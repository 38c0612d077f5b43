"""Scaled out: the Redis names the web processes and the ledger writer share, and how a
command travels between them. docs/operations.md has the same table in prose.

- `lc:commands` (stream, web processes): commands for the writer, each with `request`,
  `reply` (the channel to answer on), `command` (JSON) and for payments `sealed`.
- `{sale:<id>}:accepted` (stream, the reserve script): the sale's accepted orders,
  appended in the same atomic step as the stock decrement.
- `lc:writer:positions` (hash, writer): the last id read of each stream, advanced only
  after the ledger append is durable.
- `lc:alive` (string, writer): set once; gone means Redis lost its data, so the writer
  rebuilds stock and order records from the ledger.
- `lc:writer:stopped` (string, writer): why the writer stopped taking anything (its disk
  failed); while it is set, web processes refuse orders and commands at once with it.
  The writer deletes it when it starts.
- `lc:writer:ledger_size` (string, writer): the ledger's size as of the writer's last
  writes to Redis, set only if it still holds what the writer set before. Lower than the
  writer knew means Redis came back from an older snapshot: rebuilt as if lost.
- `lc:feed:epoch` and `lc:feed:<epoch>` (string and stream, writer): every non-order
  ledger entry (identities, products, inventory, rooms, sales, rules, reviews, poll
  tallies, trace) with its index; web processes replay it into their core.
- `{sale:<id>}:ledger` (hash, writer): `<buyer_id>:<order_id>` to the order's record
  (ledger index, status, hold).
- `{sale:<id>}:receipts` (hash, writer): `<buyer_id>:<order_id>` to the tlog-proof text,
  once a checkpoint covers the order.
- `lc:receipts:through` (string, writer): every accepted order below this ledger index has
  its receipt stored; a restarted writer makes the receipts from there on again.
- `{sale:<id>}:shipping` (hash, writer): `<buyer_id>:<order_id>` to the sealed shipping
  box (also kept on the writer's disk).
- `lc:buyer:{<buyer_id>}` (hash, writer): `<order_id>` to its sale id.
- `lc:session_secret` (string, the first web process): the key of session tokens.
- `lc:webhook_secret` (string, the first web process): the key the payment provider signs
  webhooks with.
- `lc:challenge:<challenge>` (string with a TTL, web processes): an open session
  challenge, claimed once with GETDEL by whichever process gets the answer.

Channels: `lc:confirm` (orders recorded: sale, buyer, order, index, hold, quantity),
`lc:receipts` (receipts stored), `lc:reply:<process>` (answers to one web process's
commands).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Final

import orjson

from livecommerce.commerce.auctions import AuctionCommand, PlaceBid, StartAuction
from livecommerce.commerce.catalog import AddStock, ListProduct
from livecommerce.commerce.core import Command
from livecommerce.commerce.escrow import OrderStep, ProviderResult, RunPayouts
from livecommerce.commerce.groups import GroupStep, OfferGroup
from livecommerce.commerce.identity import Register
from livecommerce.commerce.orders import PayOrder
from livecommerce.commerce.polls import RecordPoll
from livecommerce.commerce.reviews import ReviewStep
from livecommerce.commerce.rooms import LinkRoom
from livecommerce.commerce.sales import ScheduleSale, StopSale
from livecommerce.commerce.trace import TraceCommand

COMMANDS: Final = "lc:commands"
POSITIONS: Final = "lc:writer:positions"
ALIVE: Final = "lc:alive"
WRITER_STOPPED: Final = "lc:writer:stopped"
LEDGER_SIZE: Final = "lc:writer:ledger_size"
FEED_EPOCH: Final = "lc:feed:epoch"
CONFIRM_CHANNEL: Final = "lc:confirm"
RECEIPTS_CHANNEL: Final = "lc:receipts"
RECEIPTS_THROUGH: Final = "lc:receipts:through"
SESSION_SECRET: Final = "lc:session_secret"
WEBHOOK_SECRET: Final = "lc:webhook_secret"
# Entries the web processes need in their core: everything but orders and stock counts.
FEED_ENTRY_TYPES: Final = frozenset(
    {
        "identity/v1",
        "product/v1",
        "inventory/v1",
        "room/v1",
        "sale/v1",
        "rules/v1",
        "review/v1",
        "poll/v1",
        "trace/v1",
    }
)
COMMAND_TYPES: Final[dict[str, type[Command]]] = {
    kind.__name__: kind
    for kind in (
        Register,
        ListProduct,
        AddStock,
        LinkRoom,
        ScheduleSale,
        StopSale,
        PayOrder,
        OrderStep,
        ProviderResult,
        RunPayouts,
        ReviewStep,
        RecordPoll,
        TraceCommand,
        OfferGroup,
        GroupStep,
        StartAuction,
        PlaceBid,
        AuctionCommand,
    )
}


def feed_key(epoch: str) -> str:
    return f"lc:feed:{epoch}"


def challenge_key(challenge: str) -> str:
    """A session challenge any web process may take the answer for, once (GETDEL)."""
    return f"lc:challenge:{challenge}"


def reply_channel(process_id: str) -> str:
    return f"lc:reply:{process_id}"


def sale_ledger_key(sale_id: str) -> str:
    return f"{{sale:{sale_id}}}:ledger"


def sale_receipts_key(sale_id: str) -> str:
    return f"{{sale:{sale_id}}}:receipts"


def sale_shipping_key(sale_id: str) -> str:
    return f"{{sale:{sale_id}}}:shipping"


def buyer_key(buyer_id: str) -> str:
    return f"lc:buyer:{{{buyer_id}}}"


def order_field(buyer_id: str, order_id: str) -> str:
    return f"{buyer_id}:{order_id}"


def encode_command(command: Command) -> bytes:
    return orjson.dumps({"kind": type(command).__name__, "fields": asdict(command)})


def decode_command(data: bytes) -> Command:
    """A command a web process sent. They are made by our own code; a bad one is a bug
    (or a foreign writer on our Redis), so it raises ValueError."""
    value: Any = orjson.loads(data)
    kind = COMMAND_TYPES.get(str(value.get("kind"))) if isinstance(value, dict) else None
    if kind is None or not isinstance(value.get("fields"), dict):
        raise ValueError(f"not a command: {data[:200]!r}")
    return kind(**value["fields"])
