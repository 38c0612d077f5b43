// The product page (/product.html?id=<product_id>): the product, its rating and its
// reviews, each marked "verified purchase" only once this page has checked it against
// the ledger (reviews.js: the review's entry and signature, the order's payment and
// delivery entries, all proved up to a checkpoint signed with the log's key).
import { verifyReview, starsText } from "./reviews.js";
import { $, h, money } from "./ui.js";

const productId = new URLSearchParams(location.search).get("id") || "";

function date(ms) {
  return new Date(ms).toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
}

function reviewItem(review) {
  const mark = h("span", { class: "verified", dataset: { state: "checking" } }, "checking the ledger…");
  const body = review.hidden
    ? h("p", { class: "hidden-text" }, `Text hidden by moderation${review.hidden_reason ? ` (${review.hidden_reason})` : ""}`)
    : h("p", { class: "review-text" }, review.text);
  const reply = review.reply
    ? h("blockquote", { class: "reply" }, h("b", {}, "Seller: "),
      review.reply.hidden ? "reply hidden by moderation" : review.reply.text)
    : null;
  const item = h("li", { class: "review", dataset: { order: review.order_id } },
    h("p", { class: "review-head" }, h("span", { class: "stars", "aria-label": `${review.stars} of 5 stars` }, starsText(review.stars * 100)),
      " ", h("time", {}, date(review.time_ms)), " ", mark),
    body, reply);
  verifyReview(review).then((result) => {
    mark.dataset.state = result.ok ? "verified" : "unverified";
    mark.textContent = result.ok ? `✓ Verified purchase · checkpoint ${result.checkpoint}` : `not verified: ${result.why}`;
  });
  return item;
}

async function load() {
  const product = await fetch(`/api/products/${encodeURIComponent(productId)}`);
  if (!product.ok) { $("title").textContent = "No such product"; return; }
  const info = await product.json();
  document.title = `${info.title} · reviews`;
  $("title").textContent = info.title;
  $("price").textContent = money(info.price_cents, info.currency);
  $("description").textContent = info.description;
  $("image").src = info.image_url || "/img/product.svg";
  const answer = await fetch(`/api/products/${encodeURIComponent(productId)}/reviews?limit=50`);
  if (!answer.ok) { $("summary").textContent = "Reviews are unavailable; retry later."; return; }
  const reviews = await answer.json();
  $("summary").textContent = reviews.count
    ? `${starsText(reviews.average_hundredths)} ${(reviews.average_hundredths / 100).toFixed(1)} out of 5 · ${reviews.count} review${reviews.count === 1 ? "" : "s"}`
    : "No reviews yet.";
  $("histogram").replaceChildren(...[5, 4, 3, 2, 1].map((stars) =>
    h("li", {}, `${stars} ★ `, h("meter", { min: 0, max: reviews.count || 1, value: reviews.histogram[stars - 1] }), ` ${reviews.histogram[stars - 1]}`)));
  $("reviews").replaceChildren(...reviews.reviews.map(reviewItem));
}

load();
