// The operator page: GET /ops/overview (operator token) every few seconds, one
// request at a time. Shows what the node can probe now and what the cluster
// records (failovers, moves, the last audit); what does not answer is named.

import { ApiError, api, el, istDate, istTime } from "./api.js";

const OPS_KEY = "bookcluster.ops";
const REFRESH_MS = 3000;
const $ = (id) => document.getElementById(id);
let timer = null;

function saved() {
  try { return JSON.parse(localStorage.getItem(OPS_KEY) || "null"); } catch { return null; }
}

function alertUser(text) {
  $("alert").textContent = text;
  $("alert").hidden = !text;
}

/** Show the page for the saved token; `value` replaces it (null forgets it). */
function signedIn(value) {
  if (value) localStorage.setItem(OPS_KEY, JSON.stringify(value));
  else if (value === null) localStorage.removeItem(OPS_KEY);
  const current = saved();
  $("token-form").hidden = Boolean(current);
  $("account").hidden = !current;
  $("overview").hidden = !current;
  $("account-user").textContent = current ? current.user : "";
  clearTimeout(timer);
  if (current) refresh();
}

function userOf(token) {
  try {
    const claims = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return String(claims.sub || "?");
  } catch {
    return "?";
  }
}

async function refresh() {
  const current = saved();
  if (!current) return;
  try {
    const [overview, onsales] = await Promise.all([
      api("GET", "/ops/overview", { token: current.token }),
      api("GET", "/onsales", { token: current.token }).catch((error) => ({ error })),
    ]);
    render(overview);
    $("onsales").replaceChildren(onSalesTable(onsales));
    alertUser("");
  } catch (error) {
    alertUser(error instanceof ApiError ? error.message : String(error));
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      signedIn(null);
      alertUser(error.status === 403 ? "That token has no operator role." : "The token was refused; give another.");
      return;
    }
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

/** up / down, or a node's "ready" / "not ready" (up, but not serving writes). */
function stateCell(probe, words) {
  const [text, tone] = !probe.up ? ["down", "down"]
    : words === "not ready" ? [words, "degraded"] : [words || "up", "up"];
  return el("td", {}, el("span", { class: `state ${tone}` }, text),
    probe.error ? el("span", { class: "error-text" }, probe.error) : null);
}

function lag(probe) {
  return probe.lag_bytes === undefined ? "–" : `${probe.lag_bytes.toLocaleString("en-IN")} B`;
}

function row(name, label, probe, role, lagText, extra) {
  return el("tr", { "data-process": name, "data-up": String(Boolean(probe.up)) },
    el("th", { scope: "row" }, label, el("span", { class: "error-text" }, probe.address)),
    stateCell(probe, extra), el("td", {}, role || "–"), el("td", {}, lagText));
}

/** A Redis server by what it is now: the master of `source` (Sentinel's, or as it says),
 * or a replica of it; a server that does not answer is not guessed at. */
function redisLabel(probe, source, home, masterNow) {
  const of = source === home ? "" : ` of ${source}`;
  if (!probe.up && !probe.role) return `Redis${of} (no answer)`;
  if (probe.role === "master") {
    return masterNow && masterNow !== probe.address ? `Redis master${of}, not Sentinel's` : `Redis master${of}`;
  }
  return `Redis replica of ${source}`;
}

const PG_NOW = { leader: "PostgreSQL leader", primary: "PostgreSQL primary", sync_standby: "PostgreSQL sync standby",
  standby_leader: "PostgreSQL standby leader", replica: "PostgreSQL replica", standby: "PostgreSQL standby" };

function redisRow(name, probe, source, home, masterNow) {
  const r = row(name, redisLabel(probe, source, home, masterNow), probe,
    probe.role === "replica" ? `link ${probe.link || "?"}` : "", probe.role === "replica" ? lag(probe) : "–");
  r.dataset.now = probe.role || "";
  return r;
}

function regionCard(name, region) {
  const now = region.redis_master_now;
  const masterNow = now && now.up ? now.address : null;
  // Where the topology started each: the slot names stay the rows' identity
  // (data-process), the labels say what each is now.
  const slots = ["primary", "standby"];
  const rows = [
    redisRow(`${name}.redis.master`, region.redis_master, name, name, masterNow),
    ...region.redis_replicas.map((r) => redisRow(`${name}.redis.replica.${r.source}`, r, r.source, name,
      r.source === name ? masterNow : null)),
    ...(region.postgres || []).map((m, i) => {
      const label = m.role_now ? PG_NOW[m.role_now] || `PostgreSQL ${m.role_now}` : "PostgreSQL (no answer)";
      const r = row(`${name}.postgres.${slots[i] || i + 1}`, label, m, m.member || "–",
        m.lag_bytes === undefined ? "–" : lag(m));
      r.dataset.now = m.role_now || "";
      return r;
    }),
  ];
  region.nodes.forEach((n, i) => {
    const failed = Object.entries(n.checks || {})
      .filter(([, v]) => typeof v === "string" && v !== "ok").map(([k, v]) => `${k}: ${v}`);
    const nodeRow = row(`${name}.node.${i + 1}`, `Node ${i + 1}`, n, "app node", "–",
      n.up ? (n.ready ? "ready" : "not ready") : "");
    if (failed.length) nodeRow.children[1].append(el("span", { class: "error-text" }, failed.join("; ")));
    rows.push(nodeRow);
  });
  if (region.worker) rows.push(row(`${name}.worker`, "Worker", region.worker, "jobs, outbox, sweeper", "–"));
  const master = !now ? null : el("p", { class: "muted", "data-master-now": now.address || "" },
    now.up ? `Redis master now (Sentinel): ${now.address}` : `No sentinel answers: ${now.error}`);
  return el("div", { class: "region", "data-region": name },
    el("h2", {}, name), master,
    el("table", {}, el("thead", {}, el("tr", {},
      el("th", { scope: "col" }, "Store or process"), el("th", { scope: "col" }, "State"),
      el("th", { scope: "col" }, "Detail"), el("th", { scope: "col" }, "Lag"))),
    el("tbody", {}, rows)));
}

function queues(regions) {
  const states = new Set();
  for (const r of Object.values(regions)) Object.keys(r.worker?.queue || {}).forEach((s) => states.add(s));
  const order = [...states].sort();
  const head = el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Region"),
    ...order.map((s) => el("th", { scope: "col" }, s)),
    el("th", { scope: "col" }, "Outbox backlog"), el("th", { scope: "col" }, "Mirror generation")));
  const body = Object.entries(regions).map(([name, r]) => {
    const w = r.worker;
    if (!w || !w.up) {
      return el("tr", { "data-queue": name }, el("th", { scope: "row" }, name),
        el("td", { colspan: String(order.length + 2), class: "empty" },
          w ? `worker not answering: ${w.error || "?"}` : "no worker in the topology"));
    }
    return el("tr", { "data-queue": name }, el("th", { scope: "row" }, name),
      ...order.map((s) => el("td", {}, String(w.queue[s] ?? 0))),
      el("td", {}, String(w.outbox_pending ?? "–")), el("td", {}, String(w.mirror_generation ?? "–")));
  });
  return [head, el("tbody", {}, body)];
}

const when = (iso) => `${istDate(iso)}, ${istTime(iso)}`;

/** A list the cluster records (failovers, moves) as a table, with the regions whose
 * record did not answer named under it. */
function recordTable(section, what, head, cells) {
  if (!section.available) return el("p", { class: "empty" }, `Not available: ${section.note}`);
  const out = [];
  if (!section.items.length) out.push(el("p", { class: "empty" }, `No ${what} recorded.`));
  else {
    out.push(el("table", {}, el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, section.items.map((item) => el("tr", {}, cells(item).map((c) => el("td", {}, c)))))));
  }
  if (section.unreachable?.length) {
    out.push(el("p", { class: "error-text" }, `Not answering now: ${section.unreachable.join(", ")}`));
  }
  return el("div", {}, out);
}

/** Only changes of master or leader are listed (restarts are not failovers). */
function failoverWords(f) {
  if (f.store === "redis") return `Redis master is now ${f.to} (was ${f.from}), generation ${f.generation}`;
  return `PostgreSQL leader is now ${f.to || "?"}, timeline ${f.timeline}`
    + (f.reason ? ` (${f.reason})` : "");
}

function failovers(section) {
  return recordTable(section, "failovers", ["When", "Region", "What"],
    (f) => [when(f.at), f.region, failoverWords(f)]);
}

function moves(section) {
  return recordTable(section, "theatre moves",
    ["Started", "Theatre", "From → to", "Epoch", "Step", "Freeze", "Rows, holds"],
    (m) => [when(m.started_at), m.theatre, `${m.source} → ${m.target}`,
      `${m.from_epoch} → ${m.to_epoch}`, m.step,
      m.freeze_s === null ? "–" : `${m.freeze_s.toFixed(2)} s`,
      `${m.rows ?? "–"}, ${m.holds ?? "–"}`]);
}

function audit(last) {
  if (!last.available) return el("p", { class: "empty" }, `No result: ${last.note}`);
  const words = { 0: "clean", 1: "violations found", 2: "some regions or nodes could not be audited" };
  const out = [el("p", {},
    el("span", { class: `state ${last.exit_code === 0 ? "up" : "down"}` }, words[last.exit_code] || `exit ${last.exit_code}`),
    ` · ${istDate(last.finished_at)}, ${istTime(last.finished_at)} · ${last.violations} violation(s)`)];
  const checks = Object.entries(last.by_check || {});
  if (checks.length) out.push(el("p", {}, checks.map(([k, n]) => `${k}: ${n}`).join(", ")));
  const unreachable = Object.entries(last.unreachable || {});
  if (unreachable.length) out.push(el("p", {}, `Not audited: ${unreachable.map(([k, v]) => `${k} (${v})`).join("; ")}`));
  return el("div", {}, out);
}

function waitText(seconds) {
  if (seconds === null || seconds === undefined) return "paused";
  return seconds < 90 ? `${Math.round(seconds)} s` : `${Math.round(seconds / 60)} min`;
}

function onSaleState(o) {
  const q = o.queue;
  if (q.sold_out) return ["sold out", "down"];
  if (Date.parse(o.sale_at) > Date.now()) return ["queue open, sale not started", "degraded"];
  return [q.sealed ? "selling" : "starting", "up"];
}

/** Every on-sale (GET /onsales, from this node's region): its pace and its queue. */
function onSalesTable(data) {
  if (data.error) return el("p", { class: "empty" }, `Not available: ${data.error.message}`);
  const out = [];
  if (!data.onsales.length) out.push(el("p", { class: "empty" }, "No on-sales."));
  else {
    const head = ["On-sale", "Shows", "Home", "Sale at", "State", "Joined", "Admitted",
      "Waiting", "Admitting", "Wait of the last", "Waited p50 / p99", "Abandoned"];
    out.push(el("table", {}, el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, data.onsales.map((o) => {
        const q = o.queue;
        const [words, tone] = onSaleState(o);
        return el("tr", { "data-onsale": o.id },
          el("th", { scope: "row" }, o.id), el("td", {}, o.shows.join(", ")), el("td", {}, o.region),
          el("td", {}, when(o.sale_at)),
          el("td", {}, el("span", { class: `state ${tone}` }, words)),
          el("td", { "data-field": "joined" }, q.joined.toLocaleString("en-IN")),
          el("td", { "data-field": "admitted" }, q.admitted.toLocaleString("en-IN")),
          el("td", { "data-field": "waiting" }, q.waiting.toLocaleString("en-IN")),
          el("td", { "data-field": "rate" }, `${q.rate_per_s.toFixed(1)} /s`),
          el("td", { "data-field": "wait" }, q.waiting ? waitText(q.last_wait_s) : "–"),
          el("td", { "data-field": "waited" }, q.wait_p50_s === null || q.wait_p50_s === undefined
            ? "–" : `${waitText(q.wait_p50_s)} / ${waitText(q.wait_p99_s)}`),
          el("td", { "data-field": "abandoned", title: "admitted, shopping window over, no hold" },
            (q.abandoned ?? 0).toLocaleString("en-IN")));
      }))));
  }
  if (data.unavailable_regions?.length) {
    out.push(el("p", { class: "error-text" }, `Not answering now: ${data.unavailable_regions.join(", ")}`));
  }
  return el("div", {}, out);
}

function render(data) {
  $("epoch").textContent = String(data.epoch);
  $("probed-by").textContent = data.node;
  $("probed-at").textContent = istTime(data.at);
  $("regions").replaceChildren(...Object.entries(data.regions).map(([n, r]) => regionCard(n, r)));
  $("queues").replaceChildren(...queues(data.regions));
  $("failovers").replaceChildren(failovers(data.failovers));
  $("moves").replaceChildren(moves(data.moves));
  $("audit").replaceChildren(audit(data.audit));
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (token) signedIn({ token, user: userOf(token) });
});
$("dev-sign-in").addEventListener("click", async () => {
  try {
    signedIn(await api("POST", "/auth/dev-sign-in",
      { body: { user: "operator", roles: ["operator"] }, token: null }));
  } catch (error) {
    alertUser(error instanceof ApiError && error.code === "not_found"
      ? "This cluster has no development sign-in: paste a token from `bookcluster token --role operator` or your identity provider."
      : String(error.message || error));
  }
});
$("signout").addEventListener("click", () => signedIn(null));

/** Head counts per show (sold, admitted at the door, inside now), read at each show's home. */
$("heads-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const current = saved();
  const words = $("heads-query").value.split(/[\s,]+/).filter(Boolean);
  if (!current || !words.length) return;
  const query = words.map((w) => `${/^[0-9]+$/.test(w) ? "show" : "theatre"}=${encodeURIComponent(w)}`);
  try {
    const data = await api("GET", `/ops/headcounts?${query.join("&")}`, { token: current.token });
    $("heads").replaceChildren(
      el("thead", {}, el("tr", {}, ["Show", "Sold", "Admitted", "Inside now"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, data.shows.map((s) => el("tr", {},
        [s.show_id, s.sold, s.admitted, s.inside].map((v) => el("td", {}, String(v)))))));
    alertUser("");
  } catch (error) {
    alertUser(error instanceof ApiError ? error.message : String(error));
  }
});
signedIn(undefined);
