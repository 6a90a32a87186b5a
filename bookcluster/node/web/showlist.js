// A theatre's shows as a phone reads them: one day at a time (a row of day buttons),
// under each movie its start times as small links, each with its screen and how many
// seats are left. A theatre runs up to 48 shows over three days: as one card each they
// were a 7,000 px column on a phone. Dates and times are the theatre's (IST).

import { el, istDate, istDay, istTime } from "./api.js";

let chosenDay = null;  // the day last looked at, kept while it still has shows

/** Shows by day (IST), then by movie in order of its first start time:
 * [{day, shows, movies: [{movie, shows}]}], days in order, shows by start time. */
export function groupShows(shows) {
  const days = new Map();
  for (const s of [...shows].sort((a, b) => a.starts_at.localeCompare(b.starts_at))) {
    const day = istDay(s.starts_at);
    if (!days.has(day)) days.set(day, { day, shows: [], movies: new Map() });
    const group = days.get(day);
    group.shows.push(s);
    if (!group.movies.has(s.movie.id)) group.movies.set(s.movie.id, { movie: s.movie, shows: [] });
    group.movies.get(s.movie.id).shows.push(s);
  }
  return [...days.values()].map((d) => ({ ...d, movies: [...d.movies.values()] }));
}

function left(availability) {
  if (!availability) return { words: "availability unknown", kind: "unknown" };
  if (availability.sold_out) return { words: "Sold out", kind: "sold-out" };
  const seats = `${availability.seats_left} left`;
  return availability.filling_fast
    ? { words: `Filling fast · ${seats}`, kind: "fast" } : { words: seats, kind: "open" };
}

function showLink(s) {
  const { words, kind } = left(s.availability);
  const seats = s.availability && !s.availability.sold_out
    ? `${s.availability.seats_left} of ${s.availability.seats_total} seats left` : words;
  return el("li", {}, el("a", {
    href: `#/show/${s.id}`, class: `show-card ${kind}`, "data-show": s.id,
    "aria-disabled": s.availability?.sold_out ? "true" : null,
    "aria-label": `${istTime(s.starts_at)}, ${s.screen.name}, ${s.movie.title}: ${seats}`,
  },
  el("strong", {}, istTime(s.starts_at).replace(/ IST$/, "")),
  el("span", { class: "muted" }, s.screen.name),
  el("span", { class: `badge ${kind}` }, words)));
}

function movieGroup({ movie, shows }) {
  return el("article", { class: "movie" },
    el("h3", {}, movie.title),
    el("p", { class: "muted" },
      `${movie.language} · ${movie.certificate} · ${movie.duration_min} min`),
    el("ul", { class: "times" }, shows.map(showLink)));
}

/** Draws `shows` into `container`: the day buttons, then the chosen day's movies. */
export function drawShows(container, shows) {
  const days = groupShows(shows);
  if (!days.length) {
    container.replaceChildren(el("p", {}, "No shows."));
    return;
  }
  if (!days.some((d) => d.day === chosenDay)) chosenDay = days[0].day;
  const panels = days.map((d) => el("section", {
    class: "day", id: `day-${d.day}`, "data-day": d.day, hidden: d.day !== chosenDay,
    "aria-label": istDate(d.shows[0].starts_at),
  },
  el("h2", {}, `${istDate(d.shows[0].starts_at)}`,
    el("span", { class: "muted" }, ` · ${d.shows.length} shows · times in IST`)),
  d.movies.map(movieGroup)));
  const buttons = days.map((d) => el("button", {
    type: "button", class: "day-button", "data-day": d.day, "aria-controls": `day-${d.day}`,
    "aria-pressed": d.day === chosenDay ? "true" : "false",
    onclick: () => {
      chosenDay = d.day;
      for (const b of buttons) b.setAttribute("aria-pressed", String(b.dataset.day === d.day));
      for (const p of panels) p.hidden = p.dataset.day !== d.day;
    },
  }, istDate(d.shows[0].starts_at)));
  container.replaceChildren(
    el("nav", { class: "days", "aria-label": "Days" }, buttons), ...panels);
}
