"""GS1 identifiers as the traceability core uses them (sans-I/O, pure functions).

- GTIN-14 and its check digit (GS1 General Specifications §7.9: from the right, the
  digits before the check digit are weighted 3, 1, 3, 1…; the check digit brings the sum
  to a multiple of ten).
- EPC pure-identity URIs (GS1 EPC Tag Data Standard §6):
  `urn:epc:id:sgtin:<company prefix>.<indicator + item reference>.<serial>` (a serialised
  unit; the first two parts are 13 digits together), `urn:epc:class:lgtin:<company
  prefix>.<indicator + item reference>.<lot>` (a batch), `urn:epc:id:sscc:<company
  prefix>.<extension + serial reference>` (a case: 17 digits together) and
  `urn:epc:id:sgln:<company prefix>.<location reference>.<extension>` (a place: 12 digits
  before the extension).
- GS1 Digital Link URIs (GS1 Digital Link Standard 1.x): `<origin>/01/<gtin14>/21/<serial>`
  for a unit, `<origin>/01/<gtin14>/10/<lot>` for a batch; and the element string
  `01<gtin14>21<serial>` (AI 01 is fixed length, AI 21 last, so no separator is needed).

Serial numbers and lot numbers may be up to 20 characters of GS1's character set 82; this
project takes the part of it that needs no escaping in a URN, a URL path or an id:
letters, digits and `-`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

SERIAL: Final = re.compile(r"[A-Za-z0-9-]{1,20}")
GTIN: Final = re.compile(r"[0-9]{14}")
COMPANY_PREFIX_DIGITS_MIN: Final = 6
COMPANY_PREFIX_DIGITS_MAX: Final = 12
_SGTIN: Final = re.compile(r"urn:epc:id:sgtin:([0-9]{6,12})\.([0-9]{1,7})\.([A-Za-z0-9-]{1,20})")
_LGTIN: Final = re.compile(r"urn:epc:class:lgtin:([0-9]{6,12})\.([0-9]{1,7})\.([A-Za-z0-9-]{1,20})")
_SSCC: Final = re.compile(r"urn:epc:id:sscc:([0-9]{6,12})\.([0-9]{5,11})")
_SGLN: Final = re.compile(r"urn:epc:id:sgln:([0-9]{6,12})\.([0-9]{0,6})\.([A-Za-z0-9-]{1,20})")
_ELEMENT_STRING: Final = re.compile(r"01([0-9]{14})21([A-Za-z0-9-]{1,20})")


def check_digit(digits: str) -> int:
    """The GS1 mod-10 check digit of `digits` (the identifier without its check digit)."""
    assert digits.isdigit(), digits
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return (10 - total % 10) % 10


def gtin_is_valid(gtin: str) -> bool:
    return GTIN.fullmatch(gtin) is not None and check_digit(gtin[:-1]) == int(gtin[-1])


@dataclass(frozen=True, slots=True)
class Gtin:
    """A GTIN-14 split the way EPC URIs need it: the company prefix's length is not in
    the number itself, so whoever registers the GTIN says it."""

    gtin: str
    company_prefix_digits: int

    def __post_init__(self) -> None:
        assert gtin_is_valid(self.gtin), self.gtin
        assert self.company_prefix_digits >= COMPANY_PREFIX_DIGITS_MIN, self
        assert self.company_prefix_digits <= COMPANY_PREFIX_DIGITS_MAX, self

    @property
    def _parts(self) -> tuple[str, str]:
        """(company prefix, indicator digit + item reference)."""
        prefix = self.gtin[1 : 1 + self.company_prefix_digits]
        item = self.gtin[0] + self.gtin[1 + self.company_prefix_digits : 13]
        return prefix, item

    def sgtin(self, serial: str) -> str:
        prefix, item = self._parts
        return f"urn:epc:id:sgtin:{prefix}.{item}.{serial}"

    def lgtin(self, lot: str) -> str:
        prefix, item = self._parts
        return f"urn:epc:class:lgtin:{prefix}.{item}.{lot}"


def _gtin_of(prefix: str, item: str) -> str | None:
    if len(prefix) + len(item) != 13:
        return None
    body = item[0] + prefix + item[1:]
    return body + str(check_digit(body))


def parse_sgtin(urn: str) -> tuple[str, str, int] | None:
    """(gtin14, serial, company prefix digits) of an SGTIN pure-identity URI, or None."""
    match = _SGTIN.fullmatch(urn)
    if match is None:
        return None
    prefix, item, serial = match.groups()
    gtin = _gtin_of(prefix, item)
    return None if gtin is None else (gtin, serial, len(prefix))


def parse_lgtin(urn: str) -> tuple[str, str, int] | None:
    """(gtin14, lot, company prefix digits) of an LGTIN class URI, or None."""
    match = _LGTIN.fullmatch(urn)
    if match is None:
        return None
    prefix, item, lot = match.groups()
    gtin = _gtin_of(prefix, item)
    return None if gtin is None else (gtin, lot, len(prefix))


def is_sscc(urn: str) -> bool:
    match = _SSCC.fullmatch(urn)
    return match is not None and len(match.group(1)) + len(match.group(2)) == 17


def is_sgln(urn: str) -> bool:
    match = _SGLN.fullmatch(urn)
    return match is not None and len(match.group(1)) + len(match.group(2)) == 12


def parse_element_string(text: str) -> tuple[str, str] | None:
    """(gtin14, serial) of `01<gtin14>21<serial>`, or None (a bad check digit too)."""
    match = _ELEMENT_STRING.fullmatch(text)
    if match is None or not gtin_is_valid(match.group(1)):
        return None
    return match.group(1), match.group(2)


def digital_link(origin: str, gtin: str, serial: str) -> str:
    """The GS1 Digital Link URI of a unit, on this server as its resolver."""
    return f"{origin.rstrip('/')}/01/{gtin}/21/{serial}"
