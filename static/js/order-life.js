// An order's life after the sale, for both pages: signed steps, the life as the server
// tells it (GET /api/orders/{id}), and each entry of its timeline checked in the page
// against the ledger (docs/commerce.md, "After the sale"; docs/pages.md).
//
//   stepBody(identity, { step, buyerId, orderId, timeMs, ...fields }) -> the signed body
//     of POST /api/orders/{id}/steps (`livecommerce/order-step/v1`);
//   sendStep(orderId, body) -> { status, answer } (the same body again on a network
//     failure: the step id makes it idempotent);
//   fetchLife(orderId, buyerId) -> the life, or null (404);
//   new LedgerChecks(onChange): check(item, buyerId, orderId) -> the check of one
//     timeline entry so far, { state: "checking" | "ok" | "bad", ... }; `onChange` runs
//     when one finishes. An entry is "ok" once its tlog-proof (/ledger/proof/<index>)
//     verifies against the signed checkpoint (as receipts do), the entry is this order's,
//     it says what the timeline says, and a signed step's signature verifies;
//   entryOfOrder(entry, buyerId, orderId) -> whether a ledger entry belongs to the order;
//   describe(item, currency) -> the words for one timeline item.
import { b64urlToBytes } from "./b64.js";
import { DOMAIN_GROUP, DOMAIN_ORDER_STEP, signingBytes } from "./canonical.js";
import { logVerifier, verifyReceipt } from "./ledger-verify.js";
import { money, randomId } from "./ui.js";

export const FINAL_STAGES = new Set(["settled", "refunded", "cancelled", "capture_failed", "expired"]);
export const REFUND_REASONS = {
  not_received: "Not received",
  damaged: "Damaged",
  not_as_described: "Not as described",
  changed_mind: "Changed my mind",
  other: "Other",
};
const STEP_RETRIES = 3;
const PROOF_RETRY_MS = 1200;
const PROOF_TRIES_MAX = 30;
// The timeline item's own keys; every other key must say what the ledger entry says.
const ITEM_KEYS = new Set(["entry", "action", "ledger_index"]);

export async function stepBody(identity, { step, buyerId, orderId, timeMs, carrier = "", tracking = "", amountCents = 0, decision = "", reason = "" }) {
  const fields = {
    amount_cents: amountCents, buyer_id: buyerId, carrier, decision, order_id: orderId,
    reason, signer_id: identity.id, step, step_id: randomId(12), time_ms: Math.round(timeMs), tracking,
  };
  const signature = await identity.sign(DOMAIN_ORDER_STEP, fields);
  const { order_id: _, ...body } = fields;
  return { ...body, signature };
}

export async function sendStep(orderId, body) {
  let failure = null;
  for (let attempt = 0; attempt < STEP_RETRIES; attempt++) {
    try {
      const response = await fetch(`/api/orders/${encodeURIComponent(orderId)}/steps`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      return { status: response.status, answer: await response.json().catch(() => ({})) };
    } catch (error) {
      failure = error;
      await new Promise((resolve) => setTimeout(resolve, 500 * (attempt + 1)));
    }
  }
  throw failure;
}

// What a refused step or payment says, for people.
export function refusalText(answer, status) {
  return answer.detail || answer.message || answer.reason || answer.error || `refused (${status})`;
}

export async function fetchLife(orderId, buyerId) {
  const response = await fetch(`/api/orders/${encodeURIComponent(orderId)}?buyer_id=${encodeURIComponent(buyerId)}`);
  if (response.status === 404) return null;
  if (!response.ok) throw new Error(`the order's life: ${response.status}`);
  return response.json();
}

export function entryOfOrder(entry, buyerId, orderId) {
  if (entry.type === "order/v1" || entry.type === "payment/v1") {
    return entry.buyer_id === buyerId && entry.order_id === orderId;
  }
  if (entry.type === "transfer/v1") return entry.reference === `${buyerId}/${orderId}`;
  if (entry.type === "group/v1") {
    if (entry.action === "opened" || entry.action === "joined") return entry.buyer_id === buyerId && entry.order_id === orderId;
    return [...(entry.paid || []), ...(entry.released || [])].some((m) => m[0] === buyerId && m[1] === orderId);
  }
  return false;
}

// The action the timeline shows for an entry (views.py `Timelines.add`).
function actionOf(entry) {
  if (entry.type === "transfer/v1") return `transfer ${entry.code} ${entry.phase}`;
  return entry.action === "stage" ? entry.stage : entry.action;
}

// A signed step on the ledger keeps the signed fields; its own time is `signed_time_ms`.
async function stepSignatureVerifies(entry) {
  const fields = {
    amount_cents: entry.amount_cents, buyer_id: entry.buyer_id, carrier: entry.carrier,
    decision: entry.decision, order_id: entry.order_id, reason: entry.reason,
    signer_id: entry.signer_id, step: entry.step, step_id: entry.step_id,
    time_ms: entry.signed_time_ms, tracking: entry.tracking,
  };
  const key = await crypto.subtle.importKey("raw", b64urlToBytes(entry.signer_id), { name: "Ed25519" }, false, ["verify"]);
  return crypto.subtle.verify({ name: "Ed25519" }, key, b64urlToBytes(entry.signature), signingBytes(DOMAIN_ORDER_STEP, fields));
}

// A buyer's group step (groups.py): the signed fields, the action as the buyer wrote it.
async function groupSignatureVerifies(entry) {
  const fields = {
    action: entry.action === "opened" ? "open" : "join", buyer_id: entry.buyer_id,
    group_id: entry.group_id, order_id: entry.order_id, time_ms: entry.signed_time_ms,
  };
  const key = await crypto.subtle.importKey("raw", b64urlToBytes(entry.buyer_id), { name: "Ed25519" }, false, ["verify"]);
  return crypto.subtle.verify({ name: "Ed25519" }, key, b64urlToBytes(entry.signature), signingBytes(DOMAIN_GROUP, fields));
}

// One entry: its proof against the signed checkpoint, then that it is this order's and
// says what the timeline item says. Returns the check; throws to retry (not covered yet).
export async function checkEntry(item, buyerId, orderId, verifier) {
  const index = item.ledger_index;
  const response = await fetch(`/ledger/proof/${index}`);
  if (response.status === 404) throw new RetryLater("no checkpoint covers it yet");
  if (!response.ok) throw new RetryLater(`the ledger answered ${response.status}`);
  let checked;
  try {
    checked = await verifyReceipt(await response.text(), verifier);
  } catch (error) {
    return { state: "bad", index, detail: String(error.message || error) };
  }
  const entry = checked.entry;
  const bad = (detail) => ({ state: "bad", index, detail, entry });
  if (checked.index !== index) return bad("the proof is for another entry");
  if (!entryOfOrder(entry, buyerId, orderId)) return bad("the entry is another order's");
  if (entry.type !== item.entry || actionOf(entry) !== item.action) return bad("the entry says something else");
  for (const [key, value] of Object.entries(item)) {
    if (!ITEM_KEYS.has(key) && key in entry && entry[key] !== value) return bad(`the entry's ${key} differs`);
  }
  let signer = null;
  if (entry.type === "order/v1" && entry.step && entry.signature) {
    if (!(await stepSignatureVerifies(entry).catch(() => false))) return bad("the step's signature does not verify");
    signer = entry.signer_id === buyerId ? "buyer" : entry.signer_id === entry.merchant_id ? "seller" : "arbiter";
  }
  if (entry.type === "group/v1" && entry.signature) {
    if (!(await groupSignatureVerifies(entry).catch(() => false))) return bad("the group step's signature does not verify");
    signer = "buyer";
  }
  return { state: "ok", index, size: checked.size, entry, signer };
}

class RetryLater extends Error {}

export class LedgerChecks {
  constructor(onChange) {
    this.onChange = onChange;
    this.results = new Map(); // ledger index -> check
    this.queue = [];
    this.running = false;
  }

  check(item, buyerId, orderId) {
    const index = item.ledger_index;
    const known = this.results.get(index);
    if (known) return known;
    const pending = { state: "checking", index, tries: 0 };
    this.results.set(index, pending);
    this.queue.push({ item, buyerId, orderId, pending });
    this.run();
    return pending;
  }

  // One proof at a time: a page with many orders does not flood the server.
  async run() {
    if (this.running) return;
    this.running = true;
    try {
      const verifier = await logVerifier();
      while (this.queue.length) {
        const job = this.queue.shift();
        const index = job.item.ledger_index;
        try {
          this.results.set(index, await checkEntry(job.item, job.buyerId, job.orderId, verifier));
          this.onChange();
        } catch (error) {
          job.pending.tries += 1;
          if (job.pending.tries >= PROOF_TRIES_MAX) {
            this.results.set(index, { state: "bad", index, detail: String(error.message || error) });
            this.onChange();
          } else {
            setTimeout(() => { this.queue.push(job); this.run(); }, PROOF_RETRY_MS);
          }
        }
      }
    } catch {
      // No verifier key yet: every check waits and is asked again.
      for (const job of this.queue.splice(0)) this.results.delete(job.item.ledger_index);
      setTimeout(() => this.onChange(), PROOF_RETRY_MS);
    } finally {
      this.running = false;
    }
  }
}

const ACTION_TEXT = {
  paid: "Paid: the money is held in escrow",
  shipped: "Shipped",
  delivered: "Delivered",
  confirmed: "Receipt confirmed",
  settled: "Settled: paid to the seller",
  cancelled: "Cancelled",
  expired: "Expired unpaid",
  hold_cancelled: "Cancelled before payment",
  refund_requested: "Refund asked",
  refund_accepted: "Refund accepted",
  refund_declined: "Refund declined",
  refund_succeeded: "Refunded",
  refund_failed: "Refund failed at the provider",
  refunded: "Refunded in full",
  disputed: "Dispute opened",
  resolved: "Dispute resolved",
  capture_succeeded: "Payment captured",
  capture_failed: "The payment could not be captured",
  payout_succeeded: "Paid out",
  opened: "Started a group",
  joined: "Joined a group",
  succeeded: "The group succeeded",
  failed: "The group ended short: the payment is released",
};

const TRANSFER_TEXT = {
  payment: "payment", settlement: "to the seller", fee: "platform fee", refund: "refund", payout: "payout",
};

export function describe(item, currency) {
  if (item.entry === "transfer/v1") {
    const [, code, phase] = item.action.split(" ");
    const what = TRANSFER_TEXT[code] || code;
    const amount = item.amount ? ` ${money(item.amount, currency)}` : "";
    return `Money: ${what}${amount} (${phase})`;
  }
  let text = ACTION_TEXT[item.action] || item.action;
  if (item.action === "shipped" && item.carrier) text += ` with ${item.carrier} · tracking ${item.tracking}`;
  if (item.amount_cents && item.action !== "paid") text += ` · ${money(item.amount_cents, currency)}`;
  if (item.reason) text += ` · ${REFUND_REASONS[item.reason] || item.reason}`;
  if (item.entry === "group/v1" && item.action === "succeeded" && item.price_cents) text += ` at ${money(item.price_cents, currency)} each`;
  return text;
}

// "€18.00" typed by a person -> 1800, or NaN.
export function centsOf(text) {
  const value = String(text).trim().replace(",", ".");
  return /^\d+(\.\d{1,2})?$/.test(value) ? Math.round(Number(value) * 100) : NaN;
}

export const isFinal = (stage) => FINAL_STAGES.has(stage);
