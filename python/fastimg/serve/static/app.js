// The page of `gpu-image-worker serve`: uploads each file on its own request,
// then follows its job through the server's event stream (/events). Plain
// browser APIs only, so it works offline and needs no build step.
// Everything the server or the queue sends is shown as text (textContent,
// element properties), never parsed as HTML: an event published on the queue
// by anyone cannot put markup or script into the page.
"use strict";

const $ = (id) => document.getElementById(id);
const cards = new Map();    // jobId -> card
const early = new Map();    // jobId -> newest event that came before its upload's answer
const STATS = ["jobs", "inFlight", "retry", "done", "failed", "liveWorkers"];
let config = { auth: false, maxFiles: 20, maxUploadBytes: 0, imageTypes: [], operations: [] };
let source = null;

const token = () => $("token").value.trim();
const user = () => $("user").value.trim();
const authHeaders = () => (token() ? { Authorization: "Bearer " + token() } : {});

function withToken(url) {
  if (!token()) return url;
  return url + (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token());
}

function fmtBytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
  return (n / 1024 / 1024).toFixed(1) + " MiB";
}

function setConn(text, cls) {
  const el = $("conn");
  el.textContent = text;
  el.className = "conn " + (cls || "");
}

function connect() {
  if (source) source.close();
  const u = user();
  source = new EventSource(withToken("/events" + (u ? "?user=" + encodeURIComponent(u) : "")));
  source.addEventListener("open", () => { setConn("live", "ok"); resync(); });
  source.addEventListener("error", () => setConn("reconnecting", "bad"));
  source.addEventListener("status", (e) => onStatus(JSON.parse(e.data)));
  source.addEventListener("stats", (e) => onStats(JSON.parse(e.data)));
  source.addEventListener("resync", resync);   // the server lost Redis for a while
}

function onStats(s) {
  if (!s.redis) {
    setConn("Redis unavailable", "bad");
    $("q-note").textContent = "Uploads are stored but not queued until Redis is back.";
    return;
  }
  setConn("live", "ok");
  for (const k of STATS) $("q-" + k).textContent = s[k];
  $("q-note").textContent = s.liveWorkers ? "" : "No live worker: jobs wait until one starts.";
}

function eventTime(ev) { return Number(ev.at || ev.updatedAt || 0); }

function onStatus(ev) {
  const card = cards.get(ev.jobId);
  if (!card) {
    const seen = early.get(ev.jobId);
    if (!seen || eventTime(ev) >= eventTime(seen)) early.set(ev.jobId, ev);
    return;
  }
  apply(card, ev);
}

function setState(card, state, detail) {
  card.el.dataset.state = state;
  card.el.querySelector(".state").textContent = state;
  card.el.querySelector(".detail").textContent = detail || "";
}

function apply(card, ev) {
  // Events and /jobs answers can cross: never go back to an older state.
  if (eventTime(ev) < card.at) return;
  // The producer announces "queued" after its RPUSH, so a quick worker's
  // "processing" can come first; a job in hand is not queued.
  if (ev.state === "queued" && card.el.dataset.state === "processing") return;
  card.at = eventTime(ev);
  const ops = ev.operations || [];
  switch (ev.state) {
    case "queued":
      setState(card, "queued", "waiting for a worker");
      break;
    case "processing": {
      const done = ev.completed || [];
      setState(card, "processing", `attempt ${ev.attempt || 1}: ${done.length}/${ops.length || 3} outputs done` +
        (done.length ? " (" + done.join(", ") + ")" : ""));
      break;
    }
    case "retrying": {
      const wait = ev.nextAttemptAt ? Math.max(0, Math.round((ev.nextAttemptAt - Date.now()) / 1000)) : 0;
      setState(card, "retrying", `${ev.reason}: ${ev.error} (next attempt in ${wait}s)`);
      break;
    }
    case "failed":
      setState(card, "failed", `${ev.reason}: ${ev.error}`);
      break;
    case "done":
      setState(card, "done", `done in ${ev.attempts || 1} attempt(s)`);
      showOutputs(card, ev.outputs || []);
      break;
  }
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
    if (!config.operations.includes(op) || !card.outputs[op]) continue;
    const fig = document.createElement("figure");
    fig.className = "output";
    const img = document.createElement("img");
    img.className = "output";
    img.dataset.op = op;
    img.dataset.width = String(o.width);
    img.dataset.height = String(o.height);
    img.alt = op;
    img.src = withToken(card.outputs[op]) + (token() ? "&" : "?") + "v=" + card.at;
    const cap = document.createElement("figcaption");
    cap.append(`${op} `, bold(`${o.width}×${o.height}`), ` · ${fmtBytes(Number(o.bytes))}`);
    fig.append(img, cap);
    box.append(fig);
  }
}

async function syncJob(card) {
  try {
    const r = await fetch("/jobs/" + encodeURIComponent(card.jobId), { headers: authHeaders() });
    if (r.ok) apply(card, await r.json());
  } catch (e) { /* the event stream catches up */ }
}

function resync() {
  for (const card of cards.values()) {
    if (!["done", "failed"].includes(card.el.dataset.state)) syncJob(card);
  }
}

function newCard(file) {
  const el = $("card").content.firstElementChild.cloneNode(true);
  el.querySelector(".name").textContent = file.name;
  const img = el.querySelector("figure.original img");
  const cap = el.querySelector("figure.original figcaption");
  cap.textContent = `original · ${fmtBytes(file.size)}`;
  img.addEventListener("load", () => {
    cap.replaceChildren("original ", bold(`${img.naturalWidth}×${img.naturalHeight}`), ` · ${fmtBytes(file.size)}`);
  });
  img.addEventListener("error", () => img.remove());   // e.g. TIFF: the browser cannot show it
  img.src = URL.createObjectURL(file);
  $("list").prepend(el);
  return { el, at: 0, jobId: null, outputs: {} };
}

async function upload(file) {
  const card = newCard(file);
  const u = user();
  const body = new FormData();
  body.append("userId", u);
  body.append("file", file, file.name);
  let r, answer;
  try {
    r = await fetch("/upload", { method: "POST", body, headers: authHeaders() });
    answer = await r.json();
  } catch (e) {
    setState(card, "refused", "upload failed: " + e);
    return;
  }
  if (!r.ok) {
    setState(card, "refused", `${answer.message || answer.error} (HTTP ${r.status})`);
    return;
  }
  const info = answer.files[0];
  card.jobId = info.jobId;
  card.outputs = info.outputs;
  card.el.dataset.jobId = info.jobId;
  cards.set(info.jobId, card);
  if (!info.queued) {
    setState(card, "not-queued", answer.warning || "stored, not queued");
    return;
  }
  setState(card, "queued", "waiting for a worker");
  const seen = early.get(info.jobId);
  early.delete(info.jobId);
  if (seen) apply(card, seen);
  syncJob(card);
}

function uploadAll(files) {
  if (!user()) { alert("Give a user id first."); return; }
  for (const f of files) upload(f);
}

async function init() {
  try {
    config = await (await fetch("/config")).json();
  } catch (e) { /* defaults */ }
  $("user").value = localStorage.getItem("fastimg-user") || "guest";
  if (config.auth) {
    $("token-label").hidden = false;
    $("token").value = sessionStorage.getItem("fastimg-token") || "";
  }
  $("limits").textContent = `Up to ${config.maxFiles} files, ${fmtBytes(config.maxUploadBytes)} per upload; ` +
    `${config.imageTypes.join(", ")}.`;
  $("user").addEventListener("change", () => { localStorage.setItem("fastimg-user", user()); connect(); });
  $("token").addEventListener("change", () => { sessionStorage.setItem("fastimg-token", token()); connect(); });
  $("files").addEventListener("change", (e) => { uploadAll([...e.target.files]); e.target.value = ""; });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    uploadAll([...e.dataTransfer.files]);
  });
  connect();
}

init();
