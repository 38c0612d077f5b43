// Small links to the trace pages (docs/traceability.md), for the viewer page and the host
// panel: whether the pinned product is traceable, the units sold to one of my orders, and
// the merchant's units flagged possibly counterfeit. Each keeps its own element and
// fetches once (a product, an order) or on a timer (the flags), so the pages that call it
// can re-render freely.
import { h } from "./ui.js";

const productLinks = new Map(); // product id -> element
const orderLinks = new Map(); // "<buyer>/<order>" -> element
const ORDER_POLL_MS = 3_000;
const ORDER_POLLS_MAX = 100;
const FLAGS_INTERVAL_MS = 30_000;

async function json(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

// The product card: "Traceable: see a unit's journey", once the product has a lot.
export function showProductTrace(slot, productId) {
  if (slot.dataset.productId === productId) return;
  slot.dataset.productId = productId;
  if (!productLinks.has(productId)) {
    const link = h("a", { class: "trace-link", target: "_blank", rel: "noopener" });
    productLinks.set(productId, link);
    json(`/api/trace/products/${encodeURIComponent(productId)}`).then((trace) => {
      if (!trace.traceable || !trace.sample_page) return;
      link.href = trace.sample_page;
      link.textContent = "✓ Traceable: see where a unit came from";
      if (slot.dataset.productId === productId) slot.hidden = false;
    }).catch(() => {});
  }
  const link = productLinks.get(productId);
  slot.replaceChildren(link);
  slot.hidden = !link.href;
}

// My orders: a link to each unit the merchant sold to this order (linked at shipping).
// Asked when the order is first shown, then every ORDER_POLL_MS while the page shows it
// and no unit is linked yet (at most ORDER_POLLS_MAX times).
export function orderTrace(order) {
  const key = `${order.buyer_id}/${order.order_id}`;
  let entry = orderLinks.get(key);
  if (!entry) {
    entry = { element: h("p", { class: "trace-units small", hidden: true }), polls: 0, polling: false };
    orderLinks.set(key, entry);
  }
  if (order.status === "accepted" && !entry.polling) {
    entry.polling = true;
    pollOrder(order, entry);
  }
  return entry.element;
}

async function pollOrder(order, entry) {
  const url = `/api/trace/orders/${encodeURIComponent(order.order_id)}?buyer_id=${encodeURIComponent(order.buyer_id)}`;
  while (entry.polls < ORDER_POLLS_MAX) {
    entry.polls++;
    const found = await json(url).catch(() => ({ units: [] }));
    if (found.units.length) {
      entry.element.replaceChildren("Your items: ", ...found.units.flatMap((unit, at) => [
        at ? ", " : "",
        h("a", { href: unit.trace_page, target: "_blank", rel: "noopener" }, `trace ${unit.unit.split(".").pop()}`),
      ]));
      entry.element.hidden = false;
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, ORDER_POLL_MS));
  }
}

// The host panel: the merchant's flagged units and unknown codes scanned under its GTINs.
export function mountTraceFlags(container, merchantId) {
  const refresh = async () => {
    const flags = await json(`/api/trace/merchants/${encodeURIComponent(merchantId)}/flags`);
    const items = [
      ...flags.flagged.map((item) => h("li", {},
        h("a", { href: `/t/${encodeURIComponent(item.unit)}`, target: "_blank" }, item.unit), ": ",
        item.flags.map((flag) => flag.detail).join("; "), item.scans ? ` (${item.scans} scans)` : "")),
      ...flags.unknown_scanned.map((item) => h("li", {},
        h("a", { href: `/t/${encodeURIComponent(item.code)}`, target: "_blank" }, item.code),
        `: unknown code scanned ${item.scans}×`)),
    ];
    container.hidden = items.length === 0;
    container.replaceChildren(h("b", {}, `⚠ Possibly counterfeit (${items.length})`), h("ul", {}, ...items));
  };
  refresh().catch(() => {});
  setInterval(() => refresh().catch(() => {}), FLAGS_INTERVAL_MS);
}
