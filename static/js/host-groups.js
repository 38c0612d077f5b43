// The host panel's group buy: offer the current sale's price to groups (size, window and
// an optional lower tier; POST .../group-offer), then the sale's groups at a glance,
// read every STATUS_REFRESH_MS (GET /api/sales/{id}/groups).
import { $, money } from "./ui.js";

const STATUS_REFRESH_MS = 3000;

export function mountGroupOffer({ getSale, api, toast, fail, cents }) {
  const form = $("group-form");
  const status = $("group-status");
  let offered = null; // the last groups view of the current sale

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const sale = getSale();
    if (!sale) return;
    const body = { size: Number($("group-size").value), window_ms: Number($("group-window").value) * 1000, tiers: [] };
    const members = Number($("group-tier-members").value);
    const price = $("group-tier-price").value;
    if (members && price) body.tiers.push([members, cents(price)]);
    try {
      offered = await api("POST", `/api/rooms/${encodeURIComponent(sale.room_id)}/sales/${encodeURIComponent(sale.sale_id)}/group-offer`, body);
      toast("Offered to groups", "ok");
      render();
    } catch (error) { fail(error); }
  });

  async function refresh() {
    const sale = getSale();
    if (!sale) { offered = null; render(); return; }
    const response = await fetch(`/api/sales/${encodeURIComponent(sale.sale_id)}/groups`).catch(() => null);
    if (response?.status === 404) offered = null;
    else if (response?.ok) offered = await response.json();
    render();
  }

  function render() {
    const sale = getSale();
    form.hidden = !sale || sale.state === "closed" || Boolean(offered);
    status.hidden = !offered;
    if (!offered) return;
    const offer = offered.offer;
    const succeeded = offered.closed.filter((g) => g.outcome === "succeeded").length;
    const failed = offered.closed.length - succeeded;
    const tiers = offer.tiers.slice(1).map((t) => `, ${t.members}+ at ${money(t.price_cents, offer.currency)}`).join("");
    status.textContent = `Group buy: ${offer.size} for ${money(offer.price_cents, offer.currency)}${tiers} · `
      + `${offered.open.length} open, ${succeeded} succeeded, ${failed} ended short`;
  }

  setInterval(refresh, STATUS_REFRESH_MS);
  refresh();
}
