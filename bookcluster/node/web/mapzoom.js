// How big the seat map's seats are drawn. At first the widest row fits the map's width
// (on a 390 px phone the whole hall is in view, not seats 1-10 of each row), no bigger
// than a comfortable desktop size; "+" makes seats bigger and the map then pans
// sideways, its row letters staying at both edges (CSS: sticky). Every length of the
// map is a multiple of one CSS variable, --seat, set here (CSSOM: the page's policy
// allows no inline style attribute, and needs none for this).

const MEASURE_PX = 20;    // the seat size the map's natural width is measured at
const MIN_PX = 10;        // below this a row does not fit: the map pans instead
const DEFAULT_MAX_PX = 28;  // the most a fitting map starts at (a desktop's hall)
const MAX_PX = 44;        // the largest zoom: a thumb's target
const STEP = 1.4;

export class MapZoom {
  /**
   * scroller: the element that scrolls sideways; map: the rows (each with a
   * `.row-seats`); zoomIn, zoomOut: their buttons; words: where the map says how it
   * is shown (aria-live).
   */
  constructor(scroller, map, { zoomIn, zoomOut, words }) {
    Object.assign(this, { scroller, map, zoomIn, zoomOut, words });
    this.fit = DEFAULT_MAX_PX;
    this.size = DEFAULT_MAX_PX;
    this.zoomed = false;
    this.width = 0;
    zoomIn.addEventListener("click", () => this.zoom(STEP));
    zoomOut.addEventListener("click", () => this.zoom(1 / STEP));
    // A turned phone or a resized window: a map not zoomed by hand fits again.
    new ResizeObserver(() => {
      if (this.scroller.clientWidth !== this.width && !this.zoomed) this.refit();
    }).observe(scroller);
  }

  /** Another show: its map starts fitted. */
  reset() {
    this.zoomed = false;
    this.scroller.scrollLeft = 0;
  }

  /** The map was redrawn (a snapshot): fit it to the width again unless zoomed. */
  refit() {
    this.width = this.scroller.clientWidth;
    if (!this.width || !this.map.querySelector(".row-seats")) return;
    this.set(MEASURE_PX);
    // Every length scales with --seat: the natural width at `size` is linear in it.
    const natural = this.map.offsetWidth;  // max-content: its widest row
    const fit = Math.floor((MEASURE_PX * (this.width - 2)) / Math.max(natural, 1) * 10) / 10;
    this.fit = Math.max(MIN_PX, Math.min(DEFAULT_MAX_PX, fit));
    this.set(this.zoomed ? Math.max(this.size, this.fit) : this.fit);
  }

  zoom(factor) {
    const { scroller } = this;
    const middle = (scroller.scrollLeft + scroller.clientWidth / 2) / scroller.scrollWidth;
    const size = Math.max(this.fit, Math.min(MAX_PX, this.size * factor));
    this.zoomed = size > this.fit;
    this.set(size);
    scroller.scrollLeft = middle * scroller.scrollWidth - scroller.clientWidth / 2;
  }

  set(size) {
    this.size = size;
    this.map.style.setProperty("--seat", `${size}px`);
    this.zoomOut.disabled = size <= this.fit;
    this.zoomIn.disabled = size >= MAX_PX;
    const pans = this.map.offsetWidth > this.scroller.clientWidth + 1;
    this.scroller.dataset.pans = String(pans);
    const words = pans ? "Swipe sideways for more seats; − shows them all."
      : `Every seat in view${this.zoomIn.disabled ? "" : "; + for bigger seats"}.`;
    // A live region: said again only when it changes, not on every snapshot.
    if (this.words.textContent !== words) this.words.textContent = words;
  }
}
