// The viewer page: live video (WHEP), the room feed, the pinned product and the flash
// sale, comments, likes, shares, and buying with a key made on this device. Orders are
// signed here, and their receipts are checked here against the ledger's key; paying and
// the order's life after the sale are orders-view.js.
import { DOMAIN_ORDER } from "./canonical.js";
import { createIdentity, loadIdentity, supportsEd25519 } from "./identity.js";
import { logVerifier, verifyReceipt } from "./ledger-verify.js";
import { startRecommendations } from "./recommend.js";
import { GroupBuy } from "./groups.js";
import { AuctionCard } from "./auction.js";
import { OrdersView } from "./orders-view.js";
import { PollCard } from "./poll.js";
import { showRating } from "./product-rating.js";
import { connectRoom } from "./room-socket.js";
import { $, ServerClock, compact, duration, h, money, randomId, toast, unitsLeft } from "./ui.js";
import { play } from "./webrtc.js";
import { orderTrace, showProductTrace } from "./trace-links.js";

const roomId = new URLSearchParams(location.search).get("room") || "demo";
const COMMENTS_SHOWN_MAX = 150;
const RETRY_REASONS = new Set(["busy", "unavailable", "capacity", "stock_unavailable"]);
const ORDER_RETRIES_MAX = 5;

const clock = new ServerClock();
const view = {
  connected: false,
  ended: false,
  pinned: null,
  sale: null,
  stock: {},
  quantity: 1,
  buying: false,
  soldOutSeen: false,
};
const seenComments = new Set();
let identity = null;
const afterSale = new OrdersView({
  identity: () => identity,
  orders: null, // set below, once the store exists
  now: () => clock.now(),
  render: () => renderOrders(),
  toast,
});

// My orders, kept on this device per identity.
const orders = {
  list: [],
  key: () => `livecommerce.orders.${identity?.id}`,
  load() { this.list = JSON.parse(localStorage.getItem(this.key()) || "[]"); },
  save() { localStorage.setItem(this.key(), JSON.stringify(this.list.slice(-100))); },
  find(orderId) { return this.list.find((o) => o.order_id === orderId); },
  // Where an accepted order is now: the server's last word, or expired once its hold
  // has run out unpaid (the server expires it then and the units go back to the sale).
  statusOf(order) { return afterSale.stageOf(order); },
  unitsHeld(saleId) {
    return this.list
      // A hold that expired or was cancelled unpaid gives its units back to the allowance.
      .filter((o) => o.sale_id === saleId && o.status === "accepted" && this.statusOf(o) !== "expired" && o.order_status !== "cancelled")
      .reduce((n, o) => n + o.quantity, 0);
  },
};

afterSale.orders = orders;

// Room feed

function addComment(comment) {
  if (seenComments.has(comment.id)) return;
  seenComments.add(comment.id);
  const list = $("comments");
  list.append(h("li", { dataset: { id: comment.id } }, h("b", {}, comment.name), " ", h("span", {}, comment.text)));
  while (list.childElementCount > COMMENTS_SHOWN_MAX) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}

function showCounters(message) {
  for (const key of ["likes", "shares", "viewers"]) {
    if (typeof message[key] !== "number") continue;
    const before = Number($(key).dataset.value || 0);
    $(key).dataset.value = String(message[key]);
    $(key).textContent = compact(message[key]);
    if (key === "likes" && message[key] > before && before > 0) floatHearts(Math.min(message[key] - before, 4));
  }
  if (message.stock) Object.assign(view.stock, message.stock);
}

const poll = new PollCard($("poll"), (message) => room.send(message));
const auction = new AuctionCard({
  element: $("auction"),
  identity: () => identity,
  ensureIdentity: () => ensureIdentity(),
  send: (message) => room.send(message),
  now: () => clock.now(),
  toast,
  // The lot's order (the auction's, not placed here): into My orders, to be paid.
  addOrder: (fields) => {
    if (orders.find(fields.order_id)) return null;
    const order = { ...fields, status: "accepted", time_ms: clock.now(), signed: { signature: "" }, tries: 0 };
    orders.list.push(order);
    orders.save();
    renderOrders();
    setTimeout(() => { if (!order.receipt) fetchReceipt(order); }, 2500);
    return order;
  },
  openPay: (order) => { $("orders-dialog").showModal(); afterSale.openPay(order); },
});
const groups = new GroupBuy({
  roomId,
  getSale: () => saleForPinned(),
  identity: () => identity,
  placeOrder: (group) => buy(group),
  openPay: (order) => { $("orders-dialog").showModal(); afterSale.openPay(order); },
  now: () => clock.now(),
  toast,
  saveOrders: () => { orders.save(); renderOrders(); },
});

function onMessage(message) {
  clock.observe(message.ts_ms);
  poll.onMessage(message);
  auction.onMessage(message);
  switch (message.type) {
    case "snapshot/v1":
      $("title").textContent = message.title;
      $("host").textContent = message.host_name;
      $("avatar").textContent = (message.host_name || "·").slice(0, 1).toUpperCase();
      document.title = `${message.title} · Live`;
      $("live").hidden = !message.live;
      $("comments").replaceChildren();
      seenComments.clear();
      message.comments.forEach(addComment);
      view.pinned = message.pinned;
      view.sale = message.sale;
      view.stock = { ...message.stock };
      showCounters(message);
      if (message.ended) endRoom();
      break;
    case "comment/v1": addComment(message); break;
    case "comment.removed/v1":
      document.querySelector(`#comments [data-id="${CSS.escape(message.id)}"]`)?.remove();
      break;
    case "pin/v1": view.pinned = message.product; break;
    case "room.live/v1": $("live").hidden = !message.live; break;
    case "room.ended/v1": endRoom(); break;
    case "sale/v1": view.sale = message.sale; break;
    case "state/v1": showCounters(message); break;
    case "order.result/v1": onOrderResult(message); break;
    case "receipt/v1": onReceipt(message.order_id, message.proof); break;
    case "error/v1": toast(message.message, "error"); break;
  }
  render();
}

function endRoom() {
  view.ended = true;
  $("ended").hidden = false;
  $("live").hidden = true;
}

const room = connectRoom(roomId, {
  onMessage,
  onStatus(text, connected, code) {
    view.connected = connected;
    $("conn").hidden = connected || view.ended;
    $("conn").textContent = code === 4004 ? "This room does not exist." : text.startsWith("closed") ? "Disconnected." : "Connection lost · reconnecting…";
    if (code === 4004) { $("title").textContent = "no such room"; $("video-wait").hidden = true; }
    render();
  },
});

// The product card and the sale

function saleForPinned() {
  const sale = view.sale;
  if (!sale || !view.pinned || sale.product_id !== view.pinned.product_id) return null;
  return sale;
}

// What the buy button says and whether it can be pressed.
function buyState() {
  const sale = saleForPinned();
  if (!sale) return { status: "Not on sale right now", button: "Not on sale", can: false, state: "none" };
  const left = unitsLeft(view.stock, sale);
  const held = orders.unitsHeld(sale.sale_id);
  const remainingLimit = sale.per_buyer_limit - held;
  if (sale.state === "closed") {
    const soldOut = sale.close_reason === "sold_out";
    return { status: soldOut ? "Sold out" : "This sale is over", button: soldOut ? "Sold out" : "Sale over", can: false, state: soldOut ? "sold_out" : "over" };
  }
  if (sale.state === "scheduled") {
    const wait = sale.starts_at_ms - clock.now();
    return { status: wait > 0 ? `Flash sale starts in ${duration(wait)}` : "Opening…", button: wait > 0 ? `Starts in ${duration(wait)}` : "Opening…", can: false, state: "countdown" };
  }
  if (groups.only(sale.sale_id)) return { status: "Sold in groups: start or join one below", button: "Group buy", can: false, state: "groups" };
  if (remainingLimit <= 0) return { status: `Limit reached: ${sale.per_buyer_limit} per buyer`, button: "Limit reached", can: false, state: "limit" };
  if (left <= 0) return { status: "Sold out · units may come back if a hold expires", button: "Sold out", can: false, state: "sold_out" };
  if (!view.connected) return { status: "Offline · reconnecting…", button: "Offline", can: false, state: "offline" };
  const ends = sale.ends_at_ms - clock.now();
  return { status: `Flash sale · ends in ${duration(ends)}`, button: view.buying ? "Buying…" : "Buy now", can: !view.buying, state: "open", max: Math.min(remainingLimit, left) };
}

function render() {
  const product = view.pinned;
  $("product").hidden = !product;
  if (!product) return;
  const sale = saleForPinned();
  $("product-title").textContent = product.title;
  showRating(product.product_id, $("product-rating"));
  showProductTrace($("product-trace"), product.product_id);
  $("product-image").src = product.image || sale?.image_url || "/img/product.svg";
  $("product-price").textContent = money(sale ? sale.price_cents : product.price_cents, product.currency);
  $("stock-line").hidden = !sale;
  if (sale) $("stock").textContent = String(unitsLeft(view.stock, sale));
  const state = buyState();
  $("product").dataset.state = state.state;
  $("sale-status").textContent = state.status;
  $("buy").textContent = state.button;
  $("buy").disabled = !state.can || view.ended;
  const max = state.max ?? 1;
  view.quantity = Math.max(1, Math.min(view.quantity, max));
  $("qty").textContent = String(view.quantity);
  $("qty-box").hidden = state.state !== "open";
  $("qty-minus").disabled = view.quantity <= 1;
  $("qty-plus").disabled = view.quantity >= max;
}
setInterval(render, 250);

$("qty-minus").addEventListener("click", () => { view.quantity -= 1; render(); });
$("qty-plus").addEventListener("click", () => { view.quantity += 1; render(); });

// Identity: a key made here on first visit, with a display name.

async function ensureIdentity() {
  if (identity) return identity;
  identity = await loadIdentity("viewer");
  if (identity) { orders.load(); renderOrders(); return identity; }
  return askName();
}

function askName() {
  return new Promise((resolve) => {
    const dialog = $("name-dialog");
    if (!dialog.open) dialog.showModal();
    $("name-input").focus();
    $("name-form").onsubmit = async (event) => {
      event.preventDefault();
      const name = $("name-input").value.trim();
      if (!name) return;
      $("name-join").disabled = true;
      try {
        const made = await createIdentity("viewer", name);
        await made.register();
        identity = made;
        orders.load();
        renderOrders();
        dialog.close();
        resolve(identity);
      } catch (error) {
        $("name-error").hidden = false;
        $("name-error").textContent = String(error.message || error);
      } finally {
        $("name-join").disabled = false;
      }
    };
  });
}

// Buying: sign the order here, send it over the room socket (HTTP if the socket is down).

// `group` (groups.js): a one-unit order that opens or joins a group once it holds its unit.
async function buy(group = null) {
  const sale = saleForPinned();
  const state = buyState();
  if (!sale || (group ? sale.state !== "open" || !view.connected : !state.can)) return;
  const me = await ensureIdentity();
  await me.register();
  view.buying = true;
  render();
  const fields = {
    buyer_id: me.id,
    order_id: randomId(12),
    price_cents: sale.price_cents,
    quantity: group ? 1 : view.quantity,
    sale_id: sale.sale_id,
    time_ms: clock.now(),
  };
  const order = {
    ...fields,
    title: sale.title || view.pinned.title,
    currency: sale.currency,
    status: "sent",
    signed: { ...fields, signature: await me.sign(DOMAIN_ORDER, fields) },
    tries: 0,
    ...(group ? { group } : {}),
  };
  orders.list.push(order);
  orders.save();
  renderOrders();
  sendOrder(order);
}

async function sendOrder(order) {
  order.tries += 1;
  if (room.send({ type: "order/v1", ...order.signed })) return;
  const response = await fetch("/api/orders", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(order.signed),
  }).catch(() => null);
  const answer = response ? await response.json().catch(() => null) : null;
  if (answer?.type === "order.result/v1") onOrderResult(answer);
  else onOrderResult({ order_id: order.order_id, status: "rejected", reason: "unavailable", detail: "the server cannot be reached" });
  render();
}

const REASON_TEXT = {
  sold_out: "Sold out: not enough units left",
  limit_reached: "Limit reached for this sale",
  sale_not_open: "The sale is not open",
  price_changed: "The price changed; check it and try again",
  stale: "Your clock is off; order refused",
};

function onOrderResult(result) {
  const order = orders.find(result.order_id);
  if (!order) return;
  if (result.status === "rejected" && RETRY_REASONS.has(result.reason) && order.tries < ORDER_RETRIES_MAX) {
    order.status = "retrying";
    setTimeout(() => sendOrder(order), 400 * order.tries);
    renderOrders();
    return;
  }
  view.buying = false;
  order.status = result.status;
  order.order_status = result.order_status;
  order.reason = result.reason || null;
  if (result.status === "accepted") {
    order.ledger_index = result.ledger_index;
    order.quantity = result.quantity || order.quantity;
    order.hold_expires_at_ms = result.hold_expires_at_ms;
    toast(`Order placed: ${order.quantity} × ${order.title}. Checking the receipt…`, "ok");
    if (order.group) groups.accepted(order).catch((error) => toast(String(error.message || error), "error"));
    // The socket pushes the receipt; an order placed over HTTP fetches it.
    setTimeout(() => { if (!order.receipt) fetchReceipt(order); }, 2500);
  } else {
    toast(REASON_TEXT[result.reason] || result.detail || result.reason, "error");
  }
  orders.save();
  renderOrders();
}

async function onReceipt(orderId, proof) {
  const order = orders.find(orderId);
  if (!order) return;
  order.receipt = proof;
  try {
    const checked = await verifyReceipt(proof, await logVerifier());
    const entry = checked.entry;
    const mine = entry.type === "order/v1" && entry.order_id === order.order_id && entry.buyer_id === order.buyer_id && entry.signature === order.signed.signature;
    if (!mine) throw new Error("the receipt proves another entry");
    order.verified = { index: checked.index, size: checked.size };
    order.verify_error = null;
  } catch (error) {
    order.verified = null;
    order.verify_error = String(error.message || error);
  }
  orders.save();
  renderOrders();
}

async function fetchReceipt(order) {
  const url = `/api/orders/${encodeURIComponent(order.order_id)}/receipt?buyer_id=${encodeURIComponent(order.buyer_id)}`;
  const response = await fetch(url).catch(() => null);
  if (response?.ok) await onReceipt(order.order_id, await response.text());
}

async function fetchMissingReceipts() {
  for (const order of orders.list) {
    if (order.status === "accepted" && !order.verified) await fetchReceipt(order);
  }
}

function renderOrders() {
  const list = $("orders");
  const focused = document.activeElement; // a field of a form that moves with its order
  const shown = orders.list.filter((o) => o.status !== "sent" || o.tries);
  $("orders-empty").hidden = shown.length > 0;
  $("orders-count").textContent = String(orders.list.filter((o) => o.status === "accepted").length);
  list.replaceChildren(...shown.slice().reverse().map((order) => {
    const status = order.status === "accepted" ? orders.statusOf(order).replace(/_/g, " ") : order.status === "rejected" ? `refused: ${order.reason}` : order.status;
    let receipt = null;
    if (order.verified) {
      receipt = h("p", { class: "verified" }, `✓ Verified in the ledger at checkpoint ${order.verified.size} `,
        h("a", { href: `/ledger.html#${order.verified.index}`, target: "_blank" }, `(entry ${order.verified.index})`));
    }
    else if (order.verify_error) receipt = h("p", { class: "error" }, `✗ Receipt does not verify: ${order.verify_error}`);
    else if (order.status === "accepted") receipt = h("p", { class: "muted" }, "Waiting for the ledger's checkpoint…");
    return h("li", { class: `order ${order.status}`, dataset: { orderId: order.order_id, stage: order.status === "accepted" ? orders.statusOf(order) : order.status } },
      h("div", { class: "order-line" }, h("b", {}, `${order.quantity} × ${order.title}`), h("span", { class: "order-status" }, status)),
      h("p", { class: "muted small" }, `${money(order.price_cents * order.quantity, order.currency)} · order ${order.order_id}`),
      receipt,
      orderTrace(order),
      afterSale.section(order));
  }));
  if (focused?.isConnected && focused !== document.activeElement) focused.focus();
}

$("buy").addEventListener("click", () => buy().catch((error) => { view.buying = false; toast(String(error.message || error), "error"); render(); }));
$("orders-open").addEventListener("click", () => $("orders-dialog").showModal());
$("orders-close").addEventListener("click", () => $("orders-dialog").close());

// Comments, likes, shares

$("comment-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("comment-text").value.trim();
  if (!text) return;
  const me = await ensureIdentity();
  if (room.send({ type: "comment/v1", name: me.displayName, text })) $("comment-text").value = "";
  else toast("Offline: the comment was not sent", "error");
});

let pendingLikes = 0;
$("like").addEventListener("click", () => {
  pendingLikes += 1;
  floatHearts(1);
});
setInterval(() => {
  if (pendingLikes > 0 && room.send({ type: "like/v1", count: Math.min(pendingLikes, 100) })) pendingLikes = 0;
}, 250);

function floatHearts(count) {
  const box = $("hearts");
  for (let i = 0; i < count; i++) {
    if (box.childElementCount > 30) return;
    const heart = h("span", { class: "heart", style: `--x:${Math.round(Math.random() * 40 - 20)}px;--hue:${Math.round(330 + Math.random() * 40)}` }, "♥");
    heart.addEventListener("animationend", () => heart.remove());
    box.append(heart);
  }
}

$("share").addEventListener("click", async () => {
  room.send({ type: "share/v1" });
  const url = location.href;
  try {
    await navigator.clipboard.writeText(url);
    toast("Link copied", "ok");
  } catch {
    toast(url, "info");
  }
});

// Video over WHEP; retried while the room is open.

const video = $("video");
let playing = null;
video.addEventListener("playing", () => { $("video-wait").hidden = true; });
$("sound").addEventListener("click", () => {
  video.muted = !video.muted;
  $("sound-waves").setAttribute("d", video.muted ? "M16 9l5 6M21 9l-5 6" : "M16 8a5 5 0 0 1 0 8M18.5 5.5a8.5 8.5 0 0 1 0 13");
  $("sound").setAttribute("aria-label", video.muted ? "Sound on" : "Sound off");
  video.play().catch(() => {});
});

async function watch() {
  if (view.ended) return;
  try {
    playing = await play(`/whep/${encodeURIComponent(roomId)}`, video);
    playing.peerConnection.addEventListener("connectionstatechange", () => {
      const state = playing?.peerConnection.connectionState;
      if (state === "failed" || state === "closed") {
        $("video-wait").hidden = view.ended;
        playing = null;
        setTimeout(watch, 2000);
      }
    });
  } catch (error) {
    $("video-wait-text").textContent = error.status === 404 ? "No such room." : "Video is not available yet; retrying…";
    if (error.status !== 404) setTimeout(watch, error.retryAfterSeconds ? error.retryAfterSeconds * 1000 : 3000);
  }
}

// Start: the name sheet on first visit, then receipts left from an earlier visit.
window.livecommerce = { room, view, orders, afterSale, groups, auction, get identity() { return identity; }, get peer() { return playing?.peerConnection ?? null; } };
watch();
window.livecommerce.recommendations = startRecommendations(roomId, () => view.pinned, () => identity);
groups.start();
supportsEd25519().then((ok) => {
  if (!ok) { toast("This browser cannot make Ed25519 keys; buying is off", "error"); return; }
  ensureIdentity().then(() => { afterSale.start(); return fetchMissingReceipts(); }).catch((error) => toast(String(error), "error"));
});
