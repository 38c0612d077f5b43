// The auction card on the viewer page (docs/pages.md, "Auctions"): the room's newest
// auction from the snapshot and every `auction/v1`: the lot, the current high bid and its
// bidder's name, the timer (on the server's clock as estimated), "You're winning" or
// "Outbid". A bid (the lowest next one, or an amount typed; optionally a maximum the server
// bids up to) is signed in the page with the viewer's key (`livecommerce/bid/v1`) and sent
// as `bid/v1` on the room socket (HTTP when it is down); `bid.result/v1` answers. The
// winner's order (and the second bidder's, when the host offers it) joins My orders,
// where it is paid like any order.
import { DOMAIN_BID } from "./canonical.js";
import { $, duration, h, money } from "./ui.js";

const BID_TEXT = {
  bid_too_low: "Someone bid first: try the new lowest bid",
  auction_closed: "The auction has closed",
  banned: "You may not bid in this auction",
  stale: "Your clock is off; bid refused",
};

export class AuctionCard {
  // identity(): the viewer's identity (or ensure()); send(message): on the room socket,
  // false when it is down; now(): the server's clock; addOrder(order): into My orders;
  // openPay(order): My orders on its pay form.
  constructor({ element, identity, ensureIdentity, send, now, toast, addOrder, openPay }) {
    Object.assign(this, { element, identity, ensureIdentity, send, now, toast, addOrder, openPay });
    this.auction = null;
    this.busy = false;
    this.note = "";
    this.awarded = new Set(); // order ids added to My orders
    this.bidOn = new Set(); // auctions this viewer bid on (for "Outbid")
    setInterval(() => this.tick(), 250);
  }

  onMessage(message) {
    switch (message.type) {
      case "snapshot/v1": this.show(message.auction ?? null); break;
      case "auction/v1": this.show(message.auction); break;
      case "bid.result/v1": this.answered(message); break;
    }
  }

  show(auction) {
    this.auction = auction;
    const me = this.identity();
    if (auction && me && auction.winner_id === me.id && auction.order_id && !this.awarded.has(auction.order_id)) {
      this.awarded.add(auction.order_id);
      const order = this.addOrder({
        buyer_id: me.id, order_id: auction.order_id, sale_id: `auction-${auction.auction_id}`,
        price_cents: auction.price_cents, quantity: 1, title: auction.title, currency: auction.currency,
        hold_expires_at_ms: (auction.closed_at_ms || this.now()) + auction.pay_within_ms,
      });
      if (order) {
        this.toast(`You won ${auction.title} for ${money(auction.price_cents, auction.currency)}: pay within ${duration(auction.pay_within_ms)}`, "ok");
        this.openPay(order);
      }
    }
    this.render();
  }

  // The timer counts down between messages; the rest changes with them.
  tick() {
    const timer = $("auction-timer");
    if (!timer || !this.auction) return;
    const left = Math.max(0, this.auction.ends_at_ms - this.now());
    timer.textContent = duration(left);
    timer.dataset.left = String(left);
  }

  answered(result) {
    this.busy = false;
    if (result.status === "accepted") {
      this.bidOn.add(result.auction_id);
      const me = this.identity();
      this.note = result.leader_id === me?.id ? "Bid placed: you're winning" : "Bid placed, but a maximum set earlier beats it";
    } else {
      this.note = BID_TEXT[result.reason] || result.detail || result.reason;
    }
    this.render();
  }

  async bid(amountCents, maxCents) {
    const auction = this.auction;
    if (!auction || this.busy) return;
    const me = await this.ensureIdentity();
    const fields = {
      amount_cents: amountCents, auction_id: auction.auction_id, bidder_id: me.id,
      max_cents: maxCents, time_ms: Math.round(this.now()),
    };
    const signed = { ...fields, signature: await me.sign(DOMAIN_BID, fields) };
    this.busy = true;
    this.note = "Bidding…";
    this.render();
    if (this.send({ type: "bid/v1", ...signed })) return;
    const { auction_id: _, ...body } = signed;
    const response = await fetch(`/api/auctions/${encodeURIComponent(auction.auction_id)}/bids`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    }).catch(() => null);
    const answer = response ? await response.json().catch(() => null) : null;
    if (response?.ok) this.answered(answer);
    else this.answered({ status: "rejected", reason: answer?.error || "unavailable", detail: answer?.message || "the server cannot be reached" });
  }

  render() {
    const auction = this.auction;
    this.element.hidden = !auction || auction.state === "cancelled";
    if (!auction || auction.state === "cancelled") return;
    const me = this.identity();
    const cur = auction.currency;
    const open = auction.state === "open";
    const left = Math.max(0, auction.ends_at_ms - this.now());
    const leading = Boolean(me && auction.leader_id === me.id);
    const bidder = auction.leader_id ? (auction.leader_name || `${auction.leader_id.slice(0, 6)}…`) : "";
    let standing = "";
    if (open && me && auction.leader_id) {
      standing = leading ? "winning" : (this.mine(auction) ? "outbid" : "");
    }
    const status = open
      ? (auction.bids ? `High bid ${money(auction.price_cents, cur)} by ${bidder}` : `Starts at ${money(auction.starting_cents, cur)}`)
      : auction.state === "sold"
        ? `Sold to ${bidder || "the winner"} for ${money(auction.price_cents, cur)}${auction.offered_second ? " (offered to the second bidder)" : ""}`
        : "Closed without a bid";
    const next = auction.minimum_next_cents;
    const children = [
      h("header", { class: "auction-head" },
        h("img", { src: auction.image_url || "/img/product.svg", alt: "", width: 48, height: 48 }),
        h("div", {}, h("h3", {}, `Auction · ${auction.title}`),
          h("p", { class: "auction-status", id: "auction-status" }, status),
          h("p", { class: "muted small" }, open ? `${auction.mode === "extend" ? "A bid in the last 10 s adds time" : "Sudden death: no extra time"} · ${auction.bids} bid${auction.bids === 1 ? "" : "s"}` : "")),
        open ? h("b", { class: "auction-timer", id: "auction-timer", dataset: { left: String(left) } }, duration(left)) : ""),
    ];
    if (standing) children.push(h("p", { class: "auction-standing", id: "auction-standing", dataset: { standing } }, standing === "winning" ? "You're winning" : "Outbid"));
    if (open) {
      children.push(h("form", { class: "bid-form", id: "bid-form", onsubmit: (event) => {
        event.preventDefault();
        const amount = Math.round(Number($("bid-amount").value) * 100) || next;
        const max = Math.round(Number($("bid-max").value) * 100) || 0;
        this.bid(amount, max > amount ? max : 0).catch((error) => { this.busy = false; this.toast(String(error.message || error), "error"); });
      } },
      h("button", { class: "buy bid-next", id: "bid-next", type: "button", disabled: this.busy || leading,
        onclick: () => this.bid(next, 0).catch((error) => { this.busy = false; this.toast(String(error.message || error), "error"); }) },
      leading ? "You lead" : `Bid ${money(next, cur)}`),
      h("details", {}, h("summary", {}, "Your own amount or a maximum"),
        h("input", { id: "bid-amount", inputmode: "decimal", placeholder: `at least ${(next / 100).toFixed(2)}` }),
        h("input", { id: "bid-max", inputmode: "decimal", placeholder: "max (we bid for you)" }),
        h("button", { class: "ghost", type: "submit", disabled: this.busy }, "Bid"))));
    }
    if (auction.state === "sold" && me && auction.winner_id === me.id) {
      children.push(h("p", { class: "auction-won", id: "auction-won" }, "You won: pay in My orders."));
    }
    if (this.note) children.push(h("p", { class: "muted small", id: "bid-note" }, this.note));
    // Keep what is typed: re-render only the parts that are not the inputs.
    const typed = { amount: $("bid-amount")?.value ?? "", max: $("bid-max")?.value ?? "", open: this.element.querySelector("details")?.open ?? false };
    this.element.replaceChildren(...children);
    if ($("bid-amount")) $("bid-amount").value = typed.amount;
    if ($("bid-max")) $("bid-max").value = typed.max;
    const details = this.element.querySelector("details");
    if (details) details.open = typed.open;
    this.element.dataset.state = auction.state;
  }

  mine(auction) {
    return this.bidOn.has(auction.auction_id);
  }
}
