// Small helpers shared by the pages. User text only ever goes in as text nodes.
import { bytesToB64url } from "./b64.js";

export const $ = (id) => document.getElementById(id);

// h("li", { class: "x", dataset: { id } }, "text", child): an element; strings become text.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") element.className = value;
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function money(cents, currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(cents / 100);
  } catch {
    return `${(cents / 100).toFixed(2)} ${currency}`;
  }
}

export function duration(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = String(total % 60).padStart(2, "0");
  return hours ? `${hours}:${String(minutes).padStart(2, "0")}:${seconds}` : `${minutes}:${seconds}`;
}

export function compact(n) {
  return new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 }).format(n);
}

let toastTimer = null;
export function toast(text, kind = "info") {
  const box = $("toast");
  if (!box) return;
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, 3500);
}

export function randomId(bytes = 12) {
  return bytesToB64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

// Units left in a sale: the live count from state/v1 (keyed by product) when there is
// one, else the count as of the sale's last change.
export function unitsLeft(stock, sale) {
  const live = stock[sale.product_id];
  return typeof live === "number" ? live : sale.units_remaining;
}

// Server time: each message's ts_ms against the local clock. Delivery only ever adds
// delay, so the largest (server minus local) difference seen is the best estimate.
export class ServerClock {
  constructor() { this.offsetMs = null; }
  observe(tsMs) {
    if (typeof tsMs !== "number") return;
    const offset = tsMs - Date.now();
    if (this.offsetMs === null || offset > this.offsetMs) this.offsetMs = offset;
  }
  now() { return Date.now() + (this.offsetMs ?? 0); }
}
