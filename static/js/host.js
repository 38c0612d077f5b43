// The host panel: sign in with the room's host credential (the merchant's key stays in
// this browser), go live over WHIP, list products and stock (signed here), pin, run
// flash sales, moderate, and watch a live dashboard. The orders after the sale and the
// merchant's money are merchant.js.
import { DOMAIN_LISTING, DOMAIN_STOCK } from "./canonical.js";
import { createIdentity, importIdentity, loadIdentity } from "./identity.js";
import { MerchantPanel } from "./merchant.js";
import { Sparkline } from "./chart.js";
import { startOperating } from "./host-operating.js";
import { PollCard, mountPollForm } from "./poll.js";
import { connectRoom } from "./room-socket.js";
import { $, ServerClock, compact, duration, h, money, randomId, toast, unitsLeft } from "./ui.js";
import { publish } from "./webrtc.js";
import { mountTraceFlags } from "./trace-links.js";
import { mountGroupOffer } from "./host-groups.js";
import { HostAuction } from "./host-auction.js";

const params = new URLSearchParams(location.search);
const fragment = new URLSearchParams(location.hash.slice(1));
const COMMENTS_SHOWN_MAX = 200;
const STATS_INTERVAL_MS = 1000;

const clock = new ServerClock();
const state = {
  roomId: params.get("room") || localStorage.getItem("livecommerce.host.last") || "",
  token: "",
  merchant: null, // this browser's merchant identity, if it is the room's merchant
  merchantId: null,
  products: [],
  sale: null,
  stock: {},
  viewers: 0,
  viewersPeak: 0,
  likes: 0,
  likeSamples: [],
  commentTimes: [],
  lastStats: null,
  moderated: new Map(),
};
let room = null;
let hostAuction = null; // host-auction.js, made once the page is wired
let broadcast = null;
let cameraStream = null;
const charts = {};

const tokenKey = (roomId) => `livecommerce.host.${roomId}`;

async function api(method, path, body, { bearer = state.token } = {}) {
  const headers = { "Content-Type": "application/json" };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(answer.message || answer.error || `${response.status}`);
    error.status = response.status;
    error.code = answer.error;
    throw error;
  }
  return answer;
}

const fail = (error) => toast(String(error.message || error), "error");

// Signing in

async function start() {
  if (fragment.get("merchant_key")) {
    try {
      await importIdentity("merchant", fragment.get("merchant_key"), "merchant");
    } catch (error) {
      toast(`The merchant key in the link is not usable: ${error.message}`, "error");
    }
  }
  const fromLink = fragment.get("host_token");
  if (fromLink && state.roomId) localStorage.setItem(tokenKey(state.roomId), fromLink);
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  const saved = state.roomId ? localStorage.getItem(tokenKey(state.roomId)) : null;
  if (saved && (await signIn(state.roomId, saved).catch(() => false))) return;
  showSignIn();
}

function showSignIn() {
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-room").value = state.roomId;
}

async function signIn(roomId, token) {
  state.roomId = roomId;
  state.token = token;
  const stats = await api("GET", `/api/rooms/${encodeURIComponent(roomId)}/stats`);
  localStorage.setItem(tokenKey(roomId), token);
  localStorage.setItem("livecommerce.host.last", roomId);
  if (new URLSearchParams(location.search).get("room") !== roomId) {
    history.replaceState(null, "", `${location.pathname}?room=${encodeURIComponent(roomId)}`);
  }
  state.merchantId = stats.merchant_id;
  const mine = await loadIdentity("merchant");
  state.merchant = mine && mine.id === stats.merchant_id ? mine : null;
  $("signin").hidden = true;
  $("app").hidden = false;
  $("viewer-link").href = `/?room=${encodeURIComponent(roomId)}`;
  openRoom();
  onStats(stats);
  window.livecommerce.operating = startOperating(roomId, token);
  await loadProducts();
  if (state.merchant) state.merchantPanel = new MerchantPanel({ merchant: state.merchant, now: () => clock.now(), toast });
  state.merchantPanel?.start();
  if (state.merchantId) mountTraceFlags($("trace-flags"), state.merchantId);
  setInterval(pollStats, STATS_INTERVAL_MS);
  return true;
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("signin-error").hidden = true;
  try {
    await signIn($("signin-room").value.trim(), $("signin-token").value.trim());
  } catch (error) {
    $("signin-error").hidden = false;
    $("signin-error").textContent = error.status === 403 ? "That is not this room's host credential."
      : error.status === 404 ? "No such room." : String(error.message);
  }
});

$("create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("create-error").hidden = true;
  try {
    const hostName = $("create-host").value.trim();
    const made = await api("POST", "/api/rooms", { title: $("create-title").value.trim(), host_name: hostName }, { bearer: null });
    const merchant = await createIdentity("merchant", hostName, { shippingKey: true });
    await merchant.register();
    const merchantToken = await merchant.session();
    await api("POST", `/api/rooms/${encodeURIComponent(made.room_id)}/merchant`, { merchant_token: merchantToken }, { bearer: made.host_token });
    await signIn(made.room_id, made.host_token);
    toast("Room created. Keep the host credential safe: it is stored only in this browser.", "ok");
  } catch (error) {
    $("create-error").hidden = false;
    $("create-error").textContent = String(error.message || error);
  }
});

$("sign-out").addEventListener("click", () => {
  localStorage.removeItem(tokenKey(state.roomId));
  location.href = location.pathname;
});

// The room socket, signed in as host

function openRoom() {
  room = connectRoom(state.roomId, {
    onOpen: () => room.send({ type: "host.auth/v1", token: state.token }),
    onStatus: (text, connected) => {
      $("conn").textContent = connected ? "● connected" : `● ${text}`;
      $("conn").dataset.up = connected ? "1" : "0";
    },
    onMessage,
  });
  window.livecommerce = { room, state };
}

function hostCommand(message) {
  if (!room.send(message)) toast("Not connected; try again in a moment", "error");
}

const hostPoll = new PollCard($("host-poll"), hostCommand, { host: true });
mountPollForm($("poll-form"), hostCommand);

function onMessage(message) {
  clock.observe(message.ts_ms);
  hostPoll.onMessage(message);
  hostAuction?.onMessage(message);
  switch (message.type) {
    case "snapshot/v1":
      $("room-title").textContent = message.title;
      $("room-sub").textContent = `with ${message.host_name} · room ${message.room_id}`;
      document.title = `${message.title} · Host panel`;
      showLive(message.live, message.ended);
      $("slow-mode").value = String(message.slow_mode_ms);
      $("host-comments").replaceChildren();
      message.comments.forEach((c) => addComment(c, false));
      state.sale = message.sale;
      state.stock = { ...message.stock };
      onCounters(message);
      renderProducts();
      break;
    case "comment/v1": addComment(message, true); break;
    case "comment.removed/v1":
      document.querySelector(`#host-comments [data-id="${CSS.escape(message.id)}"]`)?.remove();
      break;
    case "room.live/v1": showLive(message.live, false); break;
    case "room.ended/v1": showLive(false, true); break;
    case "slow_mode/v1": $("slow-mode").value = String(message.interval_ms); break;
    case "pin/v1": state.pinned = message.product; renderProducts(); break;
    case "sale/v1": state.sale = message.sale; break;
    case "state/v1": onCounters(message); break;
    case "ack/v1": if (message.ref && message.ref !== "host.auth/v1") toast("Done", "ok"); break;
    case "error/v1": toast(message.message, "error"); break;
  }
  renderSale();
}

function showLive(live, ended) {
  $("live-badge").textContent = ended ? "ENDED" : live ? "LIVE" : "OFFLINE";
  $("live-badge").className = `badge ${ended ? "ended" : live ? "live" : "off"}`;
  $("end-room").disabled = ended;
}

function onCounters(message) {
  if (typeof message.viewers === "number") {
    state.viewers = message.viewers;
    state.viewersPeak = Math.max(state.viewersPeak, message.viewers);
  }
  if (typeof message.likes === "number") state.likes = message.likes;
  if (message.stock) Object.assign(state.stock, message.stock);
  if ("pinned" in message) state.pinned = message.pinned;
}

// Comments and moderation

function addComment(comment, live) {
  if (live) state.commentTimes.push(Date.now());
  const list = $("host-comments");
  if (list.querySelector(`[data-id="${CSS.escape(comment.id)}"]`)) return;
  const actions = h("span", { class: "mod" },
    h("button", { title: "Delete this comment", onclick: () => hostCommand({ type: "host.delete_comment/v1", comment_id: comment.id }) }, "Delete"),
    h("button", { title: "Mute for 10 minutes", onclick: () => moderate("mute", comment) }, "Mute"),
    h("button", { class: "danger", title: "Ban from this room", onclick: () => moderate("ban", comment) }, "Ban"));
  list.append(h("li", { dataset: { id: comment.id, viewer: comment.viewer_id } },
    h("div", {}, h("b", {}, comment.name), " ", h("span", {}, comment.text)), actions));
  while (list.childElementCount > COMMENTS_SHOWN_MAX) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
  $("comment-count").textContent = String(list.childElementCount);
}

function moderate(action, comment) {
  if (action === "mute") hostCommand({ type: "host.mute/v1", viewer_id: comment.viewer_id, duration_ms: 600_000 });
  else hostCommand({ type: "host.ban/v1", viewer_id: comment.viewer_id });
  state.moderated.set(comment.viewer_id, `${comment.name} (${action === "mute" ? "muted" : "banned"})`);
  $("moderated").textContent = [...state.moderated.values()].join(", ");
}

$("slow-mode").addEventListener("change", () => hostCommand({ type: "host.slow_mode/v1", interval_ms: Number($("slow-mode").value) }));
$("keywords-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const words = $("keywords").value.split("\n").map((w) => w.trim()).filter(Boolean);
  hostCommand({ type: "host.keywords/v1", words });
});
$("end-room").addEventListener("click", () => {
  if (confirm("End this room for everyone? Viewers are disconnected and it cannot be reopened.")) {
    hostCommand({ type: "host.end/v1" });
    stopBroadcast();
  }
});

// Going live over WHIP

$("go-live").addEventListener("click", async () => {
  $("go-live").disabled = true;
  try {
    cameraStream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 720 }, height: { ideal: 1280 }, frameRate: { ideal: 30 } },
      audio: true,
    });
    $("preview").srcObject = cameraStream;
    $("preview-empty").hidden = true;
    $("broadcast-state").textContent = "connecting…";
    broadcast = await publish(`/whip/${encodeURIComponent(state.roomId)}`, state.token, cameraStream);
    broadcast.peerConnection.addEventListener("connectionstatechange", () => {
      const connection = broadcast?.peerConnection.connectionState;
      if (connection) $("broadcast-state").textContent = connection === "connected" ? "on air" : connection;
    });
    hostCommand({ type: "host.live/v1", live: true });
    $("end-stream").disabled = false;
    $("broadcast-state").textContent = "on air";
  } catch (error) {
    fail(error);
    stopBroadcast();
  }
});

async function stopBroadcast() {
  const session = broadcast;
  broadcast = null;
  if (session) await session.stop().catch(() => {});
  cameraStream?.getTracks().forEach((track) => track.stop());
  cameraStream = null;
  $("preview").srcObject = null;
  $("preview-empty").hidden = false;
  $("go-live").disabled = false;
  $("end-stream").disabled = true;
  $("broadcast-state").textContent = "camera off";
}

$("end-stream").addEventListener("click", async () => {
  await stopBroadcast();
  hostCommand({ type: "host.live/v1", live: false });
});

// Products: listed and restocked with the merchant's signature, made in this browser

async function loadProducts() {
  if (!state.merchantId) {
    $("merchant-note").textContent = "This room is not linked to a merchant.";
    return;
  }
  const answer = await api("GET", `/api/merchants/${encodeURIComponent(state.merchantId)}/products`);
  state.products = answer.products;
  $("merchant-note").textContent = state.merchant ? "signed with this browser's key" : "read-only: this browser does not hold the merchant's key";
  $("new-product").hidden = !state.merchant;
  renderProducts();
}

function renderProducts() {
  const select = $("sale-product");
  const chosen = select.value;
  select.replaceChildren(...state.products.map((p) => h("option", { value: p.product_id }, `${p.title} (${p.inventory_units} in stock)`)));
  if (chosen) select.value = chosen;
  syncSalePrice();
  hostAuction?.fillProducts();
  $("products").replaceChildren(...state.products.map((product) => {
    const pinned = state.pinned?.product_id === product.product_id;
    return h("li", { dataset: { productId: product.product_id } },
      h("img", { src: product.image_url || "/img/product.svg", alt: "", width: 44, height: 44 }),
      h("div", { class: "p-info" }, h("b", {}, product.title),
        h("span", { class: "muted small" }, `${money(product.price_cents, product.currency)} · ${product.inventory_units} in stock`)),
      h("span", { class: "p-actions" },
        h("button", { class: pinned ? "pinned" : "ghost", onclick: () => pin(product) }, pinned ? "Pinned" : "Pin"),
        state.merchant ? h("button", { class: "ghost", onclick: () => restock(product) }, "+ Stock") : null));
  }));
}

function syncSalePrice() {
  const product = state.products.find((p) => p.product_id === $("sale-product").value);
  if (product && !$("sale-price").dataset.touched) $("sale-price").value = (product.price_cents / 100).toFixed(2);
}
$("sale-product").addEventListener("change", () => { delete $("sale-price").dataset.touched; syncSalePrice(); });
$("sale-price").addEventListener("input", () => { $("sale-price").dataset.touched = "1"; });

function pin(product) {
  hostCommand({
    type: "host.pin/v1",
    product: { product_id: product.product_id, title: product.title, price_cents: product.price_cents, currency: product.currency, image: product.image_url },
  });
}

const cents = (text) => Math.round(Number(text) * 100);

async function addStock(productId, quantity) {
  const signed = { change_id: randomId(9), merchant_id: state.merchant.id, product_id: productId, quantity, time_ms: clock.now() };
  const signature = await state.merchant.sign(DOMAIN_STOCK, signed);
  const { product_id: _, ...body } = signed;
  return api("POST", `/api/products/${encodeURIComponent(productId)}/stock`, { ...body, signature }, { bearer: null });
}

async function restock(product) {
  const text = prompt(`Add how many units of ${product.title}?`, "50");
  const quantity = Number(text);
  if (!text || !Number.isInteger(quantity) || quantity < 1) return;
  try {
    await addStock(product.product_id, quantity);
    toast(`Added ${quantity} units`, "ok");
    await loadProducts();
  } catch (error) { fail(error); }
}

$("product-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const title = $("p-title").value.trim();
  const slug = title.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40) || "product";
  const productId = `${slug}-${randomId(4)}`;
  const fields = {
    currency: $("p-currency").value.trim().toUpperCase(),
    description: $("p-description").value.trim(),
    image_url: $("p-image").value,
    merchant_id: state.merchant.id,
    price_cents: cents($("p-price").value),
    product_id: productId,
    sku: productId,
    time_ms: clock.now(),
    title,
  };
  try {
    const signature = await state.merchant.sign(DOMAIN_LISTING, fields);
    await api("POST", "/api/products", { ...fields, signature }, { bearer: null });
    const stock = Number($("p-stock").value);
    if (stock > 0) await addStock(productId, stock);
    $("product-form").reset();
    toast(`Listed ${title}`, "ok");
    await loadProducts();
    $("sale-product").value = productId;
    delete $("sale-price").dataset.touched;
    syncSalePrice();
  } catch (error) { fail(error); }
});

// Flash sales

$("sale-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = {
    sale_id: `sale-${randomId(6)}`,
    product_id: $("sale-product").value,
    units_offered: Number($("sale-units").value),
    price_cents: cents($("sale-price").value),
    per_buyer_limit: Number($("sale-limit").value),
    starts_in_ms: Number($("sale-starts").value) * 1000,
    duration_ms: Number($("sale-duration").value) * 1000,
    payment_hold_ms: Number($("sale-hold").value) * 1000,
  };
  try {
    state.sale = await api("POST", `/api/rooms/${encodeURIComponent(state.roomId)}/sales`, body);
    toast("Flash sale scheduled", "ok");
    await loadProducts();
    renderSale();
  } catch (error) { fail(error); }
});

mountGroupOffer({ getSale: () => state.sale, api, toast, fail, cents });
hostAuction = new HostAuction({
  products: () => state.products, roomId: () => state.roomId, api, now: () => clock.now(), toast, fail, cents,
});

$("sale-stop").addEventListener("click", async () => {
  if (!state.sale) return;
  try {
    state.sale = await api("POST", `/api/rooms/${encodeURIComponent(state.roomId)}/sales/${encodeURIComponent(state.sale.sale_id)}/stop`, {});
    renderSale();
  } catch (error) { fail(error); }
});

function renderSale() {
  const sale = state.sale;
  $("sale-now").hidden = !sale;
  const badge = $("sale-state");
  if (!sale) { badge.textContent = "no sale"; badge.className = "badge off"; return; }
  const closed = sale.state === "closed";
  badge.textContent = closed ? `closed: ${(sale.close_reason || "").replace("_", " ")}` : sale.state;
  badge.className = `badge ${sale.state === "open" ? "live" : closed ? "ended" : "soon"}`;
  $("sale-image").src = sale.image_url || "/img/product.svg";
  $("sale-title").textContent = sale.title;
  const left = unitsLeft(state.stock, sale);
  $("sale-line").textContent = `${money(sale.price_cents, sale.currency)} · ${left} of ${sale.units_offered} left · ${sale.per_buyer_limit} per buyer`;
  const now = clock.now();
  $("sale-countdown").textContent = sale.state === "scheduled" ? `opens in ${duration(sale.starts_at_ms - now)}`
    : sale.state === "open" ? `ends in ${duration(sale.ends_at_ms - now)}` : "";
  $("sale-stop").hidden = closed;
}

// The dashboard: hub counters from the socket, order counts polled from the server.

async function pollStats() {
  try {
    onStats(await api("GET", `/api/rooms/${encodeURIComponent(state.roomId)}/stats`));
  } catch { /* the connection line shows trouble; keep the last figures */ }
}

function onStats(stats) {
  const now = Date.now();
  const sale = stats.sales.find((s) => s.sale_id === state.sale?.sale_id) || stats.sales[0] || null;
  if (sale && (!state.sale || state.sale.sale_id === sale.sale_id || sale.starts_at_ms > state.sale.starts_at_ms)) {
    state.sale = { ...state.sale, ...sale };
  }
  let ordersPerSecond = 0;
  const answered = sale ? sale.orders_answered : 0;
  if (state.lastStats && state.lastStats.saleId === sale?.sale_id) {
    ordersPerSecond = Math.max(0, answered - state.lastStats.answered) / ((now - state.lastStats.at) / 1000);
  }
  state.lastStats = { at: now, answered, saleId: sale?.sale_id };

  state.likeSamples.push([now, state.likes]);
  while (state.likeSamples.length && now - state.likeSamples[0][0] > 60_000) state.likeSamples.shift();
  const oldest = state.likeSamples[0];
  const likesPerMinute = oldest && now > oldest[0] ? ((state.likes - oldest[1]) * 60_000) / Math.max(now - oldest[0], 10_000) : 0;
  state.commentTimes = state.commentTimes.filter((t) => now - t <= 60_000);

  $("m-viewers").textContent = compact(state.viewers);
  $("m-ops").textContent = ordersPerSecond.toFixed(ordersPerSecond < 10 ? 1 : 0);
  $("m-likes").textContent = compact(Math.round(likesPerMinute));
  $("m-comments").textContent = String(state.commentTimes.length);
  charts.viewers.push(state.viewers);
  charts.ops.push(ordersPerSecond);
  charts.likes.push(likesPerMinute);
  charts.comments.push(state.commentTimes.length);
  if (sale) {
    const left = unitsLeft(state.stock, sale);
    const sold = sale.units_offered - left;
    $("m-sold").textContent = String(sold);
    $("m-left").textContent = String(left);
    $("m-gmv").textContent = money(sold * sale.price_cents, sale.currency);
    $("m-conversion").textContent = state.viewersPeak ? `${Math.round((100 * sale.buyers) / state.viewersPeak)}%` : "–";
    $("m-success").textContent = answered ? `${Math.round((100 * sale.orders_accepted) / answered)}%` : "–";
    const rejects = Object.entries(sale.orders_rejected).map(([reason, n]) => `${n} ${reason.replace("_", " ")}`);
    $("m-rejects").textContent = `${sale.orders_accepted} accepted${rejects.length ? ", " + rejects.join(", ") : ""}`;
    $("dash-sale").textContent = sale.title;
  }
  renderSale();
}

charts.viewers = new Sparkline($("c-viewers"), { color: "#5b8def" });
charts.ops = new Sparkline($("c-ops"), { color: "#ff2d55" });
charts.likes = new Sparkline($("c-likes"), { color: "#ff7a45" });
charts.comments = new Sparkline($("c-comments"), { color: "#1f9d55" });
setInterval(renderSale, 250);
start().catch(fail);
