// The host panel's operating metrics: the room's last 24 hours by hour
// (GET /api/metrics/operating with the host credential; docs/commerce.md "Operating
// metrics"): bars of active viewers and of orders paid per hour, and the rates of the
// whole span (accepted of attempted, paid of accepted, settled of paid, refunds,
// disputes, rating, comments and watch minutes per viewer).
import { $, h } from "./ui.js";

const POLL_MS = 30_000;
const HOUR_MS = 3_600_000;
const HOURS = 24;
const RATES = [
  ["accepted_of_attempted", "Accepted / attempted", "percent"],
  ["paid_of_accepted", "Paid / accepted", "percent"],
  ["settled_of_paid", "Settled / paid", "percent"],
  ["refund_rate", "Refund rate", "percent"],
  ["dispute_rate", "Dispute rate", "percent"],
  ["average_rating", "Average rating", "stars"],
  ["comments_per_viewer", "Comments / viewer", "number"],
  ["watch_minutes_per_viewer", "Watch min / viewer", "number"],
];

function bars(canvas, values, color) {
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  const top = Math.max(1, ...values);
  const step = width / values.length;
  context.fillStyle = color;
  values.forEach((value, i) => {
    const tall = (value / top) * (height - 2);
    context.fillRect(i * step + 1, height - tall, Math.max(1, step - 2), tall);
  });
}

function shown(value, kind) {
  if (value === null || value === undefined) return "–";
  if (kind === "percent") return `${(value * 100).toFixed(1)}%`;
  if (kind === "stars") return `${value.toFixed(2)} ★`;
  return value.toFixed(2);
}

// Rates over the span, from the summed counts (not an average of hourly rates).
function spanRates(series) {
  const sum = {};
  for (const point of series) for (const [name, n] of Object.entries(point.counts)) sum[name] = (sum[name] || 0) + n;
  const ratio = (a, b) => (sum[b] ? (sum[a] || 0) / sum[b] : null);
  const viewers = Math.max(0, ...series.map((p) => p.counts.active_viewers || 0));
  return {
    accepted_of_attempted: ratio("orders_accepted", "orders_attempted"),
    paid_of_accepted: ratio("orders_paid", "orders_accepted"),
    settled_of_paid: ratio("orders_settled", "orders_paid"),
    refund_rate: ratio("orders_refunded", "orders_paid"),
    dispute_rate: ratio("disputes", "orders_paid"),
    average_rating: ratio("review_stars", "reviews"),
    comments_per_viewer: viewers ? (sum.comments || 0) / viewers : null,
    watch_minutes_per_viewer: viewers ? (sum.watch_ms || 0) / 60_000 / viewers : null,
    totals: sum,
  };
}

export function startOperating(roomId, token) {
  async function refresh() {
    const now = Date.now();
    const from = now - (now % HOUR_MS) - (HOURS - 1) * HOUR_MS;
    const query = new URLSearchParams({ scope: "room", id: roomId, period: "hour", from_ms: String(from) });
    const response = await fetch(`/api/metrics/operating?${query}`, { headers: { Authorization: `Bearer ${token}` } }).catch(() => null);
    if (!response?.ok) return;
    const answer = await response.json();
    const byStart = new Map(answer.series.map((point) => [point.start_ms, point.counts]));
    const hours = Array.from({ length: HOURS }, (_, i) => byStart.get(from + i * HOUR_MS) || {});
    bars($("op-viewers"), hours.map((c) => c.active_viewers || 0), "#5b8def");
    bars($("op-paid"), hours.map((c) => c.orders_paid || 0), "#ff2d55");
    const rates = spanRates(answer.series);
    $("op-rates").replaceChildren(...RATES.map(([name, label, kind]) =>
      h("div", { class: "tile", dataset: { rate: name } }, h("small", {}, label), h("b", {}, shown(rates[name], kind)))));
    $("op-totals").textContent = `24 h: ${rates.totals.orders_paid || 0} paid, ${rates.totals.orders_settled || 0} settled, ` +
      `${rates.totals.reviews || 0} reviews, ${rates.totals.joins || 0} joins`;
    $("operating").dataset.loaded = "true";
  }
  refresh();
  setInterval(refresh, POLL_MS);
  return { refresh };
}
