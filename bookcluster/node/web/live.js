// A show's live seat map over the node's WebSocket (`/shows/{id}/live`): a
// snapshot, then one delta per version. A gap in versions (or a RESET) asks for
// a fresh snapshot; a dropped socket says "reconnecting…" and reconnects with
// backoff, and the new socket's snapshot resyncs the map.

const FIRST_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 5000;

export class LiveSeats {
  /**
   * onSnapshot(map): the whole seat map; onDelta(delta): {seats, status, expires_at?};
   * onState(state): "connecting" | "live" | "resyncing" | "reconnecting".
   */
  constructor(showId, { onSnapshot, onDelta, onState }) {
    this.showId = showId;
    this.handlers = { onSnapshot, onDelta, onState };
    this.version = -1;
    this.backoff = FIRST_BACKOFF_MS;
    this.closed = false;
    this.timer = null;
    this.connect();
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/shows/${this.showId}/live`);
    this.ws = ws;
    ws.onmessage = (event) => this.receive(JSON.parse(event.data));
    ws.onclose = () => {
      if (this.closed || ws !== this.ws) return;
      this.handlers.onState("reconnecting");
      this.timer = setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    };
  }

  receive(message) {
    if (message.type === "snapshot") {
      this.version = message.version;
      this.backoff = FIRST_BACKOFF_MS;
      this.handlers.onSnapshot(message);
      this.handlers.onState("live");
      return;
    }
    if (message.type !== "delta" || message.version <= this.version) return;
    if (message.version !== this.version + 1 || message.status === "RESET") {
      this.resync();  // missed a change: only a fresh snapshot is right
      return;
    }
    this.version = message.version;
    this.handlers.onDelta(message);
  }

  resync() {
    this.version = Number.MAX_SAFE_INTEGER;  // ignore deltas until the snapshot
    this.handlers.onState("resyncing");
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "resync" }));
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.ws.close();
  }
}
