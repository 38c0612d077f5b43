// The viewer's orders after the sale: paying with a card (the provider's test cards are
// listed when it is the TEST provider), then the order's life (paid, shipped with its
// tracking number, delivered, settled...) with each ledger entry checked in the page, and
// the buyer's signed steps: confirm receipt, cancel, ask for a refund, open a dispute.
//
// viewer.js owns the list of orders (kept in localStorage) and renders each one; it asks
// this module for the part after the sale (`section(order)`) and for the order's stage
// (`stageOf(order)`). The pay and claim forms are two nodes of index.html that move into
// the order they are open for, so a re-render keeps what was typed.
import {
  LedgerChecks, REFUND_REASONS, centsOf, describe, fetchLife, isFinal, refusalText, sendStep, stepBody,
} from "./order-life.js";
import { groupNote } from "./groups.js";
import { reviewOrder } from "./reviews.js";
import { $, h, money } from "./ui.js";

const POLL_INTERVAL_MS = 2000;
const REVIEWABLE = new Set(["delivered", "confirmed", "settled"]);
const ORDERS_POLLED_MAX = 10;
const SHIPPING_FIELDS = ["name", "street", "postcode", "city", "country"];
const DECLINE_TEXT = {
  card_declined: "the card was declined",
  insufficient_funds: "insufficient funds",
  not_a_test_card: "this is not one of the test provider's cards",
};

export class OrdersView {
  // identity(): the viewer's identity; orders: viewer.js's store; now(): the server's
  // clock as estimated; render(): renders the orders again; toast(text, kind).
  constructor({ identity, orders, now, render, toast }) {
    this.identity = identity;
    this.orders = orders;
    this.now = now;
    this.render = render;
    this.toast = toast;
    this.lives = new Map(); // order id -> the last life fetched
    this.checks = new LedgerChecks(() => this.render());
    this.payingId = null;
    this.claim = null; // { orderId, kind: "refund" | "dispute" }
    this.reviewingId = null;
    this.provider = null;
    this.busy = new Set(); // order ids with a step or payment in flight
  }

  start() {
    this.loadProvider();
    this.wireForms();
    setInterval(() => this.poll(false), POLL_INTERVAL_MS);
    this.poll(true);
  }

  async loadProvider() {
    const response = await fetch("/api/payments/provider").catch(() => null);
    if (!response?.ok) {
      $("pay-provider").textContent = "No payment provider is set up.";
      return;
    }
    this.provider = await response.json();
    const line = $("pay-provider");
    line.dataset.test = this.provider.test ? "1" : "0";
    line.replaceChildren(this.provider.test
      ? h("span", {}, h("b", {}, "TEST"), ` payment provider (${this.provider.name}): no real money moves.`)
      : `Payment provider: ${this.provider.name}`);
    $("test-cards").hidden = !this.provider.cards.length;
    $("test-card-list").replaceChildren(...this.provider.cards.map((card) => h("li", {},
      h("button", { type: "button", dataset: { number: card.number }, onclick: () => this.useCard(card.number) },
        card.number.replace(/(\d{4})(?=\d)/g, "$1 ")),
      " ", h("span", { class: "muted small" }, card.what))));
  }

  useCard(number) {
    $("card-number").value = number.replace(/(\d{4})(?=\d)/g, "$1 ");
    const next = new Date(this.now());
    if (!$("card-exp").value) $("card-exp").value = `12/${String(next.getFullYear() + 2).slice(2)}`;
    if (!$("card-cvc").value) $("card-cvc").value = "123";
  }

  wireForms() {
    $("pay-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const order = this.orders.find(this.payingId);
      if (order) this.pay(order);
    });
    $("pay-cancel").addEventListener("click", () => { this.payingId = null; this.park(); this.render(); });
    $("claim-reason").replaceChildren(...Object.entries(REFUND_REASONS).map(([value, text]) => h("option", { value }, text)));
    $("claim-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const order = this.claim && this.orders.find(this.claim.orderId);
      if (order) this.sendClaim(order);
    });
    $("claim-cancel").addEventListener("click", () => { this.claim = null; this.park(); this.render(); });
    $("review-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const order = this.reviewingId && this.orders.find(this.reviewingId);
      if (order) this.sendReview(order);
    });
    $("review-cancel").addEventListener("click", () => { this.reviewingId = null; this.park(); this.render(); });
  }

  // A review (reviews.js): once per received order, signed, on the ledger.
  async sendReview(order) {
    const identity = this.identity();
    $("review-submit").disabled = true;
    try {
      const stars = Number($("review-stars").value);
      const result = await reviewOrder(identity, order.order_id, { stars, text: $("review-text").value });
      if (result.ok || result.answer.reason === "already_reviewed") {
        order.review = { stars, ledger_index: result.answer.ledger_index ?? null };
        this.orders.save();
        this.reviewingId = null;
        $("review-text").value = "";
        this.park();
        this.toast("Thanks: your review is on the ledger", "ok");
        this.render();
      } else {
        $("review-error").hidden = false;
        $("review-error").textContent = result.answer.message || result.answer.detail || `refused (${result.status})`;
      }
    } finally {
      $("review-submit").disabled = false;
    }
  }

  // The forms go back to their hidden holder when no order has them open.
  park() {
    if (!this.payingId) $("order-forms").append($("pay-form"));
    if (!this.claim) $("order-forms").append($("claim-form"));
    if (!this.reviewingId) $("order-forms").append($("review-form"));
  }

  stageOf(order) {
    const stage = order.stage || order.order_status || "held";
    return stage === "held" && order.hold_expires_at_ms < this.now() ? "expired" : stage;
  }

  // Lives: fetched for orders that may move (paid and not final, or a payment the bank
  // answers later); every accepted order once when the page starts.
  async poll(everything) {
    const me = this.identity();
    if (!me) return;
    const moving = this.orders.list.filter((order) => order.status === "accepted" && (everything
      || order.payment?.state === "pending"
      || (this.stageOf(order) !== "held" && !isFinal(this.stageOf(order)))));
    for (const order of moving.slice(-ORDERS_POLLED_MAX)) await this.refresh(order);
  }

  async refresh(order) {
    let life;
    try {
      life = await fetchLife(order.order_id, order.buyer_id);
    } catch {
      return; // the server is away: the next poll asks again
    }
    if (!life) return;
    const before = this.lives.get(order.order_id);
    this.lives.set(order.order_id, life);
    const changed = !before || JSON.stringify(before) !== JSON.stringify(life);
    if (order.payment?.state === "pending" && life.stage !== "held") {
      order.payment = { state: "paid" };
      this.toast("The bank said yes: paid", "ok");
    }
    if (changed || order.stage !== life.stage) {
      order.stage = life.stage;
      order.order_status = life.order_status;
      this.orders.save();
      this.render();
    }
  }

  // The part of an order's card after the sale.
  section(order) {
    if (order.status !== "accepted") return null;
    const stage = this.stageOf(order);
    const life = this.lives.get(order.order_id);
    const parts = [];
    if (stage === "held" && order.payment?.state === "pending") {
      parts.push(h("p", { class: "pay-state", dataset: { state: "pending" } }, "Waiting for the bank… the order is paid once it answers."));
    }
    const inGroup = groupNote(order, life, this.now());
    if (inGroup) parts.push(inGroup);
    if (life?.carrier) {
      parts.push(h("p", { class: "tracking" }, `Shipped with ${life.carrier} · tracking `, h("b", { class: "tracking-number" }, life.tracking)));
    }
    if (life?.timeline?.length) parts.push(this.timeline(order, life));
    const note = this.stageNote(stage, life, order);
    if (note) parts.push(h("p", { class: "muted small stage-note" }, note));
    parts.push(this.actions(order, stage, life));
    if (this.payingId === order.order_id && stage === "held") {
      $("pay-submit").textContent = `Pay ${money(order.price_cents * order.quantity, order.currency)}`;
      parts.push($("pay-form"));
    }
    if (this.claim?.orderId === order.order_id) parts.push($("claim-form"));
    if (REVIEWABLE.has(stage)) {
      if (order.review) {
        parts.push(h("p", { class: "reviewed" }, `Your review: ${"★".repeat(order.review.stars)}${"☆".repeat(5 - order.review.stars)}`));
      } else if (this.reviewingId === order.order_id) {
        parts.push($("review-form"));
      } else {
        parts.push(h("div", { class: "row" }, h("button", { class: "review ghost", type: "button",
          onclick: () => { this.reviewingId = order.order_id; $("review-error").hidden = true; this.render(); } },
          "Write a review")));
      }
    }
    return h("div", { class: "after-sale" }, ...parts);
  }

  timeline(order, life) {
    return h("ol", { class: "timeline" }, ...life.timeline.map((item) => {
      const check = this.checks.check(item, order.buyer_id, order.order_id);
      const index = item.ledger_index;
      const signed = check.signer ? ` · signed by ${check.signer === "buyer" ? "you" : `the ${check.signer}`}` : "";
      const proof = check.state === "ok" ? `✓ verified: entry ${index}, checkpoint ${check.size}${signed}`
        : check.state === "bad" ? `✗ entry ${index} does not verify: ${check.detail}` : `entry ${index} · checking…`;
      return h("li", { class: `step${item.entry === "transfer/v1" ? " money" : ""}`, dataset: { action: item.action, index: String(index), verified: check.state } },
        h("span", { class: "what" }, describe(item, life.currency)),
        h("a", { class: `proof ${check.state}`, href: `/ledger.html#${index}`, target: "_blank" }, proof));
    }));
  }

  stageNote(stage, life, order) {
    const amount = (cents) => money(cents, order.currency);
    switch (stage) {
      case "paid": return "Paid. The seller ships next; you can still cancel.";
      case "shipped": case "delivered": return "Confirm once it has arrived, or ask for a refund. Without a word, it confirms by itself after a week.";
      case "refund_requested": return life ? `Refund of ${amount(life.refund_requested_cents)} asked; waiting for the seller.` : "Refund asked; waiting for the seller.";
      case "refunding": return "The refund is on its way.";
      case "disputed": return "Dispute open: an arbiter decides.";
      case "confirmed": return "Confirmed; it settles once the payment is captured.";
      case "settled": return "Settled: the seller is paid.";
      case "refunded": return life ? `Refunded ${amount(life.refunded_cents)}.` : "Refunded.";
      case "cancelled": return order.order_status === "paid" ? "Cancelled; the payment was released." : "Cancelled before payment.";
      case "capture_failed": return "The payment could not be captured; nothing was charged.";
      default: return null;
    }
  }

  actions(order, stage, life) {
    const busy = this.busy.has(order.order_id);
    const button = (cls, text, onclick) => h("button", { class: cls, type: "button", disabled: busy, onclick }, text);
    const buttons = [];
    if (stage === "held") {
      if (this.payingId !== order.order_id) {
        buttons.push(button("pay", order.payment?.state === "pending" ? "Try another card" : "Pay", () => this.openPay(order)));
      }
      buttons.push(button("cancel-order ghost", "Cancel", () => this.cancel(order)));
    } else if (stage === "paid") {
      buttons.push(button("cancel-order ghost", "Cancel order", () => this.cancel(order)));
    } else if (stage === "shipped" || stage === "delivered") {
      buttons.push(button("confirm", "Confirm receipt", () => this.step(order, "confirm", {}, "Receipt confirmed")));
      buttons.push(button("refund ghost", "Ask for a refund", () => this.openClaim(order, "refund", life)));
      buttons.push(button("dispute ghost", "Open a dispute", () => this.openClaim(order, "dispute", life)));
    } else if (stage === "refund_requested") {
      buttons.push(button("dispute ghost", "Open a dispute", () => this.openClaim(order, "dispute", life)));
    }
    return buttons.length ? h("div", { class: "row life-actions" }, ...buttons) : "";
  }

  openPay(order) {
    this.payingId = order.order_id;
    this.claim = null;
    $("pay-error").hidden = true;
    this.park();
    this.render();
    $("ship-name").focus();
  }

  openClaim(order, kind, life) {
    this.claim = { orderId: order.order_id, kind };
    this.payingId = null;
    const form = $("claim-form");
    form.dataset.kind = kind;
    $("claim-title").textContent = kind === "refund" ? "Ask for a refund" : "Open a dispute";
    $("claim-amount-label").hidden = kind !== "refund";
    const left = (life?.amount_cents ?? order.price_cents * order.quantity) - (life?.refunded_cents ?? 0);
    $("claim-amount").value = (left / 100).toFixed(2);
    $("claim-submit").textContent = kind === "refund" ? "Ask for the refund" : "Open the dispute";
    $("claim-error").hidden = true;
    this.park();
    this.render();
  }

  async pay(order) {
    const error = (text) => { $("pay-error").hidden = false; $("pay-error").textContent = text; };
    const card = this.cardOf();
    if (typeof card === "string") { error(card); return; }
    const shipping = {};
    for (const name of SHIPPING_FIELDS) {
      const value = $(`ship-${name}`).value.trim();
      if (value) shipping[name] = value;
    }
    this.busy.add(order.order_id);
    $("pay-submit").disabled = true;
    $("pay-error").hidden = true;
    try {
      const token = await this.identity().session();
      const response = await fetch(`/api/orders/${encodeURIComponent(order.order_id)}/pay`, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ shipping, card }),
      });
      const answer = await response.json().catch(() => ({}));
      if (answer.status === "paid") {
        order.payment = { state: "paid" };
        order.order_status = order.stage = "paid";
        this.closePay();
        this.toast("Paid. The money is held until you confirm receipt.", "ok");
      } else if (answer.status === "pending") {
        order.payment = { state: "pending" };
        this.closePay();
      } else if (answer.reason === "payment_declined") {
        order.payment = { state: "declined", detail: answer.detail };
        $("pay-error").dataset.reason = answer.detail || "";
        error(`Declined: ${DECLINE_TEXT[answer.detail] || answer.detail || "the bank said no"}. Try another card.`);
      } else {
        if (answer.reason === "order_expired") order.order_status = order.stage = "expired";
        $("pay-error").dataset.reason = answer.reason || answer.error || "";
        error(`Not paid: ${refusalText(answer, response.status)}`);
      }
    } catch (failure) {
      error(`Not paid: ${failure.message || failure}`);
    } finally {
      this.busy.delete(order.order_id);
      $("pay-submit").disabled = false;
      this.orders.save();
      this.render();
      this.refresh(order);
    }
  }

  closePay() {
    this.payingId = null;
    $("card-number").value = "";
    $("card-cvc").value = "";
    this.park();
  }

  // The card as the server takes it, or what is wrong with it.
  cardOf() {
    const number = $("card-number").value.replace(/[\s-]/g, "");
    if (!/^\d{12,19}$/.test(number)) return "The card number is 12 to 19 digits.";
    const exp = /^(\d{1,2})\s*\/\s*(\d{2}|\d{4})$/.exec($("card-exp").value.trim());
    if (!exp || Number(exp[1]) < 1 || Number(exp[1]) > 12) return "The expiry is MM/YY.";
    const cvc = $("card-cvc").value.trim();
    if (!/^\d{3,4}$/.test(cvc)) return "The security code is 3 or 4 digits.";
    const year = exp[2].length === 2 ? 2000 + Number(exp[2]) : Number(exp[2]);
    return { number, exp_month: Number(exp[1]), exp_year: year, cvc };
  }

  cancel(order) {
    if (!confirm("Cancel this order? The payment is released and the units go back.")) return;
    this.step(order, "cancel", {}, "Cancelled");
  }

  async sendClaim(order) {
    const kind = this.claim.kind;
    const reason = $("claim-reason").value;
    const fields = { reason };
    if (kind === "refund") {
      const cents = centsOf($("claim-amount").value);
      if (!(cents > 0)) {
        $("claim-error").hidden = false;
        $("claim-error").textContent = "The amount is a number like 12.50.";
        return;
      }
      fields.amountCents = cents;
    }
    const refusal = await this.step(order, kind === "refund" ? "refund_request" : "dispute", fields,
      kind === "refund" ? "Refund asked" : "Dispute opened");
    if (refusal) {
      $("claim-error").hidden = false;
      $("claim-error").textContent = refusal;
    } else {
      this.claim = null;
      this.park();
      this.render();
    }
  }

  // A signed step; returns what refused it, or null.
  async step(order, step, fields, done) {
    this.busy.add(order.order_id);
    this.render();
    try {
      const body = await stepBody(this.identity(), { step, buyerId: order.buyer_id, orderId: order.order_id, timeMs: this.now(), ...fields });
      const { status, answer } = await sendStep(order.order_id, body);
      if (status !== 200) {
        const text = refusalText(answer, status);
        this.toast(text, "error");
        return text;
      }
      this.toast(done, "ok");
      return null;
    } catch (failure) {
      const text = String(failure.message || failure);
      this.toast(text, "error");
      return text;
    } finally {
      this.busy.delete(order.order_id);
      await this.refresh(order);
      this.render();
    }
  }
}
