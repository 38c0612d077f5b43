// The user's identity: an Ed25519 key made on this device with WebCrypto. The private
// key is non-extractable and lives in IndexedDB (a CryptoKey is stored as is; its bytes
// never reach JavaScript). The identity id is the public key in base64url (43 chars).
// A merchant's identity also holds `shippingKey`, the same key converted to X25519
// (sealed.js), which opens the shipping details sealed to the merchant. WebCrypto cannot
// derive it from an Ed25519 CryptoKey, only from the seed, so it is made when the seed is
// at hand: on import, or when the merchant key is created from a fresh seed.
import { b64urlToBytes, bytesToB64url, concatBytes } from "./b64.js";
import {
  DOMAIN_REGISTRATION, DOMAIN_SESSION, signingBytes,
} from "./canonical.js";
import { shippingKeyFromSeed } from "./sealed.js";

const DB_NAME = "livecommerce";
const STORE = "identities";
// PKCS#8 wrapping of a 32-byte Ed25519 seed (RFC 8410): this prefix, then the seed.
const PKCS8_ED25519_PREFIX = new Uint8Array([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
]);

function openDb() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function dbRequest(mode, run) {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const transaction = db.transaction(STORE, mode);
      const request = run(transaction.objectStore(STORE));
      transaction.oncomplete = () => resolve(request.result);
      transaction.onerror = () => reject(transaction.error);
    });
  } finally {
    db.close();
  }
}

const load = (slot) => dbRequest("readonly", (store) => store.get(slot));
const save = (slot, record) => dbRequest("readwrite", (store) => store.put(record, slot));
export const forget = (slot) => dbRequest("readwrite", (store) => store.delete(slot));

export function supportsEd25519() {
  return crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"])
    .then(() => true, () => false);
}

// The identity kept in `slot` ("viewer", "merchant"), or null.
export async function loadIdentity(slot) {
  const record = await load(slot);
  return record ? new Identity(slot, record) : null;
}

// `shippingKey: true` (a merchant) makes the key from a random seed, so that its X25519
// half can be derived too; the seed is dropped once both keys are imported.
export async function createIdentity(slot, displayName, { shippingKey = false } = {}) {
  if (shippingKey) {
    const seed = crypto.getRandomValues(new Uint8Array(32));
    try {
      return await storeSeed(slot, seed, displayName, false);
    } finally {
      seed.fill(0);
    }
  }
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const record = {
    privateKey: pair.privateKey,
    identityId: bytesToB64url(raw),
    displayName,
    registered: false,
  };
  await save(slot, record);
  return new Identity(slot, record);
}

// Takes a key made elsewhere (the demo hands the merchant's seed to the host panel in the
// URL fragment), with its shipping key.
export async function importIdentity(slot, seedB64url, displayName) {
  const seed = b64urlToBytes(seedB64url);
  if (seed.length !== 32) throw new Error("an Ed25519 seed is 32 bytes");
  try {
    return await storeSeed(slot, seed, displayName, true);
  } finally {
    seed.fill(0);
  }
}

// The Ed25519 key is imported extractable once to learn the public key, then kept
// non-extractable; the X25519 one never is extractable.
async function storeSeed(slot, seed, displayName, registered) {
  const pkcs8 = concatBytes(PKCS8_ED25519_PREFIX, seed);
  const once = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, true, ["sign"]);
  pkcs8.fill(0);
  const jwk = await crypto.subtle.exportKey("jwk", once);
  const privateKey = await crypto.subtle.importKey(
    "jwk", { kty: "OKP", crv: "Ed25519", d: jwk.d, x: jwk.x }, { name: "Ed25519" }, false, ["sign"],
  );
  const shippingKey = await shippingKeyFromSeed(seed);
  const record = { privateKey, shippingKey, identityId: jwk.x, displayName, registered };
  await save(slot, record);
  return new Identity(slot, record);
}

async function postJson(url, body, headers = {}) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  return { status: response.status, ok: response.ok, answer };
}

export class Identity {
  constructor(slot, record) {
    this.slot = slot;
    this.record = record;
  }

  get id() { return this.record.identityId; }
  get displayName() { return this.record.displayName; }
  get registered() { return this.record.registered; }
  // { privateKey: X25519 CryptoKey, publicKey: bytes } for sealed.js, or null.
  get shippingKey() { return this.record.shippingKey || null; }

  async sign(domain, fields) {
    const signature = await crypto.subtle.sign(
      { name: "Ed25519" }, this.record.privateKey, signingBytes(domain, fields),
    );
    return bytesToB64url(new Uint8Array(signature));
  }

  async rename(displayName) {
    this.record = { ...this.record, displayName };
    await save(this.slot, this.record);
  }

  // POST /api/identities once; a key the server knows already counts as registered.
  async register() {
    if (this.registered) return;
    const fields = { display_name: this.displayName, public_key: this.id, time_ms: Date.now() };
    const signature = await this.sign(DOMAIN_REGISTRATION, fields);
    const { status, answer } = await postJson("/api/identities", { ...fields, signature });
    if (status !== 201 && answer.error !== "already_registered") {
      throw new Error(answer.message || `registration failed (${status})`);
    }
    this.record = { ...this.record, registered: true };
    await save(this.slot, this.record);
  }

  // A session token from a signed challenge (no passwords); cached until near expiry.
  async session() {
    const cached = this.record.session;
    if (cached && cached.expires_at_ms - Date.now() > 60_000) return cached.token;
    const challenge = await postJson("/api/sessions/challenge", {});
    if (!challenge.ok) throw new Error(challenge.answer.message || "no challenge");
    const fields = { challenge: challenge.answer.challenge, public_key: this.id };
    const signature = await this.sign(DOMAIN_SESSION, fields);
    const granted = await postJson("/api/sessions", { ...fields, signature });
    if (!granted.ok) throw new Error(granted.answer.message || "no session");
    this.record = { ...this.record, session: granted.answer };
    await save(this.slot, this.record);
    return granted.answer.token;
  }
}
