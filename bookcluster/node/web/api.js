// Calls to the node that served the page, the signed-in user's token, errors in
// plain words, and how money and times are shown (₹, IST). Writes go straight to a
// node of the show's home region (named by the X-Bookcluster-Home-* headers of every
// answer about a show or booking; the nodes allow each other's pages: `cors.py`), and
// to the node that served the page, which forwards them, when that node does not
// answer. Every write is safe to send twice: holds and confirms carry an
// Idempotency-Key, and asking to pay again returns the same payment.

const TOKEN_KEY = "bookcluster.session";

export const session = {
  load() {
    try {
      const saved = JSON.parse(localStorage.getItem(TOKEN_KEY) || "null");
      if (saved && Date.parse(saved.expires_at) > Date.now()) return saved;
    } catch { /* a damaged entry is no session */ }
    return null;
  },
  save(signedIn) { localStorage.setItem(TOKEN_KEY, JSON.stringify(signedIn)); },
  clear() { localStorage.removeItem(TOKEN_KEY); },
};

export class ApiError extends Error {
  constructor(status, body, retryAfterS) {
    super(plainWords(status, body, retryAfterS));
    this.status = status;
    this.body = body;
    this.code = body.error;
    this.retryAfterS = retryAfterS;
  }
}

const homeNodes = new Map();  // region -> base URLs of its nodes, as last answered
let here = null;  // the region of the node that served the page, once it said so
const unreachable = new Map();  // base URL -> until when it is not tried (ms)
const UNREACHABLE_MS = 30000;

function noteHome(resp, sameOrigin) {
  if (sameOrigin) here = resp.headers.get("X-Bookcluster-Node-Region") || here;
  const region = resp.headers.get("X-Bookcluster-Home-Region");
  const nodes = (resp.headers.get("X-Bookcluster-Home-Nodes") || "").split(" ").filter(Boolean);
  if (region && nodes.length) homeNodes.set(region, nodes);
}

/** Where a write for `region` goes: "" (this node) if it is a home node or none is known
 * and reachable, else one of the home nodes. */
export function homeBase(region) {
  const nodes = homeNodes.get(region) || [];
  if (!region || region === here || nodes.includes(location.origin)) return "";
  const now = Date.now();
  const up = nodes.filter((node) => !(unreachable.get(node) > now));
  return up.length ? up[Math.floor(Math.random() * up.length)] : "";
}

/** A call to this node, or with `home` (a region) a write to one of its nodes. */
export async function api(method, path, { body, key, token, home, headers: extra } = {}) {
  const headers = { Accept: "application/json", ...(extra || {}) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (key) headers["Idempotency-Key"] = key;
  const bearer = token === undefined ? session.load()?.token : token;
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const init = { method, headers, body: body === undefined ? undefined : JSON.stringify(body) };
  const base = home ? homeBase(home) : "";
  let resp;
  let sameOrigin = !base;
  try {
    resp = await fetch(base + path, init);
  } catch {
    if (!base) throw new ApiError(0, { error: "network" }, null);
    // The home node did not answer: this node forwards the write instead.
    unreachable.set(base, Date.now() + UNREACHABLE_MS);
    sameOrigin = true;
    try {
      resp = await fetch(path, init);
    } catch {
      throw new ApiError(0, { error: "network" }, null);
    }
  }
  noteHome(resp, sameOrigin);
  if (resp.ok) {
    const type = resp.headers.get("Content-Type") || "";
    return type.includes("json") ? resp.json() : resp.blob();
  }
  let data = {};
  try { data = await resp.json(); } catch { /* not JSON: the status says enough */ }
  if (typeof data !== "object" || data === null) data = {};
  const header = Number(resp.headers.get("Retry-After"));
  const retry = header > 0 ? header : (Number(data.retry_after_s) || null);
  if (resp.status === 401 && token === undefined) {
    session.clear();
    window.dispatchEvent(new Event("signed-out"));
  }
  throw new ApiError(resp.status, data, retry);
}

/** A fresh Idempotency-Key (crypto.randomUUID needs a secure context; this does not). */
export function newKey(prefix) {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `${prefix}-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

export function seatList(seats) {
  const list = [...seats];
  if (list.length <= 1) return list.join("");
  return `${list.slice(0, -1).join(", ")} and ${list[list.length - 1]}`;
}

function seatsWord(seats) {
  return seats.length === 1 ? `Seat ${seats[0]} was` : `Seats ${seatList(seats)} were`;
}

/** What went wrong, said for a person. */
export function plainWords(status, body, retryAfterS) {
  const wait = retryAfterS ? `${retryAfterS} s` : "a moment";
  const seats = Array.isArray(body.seats) ? body.seats : [];
  switch (body.error) {
    case "network":
      return "Can't reach the booking service. Check your connection and try again.";
    case "seats_unavailable":
      return seats.length
        ? `${seatsWord(seats)} just taken by someone else. Please pick other seats.`
        : "Those seats were just taken by someone else. Please pick other seats.";
    case "no_block_available":
      return "No block of that many seats together is free any more. Try fewer seats, "
        + "another category, or pick seats on the map.";
    case "orphan_seat": {
      const alone = Array.isArray(body.orphaned) ? body.orphaned : seats;
      return `That pick would leave ${alone.length === 1 ? `seat ${alone[0]}`
        : alone.length ? `seats ${seatList(alone)}` : "a single seat"} on its own between `
        + "taken seats. Please pick seats next to it, or leave a gap of two.";
    }
    case "seats_taken":
      return `Your hold ran out and ${seats.length ? seatList(seats) : "your seats"} went to `
        + "someone else. Any payment you made will be refunded.";
    case "hold_expired":
      return "Your hold has expired and the seats were released. Pick seats again to book.";
    case "booking_not_pending":
      return `This booking is already ${String(body.status || "closed").toLowerCase()}.`;
    case "hold_limit_reached":
      return body.limit === "seats_per_show"
        ? `You can hold at most ${body.max} seats of one show at a time.`
        : `You already have ${body.max} holds open in this region. Pay for or release one first.`;
    case "region_unavailable":
      return `The ${body.region || "theatre's"} region can't take bookings right now. `
        + `Please retry in ${wait}.`
        + (body.outcome === "unknown" ? " Retrying tells you whether your last request went through." : "");
    case "transaction_aborted":
      return `The ${body.region || "theatre's"} region is busy. Please retry in ${wait}.`;
    case "rate_limited":
      return `Too many requests. Please wait ${wait} and try again.`;
    case "payment_gateway_unavailable":
      return `The payment service isn't answering. Please retry in ${wait}.`;
    case "payment_required":
      return "The payment hasn't arrived yet.";
    case "admission_required":
      return "This show is on sale through a queue. Join the queue to pick seats.";
    case "admission_expired":
      return "Your shopping window has ended, so you can't hold seats with it any more.";
    case "admission_used":
      return "Your turn from the queue was already used for a hold. Pay for that hold, "
        + "or release it and pick again within your shopping window.";
    case "admission_party_too_large":
      return `You can hold at most ${body.max_party} seats in this sale.`;
    case "admission_forged":
    case "admission_not_yours":
    case "admission_wrong_show":
      return "Your turn from the queue is not valid for this show. Join its queue.";
    case "ticket_invalid":
      return "Your place in the queue could not be checked. Join the queue again.";
    case "onsale_not_open":
      return "The queue is not open yet.";
    case "unauthorized":
      return "Please sign in.";
    case "forbidden":
      return "You are not allowed to do that with this sign-in.";
    case "ticket_not_ready":
      return "Your ticket is still being made.";
    case "internal":
      return `Something went wrong on our side (reference ${body.error_id}). Please try again.`;
    default:
      return body.message || `The request failed (HTTP ${status}).`;
  }
}

const IST = "Asia/Kolkata";
const timeFmt = new Intl.DateTimeFormat("en-IN", {
  timeZone: IST, hour: "numeric", minute: "2-digit", hour12: true,
});
const dateFmt = new Intl.DateTimeFormat("en-IN", {
  timeZone: IST, weekday: "short", day: "numeric", month: "short",
});
const dayKeyFmt = new Intl.DateTimeFormat("en-CA", { timeZone: IST });

/** "8:30 pm IST": the theatre's local time, whatever the viewer's time zone. */
export const istTime = (iso) => `${timeFmt.format(new Date(iso))} IST`;
export const istDate = (iso) => dateFmt.format(new Date(iso));
export const istDay = (iso) => dayKeyFmt.format(new Date(iso));

/** "Mon 7 Dec 2026, 10:00 am IST": a show's start in its theatre's time zone (the
 * theatre's `timezone`), named, as tickets and mails print it (`booking/formats.py`). */
export function localTime(iso, zone = IST) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-IN", {
    timeZone: zone, weekday: "short", day: "numeric", month: "short", year: "numeric",
    hour: "numeric", minute: "2-digit", hour12: true, timeZoneName: "short",
  }).formatToParts(new Date(iso)).map((p) => [p.type, p.value]));
  return `${parts.weekday} ${parts.day} ${parts.month} ${parts.year}, `
    + `${parts.hour}:${parts.minute} ${parts.dayPeriod.toLowerCase()} ${parts.timeZoneName}`;
}

/** "₹1,23,456.00": an amount to the paisa, Indian digit grouping (a ticket's). */
export function rupeesExact(paise) {
  return `₹${(paise / 100).toLocaleString("en-IN", {
    minimumFractionDigits: 2, maximumFractionDigits: 2,
  })}`;
}

/** Amounts are paise in the API. */
export function rupees(paise) {
  const whole = paise % 100 === 0;
  return `₹${(paise / 100).toLocaleString("en-IN", {
    minimumFractionDigits: whole ? 0 : 2, maximumFractionDigits: 2,
  })}`;
}

/** An element with text (never HTML: names and messages come from data). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}
