"""EPCIS 2.0: exports validate against the standard's JSON Schema, and the standard's four
example documents import as events (../shared/vectors/epcis/)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from livecommerce.commerce.epcis import EpcisError, Step, parse_document, step_of
from livecommerce.commerce.gs1 import (
    check_digit,
    digital_link,
    gtin_is_valid,
    parse_element_string,
    parse_sgtin,
)
from livecommerce.commerce.replay import replay
from livecommerce.commerce.results import Reason
from livecommerce.commerce.trace import (
    TraceCommand,
    lot_epcis,
    unit_epcis,
    unit_view,
)
from tests.livecommerce.commerce.test_trace import (
    CASE,
    DEPOT,
    FACTORY,
    GTIN,
    Trace,
    unit,
)
from tests.support import ROOT

VECTORS = ROOT.parent / "shared" / "vectors" / "epcis"
ORIGIN = "https://shop.example"
pytestmark = pytest.mark.skipif(not VECTORS.is_dir(), reason=f"no EPCIS vectors at {VECTORS}")


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((VECTORS / "EPCIS-JSON-Schema.json").read_text())
    return loaded


def examples() -> list[Path]:
    return sorted((VECTORS / "examples").glob("*.jsonld"))


def test_gs1_check_digits_and_identifiers() -> None:
    assert check_digit("400638133393") == 1  # EAN-13 4006381333931
    assert gtin_is_valid("80614141123458")  # GS1 EPC TDS's SGTIN example
    assert not gtin_is_valid("80614141123459")
    assert parse_sgtin("urn:epc:id:sgtin:0614141.812345.6789") == ("80614141123458", "6789", 7)
    assert parse_sgtin("urn:epc:id:sgtin:0614141.81234.6789") is None  # 12 digits, not 13
    assert parse_element_string("0180614141123458216789") == ("80614141123458", "6789")
    assert parse_element_string("0180614141123459216789") is None
    assert digital_link("https://a.example/", GTIN, "7") == f"https://a.example/01/{GTIN}/21/7"


def test_a_units_export_validates_against_the_standards_schema() -> None:
    world = Trace()
    world.sold()
    world.ok(world.event(world.certifier, "inspect", [unit("1")], DEPOT, inspection="conformant"))
    world.ok(world.event(world.factory, "commission", [unit("2")], FACTORY))
    world.ok(world.event(world.factory, "pack", [unit("2")], FACTORY, parent=CASE))
    world.ok(world.event(world.factory, "ship", [CASE], FACTORY))
    for code in (unit("1"), unit("2")):
        document = unit_epcis(world.book, code, ORIGIN, world.now_ms)
        assert document is not None
        jsonschema.validate(document, schema())
    exported = unit_epcis(world.book, unit("1"), ORIGIN, world.now_ms)
    assert exported is not None
    events = exported["epcisBody"]["eventList"]
    assert [(e["type"], e.get("action"), e["bizStep"], e["disposition"]) for e in events] == [
        ("ObjectEvent", "ADD", "commissioning", "active"),
        ("ObjectEvent", "OBSERVE", "shipping", "in_transit"),
        ("ObjectEvent", "OBSERVE", "receiving", "in_progress"),
        ("ObjectEvent", "OBSERVE", "shipping", "in_transit"),
        ("ObjectEvent", "OBSERVE", "receiving", "in_progress"),
        ("ObjectEvent", "OBSERVE", "retail_selling", "retail_sold"),
        ("ObjectEvent", "OBSERVE", "inspecting", "conformant"),
    ]
    sale = events[5]
    assert sale["bizTransactionList"][0]["type"] == "po"
    assert sale["epcList"] == [unit("1")]
    assert events[0]["eventID"].startswith("ni:///sha-256;")
    lot = lot_epcis(world.book, world.book.units[unit("1")].lot_urn, ORIGIN, world.now_ms)
    assert lot is not None
    jsonschema.validate(lot, schema())
    kinds = [e["type"] for e in lot["epcisBody"]["eventList"]]
    assert "AggregationEvent" in kinds
    # An export of ours reads back as the same events.
    again = parse_document(json.dumps(exported))
    assert [step_of(o) for o in again] == [
        Step.COMMISSION, Step.SHIP, Step.RECEIVE, Step.SHIP, Step.RECEIVE, Step.SELL, Step.INSPECT,
    ]  # fmt: skip


def test_the_schema_refuses_a_broken_export() -> None:
    """The validation can fail: an event without its time is not EPCIS."""
    world = Trace()
    world.journey()
    document = unit_epcis(world.book, unit("1"), ORIGIN, world.now_ms)
    assert document is not None
    del document["epcisBody"]["eventList"][0]["eventTime"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, schema())


def test_the_four_examples_validate_and_read() -> None:
    found = examples()
    assert len(found) == 4
    read = {}
    for path in found:
        jsonschema.validate(json.loads(path.read_text()), schema())
        read[path.name] = parse_document(path.read_text())
    object_1 = read["Example_9.6.1-ObjectEvent.jsonld"]
    assert [step_of(o) for o in object_1] == [Step.SHIP, Step.RECEIVE]
    assert object_1[0].epcs == (
        "urn:epc:id:sgtin:0614141.107346.2017",
        "urn:epc:id:sgtin:0614141.107346.2018",
    )
    assert object_1[1].biz_location == "urn:epc:id:sgln:0012345.11111.0"
    assert object_1[0].biz_transactions[0] == ("po", "http://transaction.acme.com/po/12345678")
    quantities = read["Example_9.6.2-ObjectEvent.jsonld"][0].quantities
    assert quantities == (("urn:epc:class:lgtin:4012345.012345.998877", "200", "KGM"),)
    aggregation = read["Example_9.6.3-AggregationEvent.jsonld"][0]
    assert aggregation.parent == "urn:epc:id:sscc:0614141.1234567890"
    assert len(aggregation.epcs) == 2
    transformation = read["Example_9.6.4-TransformationEvent.jsonld"][0]
    assert step_of(transformation) is Step.COMMISSION
    assert len(transformation.inputs) == 2
    assert len(transformation.outputs) == 4


def import_command(world: Trace, text: str, signer: Any = None) -> TraceCommand:
    signer = signer or world.factory
    return world.signed(
        signer,
        {
            "kind": "import",
            "signer_id": signer.identity_id,
            "digest": hashlib.sha256(text.encode()).hexdigest(),
        },
        text,
    )


def test_the_four_examples_import_as_events_and_replay() -> None:
    world = Trace()
    for path in examples():
        world.ok(import_command(world, path.read_text()))
    code = "urn:epc:id:sgtin:0614141.107346.2018"
    view = unit_view(world.book, code, 0)
    assert view["known"] is False
    assert view["verdict"] == "possibly_counterfeit"
    assert [(e["biz_step"], e["imported"]) for e in view["events"]] == [
        ("shipping", True), ("receiving", True), ("receiving", True),
    ]  # fmt: skip
    outputs = world.book.sightings_of("urn:epc:id:sgtin:4012345.077889.25")
    assert [s.observation.event_type for s in outputs] == ["TransformationEvent"]
    replayed = replay(world.entries())
    assert len(replayed.trace.sightings) == len(world.book.sightings) == 5


def test_an_import_is_refused_without_a_role_or_its_digest_or_with_a_bad_document() -> None:
    world = Trace()
    text = examples()[0].read_text()
    assert world.refuse(import_command(world, text, world.stranger)) is Reason.ROLE_NOT_ALLOWED
    bad_digest = import_command(world, text)
    tampered = TraceCommand(bad_digest.signed, bad_digest.signature, text + " ")
    assert world.refuse(tampered) is Reason.BAD_FIELD
    assert world.refuse(import_command(world, '{"type": "EPCISDocument"}')) is Reason.BAD_FIELD
    with pytest.raises(EpcisError, match="eventList"):
        parse_document('{"type": "EPCISDocument", "schemaVersion": "2.0", "epcisBody": {}}')
    # A certifier may not import a commissioning of the merchant's own units.
    own = json.loads(text)
    own["epcisBody"]["eventList"][0]["epcList"] = [unit("1")]
    own["epcisBody"]["eventList"][0]["bizStep"] = "commissioning"
    command = import_command(world, json.dumps(own), world.certifier)
    assert world.refuse(command) is Reason.ROLE_NOT_ALLOWED
