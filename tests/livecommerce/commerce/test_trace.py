"""Traceability in the core: every role rule and refusal (each changes nothing), the
counterfeit verdicts, and a replay of the ledger that gives the same book."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest

from livecommerce.commerce.core import CommandRejected
from livecommerce.commerce.epcis import Step
from livecommerce.commerce.events import Event
from livecommerce.commerce.gs1 import Gtin
from livecommerce.commerce.replay import ReplayError, replay
from livecommerce.commerce.results import Reason
from livecommerce.commerce.trace import (
    MAY,
    Role,
    ScanCounts,
    TraceBook,
    TraceCommand,
    TraceRecorded,
    TraceRepeated,
    judge,
    merchant_flags,
    unit_view,
)
from tests.livecommerce.commerce.helpers import Signer, register_command
from tests.livecommerce.commerce.test_escrow import World

GTIN = "10614141073464"  # urn:epc:id:sgtin:0614141.107346.<serial>
PREFIX_DIGITS = 7
LOT = "L1"
FACTORY = "urn:epc:id:sgln:0614141.00001.0"
DEPOT = "urn:epc:id:sgln:0614141.00002.0"
SHOP = "urn:epc:id:sgln:0614141.00003.0"
ELSEWHERE = "urn:epc:id:sgln:0614141.00009.0"
CASE = "urn:epc:id:sscc:0614141.1234567890"


def unit(serial: str) -> str:
    return Gtin(GTIN, PREFIX_DIGITS).sgtin(serial)


class Trace(World):
    """The escrow's world, with a manufacturer, a warehouse, a carrier and a certifier
    who hold their roles for the merchant, a lot and three units."""

    def __init__(self) -> None:
        super().__init__()
        self.factory = Signer("factory")
        self.depot = Signer("depot")
        self.carrier = Signer("carrier")
        self.certifier = Signer("certifier")
        self.stranger = Signer("stranger")
        for signer in (self.factory, self.depot, self.carrier, self.certifier, self.stranger):
            self.run(register_command(signer, "Someone", self.now_ms))
        for signer, role, where in [
            (self.factory, "manufacturer", FACTORY),
            (self.depot, "warehouse", DEPOT),
            (self.carrier, "carrier", ""),
            (self.certifier, "certifier", ""),
        ]:
            self.ok(self.grant(signer, role, where))
        self.ok(self.lot())
        self.ok(self.units(["1", "2", "3"]))

    @property
    def book(self) -> TraceBook:
        return self.core.trace

    def signed(self, signer: Signer, fields: dict[str, Any], document: str = "") -> TraceCommand:
        fields = {"time_ms": self.now_ms, **fields}
        unsigned = TraceCommand(fields, "", document)
        return TraceCommand(fields, signer.sign(unsigned.signing_bytes()), document)

    def grant(
        self, actor: Signer, role: str, location: str = "", active: bool = True, **more: Any
    ) -> TraceCommand:
        signer = more.pop("signer", self.merchant)
        fields = {
            "kind": "actor", "merchant_id": self.merchant.identity_id,
            "actor_id": actor.identity_id, "role": role, "name": f"{role} co",
            "location": location, "active": active, **more,
        }  # fmt: skip
        return self.signed(signer, fields)

    def lot(self, signer: Signer | None = None, **more: Any) -> TraceCommand:
        fields = {
            "kind": "lot", "merchant_id": (signer or self.merchant).identity_id,
            "product_id": "mug", "gtin": GTIN, "company_prefix_digits": PREFIX_DIGITS,
            "lot": LOT, **more,
        }  # fmt: skip
        return self.signed(signer or self.merchant, fields)

    def units(self, serials: list[str], signer: Signer | None = None) -> TraceCommand:
        fields = {
            "kind": "units", "merchant_id": (signer or self.merchant).identity_id,
            "gtin": GTIN, "lot": LOT, "serials": serials,
        }  # fmt: skip
        return self.signed(signer or self.merchant, fields)

    def event(
        self, signer: Signer, step: str, epcs: list[str], where: str, **more: Any
    ) -> TraceCommand:
        fields = {
            "kind": "event", "signer_id": signer.identity_id, "step": step, "epcs": epcs,
            "parent": "", "read_point": where, "inspection": "", "buyer_id": "",
            "order_id": "", **more,
        }  # fmt: skip
        return self.signed(signer, fields)

    def sell(
        self, epcs: list[str], buyer: Signer, order_id: str, signer: Signer | None = None
    ) -> TraceCommand:
        who = signer or self.merchant
        return self.event(who, "sell", epcs, SHOP, buyer_id=buyer.identity_id, order_id=order_id)

    def ok(self, command: TraceCommand) -> TraceRecorded:
        events = self.run(command)
        recorded = [event for event in events if isinstance(event, TraceRecorded)]
        assert recorded, events
        return recorded[0]

    def refuse(self, command: TraceCommand) -> Reason:
        """Refused, and nothing changed: the book's records and every view are the same."""
        before = self.snapshot()
        events = self.run(command)
        rejected = [event for event in events if isinstance(event, CommandRejected)]
        assert rejected, events
        assert self.snapshot() == before
        return rejected[0].reason

    def snapshot(self) -> Any:
        book = self.book
        return copy.deepcopy(
            (
                [(r.kind, r.digest) for r in book.records],
                len(book.sightings),
                sorted(book.units),
                sorted(book.lots),
                [(g.role, g.active) for a in sorted(book._grants) for g in book.grants_of(a)],
                {urn: unit_view(book, urn, 0) for urn in book.units},
            )
        )

    def journey(self, serial: str = "1") -> None:
        """Commissioned at the factory, shipped to the depot, received, shipped to the shop,
        received by the merchant."""
        code = unit(serial)
        self.ok(self.event(self.factory, "commission", [code], FACTORY))
        self.ok(self.event(self.factory, "ship", [code], FACTORY))
        self.ok(self.event(self.depot, "receive", [code], DEPOT))
        self.ok(self.event(self.depot, "ship", [code], DEPOT))
        self.ok(self.event(self.merchant, "receive", [code], SHOP))

    def sold(self, serial: str = "1", order_id: str = "o1") -> Signer:
        buyer = self.buyers[0]
        self.journey(serial)
        self.paid(buyer, order_id)
        self.ok(self.sell([unit(serial)], buyer, order_id))
        return buyer

    def verdict(self, serial: str = "1") -> tuple[str, list[str]]:
        found = judge(self.book, unit(serial))
        return found.verdict, [flag.code for flag in found.flags]


def test_a_unit_from_the_factory_to_the_buyer_is_genuine_and_replays() -> None:
    world = Trace()
    buyer = world.sold()
    assert world.verdict() == ("genuine", [])
    world.ship(buyer, "o1")
    world.ok(world.event(world.carrier, "ship", [unit("1")], DEPOT))
    world.ok(world.event(world.carrier, "receive", [unit("1")], ELSEWHERE))
    world.ok(world.event(world.certifier, "inspect", [unit("1")], SHOP, inspection="conformant"))
    assert world.verdict() == ("genuine", [])
    view = unit_view(world.book, unit("1"), 3)
    assert [event["step"] for event in view["events"]] == [
        "commission", "ship", "receive", "ship", "receive", "sell", "ship", "receive", "inspect",
    ]  # fmt: skip
    assert view["events"][0]["actor"] == "manufacturer co"
    assert view["events"][0]["place"] == "manufacturer co"
    assert view["product_title"] == "A mug"
    assert view["digital_link_path"] == f"/01/{GTIN}/21/1"
    assert world.book.units_of_order(buyer.identity_id, "o1") == [unit("1")]
    # The element string of the Digital Link resolves to the same unit.
    assert world.book.resolve(f"01{GTIN}211") == unit("1")
    replayed = replay(world.entries())
    assert [(r.kind, r.digest, r.signed) for r in replayed.trace.records] == [
        (r.kind, r.digest, r.signed) for r in world.book.records
    ]
    assert unit_view(replayed.trace, unit("1"), 3) | {"events": None} == view | {"events": None}
    assert len(unit_view(replayed.trace, unit("1"), 3)["events"]) == len(view["events"])


def test_the_same_signed_bytes_again_are_a_repeat() -> None:
    world = Trace()
    command = world.event(world.factory, "commission", [unit("1")], FACTORY)
    world.ok(command)
    before = world.snapshot()
    events = world.run(command)
    assert [type(event) for event in events] == [TraceRepeated]
    assert world.snapshot() == before


@pytest.mark.parametrize(
    ("role", "step"),
    [(role, step) for role in Role for step in Step if step is not Step.SELL],
)
def test_each_role_signs_only_its_steps(role: Role, step: Step) -> None:
    world = Trace()
    actor = Signer("actor")
    world.run(register_command(actor, "Someone", world.now_ms))
    world.ok(world.grant(actor, str(role)))
    code = unit("1")
    world.ok(world.event(world.factory, "commission", [code], FACTORY))
    more: dict[str, Any] = {}
    epcs = [code]
    if step in (Step.PACK, Step.UNPACK):
        more["parent"] = CASE
        if step is Step.UNPACK:
            world.ok(world.event(world.factory, "pack", [code], FACTORY, parent=CASE))
    if step is Step.INSPECT:
        more["inspection"] = "conformant"
    command = world.event(actor, str(step), epcs, DEPOT, **more)
    if step in MAY[role]:
        recorded = world.ok(command)
        assert recorded.signed["step"] == step
    else:
        assert world.refuse(command) is Reason.ROLE_NOT_ALLOWED


def test_refusals_change_nothing() -> None:
    world = Trace()
    code = unit("1")
    other = world.other_merchant
    cases: list[tuple[TraceCommand, Reason]] = [
        # Roles.
        (world.event(world.stranger, "commission", [code], FACTORY), Reason.ROLE_NOT_ALLOWED),
        (world.grant(world.stranger, "carrier", signer=other), Reason.BAD_SIGNATURE),
        (world.event(world.carrier, "commission", [code], FACTORY), Reason.ROLE_NOT_ALLOWED),
        (world.grant(world.stranger, "boss"), Reason.BAD_FIELD),
        (world.grant(Signer("nobody"), "carrier"), Reason.UNKNOWN_IDENTITY),
        (world.grant(world.stranger, "carrier", "not-a-place"), Reason.BAD_FIELD),
        # Lots and units.
        (world.lot(other), Reason.NOT_MERCHANT),
        (world.lot(product_id="no-such"), Reason.UNKNOWN_PRODUCT),
        (world.lot(gtin="10614141073465"), Reason.BAD_FIELD),  # bad check digit
        (world.lot(lot="bad lot!"), Reason.BAD_FIELD),
        (world.lot(company_prefix_digits=13), Reason.BAD_FIELD),
        (world.units(["1"]), Reason.UNIT_EXISTS),
        (world.units(["9", "9"]), Reason.BAD_FIELD),
        (world.units(["9"], other), Reason.NOT_MERCHANT),
        (world.units([]), Reason.BAD_FIELD),
        # Events.
        (world.event(world.factory, "commission", [unit("77")], FACTORY), Reason.UNKNOWN_UNIT),
        (world.event(world.factory, "ship", [CASE], FACTORY), Reason.UNKNOWN_UNIT),
        (world.event(world.factory, "commission", [code], "somewhere"), Reason.BAD_FIELD),
        (world.event(world.factory, "teleport", [code], FACTORY), Reason.BAD_FIELD),
        (world.event(world.factory, "pack", [code], FACTORY), Reason.BAD_FIELD),  # no case
        (world.event(world.factory, "unpack", [code], FACTORY, parent=CASE), Reason.BAD_FIELD),
        (world.event(world.certifier, "inspect", [code], SHOP), Reason.BAD_FIELD),
        (world.event(world.factory, "commission", [code, code], FACTORY), Reason.BAD_FIELD),
        (world.sell([code], world.buyers[0], "no-such"), Reason.UNKNOWN_ORDER),
        (world.event(world.merchant, "sell", [code], SHOP), Reason.BAD_FIELD),  # no order
    ]
    for command, reason in cases:
        assert world.refuse(command) is reason, command.signed
    # Shape, time and signature.
    stale = world.event(
        world.factory, "commission", [code], FACTORY, time_ms=world.now_ms - 600_000
    )
    assert world.refuse(stale) is Reason.STALE
    forged = TraceCommand(stale.signed | {"time_ms": world.now_ms}, stale.signature)
    assert world.refuse(forged) is Reason.BAD_SIGNATURE
    extra = world.event(world.factory, "commission", [code], FACTORY, colour="red")
    assert world.refuse(extra) is Reason.BAD_FIELD
    wrong_type = world.event(world.factory, "commission", code, FACTORY)  # type: ignore[arg-type]
    assert world.refuse(wrong_type) is Reason.BAD_FIELD
    assert world.refuse(TraceCommand({"kind": "nope"}, "")) is Reason.BAD_FIELD


def test_a_sale_links_a_paid_order_of_the_merchant_up_to_its_quantity() -> None:
    world = Trace()
    ann, bob = world.buyers[0], world.buyers[1]
    for serial in ("1", "2", "3"):
        world.journey(serial)
    world.order(ann, "held")  # not paid: no units
    assert world.refuse(world.sell([unit("1")], ann, "held")) is Reason.UNKNOWN_ORDER
    world.paid(ann, "o1")
    assert world.refuse(world.sell([unit("1"), unit("2")], ann, "o1")) is Reason.BAD_QUANTITY
    assert world.refuse(world.sell([unit("1")], ann, "o1", world.depot)) is (
        Reason.ROLE_NOT_ALLOWED
    )
    world.ok(world.sell([unit("1")], ann, "o1"))
    world.paid(bob, "cancelled")
    world.step(bob, "cancel", bob, "cancelled")
    assert world.refuse(world.sell([unit("2")], bob, "cancelled")) is Reason.WRONG_STAGE


def test_a_revoked_role_signs_no_more() -> None:
    world = Trace()
    world.ok(world.event(world.factory, "commission", [unit("1")], FACTORY))
    world.ok(world.grant(world.factory, "manufacturer", FACTORY, active=False))
    command = world.event(world.factory, "ship", [unit("1")], FACTORY)
    assert world.refuse(command) is Reason.ROLE_NOT_ALLOWED


def test_a_case_carries_its_units_history() -> None:
    world = Trace()
    codes = [unit("1"), unit("2")]
    for code in codes:
        world.ok(world.event(world.factory, "commission", [code], FACTORY))
    world.ok(world.event(world.factory, "pack", codes, FACTORY, parent=CASE))
    world.ok(world.event(world.factory, "ship", [CASE], FACTORY))
    world.ok(world.event(world.depot, "receive", [CASE], DEPOT))
    world.ok(world.event(world.depot, "unpack", codes, DEPOT, parent=CASE))
    world.ok(world.event(world.depot, "ship", [CASE], DEPOT))  # the empty case goes on
    steps = [
        (event["step"], event["via"]) for event in unit_view(world.book, codes[0], 0)["events"]
    ]
    assert steps == [("commission", ""), ("pack", ""), ("ship", CASE), ("receive", CASE),
                     ("unpack", "")]  # fmt: skip
    assert world.verdict("1") == ("genuine", [])
    # A unit packed in a case is not packed in another one.
    other_case = "urn:epc:id:sscc:0614141.1234567891"
    world.ok(world.event(world.depot, "pack", [codes[0]], DEPOT, parent=other_case))
    assert world.refuse(world.event(world.depot, "pack", [codes[0]], DEPOT, parent=CASE)) is (
        Reason.BAD_FIELD
    )


# Counterfeit verdicts


def test_an_unknown_code_is_possibly_counterfeit_and_its_scans_reach_the_merchant() -> None:
    world = Trace()
    scans = ScanCounts()
    fake = unit("999")
    assert world.verdict("999") == ("possibly_counterfeit", ["unknown"])
    merchant = world.book.merchant_of_code(fake)
    assert merchant == world.merchant.identity_id
    assert scans.count(fake, merchant) == 1
    assert scans.count(fake, merchant) == 2
    flags = merchant_flags(world.book, scans, world.merchant.identity_id)
    assert flags["unknown_scanned"] == [{"code": fake, "scans": 2}]
    assert world.book.merchant_of_code("urn:epc:id:sgtin:4012345.011122.25") is None


def test_a_unit_sold_to_two_orders_is_flagged() -> None:
    world = Trace()
    world.sold("1", "o1")
    bob = world.buyers[1]
    world.paid(bob, "o2")
    world.ok(world.sell([unit("1")], bob, "o2"))
    assert world.verdict() == ("possibly_counterfeit", ["sold_twice"])
    flagged = merchant_flags(world.book, ScanCounts(), world.merchant.identity_id)["flagged"]
    assert [item["unit"] for item in flagged] == [unit("1")]


def test_a_unit_seen_after_its_sale_where_it_should_not_be_is_flagged() -> None:
    world = Trace()
    world.sold()
    world.ok(world.event(world.depot, "receive", [unit("1")], ELSEWHERE))
    verdict, flags = world.verdict()
    assert (verdict, flags) == ("possibly_counterfeit", ["seen_after_sale"])
    assert ELSEWHERE in judge(world.book, unit("1")).flags[0].detail


def test_a_return_puts_the_unit_back_and_it_may_be_sold_again() -> None:
    world = Trace()
    world.sold("1", "o1")
    world.ok(world.event(world.merchant, "return", [unit("1")], SHOP))
    bob = world.buyers[1]
    world.paid(bob, "o2")
    world.ok(world.sell([unit("1")], bob, "o2"))
    assert world.verdict() == ("genuine", [])


@pytest.mark.parametrize(
    ("steps", "detail"),
    [
        ([("factory", "ship", FACTORY)], "before it was commissioned"),
        ([("factory", "commission", FACTORY), ("depot", "receive", DEPOT)], "being shipped"),
        ([("factory", "commission", FACTORY), ("factory", "ship", FACTORY),
          ("depot", "ship", DEPOT)], "shipped again"),
        ([("factory", "commission", FACTORY), ("merchant", "return", SHOP)], "without being sold"),
    ],
)  # fmt: skip
def test_a_chain_with_a_gap_is_flagged(steps: list[tuple[str, str, str]], detail: str) -> None:
    world = Trace()
    for who, step, where in steps:
        world.ok(world.event(getattr(world, who), step, [unit("1")], where))
    found = judge(world.book, unit("1"))
    assert found.verdict == "possibly_counterfeit"
    assert [flag.code for flag in found.flags] == ["chain_gap"]
    assert detail in found.flags[0].detail


def test_a_recall_and_a_failed_inspection_are_not_counterfeit() -> None:
    world = Trace()
    world.journey()
    world.ok(
        world.event(world.certifier, "inspect", [unit("1")], SHOP, inspection="non_conformant")
    )
    world.ok(world.event(world.factory, "recall", [unit("1")], FACTORY))
    assert world.verdict() == ("recalled", ["failed_inspection"])
    assert world.verdict("2") == ("no_history", [])


def test_replay_refuses_an_altered_trace_entry() -> None:
    world = Trace()
    world.journey()
    entries = world.entries()
    at = next(i for i, (kind, fields) in enumerate(entries) if fields.get("action") == "event")
    kind, fields = entries[at]
    altered = dict(fields, signed=dict(fields["signed"], read_point=ELSEWHERE))  # type: ignore[call-overload]
    with pytest.raises(ReplayError, match="trace/v1"):
        replay([*entries[:at], (kind, altered), *entries[at + 1 :]])


def _events(events: list[Event]) -> list[str]:
    return [type(event).__name__ for event in events]


def test_digest_is_the_sha256_of_the_signed_bytes() -> None:
    world = Trace()
    command = world.event(world.factory, "commission", [unit("1")], FACTORY)
    recorded = world.ok(command)
    assert recorded.digest == hashlib.sha256(command.signing_bytes()).hexdigest()
    assert recorded.to_entry()[1]["signed"] == command.signed
