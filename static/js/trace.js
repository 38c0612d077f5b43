// The public trace page of one unit (docs/traceability.md): its product, batch and every
// step, each checked here against the ledger as receipts are (inclusion proof, the
// checkpoint's signature), and the signature of the key that signed the step; then the
// verdict. Reached at /t/<unit URN> or at the unit's GS1 Digital Link /01/<gtin>/21/<serial>.
import { b64urlToBytes } from "./b64.js";
import { canonical } from "./canonical.js";
import { logVerifier, sha256, verifyReceipt } from "./ledger-verify.js";
import { $, h } from "./ui.js";

const DOMAIN_TRACE = "livecommerce/trace/v1";
const encoder = new TextEncoder();
const PROOF_TRIES = 20;
const PROOF_RETRY_MS = 500;
const SIGNER_FIELD = { actor: "merchant_id", lot: "merchant_id", units: "merchant_id", event: "signer_id", import: "signer_id" };
const STEP_TEXT = {
  commission: "Made (commissioned)", pack: "Packed into a case", unpack: "Unpacked from a case",
  ship: "Shipped", receive: "Received", inspect: "Inspected", sell: "Sold",
  return: "Returned", recall: "Recalled",
};

export function codeOfPath(pathname) {
  const link = pathname.match(/^\/01\/([0-9]{14})\/21\/([A-Za-z0-9-]{1,20})\/?$/);
  if (link) return `01${link[1]}21${link[2]}`;
  const direct = pathname.match(/^\/t\/(.+)$/);
  return direct ? decodeURIComponent(direct[1]) : new URLSearchParams(location.search).get("unit") || "";
}

const hex = (bytes) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");

async function fetchProof(index) {
  for (let attempt = 0; attempt < PROOF_TRIES; attempt++) {
    const response = await fetch(`/ledger/proof/${index}`);
    if (response.ok) return response.text();
    await new Promise((resolve) => setTimeout(resolve, PROOF_RETRY_MS)); // not covered yet
  }
  throw new Error(`no checkpoint covers entry ${index} yet`);
}

// One trace entry: in the log under the signed checkpoint, its digest the SHA-256 of the
// bytes signed, and the signature that of the key named in them.
export async function verifyTraceEntry(index, digest, verifier) {
  const checked = await verifyReceipt(await fetchProof(index), verifier);
  const entry = checked.entry;
  if (entry.type !== "trace/v1") throw new Error(`entry ${index} is not a trace entry`);
  if (entry.digest !== digest) throw new Error(`entry ${index} holds another step`);
  const signed = encoder.encode(DOMAIN_TRACE + "\n" + canonical(entry.signed));
  if (hex(await sha256(signed)) !== entry.digest) throw new Error("the digest is not of the signed bytes");
  const signer = entry.signed[SIGNER_FIELD[entry.action]];
  const key = await crypto.subtle.importKey("raw", b64urlToBytes(signer), { name: "Ed25519" }, false, ["verify"]);
  const ok = await crypto.subtle.verify({ name: "Ed25519" }, key, b64urlToBytes(entry.signature), signed);
  if (!ok) throw new Error("the signature does not verify");
  if (entry.action === "import") {
    const documentDigest = hex(await sha256(encoder.encode(entry.document || "")));
    if (documentDigest !== entry.signed.digest) throw new Error("the imported document is not the one signed");
  }
  return { size: checked.size, entry };
}

// What the page shows of an event must be what its entry says.
function matches(event, entry) {
  if (entry.action !== "event") return entry.action === "import" && event.imported;
  const s = entry.signed;
  return s.step === event.step && s.read_point === event.read_point && s.signer_id === event.signer_id
    && s.time_ms === event.event_time_ms && s.epcs.some((e) => event.epcs.includes(e));
}

function when(ms) {
  return new Date(ms).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function renderEvent(event, flagged) {
  const who = event.actor || (event.role ? `a ${event.role}` : "an unknown party");
  const place = event.place ? `${event.place} (${event.read_point})` : event.read_point || "an unknown place";
  const title = STEP_TEXT[event.step] || event.biz_step || event.event_type;
  const status = h("span", { class: "proof muted" }, " checking…");
  const item = h("li", { class: flagged ? "flagged" : "" },
    h("div", { class: "what" }, title, event.via ? ` (in case ${event.via})` : "", event.imported ? " · imported EPCIS" : ""),
    h("div", { class: "meta" }, `${when(event.event_time_ms)} · ${who}${event.role ? ` (${event.role})` : ""} · at ${place}`),
    event.step === "inspect" ? h("div", { class: "meta" }, `Result: ${event.disposition}`) : "",
    status);
  return { item, status };
}

const VERDICTS = {
  genuine: ["genuine", "✓ Genuine: every step checks out in the ledger"],
  possibly_counterfeit: ["counterfeit", "⚠ Possibly counterfeit"],
  recalled: ["recalled", "⚠ Recalled: do not use"],
  no_history: ["no_history", "Registered, but no step is recorded yet"],
};

function setVerdict(kind, text) {
  const verdict = $("verdict");
  verdict.className = `verdict ${kind}`;
  verdict.textContent = text;
  verdict.dataset.verdict = kind;
}

async function main() {
  const code = codeOfPath(location.pathname);
  const response = await fetch(`/api/trace/units/${encodeURIComponent(code)}`);
  if (!response.ok) { setVerdict("broken", `✗ The server did not answer (${response.status})`); return; }
  const view = await response.json();
  $("unit").textContent = view.unit;
  $("scans").textContent = `${view.scans} (this one included)`;
  $("product").textContent = view.known ? view.product_title : "Unknown code";
  $("lot").textContent = view.known ? `${view.lot} (${view.lot_urn})` : "—";
  $("export").href = view.known ? `/api/trace/units/${encodeURIComponent(view.unit)}/epcis` : "#";
  const flagged = new Set(view.flags.map((flag) => flag.event));
  $("flags").replaceChildren(...view.flags.map((flag) => h("li", {}, flag.detail)));
  const rows = view.events.map((event) => ({ event, ...renderEvent(event, flagged.has(event.number)) }));
  $("events").replaceChildren(...rows.map((row) => row.item));
  let failures = 0;
  let checkpoint = 0;
  try {
    const verifier = await logVerifier();
    const checks = new Map(); // ledger index -> verification (an import holds several events)
    const check = (index, digest) => {
      if (!checks.has(index)) checks.set(index, verifyTraceEntry(index, digest, verifier));
      return checks.get(index);
    };
    const registrations = view.known ? [view.registered.lot_ledger_index, view.registered.units_ledger_index] : [];
    for (const row of rows) {
      try {
        if (row.event.ledger_index < 0) throw new Error("not in the ledger yet");
        const { size, entry } = await check(row.event.ledger_index, row.event.digest);
        if (!matches(row.event, entry)) throw new Error("the page's step is not the entry's");
        if (row.event.grant_ledger_index >= 0) {
          const grant = await verifyGrant(row.event.grant_ledger_index, verifier);
          if (grant.actor_id !== row.event.signer_id || grant.role !== row.event.role) throw new Error("the role was not given to this key");
        }
        checkpoint = Math.max(checkpoint, size);
        row.item.classList.add("ok");
        row.status.className = "proof verified";
        row.status.textContent = ` ✓ verified in the ledger (entry ${row.event.ledger_index})`;
      } catch (error) {
        failures++;
        row.item.classList.add("bad");
        row.status.className = "proof error";
        row.status.textContent = ` ✗ does not verify: ${error.message || error}`;
      }
    }
    for (const index of registrations) {
      if (index < 0) { failures++; continue; }
      const proof = await verifyReceipt(await fetchProof(index), verifier);
      if (proof.entry.type !== "trace/v1" || !["lot", "units"].includes(proof.entry.action)) failures++;
    }
  } catch (error) {
    failures++;
    $("checked").textContent = `✗ ${error.message || error}`;
  }
  if (failures) {
    $("checked").className = "check bad";
    $("checked").textContent = `✗ ${failures} step(s) do not verify`;
    setVerdict("broken", "✗ This history does not verify against the ledger: do not trust it");
    return;
  }
  $("checked").className = "check ok";
  $("checked").textContent = rows.length ? `✓ ${rows.length} step(s) verified at checkpoint ${checkpoint}` : "nothing to verify";
  const [kind, text] = VERDICTS[view.verdict] || ["broken", view.verdict];
  setVerdict(kind, view.known ? text : "⚠ Possibly counterfeit: no merchant registered this code");
}

const grants = new Map();
async function verifyGrant(index, verifier) {
  if (!grants.has(index)) {
    grants.set(index, (async () => {
      const proof = await verifyReceipt(await fetchProof(index), verifier);
      const entry = proof.entry;
      if (entry.type !== "trace/v1" || entry.action !== "actor") throw new Error("no role entry");
      await verifyTraceEntry(index, entry.digest, verifier);
      return entry.signed;
    })());
  }
  return grants.get(index);
}

if (typeof document !== "undefined" && document.getElementById("verdict")) {
  main().catch((error) => setVerdict("broken", `✗ ${error.message || error}`));
}
