// Checking the ledger in the page with WebCrypto, as `python -m ledger verify-proof` does
// (docs/ledger.md): C2SP signed notes with Ed25519, tlog-checkpoints, tlog-proof
// receipts, RFC 9162 inclusion proofs with SHA-256.
import { b64ToBytes, concatBytes, equalBytes } from "./b64.js";

const encoder = new TextEncoder();
const SIGNATURE_PREFIX = "— ";

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

export const leafHash = (entry) => sha256(concatBytes(new Uint8Array([0]), entry));
const nodeHash = (left, right) => sha256(concatBytes(new Uint8Array([1]), left, right));

async function keyId(name, publicKey) {
  const digest = await sha256(concatBytes(encoder.encode(name + "\n"), new Uint8Array([1]), publicKey));
  return digest.subarray(0, 4);
}

// "<name>+<8 hex key id>+<base64(0x01 || public key)>"
export async function parseVerifierKey(text) {
  const line = text.trim();
  const first = line.indexOf("+");
  const second = line.indexOf("+", first + 1);
  if (first <= 0 || second < 0) throw new Error("a verifier key has the form name+hash+keydata");
  const name = line.slice(0, first);
  const idHex = line.slice(first + 1, second);
  const data = b64ToBytes(line.slice(second + 1));
  if (data.length !== 33 || data[0] !== 1) throw new Error("the verifier key is not an Ed25519 key");
  const publicKey = data.subarray(1);
  const id = await keyId(name, publicKey);
  const expected = [...id].map((b) => b.toString(16).padStart(2, "0")).join("");
  if (idHex !== expected) throw new Error("the verifier key's hash does not match its name and key");
  const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  return { name, id, key, text: line };
}

// A signed note: its text if one signature line verifies with `verifier`, else an error.
export async function openNote(noteText, verifier) {
  const split = noteText.lastIndexOf("\n\n");
  if (split < 0 || !noteText.endsWith("\n")) throw new Error("malformed note");
  const text = noteText.slice(0, split + 1);
  const lines = noteText.slice(split + 2, -1).split("\n");
  for (const line of lines) {
    if (!line.startsWith(SIGNATURE_PREFIX)) throw new Error("malformed signature line");
    const [name, data] = line.slice(SIGNATURE_PREFIX.length).split(" ");
    if (name !== verifier.name || !data) continue;
    const bytes = b64ToBytes(data);
    if (bytes.length !== 68 || !equalBytes(bytes.subarray(0, 4), verifier.id)) continue;
    const ok = await crypto.subtle.verify(
      { name: "Ed25519" }, verifier.key, bytes.subarray(4), encoder.encode(text),
    );
    if (ok) return text;
    throw new Error("the note's signature does not verify");
  }
  throw new Error(`the note is not signed by ${verifier.name}`);
}

export function parseCheckpoint(text) {
  const lines = text.split("\n");
  if (lines.length < 4 || lines[lines.length - 1] !== "") throw new Error("malformed checkpoint");
  if (!/^(0|[1-9][0-9]*)$/.test(lines[1])) throw new Error("malformed checkpoint size");
  const root = b64ToBytes(lines[2]);
  if (root.length !== 32) throw new Error("malformed checkpoint root");
  return { origin: lines[0], size: Number(lines[1]), root };
}

// RFC 9162 §2.1.3.2, with arithmetic instead of 32-bit bit operations.
export async function rootFromInclusion(index, size, leaf, path) {
  if (index >= size) throw new Error("index beyond the tree");
  if (leaf.length !== 32 || path.some((hash) => hash.length !== 32)) throw new Error("hashes are 32 bytes");
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of path) {
    if (sn === 0) throw new Error("inclusion proof is too long");
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new Error("inclusion proof is too short");
  return r;
}

export function parseReceipt(text) {
  const split = text.indexOf("\n\n");
  if (split < 0) throw new Error("the receipt has no blank line before its checkpoint");
  const lines = text.slice(0, split).split("\n");
  if (lines[0] !== "c2sp.org/tlog-proof@v1") throw new Error("not a c2sp.org/tlog-proof receipt");
  let at = 1;
  let entry = null;
  if (lines[at]?.startsWith("extra ")) entry = b64ToBytes(lines[at++].slice(6));
  const indexLine = lines[at++] || "";
  if (!/^index (0|[1-9][0-9]*)$/.test(indexLine)) throw new Error("the receipt has no index line");
  const path = lines.slice(at).map(b64ToBytes);
  if (path.some((hash) => hash.length !== 32)) throw new Error("malformed proof hash");
  return { index: Number(indexLine.slice(6)), entry, path, note: text.slice(split + 2) };
}

// Checks a receipt: the checkpoint's signature, its origin, and the entry's inclusion.
// Returns { index, size, entry (parsed JSON), entryBytes }.
export async function verifyReceipt(text, verifier) {
  const receipt = parseReceipt(text);
  const checkpoint = parseCheckpoint(await openNote(receipt.note, verifier));
  if (checkpoint.origin !== verifier.name) throw new Error("the checkpoint is from another log");
  if (!receipt.entry) throw new Error("the receipt carries no entry");
  const root = await rootFromInclusion(
    receipt.index, checkpoint.size, await leafHash(receipt.entry), receipt.path,
  );
  if (!equalBytes(root, checkpoint.root)) throw new Error("the inclusion proof does not reach the signed root");
  return {
    index: receipt.index,
    size: checkpoint.size,
    entryBytes: receipt.entry,
    entry: JSON.parse(new TextDecoder().decode(receipt.entry)),
  };
}

let verifierPromise = null;
// The log's key. Fetched from the log itself here, which proves nothing against the
// operator; the ledger page shows it so it can be compared with a published one.
export function logVerifier() {
  verifierPromise ??= fetch("/ledger/vkey")
    .then((response) => {
      if (!response.ok) throw new Error(`no verifier key (${response.status})`);
      return response.text();
    })
    .then(parseVerifierKey)
    .catch((error) => { verifierPromise = null; throw error; });
  return verifierPromise;
}

// uint16-length-prefixed items (entry bundles, block groups).
export function splitBundle(bytes) {
  const items = [];
  let at = 0;
  while (at < bytes.length) {
    if (at + 2 > bytes.length) throw new Error("truncated bundle");
    const length = (bytes[at] << 8) | bytes[at + 1];
    if (at + 2 + length > bytes.length) throw new Error("truncated bundle");
    items.push(bytes.subarray(at + 2, at + 2 + length));
    at += 2 + length;
  }
  return items;
}

export function parseBlock(text) {
  const lines = text.split("\n");
  if (lines[0] !== "ledger-block/v1") throw new Error("not a block");
  const fields = {};
  for (const line of lines.slice(1)) {
    const space = line.indexOf(" ");
    if (space > 0) fields[line.slice(0, space)] = line.slice(space + 1);
  }
  return {
    height: Number(fields.height),
    timeMs: Number(fields.time_ms),
    previous: b64ToBytes(fields.previous || ""),
    checkpointHash: b64ToBytes(fields.checkpoint || ""),
  };
}
