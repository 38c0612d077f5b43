// Shipping details sealed to the merchant, opened in the browser with WebCrypto alone.
// The server seals them (livecommerce/commerce/privacy.py; docs/commerce.md, "Shipping
// details"); the ledger holds only a salted commitment. This module opens a box and checks
// the commitment; it neither fetches nor renders.
//
// The API, for the host panel's order list:
//
//   import { openShipping, verifyCommitment, SealedError } from "./sealed.js";
//   const key = state.merchant.shippingKey;  // identity.js makes it with the Ed25519 key
//   const sealed = b64urlToBytes(order.shipping_sealed);  // GET /api/merchant/orders
//   const { details, salt } = await openShipping(sealed, key);  // throws SealedError
//   const ok = await verifyCommitment(details, salt, paidEntry.shipping_commitment);
//
// - shippingKeyFromSeed(seed) -> a shipping key `{ privateKey, publicKey }` from the
//   merchant's 32-byte Ed25519 seed: the standard Ed25519 -> X25519 conversion (SHA-512 of
//   the seed, first 32 bytes clamped, as libsodium's crypto_sign_ed25519_sk_to_curve25519).
//   `privateKey` is an X25519 CryptoKey, non-extractable, for "deriveBits"; `publicKey` the
//   32 raw bytes. The pair is structured-cloneable: identity.js keeps it in IndexedDB as
//   `identity.shippingKey` (null for a merchant key stored before it existed: import the
//   seed again).
// - openShipping(sealed, key) -> { details: { field: text }, salt: Uint8Array(32) }. `key`
//   is a shipping key, or the seed itself (Uint8Array(32)). Throws a SealedError whose
//   `code` is "too_large", "old_format" (sealed before HPKE: only Python opens those),
//   "cannot_open" (another merchant's box, or altered) or "malformed".
// - verifyCommitment(details, salt, commitmentHex) -> true when SHA-256(salt ||
//   canonical JSON of details) is the ledger's commitment (lowercase hex).
// - openBase(key, enc, ciphertext, info, aad) -> plaintext bytes: the RFC 9180 single-shot
//   open itself, any info and aad (the tests run RFC 9180's vector A.1.1 through it);
//   importX25519PrivateKey(raw) -> a shipping key from 32 raw X25519 private key bytes.
//
// The format: 0x01 || enc (32 bytes) || ciphertext, where enc and ciphertext are RFC 9180
// HPKE, base mode, single shot (sequence 0): DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
// AES-128-GCM, info "livecommerce/shipping/v1", empty aad. The plaintext is the canonical
// JSON of {"details": {...}, "salt": <base64url of 32 bytes>}, and only that form is taken
// (privacy.py takes the same set). Section numbers below are RFC 9180's.
import { b64urlToBytes, concatBytes } from "./b64.js";
import { canonical } from "./canonical.js";

export const SEAL_VERSION_HPKE = 0x01;
export const SHIPPING_INFO = new TextEncoder().encode("livecommerce/shipping/v1");
export const SEALED_BYTES_MAX = 8 * 1024; // as privacy.SEALED_BYTES_MAX
const SALT_BYTES = 32;
const FIELDS_MAX = 12;
const VALUE_CHARS_MAX = 200; // code points, as Python's len()
const FIELD = /^[a-z0-9_]{1,32}$/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const N_SECRET = 32; // DHKEM(X25519, HKDF-SHA256): Nsecret = Nenc = Npk = Nsk = 32
const N_ENC = 32;
const N_H = 32; // HKDF-SHA256
const N_K = 16; // AES-128-GCM
const N_N = 12;
const N_T = 16;
const EMPTY = new Uint8Array(0);
const ascii = (text) => new TextEncoder().encode(text);
const i2osp2 = (n) => new Uint8Array([n >> 8, n & 0xff]);
// Sections 4.1 and 5.1: the KEM derives under "KEM" || kem_id, the key schedule under
// "HPKE" || kem_id || kdf_id || aead_id.
const KEM_SUITE_ID = concatBytes(ascii("KEM"), i2osp2(0x0020));
const HPKE_SUITE_ID = concatBytes(ascii("HPKE"), i2osp2(0x0020), i2osp2(0x0001), i2osp2(0x0001));
const HPKE_V1 = ascii("HPKE-v1");
// PKCS#8 wrapping of a 32-byte X25519 private key (RFC 8410, OID 1.3.101.110): this
// prefix, then the key. WebCrypto takes X25519 private keys as PKCS#8 or JWK only.
const PKCS8_X25519_PREFIX = new Uint8Array([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
]);
const BASE_POINT = new Uint8Array(32);
BASE_POINT[0] = 9; // RFC 7748 section 4.1: u = 9

export class SealedError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "SealedError";
    this.code = code;
  }
}

// HKDF (RFC 5869) from HMAC-SHA-256, because LabeledExtract's output is used as a value
// (psk_id_hash, info_hash), which WebCrypto's combined HKDF cannot give.
async function hmac(key, data) {
  // WebCrypto refuses an empty HMAC key. HMAC pads every key with zeros to the block size,
  // so HashLen zero bytes is the same key (RFC 5869 2.2 names it for a missing salt).
  const raw = key.length === 0 ? new Uint8Array(N_H) : key;
  const hmacKey = await crypto.subtle.importKey(
    "raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"],
  );
  return new Uint8Array(await crypto.subtle.sign("HMAC", hmacKey, data));
}

async function expand(prk, info, length) {
  if (length > 255 * N_H) throw new Error("HKDF-Expand: too long");
  let output = EMPTY;
  let block = EMPTY;
  for (let counter = 1; output.length < length; counter++) {
    block = await hmac(prk, concatBytes(block, info, new Uint8Array([counter])));
    output = concatBytes(output, block);
  }
  return output.slice(0, length);
}

// Section 4: LabeledExtract and LabeledExpand.
const labeledExtract = (suiteId, salt, label, ikm) =>
  hmac(salt, concatBytes(HPKE_V1, suiteId, ascii(label), ikm));
const labeledExpand = (suiteId, prk, label, info, length) =>
  expand(prk, concatBytes(i2osp2(length), HPKE_V1, suiteId, ascii(label), info), length);

export async function importX25519PrivateKey(raw) {
  if (!(raw instanceof Uint8Array) || raw.length !== 32) {
    throw new Error("an X25519 private key is 32 bytes");
  }
  const privateKey = await crypto.subtle.importKey(
    "pkcs8", concatBytes(PKCS8_X25519_PREFIX, raw), { name: "X25519" }, false, ["deriveBits"],
  );
  // The public key is X25519(k, 9) (RFC 7748 section 6.1), computed with the key itself,
  // so no extractable copy of the private key is ever made.
  const base = await crypto.subtle.importKey("raw", BASE_POINT, { name: "X25519" }, true, []);
  const publicKey = new Uint8Array(
    await crypto.subtle.deriveBits({ name: "X25519", public: base }, privateKey, 256),
  );
  return { privateKey, publicKey };
}

export async function shippingKeyFromSeed(seed) {
  if (!(seed instanceof Uint8Array) || seed.length !== 32) {
    throw new Error("an Ed25519 seed is 32 bytes");
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-512", seed));
  const scalar = digest.slice(0, 32);
  digest.fill(0);
  // RFC 7748 section 5 clamping, as RFC 8032 section 5.1.5 makes the Ed25519 scalar, so
  // the bytes are libsodium's (X25519 clamps again at use: the DH does not depend on it).
  scalar[0] &= 248;
  scalar[31] &= 127;
  scalar[31] |= 64;
  try {
    return await importX25519PrivateKey(scalar);
  } finally {
    scalar.fill(0);
  }
}

// Sections 4.1 (Decap), 5.1 (KeySchedule, base mode: psk and psk_id empty), 5.2 and 6.1
// (Open at sequence 0: the nonce is base_nonce).
export async function openBase(key, enc, ciphertext, info, aad = EMPTY) {
  const refused = () =>
    new SealedError("cannot_open", "cannot open: not sealed to this key, or altered");
  if (enc.length !== N_ENC || ciphertext.length < N_T) throw refused();
  let dh;
  try {
    const ephemeral = await crypto.subtle.importKey("raw", enc, { name: "X25519" }, true, []);
    // WebCrypto refuses an all-zero output (a low-order enc), as section 7.1.4 requires.
    dh = new Uint8Array(
      await crypto.subtle.deriveBits({ name: "X25519", public: ephemeral }, key.privateKey, 256),
    );
  } catch {
    throw refused();
  }
  const eaePrk = await labeledExtract(KEM_SUITE_ID, EMPTY, "eae_prk", dh);
  const kemContext = concatBytes(enc, key.publicKey);
  const sharedSecret = await labeledExpand(
    KEM_SUITE_ID, eaePrk, "shared_secret", kemContext, N_SECRET,
  );
  const pskIdHash = await labeledExtract(HPKE_SUITE_ID, EMPTY, "psk_id_hash", EMPTY);
  const infoHash = await labeledExtract(HPKE_SUITE_ID, EMPTY, "info_hash", info);
  const context = concatBytes(new Uint8Array([0x00]), pskIdHash, infoHash);
  const secret = await labeledExtract(HPKE_SUITE_ID, sharedSecret, "secret", EMPTY);
  const keyBytes = await labeledExpand(HPKE_SUITE_ID, secret, "key", context, N_K);
  const aeadKey = await crypto.subtle.importKey("raw", keyBytes, "AES-GCM", false, ["decrypt"]);
  const baseNonce = await labeledExpand(HPKE_SUITE_ID, secret, "base_nonce", context, N_N);
  try {
    const plaintext = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: baseNonce, additionalData: aad, tagLength: 8 * N_T },
      aeadKey,
      ciphertext,
    );
    return new Uint8Array(plaintext);
  } catch {
    throw refused();
  }
}

export async function openShipping(sealed, key) {
  if (!(sealed instanceof Uint8Array)) throw new TypeError("sealed details are a Uint8Array");
  if (sealed.length > SEALED_BYTES_MAX) {
    throw new SealedError("too_large", "sealed details are too large");
  }
  if (sealed[0] !== SEAL_VERSION_HPKE) {
    // Untagged: a libsodium SealedBox from before HPKE (WebCrypto has no XSalsa20). One in
    // 256 of those starts with 0x01 and is refused below as "cannot_open" instead.
    throw new SealedError(
      "old_format", "sealed before HPKE: open it with livecommerce.commerce.privacy.open_shipping",
    );
  }
  const shippingKey = key instanceof Uint8Array ? await shippingKeyFromSeed(key) : key;
  const plaintext = await openBase(
    shippingKey, sealed.subarray(1, 1 + N_ENC), sealed.subarray(1 + N_ENC), SHIPPING_INFO, EMPTY,
  );
  return parseOpened(plaintext);
}

// Anyone holding the merchant's public key can seal, so what opens is checked like input:
// the same rules as privacy.check_details, and exactly the canonical form.
function parseOpened(plaintext) {
  const malformed = () => new SealedError("malformed", "sealed details are malformed");
  let text;
  let value;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(plaintext);
    value = JSON.parse(text);
  } catch {
    throw malformed();
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw malformed();
  const { details, salt: saltText } = value;
  let salt = null;
  try {
    salt = typeof saltText === "string" ? b64urlToBytes(saltText) : null;
  } catch {
    salt = null;
  }
  if (!salt || salt.length !== SALT_BYTES || !validDetails(details)) throw malformed();
  if (canonical({ details, salt: saltText }) !== text) throw malformed();
  return { details, salt };
}

function validDetails(details) {
  if (details === null || typeof details !== "object" || Array.isArray(details)) return false;
  const fields = Object.keys(details);
  if (fields.length < 1 || fields.length > FIELDS_MAX) return false;
  return fields.every((field) => {
    const value = details[field];
    return FIELD.test(field) && typeof value === "string" && !LONE_SURROGATE.test(value)
      && [...value].length <= VALUE_CHARS_MAX;
  });
}

const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

export async function verifyCommitment(details, salt, commitmentHex) {
  if (!(salt instanceof Uint8Array) || salt.length !== SALT_BYTES) return false;
  if (typeof commitmentHex !== "string") return false;
  if (details === null || typeof details !== "object" || Array.isArray(details)) return false;
  // privacy.py cannot write a lone surrogate canonically; TextEncoder would quietly
  // replace it, so such details match no commitment.
  const wellFormed = (text) => typeof text !== "string" || !LONE_SURROGATE.test(text);
  if (!Object.entries(details).every(([k, v]) => wellFormed(k) && wellFormed(v))) return false;
  let json;
  try {
    json = canonical(details);
  } catch {
    return false;
  }
  const bytes = concatBytes(salt, new TextEncoder().encode(json));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return toHex(digest) === commitmentHex;
}
