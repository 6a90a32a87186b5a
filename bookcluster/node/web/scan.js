// The door scanner page (`/scan`): a scanner token signs the gate in; the camera's frames
// go through jsQR (vendored, loaded before this module as `window.jsQR`); a ticket read
// is decided by `gate.js` and shown big: green ADMIT with the seats, or red REFUSED with
// the reason. The same code held in front of the camera is read once, until "Next
// ticket" or until it has been out of view for a moment.

import { el, seatList } from "./api.js";
import { batchReport, decide, gate, newScan, queue, reason, refreshKeys, upload } from "./gate.js";

const $ = (id) => document.getElementById(id);
const FRAME_MS = 150;  // between decodes: a phone's CPU stays cool
const DECODE_MAX_PX = 1024;  // frames are scaled down to this width before decoding
const GONE_MS = 2000;  // a code out of view this long may be read again
const UPLOAD_MS = 5000;
const KEYS_MS = 600000;

let busy = false;
let last = { payload: null, seenAt: 0 };
let stream = null;
const canvas = document.createElement("canvas");
const context = canvas.getContext("2d", { willReadFrequently: true });

function alertUser(text) {
  $("alert").textContent = text;
  $("alert").hidden = !text;
}

function show(state, word, seats, words, code = "") {
  const box = $("verdict");
  box.dataset.verdict = state;
  box.dataset.code = code;
  $("verdict-word").textContent = word;
  $("verdict-seats").textContent = seats.length ? `Seat${seats.length > 1 ? "s" : ""} ${seatList(seats)}` : "";
  $("verdict-reason").textContent = words;
}

function showVerdict(v) {
  if (v.pass) {
    const word = v.code === "exited" ? "LET OUT" : "ADMIT";
    show("admit", word, v.seats, `${v.words}${v.offline ? " (offline)" : ""}`.trim(), v.code);
  } else {
    show("refuse", "REFUSED", v.seats, `${v.words}${v.offline ? " (offline)" : ""}`, v.code);
  }
  $("verdict").dataset.offline = String(v.offline);
}

function direction() {
  return document.querySelector("input[name=direction]:checked").value;
}

function linkState(offline) {
  const waiting = queue.all().length;
  $("link-state").dataset.link = offline ? "offline" : "online";
  $("link-state").textContent = offline ? "Offline: admitting by signature alone" : "Online";
  $("queued").textContent = String(waiting);
}

async function onCode(payload) {
  const signedIn = gate.load();
  if (!signedIn) { signedInView(); return; }
  busy = true;
  show("checking", "Checking…", [], "");
  try {
    if (navigator.onLine && queue.all().length) await uploadNow();
    const verdict = await decide(newScan(payload, signedIn, direction()), signedIn);
    showVerdict(verdict);
    linkState(verdict.offline);
    if (verdict.code === "unauthorized") alertUser(reason("unauthorized"));
  } catch (error) {
    show("refuse", "REFUSED", [], `The scan failed: ${error}`, "error");
  } finally {
    busy = false;
  }
}

function tick() {
  const video = $("camera");
  if (video.readyState >= video.HAVE_ENOUGH_DATA && window.jsQR) {
    const scale = Math.min(1, DECODE_MAX_PX / video.videoWidth);
    canvas.width = Math.round(video.videoWidth * scale);
    canvas.height = Math.round(video.videoHeight * scale);
    context.drawImage(video, 0, 0, canvas.width, canvas.height);
    const frame = context.getImageData(0, 0, canvas.width, canvas.height);
    const code = window.jsQR(frame.data, frame.width, frame.height, { inversionAttempts: "dontInvert" });
    const now = Date.now();
    if (code && code.data) {
      // Held in view, the same code is read once; read again after "Next ticket" or
      // after it was out of view for GONE_MS.
      const same = code.data === last.payload;
      const read = !busy && (!same || now - last.seenAt >= GONE_MS);
      if (same || read) last = { payload: code.data, seenAt: now };
      if (read) onCode(code.data);
    }
  }
  if (stream) setTimeout(tick, FRAME_MS);
}

async function startCamera() {
  if (stream) return;
  if (!navigator.mediaDevices?.getUserMedia) {
    $("camera-state").textContent = "This browser gives no camera here (a camera needs https or localhost).";
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: "environment", width: { ideal: 1280 }, height: { ideal: 720 } }, audio: false,
    });
  } catch (error) {
    $("camera-state").textContent = `No camera: ${error.message || error.name}. Allow the camera and reload.`;
    return;
  }
  const video = $("camera");
  video.srcObject = stream;
  await video.play().catch(() => null);
  $("camera-state").textContent = "Camera on: hold a ticket's QR code up to it.";
  $("camera").dataset.on = "true";
  tick();
}

function stopCamera() {
  if (!stream) return;
  for (const track of stream.getTracks()) track.stop();
  stream = null;
  $("camera").dataset.on = "false";
}

let uploading = null;

/** The queued scans to `POST /checkin/batch` (one upload at a time), and its report. */
function uploadNow() {
  uploading ??= uploadQueue().finally(() => { uploading = null; });
  return uploading;
}

async function uploadQueue() {
  const signedIn = gate.load();
  if (!signedIn || !queue.all().length) { linkState(!navigator.onLine); return; }
  try {
    const answers = await upload(signedIn);
    linkState(false);
    $("upload-state").textContent = "";
    if (answers.length) report(batchReport(answers));
  } catch (error) {
    linkState(error.name === "Unanswered");
    $("upload-state").textContent = `Not uploaded yet: ${error.message || "no answer"}.`;
  }
}

function report({ summary, lines }) {
  $("batch").hidden = false;
  $("batch-summary").textContent = summary;
  $("batch-twice").replaceChildren(...lines.map((line) => el("li", { class: "twice-line" }, line)));
}

function signedInView() {
  const signedIn = gate.load();
  $("token-form").hidden = Boolean(signedIn);
  $("scanner").hidden = !signedIn;
  $("account").hidden = !signedIn;
  $("account-user").textContent = signedIn ? signedIn.user : "";
  $("gate-name").textContent = signedIn ? signedIn.gate : "";
  if (signedIn) {
    linkState(!navigator.onLine);
    startCamera();
  } else {
    stopCamera();
  }
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const problem = gate.signIn($("token").value, $("gate").value.trim(), $("show").value.trim());
  alertUser(problem || "");
  if (!problem) // The keys are public: kept from the first visit, so a gate that signs in offline checks.
if (navigator.onLine) refreshKeys().catch(() => null);
signedInView();
});
$("signout").addEventListener("click", () => { gate.forget(); signedInView(); });
$("next").addEventListener("click", () => {
  last = { payload: null, seenAt: 0 };
  show("ready", "Ready", [], "Hold a ticket's QR code up to the camera.");
});
$("upload").addEventListener("click", uploadNow);
window.addEventListener("online", uploadNow);
window.addEventListener("offline", () => linkState(true));
setInterval(() => { if (queue.all().length && navigator.onLine) uploadNow(); }, UPLOAD_MS);
setInterval(() => { if (navigator.onLine) refreshKeys().catch(() => null); }, KEYS_MS);
// The keys are public: kept from the first visit, so a gate that signs in offline checks.
if (navigator.onLine) refreshKeys().catch(() => null);
signedInView();
