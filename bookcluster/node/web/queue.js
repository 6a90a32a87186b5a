// The waiting room of an on-sale, as one person's page sees it: which on-sale a show
// is under (GET /onsales), joining (a write at the on-sale's home region), the place
// pushed over this node's WebSocket (/onsales/{id}/live: the position, then the count
// admitted each time the queue moves) or, while there is no socket, polled
// (GET /onsales/{id}/position, answered in this node's region) at the interval the
// answer suggests, with backoff on errors; and the admission pass the holds carry as
// X-Bookcluster-Admission. The ticket and the pass are kept per user and on-sale, so a
// reload keeps the place and the shopping window.

import { ApiError, api } from "./api.js";

export const ADMISSION_HEADER = "X-Bookcluster-Admission";
const TICKET_HEADER = "X-Bookcluster-Queue-Ticket";
const LIST_TTL_MS = 5000;
const FIRST_POLL_S = 2;
const MAX_BACKOFF_S = 30;
const LIVE_RETRY_S = 15;  // a socket that closed is tried again this long after (polling meanwhile)

let listed = { at: 0, onsales: [] };

/** Every on-sale this node's region knows (briefly cached); `fresh` asks again now. */
export async function onSales(fresh = false) {
  if (fresh || Date.now() - listed.at > LIST_TTL_MS) {
    listed = { at: Date.now(), onsales: (await api("GET", "/onsales")).onsales };
  }
  return listed.onsales;
}

/** The on-sale `showId` is under, or null. */
export async function onSaleOf(showId, fresh = false) {
  return (await onSales(fresh)).find((o) => o.shows.includes(showId)) || null;
}

const storeKey = (user, onsale) => `bookcluster.queue.${user}.${onsale}`;

function load(user, onsale) {
  try { return JSON.parse(localStorage.getItem(storeKey(user, onsale)) || "null") || {}; } catch {
    return {};
  }
}

function save(user, onsale, value) {
  localStorage.setItem(storeKey(user, onsale), JSON.stringify(value));
}

/** The user's admission pass for `onsale` while its shopping window lasts, else null:
 * {pass, windowEndsAt (ms)}. */
export function admissionOf(user, onsale) {
  const saved = load(user, onsale);
  const ends = Date.parse(saved.window_ends_at || "");
  return saved.pass && ends > Date.now() ? { pass: saved.pass, windowEndsAt: ends } : null;
}

/** Forget a pass the home region refused (used elsewhere, expired): the queue decides. */
export function dropAdmission(user, onsale) {
  const saved = load(user, onsale);
  delete saved.pass;
  delete saved.window_ends_at;
  save(user, onsale, saved);
}

/** One person in one on-sale's queue. onPosition(answer) after every answer;
 * onError(error) when a poll or join fails (polling goes on, backing off). */
export class QueueWatch {
  constructor(onsale, user, { onPosition, onError }) {
    this.onsale = onsale;
    this.user = user;
    this.handlers = { onPosition, onError };
    this.timer = null;
    this.stopped = false;
    this.failures = 0;
    this.ws = null;         // the live socket, while open or opening
    this.liveTimer = null;  // trying the socket again
    this.last = null;       // the last position: a pushed count is applied to it
  }

  get joined() { return Boolean(load(this.user, this.onsale.id).ticket); }

  /** Join (the same ticket if joined before), then poll. */
  async join() {
    const answer = await api("POST", `/onsales/${this.onsale.id}/join`,
      { home: this.onsale.region });
    save(this.user, this.onsale.id, { ...load(this.user, this.onsale.id), ticket: answer.ticket });
    this.received(answer);
    this.connect();
  }

  /** Poll now and follow the pushes (a page opened after joining). */
  resume() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.poll(), 0);
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.liveTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close();
  }

  /** Open the live socket; while it is open, nothing is polled. A socket the node
   * cannot give (none in this browser, refused, closed) leaves the polling on. */
  connect() {
    const { ticket } = load(this.user, this.onsale.id);
    if (this.stopped || this.ws || !ticket || typeof WebSocket === "undefined") return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    let ws;
    try {
      ws = new WebSocket(`${scheme}://${location.host}/onsales/${this.onsale.id}/live` +
        `?ticket=${encodeURIComponent(ticket)}`);
    } catch {
      return;
    }
    this.ws = ws;
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      let message;
      try { message = JSON.parse(event.data); } catch { return; }
      if (message.type === "position") this.received(message);
      else if (message.type === "queue" && this.last) this.received(this.counted(message));
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      this.later(FIRST_POLL_S);
      clearTimeout(this.liveTimer);
      this.liveTimer = setTimeout(() => this.connect(), LIVE_RETRY_S * 1000);
    };
  }

  /** The last position with a pushed count applied: people ahead and the wait follow
   * from the place. */
  counted(message) {
    const answer = { ...this.last, admitted: message.admitted, joined: message.joined,
      rate_per_s: message.rate_per_s };
    if (typeof this.last.place === "number") {
      answer.ahead = Math.max(0, this.last.place - 1 - message.admitted);
      answer.estimated_wait_s = answer.ahead === 0 ? 0
        : message.rate_per_s > 0 ? answer.ahead / message.rate_per_s : null;
    }
    return answer;
  }

  get live() { return Boolean(this.ws && this.ws.readyState === WebSocket.OPEN); }

  async poll() {
    if (this.stopped) return;
    const { ticket } = load(this.user, this.onsale.id);
    try {
      this.received(await api("GET", `/onsales/${this.onsale.id}/position`,
        { headers: { [TICKET_HEADER]: ticket } }));
    } catch (error) {
      if (this.stopped) return;
      this.failures += 1;
      this.handlers.onError(error);
      if (error instanceof ApiError && error.code === "ticket_invalid") {
        save(this.user, this.onsale.id, {});  // a ticket the cluster refuses: join again
        return;
      }
      const backoff = Math.min(MAX_BACKOFF_S, FIRST_POLL_S * 2 ** this.failures);
      this.later(Math.max(backoff, (error instanceof ApiError && error.retryAfterS) || 0));
    }
  }

  received(answer) {
    if (this.stopped) return;
    this.failures = 0;
    if (answer.state === "admitted" && answer.pass) {
      save(this.user, this.onsale.id, { ...load(this.user, this.onsale.id),
        pass: answer.pass, window_ends_at: answer.window_ends_at });
    }
    this.last = answer;
    this.handlers.onPosition(answer);
    // No interval in the answer: a final state (admitted, expired); stop polling. While
    // the socket is open the node pushes instead.
    if (answer.poll_after_s !== undefined && answer.poll_after_s !== null) {
      if (this.live) clearTimeout(this.timer);
      else this.later(Math.max(1, Number(answer.poll_after_s) || FIRST_POLL_S));
    }
  }

  later(seconds) {
    clearTimeout(this.timer);
    if (!this.stopped) this.timer = setTimeout(() => this.poll(), seconds * 1000);
  }
}
