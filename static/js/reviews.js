// Reviews in the page: checking one against the ledger before calling it a verified
// purchase, and signing one for a delivered order (docs/commerce.md, "Reviews").
//
//   verifyReview(review) -> { ok: true, checkpoint } | { ok: false, why }
//     review: one item of GET /api/products/{id}/reviews. Checked here, not trusted:
//     1. its entry (`ledger_index`) is in the log: inclusion proof up to a checkpoint
//        signed with the log's key (ledger-verify.js), and says what the page shows
//        (buyer, order, product, stars, text unless hidden);
//     2. the buyer's key signed that review (Ed25519 over livecommerce/review/v1);
//     3. the order's `paid` entry (`paid_index`) is in the log, for that buyer and order;
//     4. the entry that took the order to delivered, confirmed or settled
//        (`received_index`) is in the log, for that buyer and order.
//   reviewOrder(identity, orderId, { stars, text }) -> the server's answer
//     The hook for "My orders": call it for an order whose stage is delivered, confirmed
//     or settled; it signs with the buyer's key and POSTs /api/orders/{id}/reviews.
import { b64urlToBytes } from "./b64.js";
import { signingBytes } from "./canonical.js";
import { logVerifier, verifyReceipt } from "./ledger-verify.js";

export const DOMAIN_REVIEW = "livecommerce/review/v1";
const RECEIVED = new Set(["delivered", "confirmed"]);
const PROOF_WAIT_MS = 8000;

// A proof, waiting for the checkpoint that covers a new entry (404 until then).
async function proofOf(index) {
  if (!Number.isSafeInteger(index) || index < 0) throw new Error("no ledger index");
  const deadline = Date.now() + PROOF_WAIT_MS;
  for (;;) {
    const response = await fetch(`/ledger/proof/${index}`);
    if (response.ok) return response.text();
    if (response.status !== 404 || Date.now() > deadline) throw new Error(`no proof of entry ${index}`);
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
}

async function checkedEntry(index, verifier) {
  const checked = await verifyReceipt(await proofOf(index), verifier);
  if (checked.index !== index) throw new Error("the proof is for another entry");
  return checked;
}

function sameOrder(entry, review) {
  return entry.buyer_id === review.buyer_id && entry.order_id === review.order_id;
}

export async function verifyReview(review) {
  try {
    const verifier = await logVerifier();
    const checked = await checkedEntry(review.ledger_index, verifier);
    const entry = checked.entry;
    if (entry.type !== "review/v1" || entry.action !== "reviewed") throw new Error("the entry is not a review");
    if (!sameOrder(entry, review) || entry.signer_id !== review.buyer_id) throw new Error("the entry names another order or signer");
    if (entry.product_id !== review.product_id || entry.stars !== review.stars) throw new Error("the entry says other stars or product");
    if (!review.hidden && entry.text !== review.text) throw new Error("the entry holds another text");
    const signed = signingBytes(DOMAIN_REVIEW, {
      action: "review", buyer_id: entry.buyer_id, order_id: entry.order_id, signer_id: entry.signer_id,
      stars: entry.stars, target: entry.target, text: entry.text, time_ms: entry.signed_time_ms,
    });
    const key = await crypto.subtle.importKey("raw", b64urlToBytes(entry.buyer_id), { name: "Ed25519" }, false, ["verify"]);
    const signatureOk = await crypto.subtle.verify({ name: "Ed25519" }, key, b64urlToBytes(entry.signature), signed);
    if (!signatureOk) throw new Error("the buyer's signature does not verify");
    const paid = (await checkedEntry(review.paid_index, verifier)).entry;
    if (paid.type !== "order/v1" || paid.action !== "paid" || !sameOrder(paid, review)) throw new Error("no payment of this order by this buyer");
    const received = (await checkedEntry(review.received_index, verifier)).entry;
    const got = RECEIVED.has(received.action) || (received.action === "stage" && received.stage === "settled");
    if (received.type !== "order/v1" || !got || !sameOrder(received, review)) throw new Error("no delivery of this order");
    return { ok: true, checkpoint: checked.size };
  } catch (error) {
    return { ok: false, why: error.message };
  }
}

export async function reviewOrder(identity, orderId, { stars, text = "" }) {
  const fields = {
    action: "review", buyer_id: identity.id, order_id: orderId, signer_id: identity.id,
    stars, target: "", text, time_ms: Date.now(),
  };
  const signature = await identity.sign(DOMAIN_REVIEW, fields);
  const { order_id: _, ...body } = fields;
  const response = await fetch(`/api/orders/${encodeURIComponent(orderId)}/reviews`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ...body, signature }),
  });
  return { status: response.status, ok: response.ok, answer: await response.json().catch(() => ({})) };
}

export function starsText(hundredths) {
  const whole = Math.round(hundredths / 100);
  return "★".repeat(whole) + "☆".repeat(5 - whole);
}
