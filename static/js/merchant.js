// The host panel's merchant part: the orders after the sale, each with the buyer's
// shipping details opened in this browser with the merchant's X25519 key (sealed.js)
// and checked against the commitment on the ledger; a printable packing list; the
// merchant's signed steps (ship with carrier and tracking, deliver, answer a refund);
// the balances, the payouts seen, and the statement as CSV for a period.
//
// Everything here needs a merchant session (a signed challenge: identity.js), so it
// runs only in a browser that holds the room's merchant key. The orders come from
// GET /api/merchant/orders; each paid order's stage from its life (GET /api/orders/{id}),
// asked again while the order can still move.
import { b64urlToBytes } from "./b64.js";
import {
  LedgerChecks, REFUND_REASONS, centsOf, describe, fetchLife, isFinal, refusalText, sendStep, stepBody,
} from "./order-life.js";
import { SealedError, openShipping, verifyCommitment } from "./sealed.js";
import { $, h, money } from "./ui.js";

const POLL_INTERVAL_MS = 2000;
const FINAL_SHOWN_MAX = 20;
const SHORT_TEXT = /^[A-Za-z0-9 ._/#-]{1,64}$/; // carrier and tracking (escrow.py)
const ADDRESS_ORDER = ["name", "street", "postcode", "city", "country"];
// What needs the merchant first.
const STAGE_RANK = { paid: 0, refund_requested: 1, shipped: 2, delivered: 3, disputed: 4, refunding: 5, confirmed: 6 };
const STAGE_TEXT = {
  paid: "to ship", shipped: "shipped", delivered: "delivered", refund_requested: "refund asked",
  refunding: "refunding", disputed: "disputed", confirmed: "confirmed", settled: "settled",
  refunded: "refunded", cancelled: "cancelled", capture_failed: "capture failed",
};
const DAY_MS = 24 * 3600 * 1000;

export class MerchantPanel {
  // merchant: the merchant identity (identity.js); now(): the server's clock as
  // estimated; toast(text, kind).
  constructor({ merchant, now, toast }) {
    this.merchant = merchant;
    this.now = now;
    this.toast = toast;
    this.orders = [];
    this.lives = new Map(); // order key -> life
    this.addresses = new Map(); // order key -> { state, details, detail }
    this.sales = new Map(); // sale id -> the sale (its product's title)
    this.rows = new Map(); // order key -> { key, element }
    this.busy = new Set();
    this.checks = new LedgerChecks(() => this.renderOrders());
    this.balancesSeen = "";
  }

  start() {
    $("merchant").hidden = false;
    const today = new Date(this.now());
    const first = new Date(today.getFullYear(), today.getMonth(), 1);
    $("statement-from").value = isoDate(first);
    $("statement-to").value = isoDate(today);
    $("statement-form").addEventListener("submit", (event) => { event.preventDefault(); this.downloadStatement(); });
    $("packing-open").addEventListener("click", () => this.openPacking());
    $("packing-close").addEventListener("click", () => { $("packing").hidden = true; });
    $("packing-print").addEventListener("click", () => window.print());
    if (!this.merchant.shippingKey) {
      this.note("This browser's merchant key has no shipping key (it was stored before there was one): open the merchant link again to import the seed, or shipping details cannot be opened here.");
    }
    fetch("/api/payments/provider").then((r) => (r.ok ? r.json() : null)).then((provider) => {
      if (provider) $("money-provider").textContent = provider.test ? "TEST provider: no real money moves" : `provider: ${provider.name}`;
    }).catch(() => {});
    this.poll();
    setInterval(() => this.poll(), POLL_INTERVAL_MS);
  }

  note(text) {
    $("m-orders-note").hidden = !text;
    $("m-orders-note").textContent = text || "";
  }

  async api(path, { raw = false } = {}) {
    const token = await this.merchant.session();
    const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
    if (!response.ok) {
      const answer = await response.json().catch(() => ({}));
      throw new Error(answer.message || answer.error || `${path}: ${response.status}`);
    }
    return raw ? response : response.json();
  }

  async poll() {
    if (this.polling) return;
    this.polling = true;
    try {
      await this.pollOrders();
      await this.pollMoney();
    } catch (error) {
      this.note(`Cannot read the orders: ${error.message || error}`);
    } finally {
      this.polling = false;
    }
  }

  async pollOrders() {
    const answer = await this.api("/api/merchant/orders");
    this.orders = answer.orders;
    for (const order of this.orders) {
      if (!this.sales.has(order.sale_id)) {
        const sale = await fetch(`/api/sales/${encodeURIComponent(order.sale_id)}`).then((r) => (r.ok ? r.json() : null)).catch(() => null);
        if (sale) this.sales.set(order.sale_id, sale);
      }
      if (order.status !== "paid") continue;
      const key = keyOf(order);
      const known = this.lives.get(key);
      if (!known || !isFinal(known.stage)) {
        const life = await fetchLife(order.order_id, order.buyer_id).catch(() => null);
        if (life) this.lives.set(key, life);
      }
      if (!this.addresses.has(key)) await this.openAddress(order);
    }
    this.renderOrders();
  }

  // The sealed details, opened here; then held to the commitment in the payment's
  // ledger entry, once that entry's proof has verified.
  async openAddress(order) {
    const key = keyOf(order);
    if (!order.shipping_sealed) { this.addresses.set(key, { state: "none" }); return; }
    if (!this.merchant.shippingKey) { this.addresses.set(key, { state: "bad", detail: "no shipping key in this browser" }); return; }
    try {
      const opened = await openShipping(b64urlToBytes(order.shipping_sealed), this.merchant.shippingKey);
      this.addresses.set(key, { state: "opened", ...opened });
    } catch (error) {
      const detail = error instanceof SealedError ? `${error.code}: ${error.message}` : String(error.message || error);
      this.addresses.set(key, { state: "bad", detail });
    }
  }

  async holdToCommitment(key, address, life) {
    const paid = life?.timeline.find((item) => item.action === "paid");
    if (!paid) return;
    const check = this.checks.check(paid, life.buyer_id, life.order_id);
    if (check.state === "bad") { Object.assign(address, { state: "bad", detail: `the payment's entry: ${check.detail}` }); return; }
    if (check.state !== "ok") return;
    address.state = "checking";
    const matches = await verifyCommitment(address.details, address.salt, check.entry.shipping_commitment);
    Object.assign(address, matches ? { state: "ok", index: check.index } : { state: "bad", detail: "the details do not match the ledger's commitment" });
    this.renderOrders();
  }

  renderOrders() {
    const paid = this.orders.filter((order) => order.status === "paid");
    const waiting = this.orders.filter((order) => order.status === "held").length;
    const stageOf = (order) => this.lives.get(keyOf(order))?.stage || "paid";
    const open = paid.filter((order) => !isFinal(stageOf(order)));
    const done = paid.filter((order) => isFinal(stageOf(order))).slice(-FINAL_SHOWN_MAX).reverse();
    open.sort((a, b) => (STAGE_RANK[stageOf(a)] ?? 9) - (STAGE_RANK[stageOf(b)] ?? 9));
    const toShip = open.filter((order) => stageOf(order) === "paid").length;
    $("m-orders-summary").textContent = `${toShip} to ship · ${open.length - toShip} under way · ${waiting} waiting for payment`;
    const shown = [...open, ...done];
    const elements = shown.map((order) => this.row(order));
    const list = $("m-orders");
    if (elements.length !== list.children.length || elements.some((element, i) => list.children[i] !== element)) {
      list.replaceChildren(...elements);
    }
    if (!shown.length) list.replaceChildren(h("li", { class: "muted small" }, "No paid orders yet."));
    if (!$("packing").hidden) this.renderPacking();
  }

  // A row is built again only when what it shows changed, so a half-typed tracking
  // number survives the polls.
  row(order) {
    const key = keyOf(order);
    const life = this.lives.get(key);
    const address = this.addresses.get(key) || { state: "checking" };
    if (address.state === "opened") this.holdToCommitment(key, address, life);
    const checks = (life?.timeline || []).map((item) => this.checks.check(item, order.buyer_id, order.order_id).state);
    const signature = JSON.stringify([life, address.state, address.detail, checks, this.busy.has(key)]);
    const kept = this.rows.get(key);
    if (kept && kept.signature === signature) return kept.element;
    const element = this.buildRow(order, life, address);
    this.rows.set(key, { signature, element });
    return element;
  }

  buildRow(order, life, address) {
    const stage = life?.stage || "paid";
    const amount = order.price_cents * order.quantity;
    return h("li", { class: "m-order", dataset: { orderId: order.order_id, buyerId: order.buyer_id, stage } },
      h("div", { class: "m-head" },
        h("b", {}, `${order.quantity} × ${this.titleOf(order)}`),
        h("span", { class: `badge stage-${stage}` }, STAGE_TEXT[stage] || stage),
        h("span", { class: "muted small" }, `${money(amount, order.currency)} · order ${order.order_id} · buyer ${order.buyer_id.slice(0, 8)}…`)),
      this.addressBlock(address),
      life?.carrier ? h("p", { class: "small m-tracking" }, `${life.carrier} · tracking ${life.tracking}`) : null,
      this.actions(order, stage, life),
      life?.timeline?.length ? this.timeline(order, life) : null);
  }

  titleOf(order) {
    return this.sales.get(order.sale_id)?.title || order.sale_id;
  }

  addressBlock(address) {
    const lines = address.details ? addressLines(address.details) : [];
    let status;
    if (address.state === "ok") status = `✓ opened here; matches the ledger's commitment (entry ${address.index})`;
    else if (address.state === "bad") status = `✗ ${address.detail}`;
    else if (address.state === "none") status = "No shipping details were given.";
    else status = "Opening and checking the shipping details…";
    return h("div", { class: "address", dataset: { state: address.state } },
      lines.length ? h("div", { class: "address-lines" }, ...lines.map((line) => h("div", {}, line))) : null,
      h("p", { class: "small address-check" }, status));
  }

  timeline(order, life) {
    const checks = life.timeline.map((item) => this.checks.check(item, order.buyer_id, order.order_id));
    const verified = checks.filter((check) => check.state === "ok").length;
    const bad = checks.some((check) => check.state === "bad");
    return h("details", { class: "m-timeline", dataset: { verified: bad ? "bad" : verified === checks.length ? "ok" : "checking" } },
      h("summary", {}, bad ? "✗ an entry does not verify" : `Ledger: ${verified} of ${checks.length} entries verified`),
      h("ol", {}, ...life.timeline.map((item, i) => h("li", { dataset: { action: item.action, verified: checks[i].state } },
        `${describe(item, life.currency)} `,
        h("a", { href: `/ledger.html#${item.ledger_index}`, target: "_blank" },
          checks[i].state === "ok" ? `✓ entry ${item.ledger_index}` : checks[i].state === "bad" ? `✗ entry ${item.ledger_index}: ${checks[i].detail}` : `entry ${item.ledger_index}…`)))));
  }

  actions(order, stage, life) {
    const busy = this.busy.has(keyOf(order));
    if (stage === "paid") {
      const carrier = h("input", { name: "carrier", list: "carriers", placeholder: "Carrier", required: true, maxlength: 64, class: "carrier" });
      const tracking = h("input", { name: "tracking", placeholder: "Tracking number", required: true, maxlength: 64, class: "tracking" });
      return h("form", {
        class: "ship-form",
        onsubmit: (event) => {
          event.preventDefault();
          const fields = { carrier: carrier.value.trim(), tracking: tracking.value.trim() };
          if (!SHORT_TEXT.test(fields.carrier) || !SHORT_TEXT.test(fields.tracking)) {
            this.toast("Carrier and tracking: 1 to 64 letters, digits, spaces or . _ / # -", "error");
            return;
          }
          this.step(order, "ship", fields, "Marked shipped");
        },
      }, carrier, tracking, h("button", { class: "primary ship", disabled: busy }, "Mark shipped"));
    }
    if (stage === "shipped") {
      return h("div", { class: "m-actions" }, h("button", { class: "ghost deliver", disabled: busy, onclick: () => this.step(order, "deliver", {}, "Marked delivered") }, "Mark delivered"));
    }
    if (stage === "refund_requested" && life) {
      const asked = life.refund_requested_cents;
      const amount = h("input", { class: "refund-amount", inputmode: "decimal", value: (asked / 100).toFixed(2) });
      const answer = (decision) => {
        const fields = { decision };
        if (decision === "accept") {
          const cents = centsOf(amount.value);
          if (!(cents > 0 && cents <= asked)) { this.toast(`Accept 0.01 to ${(asked / 100).toFixed(2)}`, "error"); return; }
          fields.amountCents = cents;
        }
        this.step(order, "refund_answer", fields, decision === "accept" ? "Refund accepted" : "Refund declined");
      };
      return h("div", { class: "m-actions refund-answer" },
        h("p", { class: "small" }, `Refund asked: ${money(asked, order.currency)} · ${REFUND_REASONS[life.refund_reason] || life.refund_reason}`),
        h("label", { class: "inline" }, "Refund ", amount),
        h("button", { class: "primary accept", disabled: busy, onclick: () => answer("accept") }, "Accept"),
        h("button", { class: "danger decline", disabled: busy, onclick: () => answer("decline") }, "Decline"));
    }
    const amount = (cents) => money(cents, order.currency);
    const notes = {
      delivered: "Delivered; waiting for the buyer to confirm (or the clock).",
      disputed: "Disputed: an arbiter decides.",
      refunding: life ? `Refunding ${amount(life.refunding_cents)}.` : "Refunding.",
      confirmed: "Confirmed; it settles once the payment is captured.",
      settled: life ? `Settled: ${amount(life.settled_cents)} to you, ${amount(life.fee_cents)} fee.` : "Settled.",
      refunded: life ? `Refunded ${amount(life.refunded_cents)}.` : "Refunded.",
      cancelled: "Cancelled by the buyer; the units are back in stock.",
      capture_failed: "The capture failed at the provider: nothing was charged.",
    };
    return notes[stage] ? h("p", { class: "small muted m-note" }, notes[stage]) : null;
  }

  async step(order, step, fields, done) {
    const key = keyOf(order);
    this.busy.add(key);
    this.renderOrders();
    try {
      const body = await stepBody(this.merchant, { step, buyerId: order.buyer_id, orderId: order.order_id, timeMs: this.now(), ...fields });
      const { status, answer } = await sendStep(order.order_id, body);
      if (status === 200) this.toast(done, "ok");
      else this.toast(refusalText(answer, status), "error");
      const life = await fetchLife(order.order_id, order.buyer_id).catch(() => null);
      if (life) this.lives.set(key, life);
    } catch (error) {
      this.toast(String(error.message || error), "error");
    } finally {
      this.busy.delete(key);
      this.renderOrders();
    }
  }

  // The packing list: what is paid and not shipped yet, with its address.
  openPacking() {
    $("packing").hidden = false;
    this.renderPacking();
  }

  renderPacking() {
    const toShip = this.orders.filter((order) => order.status === "paid" && (this.lives.get(keyOf(order))?.stage || "paid") === "paid");
    $("packing-when").textContent = new Date(this.now()).toLocaleString();
    $("packing-empty").hidden = toShip.length > 0;
    $("packing-rows").replaceChildren(...toShip.map((order) => {
      const address = this.addresses.get(keyOf(order));
      const lines = address?.details ? addressLines(address.details) : [address?.state === "none" ? "(no address given)" : "(not opened)"];
      return h("tr", { dataset: { orderId: order.order_id } },
        h("td", {}, order.order_id),
        h("td", { class: "product" }, this.titleOf(order)),
        h("td", { class: "quantity" }, String(order.quantity)),
        h("td", { class: "ship-to" }, ...lines.map((line) => h("div", {}, line))));
    }));
  }

  // Balances, and the payouts seen in the statement when they change.
  async pollMoney() {
    const { balances } = await this.api("/api/merchant/money");
    const seen = JSON.stringify(balances);
    if (seen === this.balancesSeen) return;
    this.balancesSeen = seen;
    const rows = Object.entries(balances).map(([currency, b]) => h("tr", { dataset: { currency } },
      h("td", {}, currency),
      h("td", { class: "pending", dataset: { cents: b.pending } }, money(b.pending, currency)),
      h("td", { class: "available", dataset: { cents: b.available } }, money(b.available, currency)),
      h("td", { class: "paying-out", dataset: { cents: b.paying_out } }, money(b.paying_out, currency)),
      h("td", { class: "paid-out", dataset: { cents: b.paid_out } }, money(b.paid_out, currency))));
    $("balances").tBodies[0].replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 5, class: "muted" }, "Nothing yet."))]));
    await this.loadPayouts();
  }

  async loadPayouts() {
    const response = await this.api(`/api/merchant/statement.csv?from_ms=0&to_ms=${Math.round(this.now()) + DAY_MS}`, { raw: true });
    const payouts = new Map();
    for (const row of parseCsv(await response.text())) {
      if (row.code !== "payout") continue;
      const id = row.phase === "pending" ? row.transfer_id : row.transfer_id.slice(row.transfer_id.indexOf(":") + 1);
      const payout = payouts.get(id) || { id, amount: 0, currency: row.currency, state: "paying out", time_ms: Number(row.time_ms) };
      if (row.phase === "pending") payout.amount = Number(row.amount_cents);
      else if (row.phase === "post") payout.state = "paid out";
      else payout.state = "failed";
      payouts.set(id, payout);
    }
    const list = [...payouts.values()].reverse();
    $("payouts").replaceChildren(...(list.length ? list.map((payout) => h("li", { dataset: { state: payout.state.replace(" ", "_") } },
      h("b", {}, money(payout.amount, payout.currency)), ` · ${payout.state} · batch ${payout.id.split(":")[1] || payout.id} · ${new Date(payout.time_ms).toLocaleString()}`))
      : [h("li", { class: "muted small" }, "No payouts yet.")]));
  }

  async downloadStatement() {
    const from = new Date(`${$("statement-from").value}T00:00:00`).getTime();
    const to = new Date(`${$("statement-to").value}T00:00:00`).getTime() + DAY_MS;
    if (!(from < to)) { this.toast("The period ends before it starts", "error"); return; }
    try {
      const response = await this.api(`/api/merchant/statement.csv?from_ms=${from}&to_ms=${to}`, { raw: true });
      const url = URL.createObjectURL(await response.blob());
      const link = h("a", { href: url, download: `statement-${$("statement-from").value}-${$("statement-to").value}.csv` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (error) {
      this.toast(String(error.message || error), "error");
    }
  }
}

const keyOf = (order) => `${order.buyer_id}/${order.order_id}`;

function isoDate(date) {
  return `${date.getFullYear()}-${String(date.getMonth() + 1).padStart(2, "0")}-${String(date.getDate()).padStart(2, "0")}`;
}

// The address as lines: the usual fields in their usual order, then any other.
function addressLines(details) {
  const names = [...ADDRESS_ORDER.filter((name) => name in details), ...Object.keys(details).filter((name) => !ADDRESS_ORDER.includes(name))];
  const lines = [];
  for (const name of names) {
    if (name === "postcode" && "city" in details) continue;
    if (name === "city" && "postcode" in details) lines.push(`${details.postcode} ${details.city}`);
    else lines.push(ADDRESS_ORDER.includes(name) ? details[name] : `${name}: ${details[name]}`);
  }
  return lines;
}

// RFC 4180 CSV (the statement's): a header line, then rows as objects.
export function parseCsv(text) {
  const records = [];
  let field = "";
  let record = [];
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; }
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") { record.push(field); field = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      record.push(field); field = "";
      records.push(record); record = [];
    } else field += c;
  }
  if (field || record.length) { record.push(field); records.push(record); }
  const [header, ...rows] = records;
  return (rows || []).map((row) => Object.fromEntries((header || []).map((name, i) => [name, row[i] ?? ""])));
}
