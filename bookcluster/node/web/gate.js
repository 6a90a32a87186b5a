// A door's gate, without the page: its sign-in (a scanner token), the published ticket
// keys it keeps for offline checks, scans sent home (`POST /checkin/scan`, one nonce per
// scan, the same nonce when a scan is sent again), and the scans it made offline, kept
// in order in localStorage until `POST /checkin/batch` took them.
//
// Offline means: the browser says so, a request did not get an answer, or the answer
// was a 5xx (the node could not reach the show's home region). A scan whose answer was
// lost may have been recorded: it is queued with its nonce, so the batch's answer for
// it is the first one (replayed), never a second entry.

import { istTime, newKey, seatList } from "./api.js";

const GATE_KEY = "bookcluster.gate";
const KEYS_KEY = "bookcluster.gate.keys";
const QUEUE_KEY = "bookcluster.gate.queue";
const SCAN_TIMEOUT_MS = 5000;
const BATCH_MAX = 500;  // the server's MAX_BATCH

function load(key, fallback) {
  try { return JSON.parse(localStorage.getItem(key) || "null") ?? fallback; } catch { return fallback; }
}

const store = (key, value) => localStorage.setItem(key, JSON.stringify(value));

function b64url(text) {
  const plain = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4));
  return Uint8Array.from(plain, (c) => c.charCodeAt(0));
}

/** A token's claims, unverified (the server checks it; the page only shows them). */
export function claimsOf(token) {
  try {
    return JSON.parse(new TextDecoder().decode(b64url(token.split(".")[1])));
  } catch {
    return null;
  }
}

export const gate = {
  load() {
    const saved = load(GATE_KEY, null);
    return saved && saved.exp * 1000 > Date.now() ? saved : null;
  },
  /** Remember a scanner token, or say what is wrong with it. */
  signIn(token, gateName, showId) {
    const claims = claimsOf(token.trim());
    if (!claims || !claims.sub) return "That is not a token: paste what `bookcluster token` printed.";
    if (!(claims.roles || []).includes("scanner")) return "That token has no scanner role.";
    if (claims.exp * 1000 <= Date.now()) return "That token has expired: ask for a new one.";
    if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(gateName)) return "A gate's name is 1-64 letters, digits or _ . : -";
    store(GATE_KEY, { token: token.trim(), user: claims.sub, theatres: claims.theatres || [],
      exp: claims.exp, gate: gateName, show_id: showId ? Number(showId) : null });
    return null;
  },
  forget() { localStorage.removeItem(GATE_KEY); },
};

export const queue = {
  all: () => load(QUEUE_KEY, []),
  add(scan) { store(QUEUE_KEY, [...queue.all(), scan]); },
  drop(nonces) {
    const gone = new Set(nonces);
    store(QUEUE_KEY, queue.all().filter((s) => !gone.has(s.nonce)));
  },
};

/** The published keys, fetched when online and kept for offline checks. */
export async function refreshKeys() {
  const resp = await fetch("/tickets/keys", { signal: AbortSignal.timeout(SCAN_TIMEOUT_MS) });
  if (!resp.ok) throw new Error(`keys: HTTP ${resp.status}`);
  const published = await resp.json();
  const keys = Object.fromEntries(published.keys.map((k) => [k.key_id, k.public_key]));
  store(KEYS_KEY, { keys, fetched_at: new Date().toISOString() });
  return keys;
}

export const knownKeys = () => load(KEYS_KEY, { keys: {} }).keys;

/** A signed ticket's claims if its Ed25519 signature verifies with a known key, else
 * `{ refused: code }`, as the home region would say it. */
export async function verifyOffline(payload) {
  const parts = payload.split(".");
  if (parts.length !== 3 || parts[0] !== "BC1") return { refused: "offline_unverifiable" };
  let body;
  let signature;
  try {
    body = JSON.parse(new TextDecoder().decode(b64url(parts[1])));
    signature = b64url(parts[2]);
  } catch {
    return { refused: "malformed_ticket" };
  }
  const raw = knownKeys()[body.k];
  if (!raw) return { refused: Object.keys(knownKeys()).length ? "unknown_key" : "no_keys" };
  try {
    const key = await crypto.subtle.importKey("raw", b64url(raw), { name: "Ed25519" }, false, ["verify"]);
    const head = new TextEncoder().encode(`${parts[0]}.${parts[1]}`);
    if (!await crypto.subtle.verify({ name: "Ed25519" }, key, signature, head)) {
      return { refused: "bad_signature" };
    }
  } catch {
    return { refused: "offline_unverifiable" };
  }
  return { booking_id: body.b, show_id: body.s, seat_ids: body.t, ticket_id: body.id };
}

class Unanswered extends Error {
  name = "Unanswered";
}

async function post(path, body, token) {
  let resp;
  try {
    resp = await fetch(path, {
      method: "POST", body: JSON.stringify(body), signal: AbortSignal.timeout(SCAN_TIMEOUT_MS),
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    });
  } catch {
    throw new Unanswered();
  }
  if (resp.status >= 500) throw new Unanswered();
  let data = {};
  try { data = await resp.json(); } catch { /* the status says enough */ }
  return { status: resp.status, data: typeof data === "object" && data ? data : {} };
}

/** A scan's request body (kept as is: a retry sends the same nonce). */
export function newScan(payload, signedIn, direction) {
  return { payload, nonce: newKey("scan"), gate: signedIn.gate, direction,
    ...(signedIn.show_id ? { show_id: signedIn.show_id } : {}) };
}

/** One scan: online at the home region, or offline by signature alone. The verdict:
 * `{ pass, code, seats, words, offline }`. */
export async function decide(scan, signedIn) {
  // Scans waiting to upload go first (the page uploads them before it calls this): a
  // scan sent home ahead of them could be decided out of order.
  if (navigator.onLine && !queue.all().length) {
    try {
      const { status, data } = await post("/checkin/scan", scan, signedIn.token);
      return verdictOf(status, data);
    } catch (error) {
      if (!(error instanceof Unanswered)) throw error;
    }
  }
  return offline(scan, signedIn);
}

async function offline(scan, signedIn) {
  const claims = await verifyOffline(scan.payload);
  if (claims.refused) return refused(claims.refused, {}, true);
  if (signedIn.show_id && claims.show_id !== signedIn.show_id) {
    return refused("wrong_show", { show_id: claims.show_id }, true);
  }
  const earlier = queue.all().filter((s) => s.ticket_id === claims.ticket_id);
  const last = earlier[earlier.length - 1];
  const inside = Boolean(last && last.direction === "in");
  if (scan.direction === "in" && inside) {
    return refused("already_admitted", { prior_at: last.scanned_at, prior_gate: last.gate }, true);
  }
  queue.add({ ...scan, scanned_at: new Date().toISOString(), ticket_id: claims.ticket_id });
  return { pass: true, code: scan.direction === "in" ? "admitted" : "exited",
    seats: claims.seat_ids, offline: true,
    words: "Checked by its signature alone: uploaded when the link is back." };
}

function verdictOf(status, data) {
  if (status === 200) {
    return { pass: true, code: data.outcome, seats: data.seat_ids || [], offline: false,
      words: data.outcome === "entered_twice" ? "Let in twice: reported." : (data.screen ? `Screen ${data.screen}` : "") };
  }
  return refused(status === 403 ? "forbidden" : data.error || `http_${status}`, data, false);
}

function refused(code, data, offline) {
  return { pass: false, code, seats: data.seat_ids || [], offline, words: reason(code, data) };
}

/** Why a ticket does not go through, said for the person at the door. */
export function reason(code, data = {}) {
  const when = data.prior_at ? ` at ${istTime(data.prior_at)}` : "";
  const where = data.prior_gate ? ` at gate ${data.prior_gate}` : "";
  switch (code) {
    case "already_admitted": return `Already admitted${when}${where}.`;
    case "not_inside": return "This ticket is not inside, so it cannot go out.";
    case "no_reentry": return "This theatre does not let a ticket back in after it went out.";
    case "not_confirmed": return "This booking was never paid for, or was cancelled.";
    case "refunded": return "This ticket was refunded.";
    case "seats_mismatch": return "The seats on this ticket are not its booking's.";
    case "unknown_booking": return "There is no such booking.";
    case "wrong_show": return `This ticket is for another show${data.show_id ? ` (show ${data.show_id})` : ""}.`;
    case "outside_window":
      return `Not open for check-in now${data.starts_at ? `: the show starts at ${istTime(data.starts_at)}` : ""}.`;
    case "malformed_ticket": return "This is not one of our tickets.";
    case "unknown_key": return "This ticket is signed with a key we do not know.";
    case "bad_signature": return "Forged or altered: the ticket's signature does not match.";
    case "forbidden": return "This gate's token is not for this ticket's theatre.";
    case "unauthorized": return "This gate's token was refused: sign in again.";
    case "rate_limited": return "Too many scans at once: scan again in a moment.";
    case "no_keys": return "Offline, and this gate has no ticket keys yet: connect once first.";
    case "offline_unverifiable": return "Offline, and this ticket cannot be checked without a connection.";
    default: return data.message || `The scan failed (${code}).`;
  }
}

/** The queued scans, in order, in batches the server takes; every batch's answer. */
export async function upload(signedIn) {
  const answers = [];
  for (;;) {
    const waiting = queue.all().slice(0, BATCH_MAX);
    if (!waiting.length) return answers;
    const scans = waiting.map(({ ticket_id: _, ...scan }) => scan);
    const { status, data } = await post("/checkin/batch", { scans }, signedIn.token);
    if (status !== 200) throw new Error(reason(data.error || `http_${status}`, data));
    queue.drop(waiting.map((s) => s.nonce));
    answers.push(data);
  }
}

/** A batch's answers in words: counts, and every ticket that went in twice. */
export function batchReport(answers) {
  const results = answers.flatMap((a) => a.results);
  const twice = answers.flatMap((a) => a.entered_twice);
  const passed = results.filter((r) => r.outcome === "admitted" || r.outcome === "exited").length;
  const summary = `${results.length} scan${results.length === 1 ? "" : "s"} uploaded: ${passed} recorded, `
    + `${twice.length} entered twice, ${results.length - passed - twice.length} refused.`;
  const lines = twice.map((d) => `Booking ${d.booking_id} entered twice: at gate ${d.first.gate}`
    + ` at ${istTime(d.first.at)} and at gate ${d.second.gate} at ${istTime(d.second.at)}.`);
  return { summary, lines, twice };
}

export { seatList };
