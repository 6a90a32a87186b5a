// The booking page: city → theatre → show → seats → hold → pay → ticket, and
// "My bookings". Views follow the URL's hash (#/, #/theatre/ID, #/show/ID,
// #/booking/ID, #/bookings), so the back button and links work.

import {
  ApiError, api, el, istDate, istDay, istTime, newKey, rupees, seatList, session,
} from "./api.js";
import { LiveSeats } from "./live.js";
import { MapZoom } from "./mapzoom.js";
import {
  ADMISSION_HEADER, QueueWatch, admissionOf, dropAdmission, onSaleOf,
} from "./queue.js";
import { drawShows } from "./showlist.js";

const MAX_SEATS = 10;  // the topology's default cap; the node says so if it is lower
const CONFIRM_POLL_MS = 1000;
const TICKET_POLL_MS = 1000;
const CATEGORY_ORDER = ["CLASSIC", "PRIME", "RECLINER"];
const STATUS_WORDS = {
  AVAILABLE: "available", LOCKED: "taken", BOOKED: "taken", UNAVAILABLE: "not for sale",
};

// A payment that failed at the gateway cancels its booking (the region's saga).
const DECLINED = "The payment was declined, so your hold is released. Pick seats again to book.";

const $ = (id) => document.getElementById(id);
const VIEWS = ["view-theatres", "view-shows", "view-show", "view-hold", "view-booking",
  "view-bookings"];

const state = {
  theatres: null,           // from GET /theatres
  shows: new Map(),         // show id -> show detail (cached)
  live: null,               // LiveSeats of the open show
  show: null,               // the open show's detail
  seats: new Map(),         // seat id -> {seat, status, expiresAt}
  buttons: new Map(),       // seat id -> its button
  selection: new Set(),
  holdKey: null,            // Idempotency-Key of the current selection's hold
  holdUnclear: false,       // its last attempt's outcome is unknown: the seats may be ours
  bestKey: null,            // Idempotency-Key of the current best-available request
  bestAsk: "",              // that request's body (JSON): another body is another hold
  booking: null,            // the hold being paid for
  mine: new Set(),          // seats of that hold
  countdown: null,
  paying: null,             // timer of the confirm poll
  lapse: new Map(),         // seat id -> timer that frees a lapsed hold
  onsale: null,             // the on-sale the open show is under (GET /onsales), or null
  queue: null,              // QueueWatch of the open show's on-sale, while waiting
  window: null,             // timer of the shopping window's countdown
};

// -- messages -------------------------------------------------------------------

function alertUser(text) {
  const box = $("alert");
  box.textContent = text;
  box.hidden = !text;
}

function notify(text) { $("notice").textContent = text; }

function clearMessages() { alertUser(""); notify(""); }

function fail(error) {
  alertUser(error instanceof ApiError ? error.message : `Something went wrong: ${error}`);
  if (!(error instanceof ApiError)) console.error(error);
}

// -- sign-in ----------------------------------------------------------------------

function showAccount() {
  const signedIn = session.load();
  $("signin").hidden = Boolean(signedIn);
  $("account").hidden = !signedIn;
  $("account-user").textContent = signedIn ? signedIn.user : "";
}

async function signIn(event) {
  event.preventDefault();
  const user = $("signin-user").value.trim();
  try {
    session.save(await api("POST", "/auth/dev-sign-in", { body: { user }, token: null }));
    clearMessages();
    notify(`Signed in as ${user}.`);
  } catch (error) {
    if (error instanceof ApiError && error.code === "not_found") {
      alertUser("This cluster has no development sign-in: sign in through its identity provider.");
    } else {
      fail(error);
    }
  }
  showAccount();
}

function signOut() {
  session.clear();
  showAccount();
  notify("Signed out.");
}

function needSignIn() {
  if (session.load()) return false;
  alertUser("Please sign in first (your name, top right).");
  $("signin-user").focus();
  return true;
}

// -- views --------------------------------------------------------------------------

function show(...ids) {
  for (const id of VIEWS) $(id).hidden = !ids.includes(id);
  syncDock();
}

/** The bar at the bottom of a show: the pick bar, or the hold panel in its place. */
function syncDock() {
  $("selection").hidden = !$("view-hold").hidden;
}

async function route() {
  // #/booking/ID/payment/PAYMENT: back from the gateway's checkout.
  const [, kind, id, , paid] = location.hash.split("/");
  if (kind !== "show") closeLive();
  try {
    if (kind === "theatre" && id) await theatreView(decodeURIComponent(id));
    else if (kind === "show" && id) await showView(Number(id));
    else if (kind === "booking" && id) await bookingView(decodeURIComponent(id), paid);
    else if (kind === "bookings") await bookingsView();
    else await theatresView();
  } catch (error) {
    fail(error);
  }
}

async function theatresView() {
  show("view-theatres");
  document.title = "bookcluster — book a movie";
  if (state.theatres === null) state.theatres = (await api("GET", "/theatres")).theatres;
  const cities = [...new Set(state.theatres.map((t) => t.city))].sort();
  const select = $("city");
  if (!select.options.length) {
    select.replaceChildren(...cities.map((c) => el("option", { value: c }, c)));
    const saved = localStorage.getItem("bookcluster.city");
    if (saved && cities.includes(saved)) select.value = saved;
    select.addEventListener("change", () => {
      localStorage.setItem("bookcluster.city", select.value);
      listTheatres();
    });
  }
  listTheatres();
}

function listTheatres() {
  const city = $("city").value;
  const here = state.theatres.filter((t) => t.city === city)
    .sort((a, b) => a.name.localeCompare(b.name));
  $("theatres").replaceChildren(...here.map((t) => el("li", {},
    el("a", { href: `#/theatre/${encodeURIComponent(t.id)}`, class: "card" },
      el("strong", {}, t.name), el("span", { class: "muted" }, t.address)))));
}

async function theatreView(theatreId) {
  const data = await api("GET", `/theatres/${encodeURIComponent(theatreId)}/shows`);
  show("view-shows");
  document.title = `${data.theatre.name} — bookcluster`;
  $("h-shows").textContent = data.theatre.name;
  $("theatre-address").textContent = data.theatre.address;
  drawShows($("shows"), data.shows);
}

// -- the seat map ----------------------------------------------------------------

async function showDetail(showId) {
  if (!state.shows.has(showId)) state.shows.set(showId, await api("GET", `/shows/${showId}`));
  return state.shows.get(showId);
}

async function showView(showId) {
  const detail = await showDetail(showId);
  const holding = state.booking?.show_id === showId ? ["view-hold"] : [];
  if (state.show?.id === showId && (state.live || state.queue)) {
    show("view-show", ...holding);
    return;
  }
  closeLive();
  state.show = detail;
  state.selection.clear();
  state.holdKey = null;
  state.bestKey = null;
  $("best-category").replaceChildren(el("option", { value: "" }, "any category"));
  show("view-show", ...holding);
  document.title = `${detail.movie.title}, ${istTime(detail.starts_at)} — bookcluster`;
  $("h-show").textContent = `${detail.movie.title} (${detail.movie.language}, ${detail.movie.certificate})`;
  $("show-when").textContent = `${istDate(detail.starts_at)}, ${istTime(detail.starts_at)} · `
    + `${detail.theatre.name}, ${detail.screen.name}`;
  $("back-to-shows").href = `#/theatre/${encodeURIComponent(detail.theatre.id)}`;
  $("seatmap").replaceChildren();
  $("queue").hidden = true;
  $("window").hidden = true;
  // A list that does not answer is no reason to refuse the map: a hold under an
  // on-sale answers 403 admission_required, which opens the queue then.
  state.onsale = await onSaleOf(showId).catch(() => null);
  if (state.show !== detail) return;  // navigated away meanwhile
  if (state.onsale && !admission()) enterQueue(state.onsale);
  else openSeatMap();
}

/** The live seat map of the open show (and the shopping window's timer, if admitted). */
function openSeatMap() {
  $("queue").hidden = true;
  $("shop").hidden = false;
  zoom.reset();
  setLiveState("connecting");
  state.live = new LiveSeats(state.show.id, {
    onSnapshot: drawMap, onDelta: applyDelta, onState: setLiveState,
  });
  updateSelection();
  startWindow();
}

function closeSeatMap() {
  state.live?.close();
  state.live = null;
  for (const timer of state.lapse.values()) clearTimeout(timer);
  state.lapse.clear();
}

function closeLive() {
  closeSeatMap();
  state.show = null;
  state.onsale = null;
  state.queue?.stop();
  state.queue = null;
  clearInterval(state.window);
  state.window = null;
}

// -- the on-sale's queue ------------------------------------------------------------

/** The signed-in user's pass for the open show's on-sale, while its window lasts. */
function admission() {
  const user = session.load()?.user;
  return state.onsale && user ? admissionOf(user, state.onsale.id) : null;
}

/** Headers of a hold: the admission pass when the show is under an on-sale. */
function admissionHeaders() {
  const admitted = admission();
  return admitted ? { [ADMISSION_HEADER]: admitted.pass } : {};
}

const at = (iso) => `${istDate(iso)}, ${istTime(iso)}`;

function waitWords(seconds) {
  if (seconds === null || seconds === undefined) return "paused";
  if (seconds < 60) return "less than a minute";
  const minutes = Math.round(seconds / 60);
  return minutes < 90 ? `about ${minutes} min` : `about ${Math.round(minutes / 60)} h`;
}

/** Instead of the seat map: the queue, joined or not. */
function enterQueue(onsale) {
  closeSeatMap();
  state.onsale = onsale;
  // Nothing was held: a pick made before is dropped, and the next hold is a new request.
  state.selection.clear();
  state.holdKey = null;
  state.bestKey = null;
  $("shop").hidden = true;
  $("window").hidden = true;
  const panel = $("queue");
  panel.hidden = false;
  panel.dataset.state = "none";
  $("queue-intro").textContent = onsale.sale_at
    ? `The sale starts ${at(onsale.sale_at)}. Everyone who joins before then gets a `
      + "random place when it starts, so there is no need to hurry. When it is your turn, "
      + `you get ${Math.round(onsale.window_s / 60)} minutes to pick and hold up to `
      + `${onsale.max_party} seats.`
    : "Join the queue: when it is your turn, the seat map opens.";
  $("queue-join").hidden = false;
  $("queue-join").disabled = false;
  $("queue-status").hidden = true;
  state.queue?.stop();
  state.queue = null;
  const user = session.load()?.user;
  if (user) {
    state.queue = watchQueue(onsale, user);
    if (state.queue.joined) {
      $("queue-join").hidden = true;
      $("queue-status").hidden = false;
      state.queue.resume();
    }
  }
}

function watchQueue(onsale, user) {
  return new QueueWatch(onsale, user, {
    onPosition: showPosition,
    onError: (error) => {
      if (error instanceof ApiError && error.code === "ticket_invalid") {
        enterQueue(onsale);  // the button again: a new join
      }
      fail(error);
    },
  });
}

async function joinQueue() {
  if (needSignIn() || !state.onsale) return;
  const user = session.load().user;
  if (!state.queue || state.queue.user !== user) {
    state.queue?.stop();
    state.queue = watchQueue(state.onsale, user);
  }
  $("queue-join").disabled = true;
  try {
    await state.queue.join();
    clearMessages();
    $("queue-join").hidden = true;
    $("queue-status").hidden = false;
  } catch (error) {
    $("queue-join").disabled = false;
    if (error instanceof ApiError && error.code === "onsale_not_open" && state.onsale.opens_at) {
      alertUser(`The queue opens ${at(state.onsale.opens_at)}. Come back then.`);
    } else {
      fail(error);
    }
  }
}

function showPosition(answer) {
  const panel = $("queue");
  panel.dataset.state = answer.state;
  alertUser("");
  const figures = (place, ahead, wait) => {
    $("queue-place").textContent = place;
    $("queue-ahead").textContent = ahead;
    $("queue-wait").textContent = wait;
  };
  if (answer.state === "admitted") {
    state.queue?.stop();
    state.queue = null;
    openSeatMap();
    notify("It's your turn! Pick your seats and hold them before your shopping window ends.");
    return;
  }
  if (answer.state === "expired") {
    state.queue?.stop();
    $("queue-words").textContent = "Your turn came and your shopping window has ended. "
      + "Your place in this queue is used.";
    figures("–", "–", "–");
    return;
  }
  if (answer.state === "sold_out") {
    $("queue-words").textContent = "Sold out: every seat is sold or held. If held seats are "
      + "released, the queue moves again and this page tells you.";
    figures(answer.place ?? "–", answer.ahead ?? "–", "–");
    return;
  }
  if (answer.place === null) {
    $("queue-words").textContent = `You're in the queue. Places are drawn when the sale `
      + `starts (${istTime(answer.sale_at)}): early or late before then, every place is `
      + "equally likely.";
    figures("drawn at the start", "–", waitWords(answer.estimated_wait_s));
    $("queue-progress").value = 0;
    return;
  }
  $("queue-words").textContent = answer.ahead === 0
    ? "You're next: the seat map opens in a moment."
    : `You're in the queue: ${answer.ahead.toLocaleString("en-IN")} `
      + `${answer.ahead === 1 ? "person is" : "people are"} ahead of you.`;
  figures(answer.place.toLocaleString("en-IN"), answer.ahead.toLocaleString("en-IN"),
    waitWords(answer.estimated_wait_s));
  // How much of the queue up to you has had its turn.
  $("queue-progress").value = answer.place > 0 ? (answer.place - answer.ahead) / answer.place : 0;
}

/** The shopping window's countdown, while the page holds a pass for the open show. */
function startWindow() {
  clearInterval(state.window);
  state.window = null;
  const admitted = admission();
  $("window").hidden = !admitted;
  if (!admitted) return;
  $("window-words").textContent = "Your shopping window ends in";
  const tickWindow = () => {
    const left = Math.max(0, admitted.windowEndsAt - Date.now());
    const s = Math.ceil(left / 1000);
    $("window-timer").textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    $("window").classList.toggle("ending", left < 60000);
    if (left === 0) {
      clearInterval(state.window);
      state.window = null;
      $("window-words").textContent = "Your shopping window has ended";
    }
  };
  tickWindow();
  state.window = setInterval(tickWindow, 250);
}

/** A hold refused for its admission (403 admission_*): true if handled here. */
async function admissionRefused(error) {
  if (!(error instanceof ApiError) || error.status !== 403
      || !String(error.code).startsWith("admission_")) return false;
  const user = session.load()?.user;
  const onsaleId = error.body.onsale;
  if (error.code === "admission_required" && state.show) {
    const listed = await onSaleOf(state.show.id, true).catch(() => null);
    // Not in this region's list yet (opened a moment ago): its id and home suffice.
    enterQueue(listed?.id === onsaleId ? listed
      : { id: onsaleId, region: state.show.region, shows: [state.show.id] });
    alertUser(error.message);
    return true;
  }
  if (error.code === "admission_expired" && user && onsaleId) dropAdmission(user, onsaleId);
  state.holdKey = null;  // refused before anything was held: a new request next time
  state.bestKey = null;
  fail(error);
  return true;
}

function setLiveState(live) {
  const node = $("live-state");
  node.dataset.state = live;
  node.textContent = { connecting: "connecting…", live: "live", resyncing: "catching up…",
    reconnecting: "reconnecting…" }[live];
}

/** Where a seat sits across its row: the map's `position` (a gap between two seats'
 * positions is an aisle, the same aisles best available keeps blocks from crossing). */
function positionOf(seat) {
  return seat.position ?? seat.number;
}

function categoryClass(category) {
  const known = CATEGORY_ORDER.indexOf(category);
  return `cat-${known >= 0 ? category.toLowerCase() : "other"}`;
}

function drawMap(map) {
  const previous = state.seats;
  state.seats = new Map();
  state.buttons = new Map();
  const rows = new Map();
  for (const seat of map.seats) {
    if (!rows.has(seat.row)) rows.set(seat.row, []);
    rows.get(seat.row).push(seat);
    state.seats.set(seat.seat_id, { seat, status: seat.status, expiresAt: null });
  }
  const prices = new Map();
  const lines = [];
  let category = null;
  for (const [row, seats] of rows) {
    seats.sort((a, b) => positionOf(a) - positionOf(b));
    if (seats[0].category !== category) {
      category = seats[0].category;
      prices.set(category, seats[0].price_paise);
      lines.push(el("div", { class: "category-line" }, `${category} · ${rupees(seats[0].price_paise)}`));
    }
    const cells = [];
    seats.forEach((seat, i) => {
      if (i > 0 && positionOf(seat) > positionOf(seats[i - 1]) + 1) {
        cells.push(el("span", { class: "aisle", "aria-hidden": "true" }));
      }
      const button = el("button", {
        type: "button", class: `seat ${categoryClass(seat.category)}${seat.accessible ? " accessible" : ""}`,
        "data-seat": seat.seat_id, onclick: () => pickSeat(seat.seat_id),
      }, seat.accessible ? `♿${seat.number}` : String(seat.number));
      state.buttons.set(seat.seat_id, button);
      cells.push(button);
    });
    // The letters stay at both edges of the map while it pans (sticky).
    lines.push(el("div", { class: "row", role: "group", "aria-label": `Row ${row}` },
      el("span", { class: "row-label", "aria-hidden": "true" }, row),
      el("span", { class: "row-seats" }, ...cells),
      el("span", { class: "row-label end", "aria-hidden": "true" }, row)));
  }
  $("seatmap").replaceChildren(...lines);
  zoom.refit();
  drawLegend(prices);
  fillBestCategories(prices);
  for (const timer of state.lapse.values()) clearTimeout(timer);
  state.lapse.clear();
  for (const [id, entry] of state.seats) {
    // A snapshot has no hold ends: keep the one a delta told us for a hold still shown.
    const known = previous.get(id);
    setSeat(id, entry.status, known?.status === "LOCKED" ? known.expiresAt : null);
  }
  dropTakenFromSelection();
}

function drawLegend(prices) {
  const order = [...prices.keys()].sort((a, b) => CATEGORY_ORDER.indexOf(a) - CATEGORY_ORDER.indexOf(b));
  $("legend").replaceChildren(
    ...order.map((c) => el("li", {}, el("span", { class: `swatch seat ${categoryClass(c)}` }),
      `${c} ${rupees(prices.get(c))}`)),
    el("li", {}, el("span", { class: "swatch seat selected" }), "Selected"),
    el("li", {}, el("span", { class: "swatch seat mine" }), "Held by you"),
    el("li", {}, el("span", { class: "swatch seat taken" }), "Taken"),
    el("li", {}, el("span", { class: "swatch seat unavailable" }), "Not for sale"),
  );
}

/** The best-available form's categories: the show's own, cheapest first as on the map;
 * a choice made survives a new snapshot. */
function fillBestCategories(prices) {
  const select = $("best-category");
  const chosen = select.value;
  const order = [...prices.keys()].sort((a, b) => prices.get(a) - prices.get(b));
  select.replaceChildren(el("option", { value: "" }, "any category"),
    ...order.map((c) => el("option", { value: c }, `${c} ${rupees(prices.get(c))}`)));
  select.value = order.includes(chosen) ? chosen : "";
}

function paintSeat(id) {
  const entry = state.seats.get(id);
  const button = state.buttons.get(id);
  if (!entry || !button) return;
  const { seat, status } = entry;
  const mine = state.mine.has(id) && status !== "AVAILABLE";
  const selected = state.selection.has(id);
  const free = status === "AVAILABLE";
  button.classList.toggle("taken", !free && !mine && status !== "UNAVAILABLE");
  button.classList.toggle("unavailable", status === "UNAVAILABLE");
  button.classList.toggle("mine", mine);
  button.classList.toggle("selected", selected);
  button.dataset.status = mine ? "MINE" : status;
  // Taken seats stay focusable (aria-disabled, not disabled), so a keyboard or
  // screen-reader user hears why they cannot be picked.
  button.setAttribute("aria-disabled", free ? "false" : "true");
  button.setAttribute("aria-pressed", selected ? "true" : "false");
  const words = mine ? "held by you" : selected ? "selected" : STATUS_WORDS[status] || status;
  const space = seat.accessible ? ", wheelchair space" : "";
  button.setAttribute("aria-label",
    `Row ${seat.row} seat ${seat.number}${space}, ${seat.category}, ${rupees(seat.price_paise)}, ${words}`);
  button.title = `${seat.seat_id}${space ? " · wheelchair space" : ""} · ${seat.category} · ${rupees(seat.price_paise)} · ${words}`;
}

/** A seat's new status; a hold with a known end frees the seat when it lapses, as
 * the node's own seat map shows it, without waiting for the sweeper's message. */
function setSeat(id, status, expiresAt = null) {
  const entry = state.seats.get(id);
  if (!entry) return;
  entry.status = status;
  entry.expiresAt = status === "LOCKED" ? expiresAt : null;
  clearTimeout(state.lapse.get(id));
  state.lapse.delete(id);
  if (entry.expiresAt) {
    state.lapse.set(id, setTimeout(() => {
      state.lapse.delete(id);
      if (entry.status === "LOCKED" && entry.expiresAt === expiresAt) setSeat(id, "AVAILABLE");
    }, Math.max(0, expiresAt - Date.now()) + 50));
  }
  paintSeat(id);
}

function applyDelta(delta) {
  for (const id of delta.seats) setSeat(id, delta.status, delta.expires_at ?? null);
  dropTakenFromSelection();
}

function dropTakenFromSelection() {
  // After a hold whose outcome is unknown, the seats seen taken may be held by it: they
  // stay picked, and the retry (same Idempotency-Key) says whether they are ours.
  if (state.holdUnclear) return;
  const lost = [...state.selection].filter((id) => state.seats.get(id)?.status !== "AVAILABLE");
  if (!lost.length) return;
  for (const id of lost) {
    state.selection.delete(id);
    paintSeat(id);
  }
  state.holdKey = null;
  alertUser(lost.length === 1
    ? `Seat ${lost[0]} was just taken by someone else. Please pick another seat.`
    : `Seats ${seatList(lost)} were just taken by someone else. Please pick other seats.`);
  updateSelection();
}

function pickSeat(id) {
  const entry = state.seats.get(id);
  if (!entry) return;
  if (state.mine.has(id) && entry.status !== "AVAILABLE") {
    notify(`Seat ${id} is already held for you.`);
    return;
  }
  if (holdingHere()) return;
  if (entry.status === "UNAVAILABLE") {
    alertUser(`Seat ${id} is not for sale. Please pick another seat.`);
    return;
  }
  if (entry.status !== "AVAILABLE") {
    alertUser(`Seat ${id} is already taken. Please pick another seat.`);
    return;
  }
  if (state.selection.has(id)) {
    state.selection.delete(id);
  } else if (state.selection.size >= MAX_SEATS) {
    alertUser(`You can pick at most ${MAX_SEATS} seats at a time.`);
    return;
  } else {
    state.selection.add(id);
  }
  alertUser("");
  state.holdKey = null;  // another selection is another hold
  state.holdUnclear = false;
  paintSeat(id);
  updateSelection();
}

function updateSelection() {
  const picked = [...state.selection];
  const total = picked.reduce((sum, id) => sum + state.seats.get(id).seat.price_paise, 0);
  $("selection-text").textContent = picked.length
    ? `${picked.length} seat${picked.length > 1 ? "s" : ""}: ${seatList(picked)} · ${rupees(total)}`
    : "Pick your seats.";
  $("hold").disabled = picked.length === 0;
  $("hold").textContent = picked.length ? `Hold ${picked.length} seat${picked.length > 1 ? "s" : ""}` : "Hold seats";
}

// -- hold, pay, confirm ---------------------------------------------------------

async function holdSeats() {
  if (needSignIn() || !state.show || !state.selection.size) return;
  const seats = [...state.selection];
  // One key per selection: a retry after an unclear failure gets the same hold back.
  state.holdKey ??= newKey("hold");
  $("hold").disabled = true;
  try {
    const booking = await api("POST", `/booking/seats/${state.show.id}/lock`,
      { body: { seat_ids: seats }, key: state.holdKey, home: state.show.region,
        headers: admissionHeaders() });
    state.holdKey = null;
    holdMade(booking);
    notify(`Held ${seatList(booking.seat_ids)} for you.`);
    const orphaned = Array.isArray(booking.orphaned) ? booking.orphaned : [];
    if (orphaned.length) {  // the screen warns (and does not refuse) single seats left over
      $("hold-warning").textContent = orphaned.length === 1
        ? `Your seats leave seat ${orphaned[0]} on its own, where nobody is likely to `
          + "buy it. You can release them and pick again."
        : `Your seats leave seats ${seatList(orphaned)} each on its own, where nobody is `
          + "likely to buy them. You can release them and pick again.";
      $("hold-warning").hidden = false;
    }
  } catch (error) {
    state.holdUnclear = error instanceof ApiError && error.body.outcome === "unknown";
    if (error instanceof ApiError && error.status === 403 && await admissionRefused(error)) {
      updateSelection();
      return;
    }
    fail(error);
    if (error instanceof ApiError && error.code === "seats_unavailable") {
      for (const id of error.body.seats || []) {
        state.selection.delete(id);
        if (state.seats.get(id)?.status === "AVAILABLE") setSeat(id, "LOCKED");
        paintSeat(id);
      }
      state.holdKey = null;
    }
    updateSelection();
  }
}

/** A hold answered 201, picked or best available: the selection is done with, the
 * seats are ours (painted held at once, before the feed says so), and paying starts. */
function holdMade(booking) {
  const picked = [...state.selection];
  state.selection.clear();
  for (const id of picked) paintSeat(id);  // a best-available hold may not be the pick
  state.holdUnclear = false;
  clearMessages();
  startHold(booking);
  for (const id of booking.seat_ids) setSeat(id, "LOCKED", Date.parse(booking.expires_at));
  updateSelection();
}

function fillBestCounts() {
  const select = $("best-count");
  if (select.options.length) return;
  for (let n = 1; n <= MAX_SEATS; n += 1) select.append(el("option", { value: n }, String(n)));
  select.value = "2";
}

/** Best available: the home master chooses the best free block of the wanted size and
 * holds it in one step, so a rush never collides on the same favourite seats. One
 * Idempotency-Key per request body: a retry after an unclear failure (503 unknown)
 * gets the same hold back, never a second one. */
async function holdBest(event) {
  event.preventDefault();
  if (needSignIn() || !state.show || holdingHere()) return;
  const count = Number($("best-count").value);
  const category = $("best-category").value;
  const body = { count };
  if (category) body.category = category;
  if ($("best-split").checked) body.allow_split = true;
  if ($("best-accessible").checked) body.accessible = true;
  const ask = JSON.stringify(body);
  if (ask !== state.bestAsk) state.bestKey = null;  // another request is another hold
  state.bestAsk = ask;
  state.bestKey ??= newKey("best");
  $("best-hold").disabled = true;
  try {
    const booking = await api("POST", `/booking/seats/${state.show.id}/best`,
      { body, key: state.bestKey, home: state.show.region, headers: admissionHeaders() });
    state.bestKey = null;
    holdMade(booking);
    notify(`Held the best ${booking.seat_ids.length === 1 ? "seat" : "seats"} for you: `
      + `${seatList(booking.seat_ids)}.`);
  } catch (error) {
    state.holdUnclear = error instanceof ApiError && error.body.outcome === "unknown";
    if (error instanceof ApiError && error.code === "no_block_available") {
      state.bestKey = null;  // nothing was held: the next try is a new request
      const what = count === 1 ? "No seat is"
        : `No ${count} seats ${body.allow_split ? "are" : "side by side are"}`;
      const where = `${body.accessible ? " among the wheelchair spaces" : ""}`
        + `${category ? ` in ${category}` : ""}`;
      const longest = Number(error.body.longest_free_run) || 0;
      const most = count > 1 && !body.allow_split && longest > 1 && longest < count
        ? ` (at most ${longest} together)` : "";
      alertUser(`${what} free${where} any more${most}. `
        + (count > 1 && !body.allow_split ? "Try fewer seats, another category, "
          + "\"apart is fine\", or pick seats on the map." : "Try another category or show."));
    } else if (!(error instanceof ApiError && error.status === 403
                 && await admissionRefused(error))) {
      fail(error);
    }
  } finally {
    $("best-hold").disabled = false;
  }
}

/** While a hold of the open show is being paid for, the panel at the bottom is the
 * hold's: true (and the person told) if so; a hold that ended gives its place back to
 * the pick bar. */
function holdingHere() {
  if (state.booking && state.booking.show_id === state.show?.id) {
    alertUser(`Seats ${seatList(state.booking.seat_ids)} are held for you: pay for them, `
      + "or release them to pick others.");
    return true;
  }
  $("view-hold").hidden = true;
  syncDock();
  return false;
}

function startHold(booking) {
  state.booking = booking;
  state.mine = new Set(booking.seat_ids);
  $("h-hold").textContent = "Your seats are held";
  // No booking id: it means nothing to a person (the ticket carries the reference).
  $("hold-summary").textContent = `${booking.seat_ids.length === 1 ? "Seat" : "Seats"} `
    + `${seatList(booking.seat_ids)} · ${rupees(booking.amount_paise)}`;
  $("pay").textContent = `Pay ${rupees(booking.amount_paise)}`;
  $("hold-warning").hidden = true;
  for (const id of ["pay", "extend", "cancel"]) $(id).disabled = false;
  $("checkout").hidden = true;
  $("view-hold").hidden = false;
  syncDock();
  // The pick bar that had the focus is gone: the next step has it.
  if (!$("view-show").hidden) $("pay").focus({ preventScroll: true });
  tick();
  clearInterval(state.countdown);
  state.countdown = setInterval(tick, 250);
}

function tick() {
  const booking = state.booking;
  if (!booking) return;
  const left = Math.max(0, Date.parse(booking.expires_at) - Date.now());
  const s = Math.ceil(left / 1000);
  $("countdown").textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  if (left === 0 && !state.paying) holdExpired();
}

function holdExpired() {
  endHold();
  $("h-hold").textContent = "Your hold has expired";
  alertUser("Your hold has expired and the seats were released. Pick seats again to book.");
}

function endHold() {
  clearInterval(state.countdown);
  state.countdown = null;
  stopPaying();
  const seats = [...state.mine];
  state.booking = null;
  state.mine = new Set();
  for (const id of seats) paintSeat(id);
  for (const id of ["pay", "extend", "cancel"]) $(id).disabled = true;
  $("countdown").textContent = "0:00";
}

async function extendHold() {
  const booking = state.booking;
  if (!booking) return;
  try {
    const extended = await api("POST", `/booking/booking/${booking.booking_id}/extend`,
      { home: booking.region });
    booking.expires_at = extended.expires_at;
    notify(`Held until ${istTime(extended.expires_at)}.`);
    tick();
  } catch (error) {
    fail(error);
    if (error instanceof ApiError && ["hold_expired", "booking_not_pending"].includes(error.code)) endHold();
  }
}

async function releaseHold() {
  const booking = state.booking;
  if (!booking) return;
  try {
    await api("POST", `/booking/booking/${booking.booking_id}/cancel`,
      { home: booking.region });
    endHold();
    $("view-hold").hidden = true;
    syncDock();
    notify("Seats released.");
  } catch (error) {
    fail(error);
  }
}

/** Pay as a shop does: a payment intent whose checkout is the gateway's page; the
 * gateway sends the customer back to this booking (the payment's id in the URL), where
 * the page confirms with it. Nothing here marks anything paid: the gateway captures,
 * and the node checks the capture with the gateway. */
async function pay() {
  const booking = state.booking;
  if (!booking) return;
  $("pay").disabled = true;
  const back = `${location.origin}/#/booking/${booking.booking_id}/payment/{PAYMENT_ID}`;
  try {
    const intent = await api("POST", `/booking/booking/${booking.booking_id}/pay`,
      { body: { return_url: back }, home: booking.region });
    alertUser("");
    if (intent.status === "CAPTURED") {  // paid already (a retry): confirm it
      awaitPayment(booking, intent.payment_id);
      return;
    }
    notify(`Taking you to the payment page for ${rupees(intent.amount_paise)}…`);
    location.assign(intent.checkout_url);
  } catch (error) {
    $("pay").disabled = false;
    fail(error);
  }
}

function awaitPayment(booking, paymentId) {
  $("pay").disabled = true;
  $("payment-state").textContent = "Confirming your payment…";
  $("checkout").hidden = false;
  waitForPayment(booking, paymentId);
}

/** Confirm with the payment until the gateway has captured it (402 until then).
 * One Idempotency-Key for every attempt: a retry after an unclear failure gets
 * the first answer, never a second sale. */
function waitForPayment(booking, paymentId) {
  stopPaying();
  const key = `confirm-${paymentId}`;
  const attempt = async () => {
    try {
      const confirmed = await api("POST", `/booking/booking/${booking.booking_id}/confirm`,
        { body: { payment_id: paymentId }, key, home: booking.region });
      stopPaying();
      endHold();
      location.hash = `#/booking/${confirmed.booking_id}`;
      return;
    } catch (error) {
      if (error instanceof ApiError && error.code === "payment_required"
          && error.body.payment_status === "FAILED") {
        // Declined at the checkout: the gateway's webhook makes the region cancel the
        // booking and free its seats; paying is over for this hold.
        stopPaying();
        endHold();
        $("h-hold").textContent = "Not booked";
        $("checkout").hidden = true;
        alertUser(DECLINED);
        return;
      } else if (error instanceof ApiError && error.code === "payment_required") {
        $("payment-state").textContent = "Waiting for the payment…";
      } else if (error instanceof ApiError && error.status === 409) {
        stopPaying();
        endHold();
        $("h-hold").textContent = "Not booked";
        alertUser(error.code === "booking_not_pending" && error.body.status === "CANCELLED"
          ? "The payment did not go through, so the hold was released."
          : error.message);
        return;
      } else {
        $("payment-state").textContent = `${error.message} Still trying…`;
      }
    }
    if (state.paying !== null) state.paying = setTimeout(attempt, CONFIRM_POLL_MS);
  };
  state.paying = setTimeout(attempt, 0);
}

function stopPaying() {
  clearTimeout(state.paying);
  state.paying = null;
}

// -- a booking, and my bookings --------------------------------------------------

async function bookingView(bookingId, paymentId) {
  if (needSignIn()) return;
  const booking = await api("GET", `/booking/booking/${encodeURIComponent(bookingId)}`);
  const detail = await showDetail(booking.show_id);
  if (booking.status === "INITIATED") {
    location.hash = `#/show/${booking.show_id}`;
    startHold(booking);
    if (paymentId) awaitPayment(booking, decodeURIComponent(paymentId));
    return;
  }
  show("view-booking");
  if (paymentId) {  // back from the checkout: the booking's own address from here on
    history.replaceState(null, "", `#/booking/${booking.booking_id}`);
    if (booking.status === "CANCELLED") alertUser(DECLINED);
  }
  $("h-booking").textContent = booking.status === "CONFIRMED" ? "You're booked!" : `Booking ${booking.status.toLowerCase()}`;
  document.title = `${$("h-booking").textContent} — bookcluster`;
  const rows = [
    ["Movie", `${detail.movie.title} (${detail.movie.language}, ${detail.movie.certificate})`],
    ["When", `${istDate(detail.starts_at)}, ${istTime(detail.starts_at)}`],
    ["Where", `${detail.theatre.name}, ${detail.screen.name} — ${detail.theatre.address}`],
    ["Seats", seatList(booking.seat_ids)],
    ["Amount", rupees(booking.amount_paise)],
    ["Status", booking.status],
  ];
  $("booking-details").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  $("ticket").hidden = true;
  $("ticket-wait").hidden = booking.status !== "CONFIRMED";
  if (booking.status === "CONFIRMED") {
    loadTicket(booking.booking_id, `ticket-${istDay(detail.starts_at)}-${booking.seat_ids.join("-")}.png`);
  }
}

async function loadTicket(bookingId, ticketName) {
  while (location.hash === `#/booking/${bookingId}`) {
    try {
      const png = await api("GET", `/booking/booking/${bookingId}/ticket`);
      const url = URL.createObjectURL(png);
      $("ticket-img").src = url;
      $("ticket-link").href = url;
      $("ticket-link").download = ticketName;
      $("ticket").hidden = false;
      $("ticket-wait").hidden = true;
      return;
    } catch (error) {
      if (!(error instanceof ApiError) || error.code !== "ticket_not_ready") {
        fail(error);
        return;
      }
    }
    await new Promise((resolve) => { setTimeout(resolve, TICKET_POLL_MS); });
  }
}

async function bookingsView() {
  if (needSignIn()) return;
  show("view-bookings");
  document.title = "My bookings — bookcluster";
  const data = await api("GET", "/me/bookings");
  const note = $("bookings-note");
  note.hidden = !data.unavailable_regions.length;
  note.textContent = `Bookings in ${seatList(data.unavailable_regions)} could not be listed right now.`;
  const items = await Promise.all(data.bookings.map(async (b) => {
    const detail = await showDetail(b.show_id).catch(() => null);
    const title = detail ? `${detail.movie.title} · ${istDate(detail.starts_at)}, ${istTime(detail.starts_at)}`
      : "A show (its details could not be loaded)";
    return el("li", {}, el("a", { href: `#/booking/${encodeURIComponent(b.booking_id)}`, class: "card" },
      el("strong", {}, title),
      el("span", {}, `${seatList(b.seat_ids)} · ${rupees(b.amount_paise)}`),
      el("span", { class: `badge status-${b.status.toLowerCase()}` }, b.status)));
  }));
  $("bookings").replaceChildren(...(items.length ? items : [el("li", {}, "No bookings yet.")]));
}

// -- start ---------------------------------------------------------------------------

const zoom = new MapZoom($("map-scroll"), $("seatmap"),
  { zoomIn: $("zoom-in"), zoomOut: $("zoom-out"), words: $("map-words") });

$("signin").addEventListener("submit", signIn);
$("signout").addEventListener("click", signOut);
$("hold").addEventListener("click", holdSeats);
$("best").addEventListener("submit", holdBest);
$("queue-join").addEventListener("click", joinQueue);
fillBestCounts();
$("pay").addEventListener("click", pay);
$("extend").addEventListener("click", extendHold);
$("cancel").addEventListener("click", releaseHold);
window.addEventListener("signed-out", () => {
  showAccount();
  alertUser("Your sign-in has ended. Please sign in again.");
});
window.addEventListener("hashchange", () => { alertUser(""); route(); });
showAccount();
route();
