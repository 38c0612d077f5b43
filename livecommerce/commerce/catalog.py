"""Products and their inventory, listed and restocked by the merchant's signed commands.

A listing is signed over `livecommerce/listing/v1\\n` + canonical JSON of every
`ListProduct` field except `signature`; a stock addition over `livecommerce/stock/v1\\n` +
canonical JSON of every `AddStock` field except `signature`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import ClassVar, Final

from livecommerce.commerce.canonical import (
    DOMAIN_LISTING,
    DOMAIN_STOCK,
    CanonicalError,
    signing_bytes,
)
from livecommerce.commerce.events import Entry, Event
from livecommerce.commerce.identity import IdentityRegistry, verify_signature
from livecommerce.commerce.results import Reason, Rejected, all_integers, all_text

TITLE_CHARS_MAX: Final = 120
DESCRIPTION_CHARS_MAX: Final = 2000
PRICE_CENTS_MAX: Final = 10**9
STOCK_ADDITION_UNITS_MAX: Final = 1_000_000
INVENTORY_UNITS_MAX: Final = 10_000_000
PRODUCTS_MAX: Final = 100_000
CHANGES_MAX: Final = 1_000_000
COMMAND_FRESHNESS_MS: Final = 300_000

PRODUCT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CHANGE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
SKU = re.compile(r"[A-Za-z0-9._-]{1,64}")
CURRENCY = re.compile(r"[A-Z]{3}")
# A site path ("/static/img/mug.png") or an https URL without spaces or quotes.
IMAGE_URL = re.compile(r"(/|https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/)[A-Za-z0-9._~/%?=&+-]*")
IMAGE_URL_CHARS_MAX: Final = 500


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text if c not in "\n\t")


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    merchant_id: str
    title: str
    description: str
    price_cents: int
    currency: str
    sku: str
    image_url: str

    def __post_init__(self) -> None:
        refused = check_product(self)
        assert refused is None, refused


def check_product(product: Product | ListProduct) -> Rejected | None:
    """None when every field is within its limits, else the first problem."""

    def bad(detail: str) -> Rejected:
        return Rejected(Reason.BAD_FIELD, detail)

    if PRODUCT_ID.fullmatch(product.product_id) is None:
        return bad("product_id must be 1..64 of [A-Za-z0-9_-]")
    if not 1 <= len(product.title) <= TITLE_CHARS_MAX or _has_control(product.title):
        return bad(f"title must be 1..{TITLE_CHARS_MAX} characters without control characters")
    if len(product.description) > DESCRIPTION_CHARS_MAX or _has_control(product.description):
        return bad(f"description must be at most {DESCRIPTION_CHARS_MAX} characters")
    if type(product.price_cents) is not int or not 0 < product.price_cents <= PRICE_CENTS_MAX:
        return bad(f"price_cents must be an integer in 1..{PRICE_CENTS_MAX}")
    if CURRENCY.fullmatch(product.currency) is None:
        return bad("currency must be an ISO 4217 code: three uppercase letters")
    if SKU.fullmatch(product.sku) is None:
        return bad("sku must be 1..64 of [A-Za-z0-9._-]")
    if (
        len(product.image_url) > IMAGE_URL_CHARS_MAX
        or IMAGE_URL.fullmatch(product.image_url) is None
    ):
        return bad("image_url must be a site path starting with / or an https URL")
    return None


class _SignedByMerchant:
    """A merchant's command: every field but `signature` is signed under `DOMAIN`."""

    __slots__ = ()
    DOMAIN: ClassVar[str]

    def signed_fields(self) -> dict[str, object]:
        fields = asdict(self)  # type: ignore[call-overload]
        del fields["signature"]
        return dict(fields)

    def signing_bytes(self) -> bytes:
        return signing_bytes(self.DOMAIN, self.signed_fields())


@dataclass(frozen=True, slots=True)
class ListProduct(_SignedByMerchant):
    """Command: the merchant lists a product (signed by `merchant_id`)."""

    DOMAIN: ClassVar[str] = DOMAIN_LISTING

    product_id: str
    merchant_id: str
    title: str
    description: str
    price_cents: int
    currency: str
    sku: str
    image_url: str
    time_ms: int
    signature: str


@dataclass(frozen=True, slots=True)
class AddStock(_SignedByMerchant):
    """Command: the merchant adds `quantity` units to a product's inventory (signed)."""

    DOMAIN: ClassVar[str] = DOMAIN_STOCK

    change_id: str
    product_id: str
    merchant_id: str
    quantity: int
    time_ms: int
    signature: str


@dataclass(frozen=True, slots=True)
class ProductListed(Event):
    product: Product
    time_ms: int
    # The merchant's signature over the listing, with the time it signed: the entry holds
    # every signed field, so anyone can check the merchant listed exactly this.
    signed_time_ms: int = 0
    signature: str = ""

    def to_entry(self) -> Entry:
        fields: dict[str, object] = {
            "action": "listed",
            **asdict(self.product),
            "time_ms": self.time_ms,
        }
        if self.signature:
            fields["signed_time_ms"] = self.signed_time_ms
            fields["signature"] = self.signature
        return "product/v1", fields


@dataclass(frozen=True, slots=True)
class InventoryChanged(Event):
    """A product's inventory moved: `delta_units` > 0 restock, < 0 taken into a sale."""

    product_id: str
    delta_units: int
    inventory_units: int
    cause: str  # "restock:<change_id>" or "sale:<sale_id>"
    time_ms: int
    # A restock is signed by the merchant (AddStock): its signed fields are change_id (in
    # `cause`), merchant_id, product_id, quantity (`delta_units`) and `signed_time_ms`.
    merchant_id: str = ""
    signed_time_ms: int = 0
    signature: str = ""

    def to_entry(self) -> Entry:
        fields = asdict(self)
        if not self.signature:
            for name in ("merchant_id", "signed_time_ms", "signature"):
                del fields[name]
        return "inventory/v1", fields


class Catalog:
    def __init__(self, identities: IdentityRegistry, products_max: int = PRODUCTS_MAX) -> None:
        self.identities = identities
        self.products_max = products_max
        self._products: dict[str, Product] = {}
        self._inventory_units: dict[str, int] = {}
        self._change_ids: set[str] = set()
        # Inventory given back by cancelled paid orders: cause -> units after (escrow.py).
        self._returned: dict[str, int] = {}

    def get(self, product_id: str) -> Product | None:
        return self._products.get(product_id)

    def inventory_units(self, product_id: str) -> int:
        return self._inventory_units.get(product_id, 0)

    def of_merchant(self, merchant_id: str, limit: int) -> list[Product]:
        """The merchant's products, oldest listing first, at most `limit`."""
        products = [p for p in self._products.values() if p.merchant_id == merchant_id]
        return products[:limit]

    def listed(self, limit: int) -> list[Product]:
        """Every product, oldest listing first, at most `limit`."""
        return list(self._products.values())[:limit]

    def _verify(
        self, merchant_id: str, message: bytes, signature: str, time_ms: int, now_ms: int
    ) -> Rejected | None:
        if self.identities.get(merchant_id) is None:
            return Rejected(Reason.UNKNOWN_IDENTITY, "merchant key is not registered")
        if type(time_ms) is not int or abs(now_ms - time_ms) > COMMAND_FRESHNESS_MS:
            return Rejected(Reason.STALE, "command time is too far from the server clock")
        return verify_signature(merchant_id, message, signature)

    def list_product(self, command: ListProduct, now_ms: int) -> ProductListed | Rejected:
        if not all_text(
            command.product_id,
            command.merchant_id,
            command.title,
            command.description,
            command.currency,
            command.sku,
            command.image_url,
            command.signature,
        ):
            return Rejected(Reason.BAD_FIELD, "every listing field but price and time is text")
        try:
            message = command.signing_bytes()
        except CanonicalError as error:
            return Rejected(Reason.BAD_FIELD, str(error))
        refused = self._verify(
            command.merchant_id, message, command.signature, command.time_ms, now_ms
        )
        if refused is not None:
            return refused
        refused = check_product(command)
        if refused is not None:
            return refused
        product = Product(
            product_id=command.product_id,
            merchant_id=command.merchant_id,
            title=command.title,
            description=command.description,
            price_cents=command.price_cents,
            currency=command.currency,
            sku=command.sku,
            image_url=command.image_url,
        )
        if product.product_id in self._products:
            return Rejected(Reason.PRODUCT_EXISTS, "a product with this id is already listed")
        if len(self._products) >= self.products_max:
            return Rejected(Reason.CAPACITY, "catalog is full")
        self._products[product.product_id] = product
        self._inventory_units[product.product_id] = 0
        return ProductListed(product, now_ms, command.time_ms, command.signature)

    def add_stock(self, command: AddStock, now_ms: int) -> InventoryChanged | Rejected:
        if not all_text(command.change_id, command.product_id, command.merchant_id):
            return Rejected(Reason.BAD_FIELD, "change_id, product_id, merchant_id are text")
        if not all_text(command.signature) or not all_integers(command.time_ms):
            return Rejected(Reason.BAD_FIELD, "signature is text, time_ms an integer")
        try:
            message = command.signing_bytes()
        except CanonicalError as error:
            return Rejected(Reason.BAD_FIELD, str(error))
        if CHANGE_ID.fullmatch(command.change_id) is None:
            return Rejected(Reason.BAD_FIELD, "change_id must be 1..64 of [A-Za-z0-9_-]")
        refused = self._verify(
            command.merchant_id, message, command.signature, command.time_ms, now_ms
        )
        if refused is not None:
            return refused
        product = self._products.get(command.product_id)
        if product is None:
            return Rejected(Reason.UNKNOWN_PRODUCT, "no such product")
        if product.merchant_id != command.merchant_id:
            return Rejected(Reason.NOT_MERCHANT, "only the product's merchant can add stock")
        if (
            type(command.quantity) is not int
            or not 0 < command.quantity <= STOCK_ADDITION_UNITS_MAX
        ):
            return Rejected(
                Reason.BAD_QUANTITY, f"quantity must be an integer in 1..{STOCK_ADDITION_UNITS_MAX}"
            )
        if command.change_id in self._change_ids:
            return Rejected(Reason.DUPLICATE_CONFLICT, "this change_id was already applied")
        inventory = self._inventory_units[command.product_id] + command.quantity
        if inventory > INVENTORY_UNITS_MAX:
            return Rejected(Reason.BAD_QUANTITY, f"inventory would exceed {INVENTORY_UNITS_MAX}")
        if len(self._change_ids) >= CHANGES_MAX:
            return Rejected(Reason.CAPACITY, "stock change table is full")
        self._change_ids.add(command.change_id)
        self._inventory_units[command.product_id] = inventory
        return InventoryChanged(
            command.product_id,
            command.quantity,
            inventory,
            f"restock:{command.change_id}",
            now_ms,
            command.merchant_id,
            command.time_ms,
            command.signature,
        )

    # Replay from the ledger (trusted entries, in ledger order).

    def restore_product(self, product: Product) -> None:
        assert product.product_id not in self._products, product.product_id
        self._products[product.product_id] = product
        self._inventory_units[product.product_id] = 0

    def restore_inventory(self, changed: InventoryChanged) -> None:
        returned = self._returned.get(changed.cause)
        if returned is not None:
            # Replaying the whole ledger, the cancel that made this entry was taken again
            # (escrow.py) and returned the units already: the entry must agree.
            if returned != changed.inventory_units:
                raise ValueError(f"ledger return of {changed.cause} does not add up")
            return
        if changed.cause.startswith("cancel:"):
            self._returned[changed.cause] = changed.inventory_units
        before = self._inventory_units[changed.product_id]
        if before + changed.delta_units != changed.inventory_units:
            raise ValueError(f"ledger inventory of {changed.product_id} does not add up")
        self._inventory_units[changed.product_id] = changed.inventory_units
        if changed.cause.startswith("restock:"):
            self._change_ids.add(changed.cause.removeprefix("restock:"))

    def return_units(
        self, product_id: str, units: int, cause: str, now_ms: int
    ) -> InventoryChanged:
        """Units of a cancelled paid order go back to the product's inventory (`cause`:
        `cancel:<order ref>`). Products are never removed, so the product is known."""
        assert units > 0, units
        available = self._inventory_units[product_id]
        self._inventory_units[product_id] = available + units
        self._returned[cause] = available + units
        return InventoryChanged(product_id, units, available + units, cause, now_ms)

    def take_for_sale(
        self, product_id: str, units: int, sale_id: str, now_ms: int
    ) -> InventoryChanged | Rejected:
        """Move `units` of inventory into a sale (called by the sale book)."""
        available = self._inventory_units.get(product_id)
        if available is None:
            return Rejected(Reason.UNKNOWN_PRODUCT, "no such product")
        if units > available:
            return Rejected(
                Reason.INSUFFICIENT_STOCK, f"only {available} units in inventory, {units} asked"
            )
        self._inventory_units[product_id] = available - units
        return InventoryChanged(product_id, -units, available - units, f"sale:{sale_id}", now_ms)
