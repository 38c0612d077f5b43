// The rating on the viewer page's product card: "★★★★☆ 4.3 · 12 reviews", a link to the
// product page (/product.html?id=...), fetched once per product pinned.
import { starsText } from "./reviews.js";

const shown = new Map(); // product id -> rating, or a promise of it

export function showRating(productId, element) {
  if (!element) return;
  if (element.dataset.product === productId) return;
  element.dataset.product = productId;
  element.hidden = true;
  element.href = `/product.html?id=${encodeURIComponent(productId)}`;
  const rating = shown.get(productId) ?? fetch(`/api/products/${encodeURIComponent(productId)}/rating`)
    .then((response) => (response.ok ? response.json() : null)).catch(() => null);
  shown.set(productId, rating);
  Promise.resolve(rating).then((value) => {
    if (element.dataset.product !== productId || !value) return;
    element.textContent = value.count
      ? `${starsText(value.average_hundredths)} ${(value.average_hundredths / 100).toFixed(1)} · ${value.count} review${value.count === 1 ? "" : "s"}`
      : "No reviews yet";
    element.hidden = false;
  });
}
