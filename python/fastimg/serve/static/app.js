// The page of `gpu-image-worker serve`: uploads each file on its own request,
// follows its job through the server's event stream (/events), and lists the
// user's earlier uploads (/uploads). Plain browser APIs, no build step.
// Everything the server or the queue sends is shown as text (textContent,
// element properties), never parsed as HTML: an event published on the queue
// by anyone cannot put markup or script into the page.
"use strict";

const $ = (id) => document.getElementById(id);
const cards = new Map();    // jobId -> card
const early = new Map();    // jobId -> newest event that came before its upload's answer
const STATS = ["jobs", "inFlight", "retry", "done", "failed", "liveWorkers"];
const FINAL = ["done", "failed"];
let config = { auth: false, maxFiles: 20, maxUploadBytes: 64 * 1024 * 1024, imageTypes: [], operations: [] };
let source = null;
let olderCursor = null;     // where the next page of the user's earlier uploads starts
let shownFor = null;        // the user id and token the page shows: the fields' change events repeat

const token = () => $("token").value.trim();
const user = () => $("user").value.trim();
const needsToken = () => config.auth && !token();
const authHeaders = () => (token() ? { Authorization: "Bearer " + token() } : {});

function withToken(url) {
  if (!token()) return url;
  return url + (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token());
}

function fmtBytes(n) {
  if (n < 1024) return n + " bytes";
  const units = ["KiB", "MiB", "GiB"];
  let value = n / 1024, i = 0;
  while (value >= 1024 && i < units.length - 1) { value /= 1024; i++; }
  return (Math.round(value * 10) / 10) + " " + units[i];
}

const typeName = (t) => (t === "webp" ? "WebP" : t.toUpperCase());
const stem = (name) => (name.lastIndexOf(".") > 0 ? name.slice(0, name.lastIndexOf(".")) : name);
const ownUrl = (url) => (typeof url === "string" && url.startsWith("/files/") ? url : "");

function announce(text) {
  $("announce").textContent = text;
}

function notice(text) {
  const el = $("notice");
  el.textContent = text;
  el.hidden = !text;
}

function setConn(text, cls, note) {
  const el = $("conn");
  el.textContent = text;
  el.className = "conn " + (cls || "");
  if (note !== undefined) $("q-note").textContent = note;
}

// -- the event stream --------------------------------------------------------

function connect() {
  if (source) source.close();
  source = null;
  if (needsToken()) {
    setConn("token needed", "bad", "This server asks for its access token: enter it above to see the queue and upload.");
    return;
  }
  const u = user();
  source = new EventSource(withToken("/events" + (u ? "?user=" + encodeURIComponent(u) : "")));
  source.addEventListener("open", () => { setConn("live", "ok"); resync(); });
  source.addEventListener("error", onStreamError);
  source.addEventListener("status", (e) => onStatus(JSON.parse(e.data)));
  source.addEventListener("stats", (e) => onStats(JSON.parse(e.data)));
  source.addEventListener("resync", resync);   // the server lost Redis for a while
}

async function onStreamError() {
  setConn("reconnecting", "bad", "Lost the connection to the server; trying again.");
  if (!config.auth) return;
  try {
    const r = await fetch("/stats", { headers: authHeaders() });
    if (r.status === 401) {
      if (source) source.close();
      source = null;
      setConn("token refused", "bad", "The server refused this access token: check it and enter it again.");
      announce("The server refused the access token.");
    }
  } catch (e) { /* the server is away: EventSource keeps trying */ }
}

function onStats(s) {
  if (!s.redis) {
    setConn("Redis unavailable", "bad", "Uploads are stored but not queued until Redis is back.");
    return;
  }
  setConn("live", "ok", s.liveWorkers ? "" : "No live worker: jobs wait until one starts.");
  for (const k of STATS) $("q-" + k).textContent = String(s[k]);
}

function eventTime(ev) { return Number(ev.at || ev.updatedAt || 0); }

function onStatus(ev) {
  const card = cards.get(ev.jobId);
  if (!card) {
    const seen = early.get(ev.jobId);
    if (!seen || eventTime(ev) >= eventTime(seen)) early.set(ev.jobId, ev);
    return;
  }
  apply(card, ev, true);
}

// -- cards -------------------------------------------------------------------

function setState(card, state, detail, speak) {
  const changed = card.el.dataset.state !== state;
  card.el.dataset.state = state;
  card.el.querySelector(".state").textContent = state;
  card.el.querySelector(".detail").textContent = detail || "";
  if (changed && speak) announce(`${card.name}: ${state}. ${detail || ""}`);
}

function retryDetail(card) {
  const left = Math.ceil((card.nextAt - Date.now()) / 1000);
  return `${card.retryText} (` + (left > 0 ? `next attempt in ${left}s` : "next attempt now") + ")";
}

function apply(card, ev, speak) {
  // Events and /jobs answers can cross: never go back to an older state.
  if (eventTime(ev) < card.at) return;
  // The producer announces "queued" after its RPUSH, so a quick worker's
  // "processing" can come first; a job in hand is not queued.
  if (ev.state === "queued" && card.el.dataset.state === "processing") return;
  card.at = eventTime(ev);
  const ops = Array.isArray(ev.operations) ? ev.operations : [];
  switch (ev.state) {
    case "queued":
      setState(card, "queued", "waiting for a worker", speak);
      break;
    case "processing": {
      const done = Array.isArray(ev.completed) ? ev.completed : [];
      setState(card, "processing", `attempt ${ev.attempt || 1}: ${done.length}/${ops.length || 3} outputs done` +
        (done.length ? " (" + done.join(", ") + ")" : ""), speak);
      break;
    }
    case "retrying":
      card.nextAt = Number(ev.nextAttemptAt) || 0;
      card.retryText = `${ev.reason}: ${ev.error}`;
      setState(card, "retrying", retryDetail(card), speak);
      break;
    case "failed":
      setState(card, "failed", `${ev.reason}: ${ev.error}`, speak);
      break;
    case "done":
      showOutputs(card, Array.isArray(ev.outputs) ? ev.outputs : []);
      setState(card, "done", `done in ${ev.attempts || 1} attempt(s); download each output or all three`, speak);
      break;
  }
}

function figure(cls, img, caption) {
  const fig = document.createElement("figure");
  fig.className = cls;
  const cap = document.createElement("figcaption");
  cap.append(...caption);
  fig.append(img, cap);
  return fig;
}

function bold(text) {
  const b = document.createElement("b");
  b.textContent = text;
  return b;
}

function showOutputs(card, outputs) {
  const box = card.el.querySelector(".images");
  box.querySelectorAll("figure.output").forEach((f) => f.remove());
  for (const o of outputs) {
    const op = String(o.operation);
    const url = ownUrl(card.outputs[op]);
    if (!config.operations.includes(op) || !url) continue;
    const img = document.createElement("img");
    img.className = "output";
    img.dataset.op = op;
    img.dataset.width = String(o.width);
    img.dataset.height = String(o.height);
    img.alt = `${op} of ${card.name}`;
    img.src = withToken(url) + (token() ? "&" : "?") + "v=" + card.at;
    const link = document.createElement("a");
    link.href = withToken(url);
    link.download = `${stem(card.name)}_${op}.webp`;
    link.textContent = "download";
    link.setAttribute("aria-label", `Download the ${op} of ${card.name}`);
    box.append(figure("output", img, [`${op} `, bold(`${o.width}×${o.height}`), ` · ${fmtBytes(Number(o.bytes))} · `, link]));
  }
  const all = card.el.querySelector(".downloads");
  const zip = ownUrl(card.archive);
  all.hidden = !zip;
  if (zip) {
    const link = all.querySelector("a");
    link.href = withToken(zip);
    link.download = `${stem(card.name)}.zip`;
    link.setAttribute("aria-label", `Download all three outputs of ${card.name} (ZIP)`);
  }
}

function newCard(name, atTop) {
  const el = $("card").content.firstElementChild.cloneNode(true);
  el.querySelector(".name").textContent = name;
  if (atTop) $("list").prepend(el); else $("list").append(el);
  $("empty").hidden = true;
  return { el, name, at: 0, jobId: null, outputs: {}, archive: "", nextAt: 0, retryText: "" };
}

function showOriginal(card, file) {
  const img = document.createElement("img");
  img.alt = `original: ${file.name}`;
  const size = `original · ${fmtBytes(file.size)}`;
  const fig = figure("original", img, [size]);
  img.addEventListener("load", () => {
    fig.querySelector("figcaption").replaceChildren("original ", bold(`${img.naturalWidth}×${img.naturalHeight}`),
      ` · ${fmtBytes(file.size)}`);
  });
  img.addEventListener("error", () => img.remove());   // e.g. TIFF: the browser cannot show it
  img.src = URL.createObjectURL(file);
  card.el.querySelector(".images").prepend(fig);
}

function follow(card, info) {
  const listed = cards.get(info.jobId);   // the page of earlier uploads can come after the upload itself
  if (listed && listed !== card) listed.el.remove();
  card.jobId = info.jobId;
  card.outputs = info.outputs || {};
  card.archive = info.archive || "";
  card.el.dataset.jobId = info.jobId;
  cards.set(info.jobId, card);
}

async function syncJob(card) {
  try {
    const r = await fetch("/jobs/" + encodeURIComponent(card.jobId), { headers: authHeaders() });
    if (r.ok) apply(card, await r.json(), true);
  } catch (e) { /* the event stream catches up */ }
}

function resync() {
  for (const card of cards.values()) {
    if (!FINAL.includes(card.el.dataset.state)) syncJob(card);
  }
}

setInterval(() => {   // the countdown of jobs waiting for their next attempt
  for (const card of cards.values()) {
    if (card.el.dataset.state === "retrying") card.el.querySelector(".detail").textContent = retryDetail(card);
  }
}, 1000);

// -- uploading ---------------------------------------------------------------

async function upload(file) {
  const card = newCard(file.name, true);
  showOriginal(card, file);
  if (file.size > config.maxUploadBytes) {
    setState(card, "refused", `${fmtBytes(file.size)}: over the limit of ${fmtBytes(config.maxUploadBytes)} per upload`,
      true);
    return;
  }
  const body = new FormData();
  body.append("userId", user());
  body.append("file", file, file.name);
  let r, answer;
  try {
    r = await fetch("/upload", { method: "POST", body, headers: authHeaders() });
    answer = await r.json();
  } catch (e) {
    setState(card, "refused", "upload failed: " + e, true);
    return;
  }
  if (!r.ok) {
    setState(card, "refused", `${answer.message || answer.error} (HTTP ${r.status})`, true);
    return;
  }
  const info = answer.files[0];
  follow(card, info);
  if (!info.queued) {
    setState(card, "not-queued", answer.warning || "stored, not queued", true);
    return;
  }
  setState(card, "queued", "waiting for a worker", true);
  const seen = early.get(info.jobId);
  early.delete(info.jobId);
  if (seen) apply(card, seen, true);
  syncJob(card);
}

function uploadAll(files) {
  if (!files.length) return;
  if (needsToken()) {
    notice("Enter the access token first: this server asks for it.");
    $("token").focus();
    return;
  }
  if (!user()) {
    notice("Give a user id first.");
    $("user").focus();
    return;
  }
  if (files.length > config.maxFiles) {
    notice(`${files.length} files chosen: up to ${config.maxFiles} at a time. Nothing was uploaded; choose fewer.`);
    return;
  }
  notice("");
  announce(`Uploading ${files.length} file${files.length > 1 ? "s" : ""}.`);
  for (const f of files) upload(f);
}

// -- the user's earlier uploads ------------------------------------------------

async function loadUploads(more) {
  const u = user();
  if (!u || needsToken()) return;
  const page = "/uploads?user=" + encodeURIComponent(u) + (more && olderCursor ? "&before=" + encodeURIComponent(olderCursor) : "");
  let answer;
  try {
    const r = await fetch(page, { headers: authHeaders() });
    if (!r.ok) return;
    answer = await r.json();
  } catch (e) { return; }
  if (answer.userId !== user()) return;   // changed meanwhile
  for (const item of answer.uploads) {
    if (cards.has(item.jobId)) continue;
    const card = newCard(item.name || item.storedAs, false);
    follow(card, item);
    if (item.status) apply(card, item.status, false);
    else setState(card, "stored", `${fmtBytes(item.bytes)}; no job status (not queued, or older than 7 days)`, false);
  }
  olderCursor = answer.next;
  $("older").hidden = !olderCursor;
  if (answer.uploads.length) announce(`${answer.uploads.length} earlier upload(s) shown.`);
}

function switchUser() {
  if (shownFor === user() + "\n" + token()) return;
  shownFor = user() + "\n" + token();
  localStorage.setItem("fastimg-user", user());
  cards.clear();
  early.clear();
  $("list").replaceChildren();
  $("empty").hidden = false;
  olderCursor = null;
  $("older").hidden = true;
  connect();
  loadUploads(false);
}

// -- dropping files anywhere -------------------------------------------------

const carriesFiles = (e) => Boolean(e.dataTransfer) && [...e.dataTransfer.types].includes("Files");
const editable = (el) => el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement;
let dragDepth = 0;

function watchDrops() {
  // Anything dropped on the page stays on the page: files are uploaded, and
  // the browser never opens a dropped file or link in place of the page.
  document.addEventListener("dragenter", (e) => {
    if (!carriesFiles(e)) return;
    dragDepth++;
    document.body.classList.add("over");
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) document.body.classList.remove("over");
  });
  document.addEventListener("dragover", (e) => {
    if (carriesFiles(e) || !editable(e.target)) e.preventDefault();
  });
  document.addEventListener("drop", (e) => {
    dragDepth = 0;
    document.body.classList.remove("over");
    if (!carriesFiles(e) && editable(e.target)) return;   // text into a field
    e.preventDefault();
    if (carriesFiles(e)) uploadAll([...e.dataTransfer.files]);
  });
}

async function init() {
  try {
    config = { ...config, ...(await (await fetch("/config")).json()) };
  } catch (e) { /* defaults */ }
  $("user").value = localStorage.getItem("fastimg-user") || "guest";
  if (config.auth) {
    $("token-field").hidden = false;
    $("token").value = sessionStorage.getItem("fastimg-token") || "";
  }
  $("limits").textContent = `Up to ${config.maxFiles} files at a time, ${fmtBytes(config.maxUploadBytes)} each: ` +
    `${config.imageTypes.map(typeName).join(", ")}.`;
  $("user").addEventListener("change", switchUser);
  $("token").addEventListener("change", () => { sessionStorage.setItem("fastimg-token", token()); switchUser(); });
  $("drop").addEventListener("click", () => $("files").click());
  $("files").addEventListener("change", (e) => { uploadAll([...e.target.files]); e.target.value = ""; });
  $("older").addEventListener("click", () => loadUploads(true));
  watchDrops();
  switchUser();
}

init();
