// Canonical JSON and signed messages, byte for byte as the server builds them
// (docs/commerce.md, livecommerce/commerce/canonical.py): sorted keys, no whitespace,
// integers only, strings as JSON.stringify writes them.

export const DOMAIN_REGISTRATION = "livecommerce/registration/v1";
export const DOMAIN_SESSION = "livecommerce/session/v1";
export const DOMAIN_ORDER = "livecommerce/order/v1";
export const DOMAIN_LISTING = "livecommerce/listing/v1";
export const DOMAIN_STOCK = "livecommerce/stock/v1";
export const DOMAIN_ORDER_STEP = "livecommerce/order-step/v1";
export const DOMAIN_GROUP = "livecommerce/group/v1";
export const DOMAIN_BID = "livecommerce/bid/v1";

export function canonical(value) {
  if (Array.isArray(value)) return "[" + value.map(canonical).join(",") + "]";
  if (value !== null && typeof value === "object") {
    return "{" + Object.keys(value).sort()
      .map((key) => JSON.stringify(key) + ":" + canonical(value[key])).join(",") + "}";
  }
  if (typeof value === "number" && !Number.isSafeInteger(value)) {
    throw new Error("canonical JSON takes integers only");
  }
  return JSON.stringify(value);
}

export function signingBytes(domain, fields) {
  return new TextEncoder().encode(domain + "\n" + canonical(fields));
}
