"""Any junk in any field of any command is a typed rejection, never an exception, and
changes nothing (hypothesis fuzzes every command with a mix of valid and junk fields)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from livecommerce.commerce.catalog import AddStock, ListProduct
from livecommerce.commerce.core import CommandRejected
from livecommerce.commerce.identity import Register, SessionAuthority
from livecommerce.commerce.orders import OrderAccepted, PaymentRefused, PayOrder, PlaceOrder
from livecommerce.commerce.results import Rejected
from livecommerce.commerce.sales import ScheduleSale, StopSale
from tests.livecommerce.commerce.helpers import (
    NOW_MS,
    Signer,
    add_stock_command,
    list_product_command,
    make_core,
    order_command,
    register_command,
    schedule_command,
)

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**53, max_value=2**80),
    st.floats(allow_nan=True),
    st.text(max_size=80),
    st.binary(max_size=40),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)

CORE, MERCHANT, (BUYER, *_) = make_core()
CORE.handle(schedule_command(MERCHANT, duration_ms=24 * 3600 * 1000), NOW_MS)


ID_TEXT = re.compile(r"[A-Za-z0-9_-]{1,64}")


def plausible(value: Any) -> bool:
    """A value that can be valid in some field of an unsigned command: a safe integer of 0
    or more (a count, a price, a time) or id-shaped text."""
    if type(value) is int:
        return 0 <= value < 2**53
    return isinstance(value, str) and ID_TEXT.fullmatch(value) is not None


def mutate(command: Any, data: st.DataObject) -> Any:
    fields = [f.name for f in dataclasses.fields(command)]
    chosen = data.draw(st.lists(st.sampled_from(fields), min_size=1, unique=True))
    # A signed command with any field changed fails its signature. An unsigned one (a
    # sale, which the adapter authenticates) may become a valid command if junk lands
    # in range (price_cents=1), so it gets only junk that is never valid.
    junk = JUNK if hasattr(command, "signature") else JUNK.filter(lambda v: not plausible(v))
    return dataclasses.replace(command, **{name: data.draw(junk) for name in chosen})


def check_unchanged() -> None:
    sale = CORE.sales.get("s1")
    assert sale is not None
    sale.check()
    assert (sale.units_sold, sale.units_held, sale.units_remaining) == (0, 0, 10)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_junk_orders(data: st.DataObject) -> None:
    command = mutate(order_command(BUYER, "fuzz"), data)
    events = CORE.handle(command, NOW_MS)
    assert not any(isinstance(e, OrderAccepted) for e in events), command
    check_unchanged()


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_junk_merchant_commands(data: st.DataObject) -> None:
    templates: list[Any] = [
        register_command(Signer("fuzz"), "Fuzz"),
        list_product_command(MERCHANT, product_id="fuzz"),
        add_stock_command(MERCHANT, 5, change_id="fuzz"),
        dataclasses.replace(schedule_command(MERCHANT), sale_id="fuzz"),
        StopSale("s1", MERCHANT.identity_id),
        PayOrder(BUYER.identity_id, "nope"),
    ]
    command = mutate(data.draw(st.sampled_from(templates)), data)
    events = CORE.handle(command, NOW_MS)
    assert isinstance(events[-1], CommandRejected | PaymentRefused), (command, events)
    assert CORE.catalog.inventory_units("mug") == 990
    assert CORE.catalog.get("fuzz") is None
    assert CORE.sales.get("fuzz") is None
    check_unchanged()


@settings(max_examples=200, deadline=None)
@given(challenge=JUNK, public_key=JUNK, signature=JUNK, token=JUNK)
def test_junk_sessions(challenge: Any, public_key: Any, signature: Any, token: Any) -> None:
    sessions = SessionAuthority(CORE.identities, b"k" * 32)
    assert isinstance(sessions.open_session(challenge, public_key, signature, NOW_MS), Rejected)
    assert isinstance(sessions.check_token(token, NOW_MS), Rejected)


def test_the_fixture_is_sound() -> None:
    """The fuzz tests above would pass vacuously if valid commands failed too."""
    core, merchant, (buyer, *_) = make_core()
    core.handle(schedule_command(merchant), NOW_MS)
    assert isinstance(core.handle(order_command(buyer, "ok"), NOW_MS)[-2], OrderAccepted)
    for command in (ListProduct, AddStock, ScheduleSale, Register, PlaceOrder):
        assert dataclasses.is_dataclass(command)
