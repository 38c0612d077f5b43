// Recommendations on the viewer page: "More from this stream" and "You may also like"
// (GET /api/rooms/{room}/recommendations, docs/commerce.md "Recommendations"). The page
// tells the server which product it shows (a view, once per product per visit) and which
// recommended card the viewer taps (a click); with an identity both go with its session
// token, so the lists are the viewer's own. Nothing here is on the ledger.
import { $, h, money } from "./ui.js";

const REFRESH_MS = 15_000;
const LIST_LENGTH = 6;

export function startRecommendations(roomId, getPinned, getIdentity) {
  const base = `/api/rooms/${encodeURIComponent(roomId)}`;
  const viewed = new Set();
  let shownBeside = null;

  async function headers() {
    const identity = getIdentity();
    if (!identity) return {};
    try {
      return { Authorization: `Bearer ${await identity.session()}` };
    } catch {
      return {};
    }
  }

  async function tell(productId, signal) {
    await fetch(`${base}/seen`, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...(await headers()) },
      body: JSON.stringify({ product_id: productId, signal }),
    }).catch(() => {});
  }

  function card(item) {
    const link = h(
      "a",
      { class: "rec", href: `/product.html?id=${encodeURIComponent(item.product_id)}&room=${encodeURIComponent(roomId)}`,
        dataset: { productId: item.product_id, why: item.why },
        onclick: () => { tell(item.product_id, "click"); } },
      h("img", { src: item.image || "/img/product.svg", alt: "", width: 48, height: 48 }),
      h("span", { class: "rec-title" }, item.title),
      h("b", {}, money(item.price_cents, item.currency)),
    );
    return h("li", {}, link);
  }

  function fill(listId, items) {
    const list = $(listId);
    list.replaceChildren(...items.map(card));
    list.closest(".recs-row").hidden = items.length === 0;
  }

  async function refresh() {
    const pinned = getPinned();
    const query = new URLSearchParams({ count: String(LIST_LENGTH) });
    if (pinned) query.set("beside", pinned.product_id);
    try {
      const response = await fetch(`${base}/recommendations?${query}`, { headers: await headers() });
      if (!response.ok) return;
      const lists = await response.json();
      fill("recs-stream", lists.more_from_stream);
      fill("recs-like", lists.you_may_also_like);
      $("recs").hidden = lists.more_from_stream.length + lists.you_may_also_like.length === 0;
      $("recs").dataset.loaded = "true";
    } catch {
      // offline: the lists stay as they were
    }
  }

  // The pinned product: counted once as a view, then the lists again without it.
  setInterval(async () => {
    const productId = getPinned()?.product_id ?? null;
    if (productId === shownBeside) return;
    shownBeside = productId;
    if (productId && !viewed.has(productId)) {
      viewed.add(productId);
      await tell(productId, "view");
    }
    refresh();
  }, 500);
  setInterval(refresh, REFRESH_MS);
  refresh();
  return { refresh };
}
