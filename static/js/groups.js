// Group buying on the viewer page (docs/commerce.md, "Group buying"): when the pinned
// product's sale is offered to groups, a card lists the open groups with places and time
// left (read every GROUPS_REFRESH_MS, counted down every second), and lets the viewer start
// a group or join one. Either way the page places an order of one unit, signs the group
// step with the viewer's key once the order holds its unit (POST /api/groups), then opens
// the pay form: the payment waits in escrow until the group succeeds (posted at the group
// price) or ends short (voided). A group's share link is this page with `group=<id>`.
import { DOMAIN_GROUP } from "./canonical.js";
import { $, duration, h, money, randomId } from "./ui.js";

const GROUPS_REFRESH_MS = 2000;

export class GroupBuy {
  // getSale(): the pinned product's sale or null; identity(): the viewer's identity or
  // null; placeOrder(group): places a one-unit order marked with `group` (viewer.js);
  // openPay(order): opens My orders on that order's pay form; now(): the server's clock.
  constructor({ roomId, getSale, identity, placeOrder, openPay, now, toast, saveOrders }) {
    Object.assign(this, { roomId, getSale, identity, placeOrder, openPay, now, toast, saveOrders });
    this.card = $("groups");
    this.saleId = null;
    this.data = null; // the last GET /api/sales/{id}/groups
    this.shared = new URLSearchParams(location.search).get("group");
    this.sharedGroup = null; // the shared group, read once
    this.busy = false;
  }

  start() {
    setInterval(() => this.refresh(), GROUPS_REFRESH_MS);
    setInterval(() => this.render(), 1000);
    this.refresh();
  }

  // Whether the sale sells only in groups (the buy button then points here).
  only(saleId) {
    return Boolean(this.data && this.data.offer.sale_id === saleId);
  }

  async refresh() {
    const sale = this.getSale();
    if (this.shared && !this.sharedGroup) {
      const response = await fetch(`/api/groups/${encodeURIComponent(this.shared)}`).catch(() => null);
      if (response?.ok) this.sharedGroup = await response.json();
    }
    if (!sale) {
      this.data = null;
      this.render();
      return;
    }
    const response = await fetch(`/api/sales/${encodeURIComponent(sale.sale_id)}/groups`).catch(() => null);
    if (response?.status === 404) this.data = null;
    else if (response?.ok) this.data = await response.json();
    this.saleId = sale.sale_id;
    this.render();
  }

  mine(group) {
    const me = this.identity();
    return Boolean(me && group.members.some((m) => m.buyer_id === me.id));
  }

  render() {
    const data = this.data;
    this.card.hidden = !data;
    if (!data) return;
    const offer = data.offer;
    const now = this.now();
    const tiers = offer.tiers.slice(1).map((t) => `${t.members}+ buyers: ${money(t.price_cents, offer.currency)}`);
    const rows = data.open.map((group) => this.row(group, now));
    const shared = this.sharedGroup;
    const sharedClosed = shared && shared.sale_id === offer.sale_id && shared.outcome !== "open"
      ? h("p", { class: "group-shared", dataset: { outcome: shared.outcome } },
        `The shared group ${shared.outcome === "succeeded" ? "succeeded" : "ended short"}; start a new one below.`)
      : "";
    this.card.replaceChildren(
      h("header", {},
        h("h3", {}, `Group buy · ${offer.size} buyers for ${money(offer.price_cents, offer.currency)} each`),
        h("p", { class: "muted small" },
          `Pay now; the money waits in escrow. If ${offer.size} pay within ${duration(offer.window_ms)} the group succeeds, otherwise every payment is released.`,
          tiers.length ? ` More join, less each pays: ${tiers.join(" · ")}; the difference comes back at close.` : "")),
      sharedClosed,
      rows.length ? h("ol", { class: "group-list" }, ...rows) : h("p", { class: "muted small", id: "groups-none" }, "No open group yet."),
      h("div", { class: "row" }, h("button", { class: "buy group-open", type: "button", disabled: this.busy,
        onclick: () => this.join("open", `g${randomId(10)}`) }, `Start a group · ${money(offer.price_cents, offer.currency)}`)),
    );
  }

  row(group, now) {
    const left = Math.max(0, group.closes_at_ms - now);
    const mine = this.mine(group);
    const full = group.places_left <= 0;
    const share = `${location.origin}${location.pathname}?room=${encodeURIComponent(this.roomId)}&group=${encodeURIComponent(group.group_id)}`;
    const paid = `${group.paid} of ${group.size} paid`;
    return h("li", { class: `group${group.group_id === this.shared ? " shared" : ""}`, dataset: { groupId: group.group_id } },
      h("span", { class: "group-what" }, h("b", {}, paid), ` · `,
        h("span", { class: "places-left" }, `${group.places_left} place${group.places_left === 1 ? "" : "s"} left`), ` · `,
        h("span", { class: "time-left" }, `${duration(left)} left`)),
      h("span", { class: "row" },
        mine ? h("span", { class: "pill in-group" }, "You're in")
          : h("button", { class: "group-join", type: "button", disabled: this.busy || full,
            onclick: () => this.join("join", group.group_id) }, full ? "Full" : "Join"),
        h("button", { class: "ghost group-share", type: "button", onclick: () => this.share(share) }, "Share")));
  }

  async share(url) {
    try {
      await navigator.clipboard.writeText(url);
      this.toast("Group link copied", "ok");
    } catch {
      this.toast(url, "info");
    }
  }

  async join(action, groupId) {
    if (this.busy) return;
    this.busy = true;
    this.render();
    try {
      await this.placeOrder({ action, group_id: groupId, state: "ordering" });
    } finally {
      this.busy = false;
      this.render();
    }
  }

  // viewer.js calls this once an order marked with a group holds its unit.
  async accepted(order) {
    const me = this.identity();
    if (!me || !order.group || order.group.state === "in") return;
    const fields = {
      action: order.group.action,
      buyer_id: me.id,
      group_id: order.group.group_id,
      order_id: order.order_id,
      time_ms: this.now(),
    };
    const body = { ...fields, signature: await me.sign(DOMAIN_GROUP, fields) };
    const response = await fetch("/api/groups", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    }).catch(() => null);
    const answer = response ? await response.json().catch(() => null) : null;
    if (response?.ok) {
      order.group.state = "in";
      order.group.ledger_index = answer.ledger_index;
      this.saveOrders();
      this.toast(order.group.action === "open" ? "Group started: pay to hold your place" : "You joined: pay to hold your place", "ok");
      this.openPay(order);
    } else {
      order.group.state = "refused";
      order.group.reason = answer?.error || "unavailable";
      this.saveOrders();
      this.toast(`Could not ${order.group.action} the group: ${answer?.message || "the server cannot be reached"}`, "error");
    }
    this.refresh();
  }
}

// One line on an order's card in My orders about its group.
export function groupNote(order, life, now) {
  const group = life?.group;
  if (!group && !order.group) return null;
  if (!group) {
    const text = order.group.state === "refused" ? `Not in the group (${order.group.reason}); the hold runs out by itself.` : "Joining the group…";
    return h("p", { class: "group-note small", dataset: { outcome: "joining" } }, text);
  }
  const currency = order.currency;
  let text;
  if (group.outcome === "open") {
    text = `Group ${group.group_id}: open · closes in ${duration(Math.max(0, group.closes_at_ms - now))}. Your payment waits in escrow.`;
  } else if (group.outcome === "succeeded") {
    const back = order.price_cents * order.quantity - (life.amount_cents ?? 0);
    text = `Group succeeded at ${money(group.price_cents, currency)} each${back > 0 ? `; ${money(back, currency)} comes back` : ""}. The seller ships next.`;
  } else {
    text = "The group ended short: your payment was released and the unit went back.";
  }
  return h("p", { class: "group-note small", dataset: { outcome: group.outcome } }, text);
}
