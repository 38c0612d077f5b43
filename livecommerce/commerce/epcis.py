"""EPCIS 2.0 events (GS1 EPCIS 2.0 and its Core Business Vocabulary, CBV 2.0): the event
model the traceability core keeps, how a trace step is written in the vocabulary, and
EPCIS JSON-LD documents read and written (sans-I/O).

An EPCIS event says what (`epcList`, `parentID` and `childEPCs`, `inputEPCList` and
`outputEPCList`), when (`eventTime`, `eventTimeZoneOffset`), where (`readPoint`,
`bizLocation`) and why (`bizStep`, `disposition`, `bizTransactionList`). Values of
`bizStep` and `disposition` are CBV's bare names as EPCIS 2.0 JSON-LD writes them
(`"shipping"`, `"in_transit"`), or any other URI.

Reading (`parse_document`) takes ObjectEvent, AggregationEvent and TransformationEvent
(the three the project's steps use) and refuses the rest with a reason; numbers in
quantity lists stay text (they may be decimals, and nothing here computes with them).
Writing (`document`) makes an `EPCISDocument` that validates against the standard's JSON
Schema (tests/livecommerce/commerce/test_epcis.py checks it with `jsonschema`).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

EPCIS_CONTEXT: Final = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
# The prefix of this project's extension fields in an exported document (JSON-LD terms
# outside the standard's context, as the standard's examples do with `example:`).
EXTENSION_PREFIX: Final = "livecommerce"
EXTENSION_NAMESPACE: Final = "https://livecommerce.invalid/ns/trace/v1#"
EVENTS_PER_DOCUMENT_MAX: Final = 100
EPCS_PER_EVENT_MAX: Final = 100
TEXT_CHARS_MAX: Final = 200
EVENT_TYPES: Final = ("ObjectEvent", "AggregationEvent", "TransformationEvent")
ACTIONS: Final = ("ADD", "OBSERVE", "DELETE")


class Step(StrEnum):
    """The steps of a unit's life this project signs. Each is one CBV event shape."""

    COMMISSION = "commission"
    PACK = "pack"
    UNPACK = "unpack"
    SHIP = "ship"
    RECEIVE = "receive"
    INSPECT = "inspect"
    SELL = "sell"
    RETURN = "return"
    RECALL = "recall"


@dataclass(frozen=True, slots=True)
class Shape:
    event_type: str
    action: str
    biz_step: str
    disposition: str  # "" where the step chooses (inspect: conformant | non_conformant)


# CBV 2.0 §7.1 (bizStep) and §7.2 (disposition). Returns are received with disposition
# `returned` (CBV has no returning step); a recall puts the goods on hold (`holding`)
# with disposition `recalled`.
SHAPES: Final[Mapping[Step, Shape]] = {
    Step.COMMISSION: Shape("ObjectEvent", "ADD", "commissioning", "active"),
    Step.PACK: Shape("AggregationEvent", "ADD", "packing", "in_progress"),
    Step.UNPACK: Shape("AggregationEvent", "DELETE", "unpacking", "in_progress"),
    Step.SHIP: Shape("ObjectEvent", "OBSERVE", "shipping", "in_transit"),
    Step.RECEIVE: Shape("ObjectEvent", "OBSERVE", "receiving", "in_progress"),
    Step.INSPECT: Shape("ObjectEvent", "OBSERVE", "inspecting", ""),
    Step.SELL: Shape("ObjectEvent", "OBSERVE", "retail_selling", "retail_sold"),
    Step.RETURN: Shape("ObjectEvent", "OBSERVE", "receiving", "returned"),
    Step.RECALL: Shape("ObjectEvent", "OBSERVE", "holding", "recalled"),
}
INSPECTION_RESULTS: Final = ("conformant", "non_conformant")
_CBV_PREFIXES: Final = (
    "urn:epcglobal:cbv:bizstep:",
    "urn:epcglobal:cbv:disp:",
    "https://ref.gs1.org/cbv/BizStep-",
    "https://ref.gs1.org/cbv/Disp-",
)


@dataclass(frozen=True, slots=True)
class Observation:
    """One EPCIS event, as kept (an imported one, or one of this project's steps)."""

    event_type: str
    action: str  # "" for a TransformationEvent, which has none
    biz_step: str
    disposition: str
    epcs: tuple[str, ...]  # epcList, or childEPCs of an aggregation
    parent: str = ""  # parentID of an aggregation
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    event_time_ms: int = 0
    time_zone: str = "+00:00"
    read_point: str = ""
    biz_location: str = ""
    biz_transactions: tuple[tuple[str, str], ...] = ()  # (type, URI)
    quantities: tuple[tuple[str, str, str], ...] = ()  # (epcClass, quantity, uom)
    event_id: str = ""

    def identifiers(self) -> tuple[str, ...]:
        """Every EPC the event names, its parent first."""
        named = (self.parent, *self.epcs, *self.inputs, *self.outputs)
        return tuple(epc for epc in dict.fromkeys(named) if epc)


def step_of(observation: Observation) -> Step | None:
    """Which of the project's steps an event is (None: another business step, kept and
    shown but not judged)."""
    step, disposition = observation.biz_step, observation.disposition
    if disposition == "recalled":
        return Step.RECALL
    if step == "receiving" and disposition == "returned":
        return Step.RETURN
    for kind, shape in SHAPES.items():
        if shape.biz_step == step and kind not in (Step.RETURN, Step.RECALL):
            return kind
    return None


def observation_of(
    step: Step,
    epcs: Sequence[str],
    parent: str,
    read_point: str,
    inspection: str,
    event_time_ms: int,
    event_id: str,
) -> Observation:
    """The EPCIS event a signed step is."""
    shape = SHAPES[step]
    return Observation(
        event_type=shape.event_type,
        action=shape.action,
        biz_step=shape.biz_step,
        disposition=shape.disposition or inspection,
        epcs=tuple(epcs),
        parent=parent,
        event_time_ms=event_time_ms,
        read_point=read_point,
        event_id=event_id,
    )


# Writing


def iso_time(time_ms: int) -> str:
    """RFC 3339 / xsd:dateTime in UTC with milliseconds, as EPCIS writes `eventTime`."""
    moment = datetime.datetime.fromtimestamp(time_ms / 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{time_ms % 1000:03d}Z"


def event_json(observation: Observation, extensions: Mapping[str, Any]) -> dict[str, Any]:
    """One event of an EPCIS 2.0 JSON-LD document. `extensions` are written with the
    project's prefix (`livecommerce:signer`…)."""
    o = observation
    event: dict[str, Any] = {"type": o.event_type}
    if o.event_id:
        event["eventID"] = o.event_id
    event["eventTime"] = iso_time(o.event_time_ms)
    event["eventTimeZoneOffset"] = o.time_zone
    if o.event_type == "AggregationEvent":
        if o.parent:
            event["parentID"] = o.parent
        event["childEPCs"] = list(o.epcs)
    elif o.event_type == "TransformationEvent":
        event["inputEPCList"] = list(o.inputs)
        event["outputEPCList"] = list(o.outputs)
    else:
        event["epcList"] = list(o.epcs)
    if o.action:
        event["action"] = o.action
    if o.biz_step:
        event["bizStep"] = o.biz_step
    if o.disposition:
        event["disposition"] = o.disposition
    if o.read_point:
        event["readPoint"] = {"id": o.read_point}
    if o.biz_location:
        event["bizLocation"] = {"id": o.biz_location}
    if o.biz_transactions and o.event_type != "TransformationEvent":
        event["bizTransactionList"] = [
            {"type": kind, "bizTransaction": uri} for kind, uri in o.biz_transactions
        ]
    for name, value in extensions.items():
        event[f"{EXTENSION_PREFIX}:{name}"] = value
    return event


def document(document_id: str, created_ms: int, events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """An `EPCISDocument` holding `events` (from `event_json`)."""
    return {
        "@context": [EPCIS_CONTEXT, {EXTENSION_PREFIX: EXTENSION_NAMESPACE}],
        "id": document_id,
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": iso_time(created_ms),
        "epcisBody": {"eventList": list(events)},
    }


# Reading


class EpcisError(ValueError):
    """Not an EPCIS document this project reads; the message says why."""


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= TEXT_CHARS_MAX:
        raise EpcisError(f"{what} must be text of 1..{TEXT_CHARS_MAX} characters")
    return value


def _texts(value: object, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > EPCS_PER_EVENT_MAX:
        raise EpcisError(f"{what} must be a list of at most {EPCS_PER_EVENT_MAX}")
    return tuple(_text(item, what) for item in value)


def _vocabulary(value: object, what: str) -> str:
    """A CBV value as its bare name (a full CBV URI is shortened), or another URI."""
    if value is None:
        return ""
    text = _text(value, what)
    for prefix in _CBV_PREFIXES:
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def _time_ms(value: object) -> int:
    text = _text(value, "eventTime")
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise EpcisError(f"eventTime {text!r} is not an xsd:dateTime") from None
    if moment.tzinfo is None:
        raise EpcisError("eventTime needs a time zone")
    return int(moment.timestamp() * 1000)


def _identifier(value: object, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, dict) or "id" not in value:
        raise EpcisError(f"{what} must be an object with an id")
    return _text(value["id"], f"{what}.id")


def _quantities(value: object) -> tuple[tuple[str, str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > EPCS_PER_EVENT_MAX:
        raise EpcisError(f"a quantity list has at most {EPCS_PER_EVENT_MAX} elements")
    items = []
    for item in value:
        if not isinstance(item, dict):
            raise EpcisError("a quantity element is an object")
        quantity = item.get("quantity", "")
        if isinstance(quantity, bool) or not isinstance(quantity, int | float | str):
            raise EpcisError("quantity is a number")
        items.append(
            (_text(item.get("epcClass"), "epcClass"), str(quantity), str(item.get("uom", "")))
        )
    return tuple(items)


def _transactions(value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > EPCS_PER_EVENT_MAX:
        raise EpcisError("bizTransactionList is a list")
    items = []
    for item in value:
        if not isinstance(item, dict):
            raise EpcisError("a business transaction is an object")
        kind = item.get("type", "")
        uri = _text(item.get("bizTransaction"), "bizTransaction")
        items.append((kind if isinstance(kind, str) else "", uri))
    return tuple(items)


def parse_event(value: object) -> Observation:
    if not isinstance(value, dict):
        raise EpcisError("an event is an object")
    event_type = value.get("type")
    if event_type not in EVENT_TYPES:
        raise EpcisError(f"event type {event_type!r} is not read here ({', '.join(EVENT_TYPES)})")
    action = value.get("action", "")
    if event_type != "TransformationEvent" and action not in ACTIONS:
        raise EpcisError(f"action is one of {', '.join(ACTIONS)}")
    zone = value.get("eventTimeZoneOffset", "+00:00")
    if not isinstance(zone, str) or len(zone) != 6 or zone[0] not in "+-":
        raise EpcisError("eventTimeZoneOffset is +hh:mm or -hh:mm")
    if event_type == "AggregationEvent":
        epcs = _texts(value.get("childEPCs"), "childEPCs")
        quantities = _quantities(value.get("childQuantityList"))
    else:
        epcs = _texts(value.get("epcList"), "epcList")
        quantities = _quantities(value.get("quantityList"))
    if event_type == "TransformationEvent":
        quantities = _quantities(value.get("inputQuantityList")) + _quantities(
            value.get("outputQuantityList")
        )
    event_id = value.get("eventID", "")
    return Observation(
        event_type=str(event_type),
        action=str(action) if isinstance(action, str) else "",
        biz_step=_vocabulary(value.get("bizStep"), "bizStep"),
        disposition=_vocabulary(value.get("disposition"), "disposition"),
        epcs=epcs,
        parent=_text(value["parentID"], "parentID") if "parentID" in value else "",
        inputs=_texts(value.get("inputEPCList"), "inputEPCList"),
        outputs=_texts(value.get("outputEPCList"), "outputEPCList"),
        event_time_ms=_time_ms(value.get("eventTime")),
        time_zone=zone,
        read_point=_identifier(value.get("readPoint"), "readPoint"),
        biz_location=_identifier(value.get("bizLocation"), "bizLocation"),
        biz_transactions=_transactions(value.get("bizTransactionList")),
        quantities=quantities,
        event_id=_text(event_id, "eventID") if event_id else "",
    )


def parse_document(text: str) -> list[Observation]:
    """The events of an EPCIS 2.0 JSON-LD `EPCISDocument` (EpcisError: why not)."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise EpcisError(f"not JSON: {error}") from None
    if not isinstance(value, dict) or value.get("type") != "EPCISDocument":
        raise EpcisError("not an EPCISDocument")
    if value.get("schemaVersion") not in ("2.0", 2.0):
        raise EpcisError("schemaVersion must be 2.0")
    body = value.get("epcisBody")
    events = body.get("eventList") if isinstance(body, dict) else None
    if not isinstance(events, list) or not 1 <= len(events) <= EVENTS_PER_DOCUMENT_MAX:
        raise EpcisError(f"epcisBody.eventList holds 1..{EVENTS_PER_DOCUMENT_MAX} events")
    return [parse_event(event) for event in events]
