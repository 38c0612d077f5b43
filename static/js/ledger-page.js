// The ledger page: the latest checkpoint, blocks and entries, and any entry by index,
// each checked here with WebCrypto against the log's key (js/ledger-verify.js).
import { bytesToB64, equalBytes } from "./b64.js";
import {
  logVerifier, openNote, parseBlock, parseCheckpoint, sha256, splitBundle, verifyReceipt,
} from "./ledger-verify.js";
import { $, h } from "./ui.js";

const BLOCKS_SHOWN = 12;
const ENTRIES_SHOWN = 15;
const decoder = new TextDecoder();

function mark(element, ok, text) {
  element.className = `check ${ok ? "ok" : "bad"}`;
  element.textContent = `${ok ? "✓" : "✗"} ${text}`;
}

function summary(entry) {
  const pick = (...keys) => keys.filter((k) => entry[k] !== undefined).map((k) => `${k} ${entry[k]}`).join(" · ");
  switch (entry.type) {
    case "order/v1": return pick("action", "order_id", "sale_id", "quantity", "price_cents");
    case "sale/v1": return pick("action", "sale_id", "product_id", "units_offered", "close_reason");
    case "stock/v1": return pick("cause", "sale_id", "product_id", "units_remaining", "quantity");
    case "identity/v1": return pick("action", "identity_id");
    default: return Object.keys(entry).filter((k) => k !== "type").slice(0, 4).map((k) => `${k} ${JSON.stringify(entry[k])}`).join(" · ");
  }
}

async function fetchText(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.text();
}

async function showCheckpoint(verifier) {
  $("vkey").textContent = verifier.text;
  try {
    const checkpoint = parseCheckpoint(await openNote(await fetchText("/ledger/checkpoint"), verifier));
    $("cp-origin").textContent = checkpoint.origin;
    $("cp-size").textContent = String(checkpoint.size);
    $("cp-root").textContent = bytesToB64(checkpoint.root);
    mark($("cp-status"), true, "signed by the log's key");
    return checkpoint;
  } catch (error) {
    mark($("cp-status"), false, String(error.message || error));
    return null;
  }
}

async function showBlocks(verifier) {
  const latest = Number((await fetchText("/ledger/blocks/latest")).trim());
  const groups = [...new Set([Math.floor(Math.max(0, latest - BLOCKS_SHOWN) / 256), Math.floor(latest / 256)])];
  const items = [];
  for (const group of groups) {
    const bytes = new Uint8Array(await (await fetch(`/ledger/blocks/${group}`)).arrayBuffer());
    items.push(...splitBundle(bytes));
  }
  const records = [];
  for (let i = 0; i + 1 < items.length; i += 2) records.push({ blockNote: items[i], checkpointNote: items[i + 1] });
  const rows = [];
  let previousSize = null;
  for (let i = 0; i < records.length; i++) {
    const { blockNote, checkpointNote } = records[i];
    let check;
    let block = null;
    let checkpoint = null;
    try {
      block = parseBlock(await openNote(decoder.decode(blockNote), verifier));
      checkpoint = parseCheckpoint(await openNote(decoder.decode(checkpointNote), verifier));
      if (!equalBytes(block.checkpointHash, await sha256(checkpointNote))) throw new Error("names another checkpoint");
      if (i > 0 && !equalBytes(block.previous, await sha256(records[i - 1].blockNote))) throw new Error("breaks the chain");
      check = [true, i > 0 ? "signed, chained" : "signed"];
    } catch (error) {
      check = [false, String(error.message || error)];
    }
    const added = previousSize === null || !checkpoint ? "" : `+${checkpoint.size - previousSize}`;
    previousSize = checkpoint?.size ?? previousSize;
    const status = h("span", {});
    mark(status, ...check);
    rows.push(h("tr", {},
      h("td", {}, block ? String(block.height) : "?"),
      h("td", {}, block ? new Date(block.timeMs).toLocaleTimeString() : ""),
      h("td", {}, checkpoint ? String(checkpoint.size) : ""),
      h("td", {}, added),
      h("td", {}, status)));
  }
  $("blocks").replaceChildren(...rows.reverse().slice(0, BLOCKS_SHOWN));
}

async function verifiedEntry(index, verifier) {
  const checked = await verifyReceipt(await fetchText(`/ledger/proof/${index}`), verifier);
  if (checked.index !== index) throw new Error("the receipt is for another entry");
  return checked;
}

async function showEntries(size, verifier) {
  const rows = [];
  for (let index = size - 1; index >= Math.max(0, size - ENTRIES_SHOWN); index--) {
    const status = h("span", {});
    let type = "";
    let what = "";
    try {
      const checked = await verifiedEntry(index, verifier);
      type = checked.entry.type;
      what = summary(checked.entry);
      mark(status, true, `checkpoint ${checked.size}`);
    } catch (error) {
      mark(status, false, String(error.message || error));
    }
    rows.push(h("tr", {},
      h("td", {}, h("a", { href: `#${index}`, onclick: () => find(index) }, String(index))),
      h("td", {}, type), h("td", {}, what), h("td", {}, status)));
  }
  $("entries").replaceChildren(...rows);
}

async function find(index) {
  $("found").hidden = false;
  $("find-index").value = String(index);
  try {
    const checked = await verifiedEntry(index, await logVerifier());
    mark($("found-status"), true, `Verified in the ledger at checkpoint ${checked.size} (entry ${index})`);
    $("found-entry").textContent = JSON.stringify(checked.entry, null, 2);
  } catch (error) {
    mark($("found-status"), false, `Entry ${index}: ${error.message || error}`);
    $("found-entry").textContent = "";
  }
}

$("find-form").addEventListener("submit", (event) => {
  event.preventDefault();
  find(Number($("find-index").value));
});

async function main() {
  const verifier = await logVerifier();
  const checkpoint = await showCheckpoint(verifier);
  if (location.hash.length > 1 && /^#\d+$/.test(location.hash)) find(Number(location.hash.slice(1)));
  await showBlocks(verifier);
  if (checkpoint) await showEntries(checkpoint.size, verifier);
}
window.livecommerce = { find };
main().catch((error) => mark($("cp-status"), false, String(error.message || error)));
