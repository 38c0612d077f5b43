// The host panel's auction (docs/pages.md, "Auctions"): start one for a unit of a product
// (starting price, duration, extend or sudden death, how long the winner has to pay); then
// the room's auction from every `auction/v1` (high bid, bidder, timer, bids), *Cancel*
// before any bid, *Ban leader*, and *Offer to the second bidder* once the winner's time to
// pay ran out.
import { $, duration, h, money } from "./ui.js";

export class HostAuction {
  // products(): the merchant's products; roomId(); api(method, path, body); now().
  constructor({ products, roomId, api, now, toast, fail, cents }) {
    Object.assign(this, { products, roomId, api, now, toast, fail, cents });
    this.auction = null;
    $("auction-form").addEventListener("submit", (event) => { event.preventDefault(); this.start(); });
    setInterval(() => this.tick(), 250);
  }

  onMessage(message) {
    if (message.type === "snapshot/v1") this.show(message.auction ?? null);
    if (message.type === "auction/v1") this.show(message.auction);
  }

  fillProducts() {
    const select = $("auction-product");
    const chosen = select.value;
    select.replaceChildren(...this.products().map((p) => h("option", { value: p.product_id }, `${p.title} (${p.inventory_units} in stock)`)));
    if (chosen) select.value = chosen;
  }

  async start() {
    const body = {
      product_id: $("auction-product").value,
      starting_cents: this.cents($("auction-start").value),
      duration_ms: Number($("auction-duration").value) * 1000,
      mode: $("auction-mode").value,
      pay_within_ms: Number($("auction-pay").value) * 1000,
    };
    try {
      this.show(await this.api("POST", `/api/rooms/${encodeURIComponent(this.roomId())}/auctions`, body));
      this.toast("Auction started", "ok");
    } catch (error) { this.fail(error); }
  }

  async act(action, body = {}) {
    const auction = this.auction;
    if (!auction) return;
    try {
      this.show(await this.api("POST", `/api/rooms/${encodeURIComponent(this.roomId())}/auctions/${encodeURIComponent(auction.auction_id)}/${action}`, body));
    } catch (error) { this.fail(error); }
  }

  show(auction) {
    this.auction = auction;
    this.render();
  }

  tick() {
    const timer = $("host-auction-timer");
    if (timer && this.auction) timer.textContent = duration(Math.max(0, this.auction.ends_at_ms - this.now()));
  }

  render() {
    const auction = this.auction;
    const box = $("host-auction");
    const busy = auction && auction.state === "open";
    $("auction-form").hidden = Boolean(busy);
    box.hidden = !auction;
    if (!auction) return;
    const cur = auction.currency;
    const bidder = auction.leader_name || (auction.leader_id ? `${auction.leader_id.slice(0, 6)}…` : "nobody yet");
    const lines = auction.state === "open"
      ? [`${auction.title}: ${auction.bids ? `${money(auction.price_cents, cur)} by ${bidder}` : `from ${money(auction.starting_cents, cur)}`} · ${auction.bids} bids`]
      : [`${auction.title}: ${auction.state === "sold" ? `sold to ${bidder} for ${money(auction.price_cents, cur)}` : auction.state}`];
    const buttons = [];
    if (auction.state === "open" && !auction.bids) buttons.push(h("button", { class: "ghost", id: "auction-cancel", onclick: () => this.act("cancel") }, "Cancel"));
    if (auction.state === "open" && auction.leader_id) buttons.push(h("button", { class: "ghost", id: "auction-ban", onclick: () => this.act("ban", { bidder_id: auction.leader_id }) }, "Ban leader"));
    if (auction.state === "sold" && !auction.offered_second) buttons.push(h("button", { class: "ghost", id: "auction-second", onclick: () => this.act("offer_second") }, "Offer to the second bidder"));
    box.dataset.state = auction.state;
    box.replaceChildren(
      h("p", { id: "host-auction-line" }, ...lines),
      auction.state === "open" ? h("b", { id: "host-auction-timer", class: "countdown" }, duration(Math.max(0, auction.ends_at_ms - this.now()))) : "",
      h("div", { class: "row" }, ...buttons));
  }
}
