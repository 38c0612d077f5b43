"""Traceability: where a product unit came from and where it has been, signed step by
step, and the verdict on a code someone scans (sans-I/O).

Who signs what (one domain, `livecommerce/trace/v1`, the kind inside the signed fields):

| kind | signed by | what |
|---|---|---|
| `actor` | a merchant | gives (`active: false`: takes back) a role for its goods to a key |
| `lot` | the product's merchant | a batch: its GTIN, the company prefix length, the lot |
| `units` | the lot's merchant | serial numbers of the lot: each unit is `urn:epc:id:sgtin:…` |
| `event` | an actor | one step of one or more units (or of a case, an SSCC, holding them) |
| `import` | an actor | an EPCIS 2.0 document's events, signed by the document's SHA-256 |

The product's merchant always has the role `merchant` for its own goods; other roles are
given by it. A role may sign only its steps (`MAY`): a manufacturer commissions, packs,
ships, receives and recalls; a warehouse packs, ships, receives and takes returns; a
carrier ships and receives; a certifier inspects; the merchant does all but inspect, and
alone sells, linking the unit to a paid order of its own of that product (at shipping:
the order must be paid and not cancelled, and an order takes at most its quantity of
units). Every refusal changes nothing. The same signed bytes again are a repeat.

What is judged is not refused: an actor with the right role who reports a unit somewhere
is recorded, because that report is the evidence. `judge` reads a unit's chain (its own
events and, while it was packed, its case's) and flags a code that is unknown, sold to two
orders, seen after its sale where a sold unit should not be (anything but its delivery by
a carrier or the merchant, an inspection, its return or a recall), or whose chain has a
gap (a step before commissioning, shipped twice without being received, received without
being shipped, returned without being sold). Scans are counted off the ledger
(`ScanCounts`): they are page views, not facts anyone signed.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from livecommerce.commerce import epcis
from livecommerce.commerce.canonical import DOMAIN_TRACE, CanonicalError, signing_bytes
from livecommerce.commerce.catalog import Catalog
from livecommerce.commerce.epcis import (
    EPCS_PER_EVENT_MAX,
    INSPECTION_RESULTS,
    EpcisError,
    Observation,
    Step,
    event_json,
    observation_of,
    parse_document,
    step_of,
)
from livecommerce.commerce.escrow import Life, Stage
from livecommerce.commerce.events import Entry, Event
from livecommerce.commerce.gs1 import (
    COMPANY_PREFIX_DIGITS_MAX,
    COMPANY_PREFIX_DIGITS_MIN,
    SERIAL,
    Gtin,
    gtin_is_valid,
    is_sgln,
    is_sscc,
    parse_element_string,
    parse_sgtin,
)
from livecommerce.commerce.identity import IdentityRegistry, verify_signature
from livecommerce.commerce.results import Reason, Rejected, all_text

TRACE_FRESHNESS_MS: Final = 300_000
ACTOR_NAME_CHARS_MAX: Final = 80
SERIALS_PER_COMMAND_MAX: Final = 500
DOCUMENT_CHARS_MAX: Final = 15_000
GRANTS_MAX: Final = 100_000
LOTS_MAX: Final = 100_000
UNITS_MAX: Final = 1_000_000
SIGHTINGS_MAX: Final = 2_000_000
SIGHTINGS_PER_CODE_MAX: Final = 1_000
FLAGGED_UNITS_MAX: Final = 1_000


class Role(StrEnum):
    MERCHANT = "merchant"
    MANUFACTURER = "manufacturer"
    WAREHOUSE = "warehouse"
    CARRIER = "carrier"
    CERTIFIER = "certifier"


MAY: Final[Mapping[Role, frozenset[Step]]] = {
    Role.MERCHANT: frozenset(
        {
            Step.COMMISSION,
            Step.PACK,
            Step.UNPACK,
            Step.SHIP,
            Step.RECEIVE,
            Step.SELL,
            Step.RETURN,
            Step.RECALL,
        }
    ),
    Role.MANUFACTURER: frozenset(
        {Step.COMMISSION, Step.PACK, Step.UNPACK, Step.SHIP, Step.RECEIVE, Step.RECALL}
    ),
    Role.WAREHOUSE: frozenset({Step.PACK, Step.UNPACK, Step.SHIP, Step.RECEIVE, Step.RETURN}),
    Role.CARRIER: frozenset({Step.SHIP, Step.RECEIVE}),
    Role.CERTIFIER: frozenset({Step.INSPECT}),
}
# An order may get its units once it is paid and until it is settled (not cancelled).
SELLABLE_STAGES: Final = frozenset(
    {Stage.PAID, Stage.SHIPPED, Stage.DELIVERED, Stage.CONFIRMED, Stage.SETTLED}
)


class Kind(StrEnum):
    ACTOR = "actor"
    LOT = "lot"
    UNITS = "units"
    EVENT = "event"
    IMPORT = "import"


# The signed fields of each kind, all required, nothing else; and who signs.
FIELDS: Final[Mapping[Kind, Mapping[str, type]]] = {
    Kind.ACTOR: {
        "kind": str, "merchant_id": str, "actor_id": str, "role": str, "name": str,
        "location": str, "active": bool, "time_ms": int,
    },
    Kind.LOT: {
        "kind": str, "merchant_id": str, "product_id": str, "gtin": str,
        "company_prefix_digits": int, "lot": str, "time_ms": int,
    },
    Kind.UNITS: {
        "kind": str, "merchant_id": str, "gtin": str, "lot": str, "serials": list,
        "time_ms": int,
    },
    Kind.EVENT: {
        "kind": str, "signer_id": str, "step": str, "epcs": list, "parent": str,
        "read_point": str, "inspection": str, "buyer_id": str, "order_id": str,
        "time_ms": int,
    },
    Kind.IMPORT: {"kind": str, "signer_id": str, "digest": str, "time_ms": int},
}  # fmt: skip
SIGNER_FIELD: Final[Mapping[Kind, str]] = {
    Kind.ACTOR: "merchant_id",
    Kind.LOT: "merchant_id",
    Kind.UNITS: "merchant_id",
    Kind.EVENT: "signer_id",
    Kind.IMPORT: "signer_id",
}


@dataclass(frozen=True, slots=True)
class TraceCommand:
    """A signed trace command: `signed` is exactly what was signed (`FIELDS[kind]`),
    `document` the EPCIS document of an import (its SHA-256 hex is `signed["digest"]`)."""

    signed: dict[str, Any]
    signature: str
    document: str = ""

    def signing_bytes(self) -> bytes:
        return signing_bytes(DOMAIN_TRACE, self.signed)


@dataclass(frozen=True, slots=True)
class TraceRecorded(Event):
    """A trace command taken: `trace/v1` with the signed fields as signed, so anyone
    rebuilds the signed bytes from the entry alone; `digest` is their SHA-256."""

    kind: str
    signed: dict[str, Any]
    signature: str
    digest: str
    document: str
    time_ms: int

    def to_entry(self) -> Entry:
        fields: dict[str, object] = {
            "action": self.kind,
            "signed": self.signed,
            "signature": self.signature,
            "digest": self.digest,
            "time_ms": self.time_ms,
        }
        if self.document:
            fields["document"] = self.document
        return "trace/v1", fields


@dataclass(frozen=True, slots=True)
class TraceRepeated(Event):
    """The same signed bytes again: nothing changed."""

    digest: str
    ledger_index: int

    def to_entry(self) -> None:
        return None


# State


@dataclass
class Grant:
    merchant_id: str
    actor_id: str
    role: Role
    name: str
    location: str
    active: bool
    record: int


@dataclass
class Lot:
    urn: str
    merchant_id: str
    product_id: str
    gtin: str
    lot: str
    record: int


@dataclass
class Unit:
    urn: str
    gtin: str
    serial: str
    lot_urn: str
    merchant_id: str
    product_id: str
    record: int


@dataclass
class Record:
    """One taken command, in ledger order; `ledger_index` once the adapter knows it."""

    kind: Kind
    signed: dict[str, Any]
    signature: str
    digest: str
    time_ms: int
    ledger_index: int = -1


@dataclass(frozen=True, slots=True)
class Sighting:
    """One event as it bears on the codes it names: who (`signer_id` with the `role` that
    let them), which step (None: a business step this project does not judge), and for
    a sale, the order."""

    number: int
    record: int
    position: int  # within an imported document; 0 otherwise
    step: Step | None
    signer_id: str
    role: str
    buyer_id: str
    order_id: str
    observation: Observation
    imported: bool


@dataclass(frozen=True, slots=True)
class Flag:
    code: str  # unknown | sold_twice | seen_after_sale | chain_gap | failed_inspection
    detail: str
    sighting: int = -1  # the event it concerns (its number), or -1

    @property
    def counterfeit(self) -> bool:
        return self.code != "failed_inspection"


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: str  # genuine | possibly_counterfeit | recalled | no_history
    flags: tuple[Flag, ...]


OrderOf = Callable[[str, str], Life | None]


@dataclass(frozen=True)
class TraceLimits:
    grants_max: int = GRANTS_MAX
    lots_max: int = LOTS_MAX
    units_max: int = UNITS_MAX
    sightings_max: int = SIGHTINGS_MAX
    sightings_per_code_max: int = SIGHTINGS_PER_CODE_MAX
    freshness_ms: int = TRACE_FRESHNESS_MS


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in text)


class TraceBook:
    def __init__(
        self,
        identities: IdentityRegistry,
        catalog: Catalog,
        order_of: OrderOf,
        limits: TraceLimits | None = None,
    ) -> None:
        self.identities = identities
        self.catalog = catalog
        self.order_of = order_of
        self.limits = limits or TraceLimits()
        self.records: list[Record] = []
        self._by_digest: dict[str, int] = {}
        self._grants: dict[str, dict[tuple[str, Role], Grant]] = {}  # actor -> grants
        self._grant_count = 0
        self._gtins: dict[str, tuple[str, str, int]] = {}  # gtin -> merchant, product, cp
        self.lots: dict[str, Lot] = {}
        self.units: dict[str, Unit] = {}
        self.sightings: list[Sighting] = []
        self._by_code: dict[str, list[int]] = {}
        self._case_merchant: dict[str, str] = {}
        self._case_of: dict[str, str] = {}  # unit -> the case it is packed in now
        self._sold: dict[tuple[str, str], list[str]] = {}  # order -> units
        self._lots_of_product: dict[str, list[str]] = {}
        self._touched: dict[str, OrderedDict[str, None]] = {}  # merchant -> units seen

    # Reading

    def roles_of(self, merchant_id: str, actor_id: str) -> list[Role]:
        roles = [Role.MERCHANT] if actor_id == merchant_id else []
        for (merchant, role), grant in self._grants.get(actor_id, {}).items():
            if merchant == merchant_id and grant.active and role not in roles:
                roles.append(role)
        return roles

    def grant(self, merchant_id: str, actor_id: str, role: str) -> Grant | None:
        return self._grants.get(actor_id, {}).get((merchant_id, Role(role)))

    def grants_of(self, actor_id: str) -> list[Grant]:
        return list(self._grants.get(actor_id, {}).values())

    def record_of_digest(self, digest: str) -> Record | None:
        number = self._by_digest.get(digest)
        return None if number is None else self.records[number]

    def indexed(self, digest: str, ledger_index: int) -> None:
        """The adapter learnt where the entry of `digest` is in the ledger."""
        number = self._by_digest.get(digest)
        if number is not None:
            self.records[number].ledger_index = ledger_index

    def gtin_of(self, gtin: str) -> tuple[str, str, int] | None:
        """(merchant, product, company prefix digits) of a registered GTIN."""
        return self._gtins.get(gtin)

    def resolve(self, code: str) -> str:
        """The SGTIN URN a scanned code names: an SGTIN URN as it is, or the element
        string `01<gtin>21<serial>` of a registered GTIN; other codes as they are."""
        parsed = parse_element_string(code)
        if parsed is None:
            return code
        known = self._gtins.get(parsed[0])
        if known is None:
            return code
        return Gtin(parsed[0], known[2]).sgtin(parsed[1])

    def merchant_of_code(self, code: str) -> str | None:
        """Whose GTIN a code (registered or not) carries: the merchant to warn."""
        parsed = parse_sgtin(code) or parse_element_string(code)
        if parsed is None:
            return None
        known = self._gtins.get(parsed[0])
        return None if known is None else known[0]

    def lots_of_product(self, product_id: str) -> list[Lot]:
        return [self.lots[urn] for urn in self._lots_of_product.get(product_id, [])]

    def units_of_order(self, buyer_id: str, order_id: str) -> list[str]:
        return list(self._sold.get((buyer_id, order_id), []))

    def units_of_lot(self, lot_urn: str, limit: int) -> list[Unit]:
        found = []
        for unit in self.units.values():
            if unit.lot_urn == lot_urn:
                found.append(unit)
                if len(found) >= limit:
                    break
        return found

    def touched_units(self, merchant_id: str) -> list[str]:
        return list(self._touched.get(merchant_id, {}))

    def sightings_of(self, code: str) -> list[Sighting]:
        return [self.sightings[number] for number in self._by_code.get(code, [])]

    def chain(self, urn: str) -> list[tuple[Sighting, str]]:
        """The unit's events in ledger order, each with the case it reached the unit
        through ("" for its own): a case's events count while the unit is packed in it."""
        own = self._by_code.get(urn, [])
        numbers: dict[int, str] = dict.fromkeys(own, "")
        case, packed_at = "", -1
        for number in own:
            sighting = self.sightings[number]
            o = sighting.observation
            if o.event_type != "AggregationEvent" or not o.parent or urn not in o.epcs:
                continue
            if o.action == "ADD":
                case, packed_at = o.parent, number
            elif o.action == "DELETE" and case == o.parent:
                numbers.update(self._case_between(case, packed_at, number))
                case = ""
        if case:
            numbers.update(self._case_between(case, packed_at, len(self.sightings)))
        return [(self.sightings[number], via) for number, via in sorted(numbers.items())]

    def _case_between(self, case: str, after: int, before: int) -> dict[int, str]:
        return {n: case for n in self._by_code.get(case, []) if after < n < before}

    # Taking a command

    def take(
        self, command: TraceCommand, now_ms: int, verify: bool = True, live: bool = True
    ) -> list[Event] | Rejected:
        """Check and take a signed command, or refuse it (nothing changes). `verify`
        False skips the signature (replaying the server's own ledger); `live` False skips
        the freshness and order checks (a ledger's history: they held when it was taken,
        and a web replica holds no orders)."""
        signed = command.signed
        if not isinstance(signed, dict) or not all_text(command.signature, command.document):
            return Rejected(Reason.BAD_FIELD, "signed is an object; signature, document text")
        kind_text = signed.get("kind")
        if kind_text not in Kind.__members__.values():
            return Rejected(Reason.BAD_FIELD, f"kind is one of {', '.join(Kind)}")
        kind = Kind(str(kind_text))
        expected = FIELDS[kind]
        if set(signed) != set(expected):
            return Rejected(
                Reason.BAD_FIELD, f"a {kind} signs exactly {', '.join(sorted(expected))}"
            )
        for name, kind_of in expected.items():
            value = signed[name]
            if type(value) is not kind_of:
                return Rejected(Reason.BAD_FIELD, f"{name} is {kind_of.__name__}")
        signer_id = signed[SIGNER_FIELD[kind]]
        if self.identities.get(signer_id) is None:
            return Rejected(Reason.UNKNOWN_IDENTITY, "the signer's key is not registered")
        try:
            message = command.signing_bytes()
        except CanonicalError as error:
            return Rejected(Reason.BAD_FIELD, str(error))
        if verify:
            refused = verify_signature(signer_id, message, command.signature)
            if refused is not None:
                return refused
        digest = hashlib.sha256(message).hexdigest()
        seen = self._by_digest.get(digest)
        if seen is not None:
            return [TraceRepeated(digest, self.records[seen].ledger_index)]
        if live and abs(now_ms - signed["time_ms"]) > self.limits.freshness_ms:
            return Rejected(Reason.STALE, "the command's time is too far from the server clock")
        if kind is Kind.IMPORT and not command.document:
            return Rejected(Reason.BAD_FIELD, "an import carries its document")
        if kind is not Kind.IMPORT and command.document:
            return Rejected(Reason.BAD_FIELD, "only an import carries a document")
        apply: Callable[[int], None] | Rejected
        if kind is Kind.ACTOR:
            apply = self._actor(signed)
        elif kind is Kind.LOT:
            apply = self._lot(signed)
        elif kind is Kind.UNITS:
            apply = self._units(signed)
        elif kind is Kind.EVENT:
            apply = self._event(signed, digest, live)
        else:
            apply = self._import(signed, command.document)
        if isinstance(apply, Rejected):
            return apply
        number = len(self.records)
        self.records.append(Record(kind, signed, command.signature, digest, now_ms))
        self._by_digest[digest] = number
        apply(number)
        return [TraceRecorded(kind, signed, command.signature, digest, command.document, now_ms)]

    def _actor(self, signed: dict[str, Any]) -> Callable[[int], None] | Rejected:
        merchant_id, actor_id = signed["merchant_id"], signed["actor_id"]
        if signed["role"] not in Role.__members__.values():
            return Rejected(Reason.BAD_FIELD, f"role is one of {', '.join(Role)}")
        role = Role(signed["role"])
        if self.identities.get(actor_id) is None:
            return Rejected(Reason.UNKNOWN_IDENTITY, "the actor's key is not registered")
        name = signed["name"]
        if not 1 <= len(name) <= ACTOR_NAME_CHARS_MAX or _has_control(name):
            return Rejected(Reason.BAD_FIELD, f"name: 1..{ACTOR_NAME_CHARS_MAX} characters")
        location = signed["location"]
        if location and not is_sgln(location):
            return Rejected(Reason.BAD_FIELD, "location is an SGLN (urn:epc:id:sgln:…) or empty")
        key = (merchant_id, role)
        known = key in self._grants.get(actor_id, {})
        if not known and self._grant_count >= self.limits.grants_max:
            return Rejected(Reason.CAPACITY, "too many roles given")

        def apply(number: int) -> None:
            grants = self._grants.setdefault(actor_id, {})
            if key not in grants:
                self._grant_count += 1
            grants[key] = Grant(
                merchant_id, actor_id, role, name, location, signed["active"], number
            )

        return apply

    def _lot(self, signed: dict[str, Any]) -> Callable[[int], None] | Rejected:
        merchant_id, product_id, gtin = signed["merchant_id"], signed["product_id"], signed["gtin"]
        product = self.catalog.get(product_id)
        if product is None:
            return Rejected(Reason.UNKNOWN_PRODUCT, "no such product")
        if product.merchant_id != merchant_id:
            return Rejected(Reason.NOT_MERCHANT, "the product is another merchant's")
        if not gtin_is_valid(gtin):
            return Rejected(Reason.BAD_FIELD, "gtin: 14 digits whose last is the GS1 check digit")
        digits = signed["company_prefix_digits"]
        if not COMPANY_PREFIX_DIGITS_MIN <= digits <= COMPANY_PREFIX_DIGITS_MAX:
            return Rejected(Reason.BAD_FIELD, "company_prefix_digits: 6..12")
        if SERIAL.fullmatch(signed["lot"]) is None:
            return Rejected(Reason.BAD_FIELD, "lot: 1..20 of letters, digits and -")
        known = self._gtins.get(gtin)
        if known is not None and known != (merchant_id, product_id, digits):
            return Rejected(Reason.BAD_FIELD, "this GTIN is registered for another product")
        urn = Gtin(gtin, digits).lgtin(signed["lot"])
        if urn in self.lots:
            return Rejected(Reason.LOT_EXISTS, "this lot of this GTIN is registered")
        if len(self.lots) >= self.limits.lots_max:
            return Rejected(Reason.CAPACITY, "too many lots")

        def apply(number: int) -> None:
            self._gtins[gtin] = (merchant_id, product_id, digits)
            self.lots[urn] = Lot(urn, merchant_id, product_id, gtin, signed["lot"], number)
            self._lots_of_product.setdefault(product_id, []).append(urn)

        return apply

    def _units(self, signed: dict[str, Any]) -> Callable[[int], None] | Rejected:
        known = self._gtins.get(signed["gtin"])
        lot = None
        if known is not None:
            lot = self.lots.get(Gtin(signed["gtin"], known[2]).lgtin(signed["lot"]))
        if known is None or lot is None:
            return Rejected(Reason.UNKNOWN_LOT, "no such lot of this GTIN")
        if lot.merchant_id != signed["merchant_id"]:
            return Rejected(Reason.NOT_MERCHANT, "the lot is another merchant's")
        serials = signed["serials"]
        if not 1 <= len(serials) <= SERIALS_PER_COMMAND_MAX:
            return Rejected(Reason.BAD_FIELD, f"serials: 1..{SERIALS_PER_COMMAND_MAX}")
        if len(set(map(str, serials))) != len(serials):
            return Rejected(Reason.BAD_FIELD, "serials are different from each other")
        gtin = Gtin(lot.gtin, known[2])
        urns = []
        for serial in serials:
            if not isinstance(serial, str) or SERIAL.fullmatch(serial) is None:
                return Rejected(Reason.BAD_FIELD, "a serial is 1..20 of letters, digits and -")
            urn = gtin.sgtin(serial)
            if urn in self.units:
                return Rejected(Reason.UNIT_EXISTS, f"{urn} is registered already")
            urns.append((urn, serial))
        if len(self.units) + len(urns) > self.limits.units_max:
            return Rejected(Reason.CAPACITY, "too many units")

        def apply(number: int) -> None:
            for urn, serial in urns:
                self.units[urn] = Unit(
                    urn, lot.gtin, serial, lot.urn, lot.merchant_id, lot.product_id, number
                )

        return apply

    def _merchant_of(self, code: str) -> str | None:
        unit = self.units.get(code)
        if unit is not None:
            return unit.merchant_id
        return self._case_merchant.get(code)

    def _allowed(self, merchant_id: str, signer_id: str, step: Step | None) -> Role | Rejected:
        roles = self.roles_of(merchant_id, signer_id)
        if not roles:
            return Rejected(Reason.ROLE_NOT_ALLOWED, "the signer has no role for these goods")
        for role in roles:
            if step is None or step in MAY[role]:
                return role
        names = ", ".join(roles)
        return Rejected(Reason.ROLE_NOT_ALLOWED, f"a {names} may not {step}")

    def _event(
        self, signed: dict[str, Any], digest: str, live: bool
    ) -> Callable[[int], None] | Rejected:
        if signed["step"] not in Step.__members__.values():
            return Rejected(Reason.BAD_FIELD, f"step is one of {', '.join(Step)}")
        step = Step(signed["step"])
        epcs, parent = signed["epcs"], signed["parent"]
        if not 1 <= len(epcs) <= EPCS_PER_EVENT_MAX or not all_text(*epcs):
            return Rejected(Reason.BAD_FIELD, f"epcs: 1..{EPCS_PER_EVENT_MAX} codes")
        if len(set(epcs)) != len(epcs):
            return Rejected(Reason.BAD_FIELD, "epcs are different from each other")
        aggregation = step in (Step.PACK, Step.UNPACK)
        if aggregation != bool(parent) or (parent and not is_sscc(parent)):
            return Rejected(Reason.BAD_FIELD, "pack and unpack name a case (an SSCC) as parent")
        if not is_sgln(signed["read_point"]):
            return Rejected(Reason.BAD_FIELD, "read_point is an SGLN (urn:epc:id:sgln:…)")
        inspection = signed["inspection"]
        if (step is Step.INSPECT) != (inspection in INSPECTION_RESULTS) or (
            step is not Step.INSPECT and inspection
        ):
            return Rejected(
                Reason.BAD_FIELD, "inspection: conformant or non_conformant, to inspect"
            )
        buyer_id, order_id = signed["buyer_id"], signed["order_id"]
        if (step is Step.SELL) != bool(buyer_id and order_id) or (
            step is not Step.SELL and (buyer_id or order_id)
        ):
            return Rejected(Reason.BAD_FIELD, "a sale names its order (buyer_id, order_id)")
        merchants = set()
        for epc in epcs:
            if is_sscc(epc) and not aggregation and step is not Step.SELL:
                if epc not in self._case_merchant:
                    return Rejected(Reason.UNKNOWN_UNIT, f"no case {epc} was packed")
            elif epc not in self.units:
                return Rejected(Reason.UNKNOWN_UNIT, f"{epc} is not a registered unit")
            merchants.add(self._merchant_of(epc))
        if parent in self._case_merchant:
            merchants.add(self._case_merchant[parent])
        if len(merchants) != 1:
            return Rejected(Reason.BAD_FIELD, "an event names one merchant's goods")
        merchant_id = str(merchants.pop())
        role = self._allowed(merchant_id, signed["signer_id"], step)
        if isinstance(role, Rejected):
            return role
        for epc in epcs:
            if step is Step.PACK and epc in self._case_of:
                return Rejected(Reason.BAD_FIELD, f"{epc} is packed in {self._case_of[epc]}")
            if step is Step.UNPACK and self._case_of.get(epc) != parent:
                return Rejected(Reason.BAD_FIELD, f"{epc} is not packed in {parent}")
        linked = self._sold.get((buyer_id, order_id), [])
        if step is Step.SELL and live:
            refused = self._check_sale(merchant_id, buyer_id, order_id, epcs, linked)
            if refused is not None:
                return refused
        codes = [*epcs, parent] if parent else list(epcs)
        full = self._full(codes, 1)
        if full is not None:
            return full
        observation = observation_of(
            step, epcs, parent, signed["read_point"], inspection, signed["time_ms"],
            f"ni:///sha-256;{digest}",
        )  # fmt: skip

        def apply(number: int) -> None:
            self._sight(
                Sighting(
                    len(self.sightings),
                    number,
                    0,
                    step,
                    signed["signer_id"],
                    str(role),
                    buyer_id,
                    order_id,
                    observation,
                    False,
                ),
                codes,
            )
            for epc in epcs:
                if step is Step.PACK:
                    self._case_of[epc] = parent
                    self._case_merchant[parent] = merchant_id
                elif step is Step.UNPACK:
                    self._case_of.pop(epc, None)
                elif step is Step.SELL and epc not in linked:
                    self._sold.setdefault((buyer_id, order_id), []).append(epc)

        return apply

    def _check_sale(
        self, merchant_id: str, buyer_id: str, order_id: str, epcs: list[str], linked: list[str]
    ) -> Rejected | None:
        life = self.order_of(buyer_id, order_id)
        if life is None:
            return Rejected(Reason.UNKNOWN_ORDER, "no paid order with this buyer and id")
        if life.merchant_id != merchant_id:
            return Rejected(Reason.NOT_MERCHANT, "the order is another merchant's")
        if life.stage not in SELLABLE_STAGES:
            return Rejected(Reason.WRONG_STAGE, f"an order that is {life.stage} gets no units")
        if any(self.units[epc].product_id != life.product_id for epc in epcs):
            return Rejected(Reason.BAD_FIELD, "a unit is of another product than the order's")
        new = [epc for epc in epcs if epc not in linked]
        if len(linked) + len(new) > life.quantity:
            return Rejected(Reason.BAD_QUANTITY, f"the order is for {life.quantity} units")
        return None

    def _full(self, codes: Sequence[str], count: int) -> Rejected | None:
        if len(self.sightings) + count > self.limits.sightings_max:
            return Rejected(Reason.CAPACITY, "too many trace events")
        for code in codes:
            if len(self._by_code.get(code, ())) + count > self.limits.sightings_per_code_max:
                return Rejected(Reason.CAPACITY, f"too many events for {code}")
        return None

    def _sight(self, sighting: Sighting, codes: Sequence[str]) -> None:
        self.sightings.append(sighting)
        for code in codes:
            self._by_code.setdefault(code, []).append(sighting.number)
            unit = self.units.get(code)
            if unit is not None:
                touched = self._touched.setdefault(unit.merchant_id, OrderedDict())
                touched[code] = None
                touched.move_to_end(code)

    def _import(self, signed: dict[str, Any], document: str) -> Callable[[int], None] | Rejected:
        if len(document) > DOCUMENT_CHARS_MAX:
            return Rejected(Reason.BAD_FIELD, f"a document is at most {DOCUMENT_CHARS_MAX} chars")
        if hashlib.sha256(document.encode()).hexdigest() != signed["digest"]:
            return Rejected(Reason.BAD_FIELD, "digest is not the document's SHA-256 (hex)")
        try:
            observations = parse_document(document)
        except EpcisError as error:
            return Rejected(Reason.BAD_FIELD, f"EPCIS: {error}")
        signer_id = signed["signer_id"]
        if not any(grant.active for grant in self.grants_of(signer_id)) and not any(
            lot.merchant_id == signer_id for lot in self.lots.values()
        ):
            return Rejected(Reason.ROLE_NOT_ALLOWED, "only an actor with a role may import")
        planned: list[tuple[Observation, Step | None, str, list[str]]] = []
        for observation in observations:
            step = step_of(observation)
            if step is Step.SELL:
                return Rejected(Reason.BAD_FIELD, "a sale is signed with its order, not imported")
            codes = list(observation.identifiers())
            role = ""
            for code in codes:
                merchant_id = self._merchant_of(code)
                if merchant_id is not None:
                    allowed = self._allowed(merchant_id, signer_id, step)
                    if isinstance(allowed, Rejected):
                        return allowed
                    role = str(allowed)
            planned.append((observation, step, role, codes))
        full = self._full([code for *_, codes in planned for code in codes], 1)
        if full is not None:
            return full

        def apply(number: int) -> None:
            for position, (observation, step, role, codes) in enumerate(planned):
                self._sight(
                    Sighting(
                        len(self.sightings),
                        number,
                        position,
                        step,
                        signer_id,
                        role,
                        "",
                        "",
                        observation,
                        True,
                    ),
                    codes,
                )

        return apply


def command_of_entry(fields: Mapping[str, Any]) -> TraceCommand:
    """The command a `trace/v1` entry records (replay takes it again)."""
    signed = fields["signed"]
    assert isinstance(signed, dict)
    return TraceCommand(dict(signed), str(fields["signature"]), str(fields.get("document", "")))


def digest_of_entry(entry_type: str, fields: Mapping[str, Any]) -> str | None:
    digest = fields.get("digest")
    return digest if entry_type == "trace/v1" and isinstance(digest, str) else None


# Verdicts

_DELIVERY: Final = frozenset({Role.MERCHANT, Role.CARRIER})


def judge(book: TraceBook, urn: str) -> Verdict:
    """The verdict on a unit code, from its chain (module docstring)."""
    if urn not in book.units:
        flag = Flag("unknown", "no merchant registered this code")
        return Verdict("possibly_counterfeit", (flag,))
    chain = book.chain(urn)
    if not chain:
        return Verdict("no_history", ())
    flags: list[Flag] = []
    commissioned = in_transit = recalled = False
    sold_to: tuple[str, str] | None = None
    for sighting, _ in chain:
        step, role, number = sighting.step, sighting.role, sighting.number
        where = sighting.observation.read_point or "an unknown place"
        if step is None:
            continue
        if step is Step.COMMISSION:
            if commissioned:
                code = "seen_after_sale" if sold_to else "chain_gap"
                flags.append(Flag(code, f"commissioned again at {where}", number))
            commissioned = True
            continue
        if not commissioned:
            flags.append(Flag("chain_gap", f"a {step} before it was commissioned", number))
            commissioned = True
        if sold_to is not None:
            order = (sighting.buyer_id, sighting.order_id)
            if step is Step.SELL:
                if order != sold_to:
                    flags.append(Flag("sold_twice", "sold to a second order", number))
                continue
            delivery = (step is Step.SHIP and role in _DELIVERY) or (
                step is Step.RECEIVE and role == Role.CARRIER
            )
            if not delivery and step not in (Step.INSPECT, Step.RETURN, Step.RECALL):
                who = f"a {role}" if role else "someone"
                detail = f"a {step} by {who} at {where} after it was sold"
                flags.append(Flag("seen_after_sale", detail, number))
                continue
        if step is Step.SHIP:
            if in_transit and sold_to is None:
                flags.append(Flag("chain_gap", "shipped again without being received", number))
            in_transit = True
        elif step is Step.RECEIVE:
            if not in_transit and sold_to is None:
                detail = f"received at {where} without being shipped"
                flags.append(Flag("chain_gap", detail, number))
            in_transit = False
        elif step is Step.SELL:
            sold_to = (sighting.buyer_id, sighting.order_id)
        elif step is Step.RETURN:
            if sold_to is None:
                flags.append(Flag("chain_gap", "returned without being sold", number))
            sold_to, in_transit = None, False
        elif step is Step.RECALL:
            recalled = True
        elif step is Step.INSPECT and sighting.observation.disposition == "non_conformant":
            flags.append(Flag("failed_inspection", f"failed an inspection at {where}", number))
    if any(flag.counterfeit for flag in flags):
        return Verdict("possibly_counterfeit", tuple(flags))
    return Verdict("recalled" if recalled else "genuine", tuple(flags))


# Scans: counted off the ledger


class ScanCounts:
    """How often each code was scanned (its trace page opened), in this process. At most
    `codes_max` codes are counted (then new ones are not); a merchant's unknown codes
    under its GTINs are kept, the latest `unknown_per_merchant_max`, for its panel."""

    def __init__(self, codes_max: int = 1_000_000, unknown_per_merchant_max: int = 100) -> None:
        assert codes_max > 0
        assert unknown_per_merchant_max > 0
        self.codes_max = codes_max
        self.unknown_per_merchant_max = unknown_per_merchant_max
        self._counts: dict[str, int] = {}
        self._unknown: dict[str, OrderedDict[str, None]] = {}

    def count(self, code: str, unknown_of_merchant: str | None = None) -> int:
        if code in self._counts or len(self._counts) < self.codes_max:
            self._counts[code] = self._counts.get(code, 0) + 1
        if unknown_of_merchant is not None:
            codes = self._unknown.setdefault(unknown_of_merchant, OrderedDict())
            codes[code] = None
            codes.move_to_end(code)
            while len(codes) > self.unknown_per_merchant_max:
                codes.popitem(last=False)
        return self._counts.get(code, 0)

    def of(self, code: str) -> int:
        return self._counts.get(code, 0)

    def unknown_of(self, merchant_id: str) -> list[tuple[str, int]]:
        return [(code, self.of(code)) for code in self._unknown.get(merchant_id, {})]


# Views (what the pages read)


def _place_name(book: TraceBook, merchant_id: str, read_point: str) -> str:
    for grants in book._grants.values():
        for (merchant, _), grant in grants.items():
            if merchant == merchant_id and grant.location == read_point:
                return grant.name
    return ""


def sighting_view(
    book: TraceBook, sighting: Sighting, via: str, merchant_id: str
) -> dict[str, Any]:
    record = book.records[sighting.record]
    o = sighting.observation
    grant = None
    if sighting.role and sighting.role != Role.MERCHANT:
        grant = book.grant(merchant_id, sighting.signer_id, sighting.role)
    actor_name = grant.name if grant is not None else ""
    if not actor_name and sighting.signer_id == merchant_id:
        actor_name = "the merchant"
    return {
        "number": sighting.number,
        "kind": str(record.kind),
        "ledger_index": record.ledger_index,
        "digest": record.digest,
        "position": sighting.position,
        "imported": sighting.imported,
        "step": str(sighting.step) if sighting.step else "",
        "event_type": o.event_type,
        "action": o.action,
        "biz_step": o.biz_step,
        "disposition": o.disposition,
        "epcs": list(o.epcs),
        "parent": o.parent,
        "via": via,
        "signer_id": sighting.signer_id,
        "role": sighting.role,
        "actor": actor_name,
        "grant_ledger_index": book.records[grant.record].ledger_index if grant else -1,
        "read_point": o.read_point,
        "place": _place_name(book, merchant_id, o.read_point),
        "event_time_ms": o.event_time_ms,
        "recorded_at_ms": record.time_ms,
        "buyer_id": sighting.buyer_id,
        "order_id": sighting.order_id,
    }


def flag_view(flag: Flag) -> dict[str, Any]:
    return {
        "code": flag.code,
        "detail": flag.detail,
        "event": flag.sighting,
        "counterfeit": flag.counterfeit,
    }


def unit_view(book: TraceBook, code: str, scans: int) -> dict[str, Any]:
    """A unit's page: product, lot, every event with its ledger index, the verdict."""
    urn = book.resolve(code)
    verdict = judge(book, urn)
    view: dict[str, Any] = {
        "code": code,
        "unit": urn,
        "known": urn in book.units,
        "verdict": verdict.verdict,
        "flags": [flag_view(flag) for flag in verdict.flags],
        "scans": scans,
    }
    unit = book.units.get(urn)
    if unit is None:
        merchant = book.merchant_of_code(urn)
        view["events"] = [
            sighting_view(book, s, "", merchant or "") for s in book.sightings_of(urn)
        ]
        return view
    lot = book.lots[unit.lot_urn]
    product = book.catalog.get(unit.product_id)
    view.update(
        gtin=unit.gtin,
        serial=unit.serial,
        lot=lot.lot,
        lot_urn=lot.urn,
        merchant_id=unit.merchant_id,
        product_id=unit.product_id,
        product_title=product.title if product else "",
        product_image_url=product.image_url if product else "",
        digital_link_path=f"/01/{unit.gtin}/21/{unit.serial}",
        registered={
            "lot_ledger_index": book.records[lot.record].ledger_index,
            "units_ledger_index": book.records[unit.record].ledger_index,
        },
        events=[
            sighting_view(book, sighting, via, unit.merchant_id)
            for sighting, via in book.chain(urn)
        ],
    )
    return view


def merchant_flags(book: TraceBook, scans: ScanCounts, merchant_id: str) -> dict[str, Any]:
    """The merchant's units the verdict flags (the latest touched first, at most
    `FLAGGED_UNITS_MAX` looked at), and unknown codes under its GTINs that were scanned."""
    flagged = []
    for urn in reversed(book.touched_units(merchant_id)[-FLAGGED_UNITS_MAX:]):
        verdict = judge(book, urn)
        if verdict.verdict == "possibly_counterfeit":
            flagged.append(
                {
                    "unit": urn,
                    "flags": [flag_view(flag) for flag in verdict.flags],
                    "scans": scans.of(urn),
                }
            )
    unknown = [{"code": code, "scans": count} for code, count in scans.unknown_of(merchant_id)]
    return {"merchant_id": merchant_id, "flagged": flagged, "unknown_scanned": unknown}


# EPCIS 2.0 export

UNITS_PER_LOT_EXPORT_MAX: Final = 1_000


def _exported(book: TraceBook, sighting: Sighting, origin: str) -> dict[str, Any]:
    o = sighting.observation
    if sighting.step is Step.SELL:
        order = f"{origin}/api/orders/{sighting.order_id}?buyer_id={sighting.buyer_id}"
        o = dataclasses.replace(o, biz_transactions=(("po", order),))
    record = book.records[sighting.record]
    extensions: dict[str, Any] = {"signer": sighting.signer_id, "ledgerIndex": record.ledger_index}
    if sighting.role:
        extensions["role"] = sighting.role
    if sighting.imported:
        extensions["importedFrom"] = f"sha-256:{record.signed['digest']}"
    return event_json(o, extensions)


def epcis_document(
    book: TraceBook, sightings: Sequence[Sighting], origin: str, name: str, now_ms: int
) -> dict[str, Any]:
    events = [_exported(book, sighting, origin) for sighting in sightings]
    return epcis.document(f"{origin}/api/trace/{name}/epcis", now_ms, events)


def unit_epcis(book: TraceBook, code: str, origin: str, now_ms: int) -> dict[str, Any] | None:
    """The unit's chain as an EPCIS 2.0 document (None: no such unit)."""
    urn = book.resolve(code)
    if urn not in book.units:
        return None
    sightings = [sighting for sighting, _ in book.chain(urn)]
    return epcis_document(book, sightings, origin, f"units/{urn}", now_ms)


def lot_epcis(book: TraceBook, lot_urn: str, origin: str, now_ms: int) -> dict[str, Any] | None:
    """Every event of the lot's units (the first `UNITS_PER_LOT_EXPORT_MAX`)."""
    lot = book.lots.get(lot_urn)
    if lot is None:
        return None
    numbers: dict[int, Sighting] = {}
    for unit in book.units_of_lot(lot_urn, UNITS_PER_LOT_EXPORT_MAX):
        numbers.update((sighting.number, sighting) for sighting, _ in book.chain(unit.urn))
    sightings = [numbers[number] for number in sorted(numbers)]
    return epcis_document(book, sightings, origin, f"lots/{lot_urn}", now_ms)
