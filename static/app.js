// The upload page: each chosen file becomes a job card that uploads, polls /status and shows the
// result. Jobs are kept in localStorage so a reload resumes them. No dependencies, no build step.
"use strict";

const STORE_KEY = "detection.jobs";
const API_KEY_STORE = "detection.apiKey";
const POLL_MS = 1000;
const LONG_POLL_S = 10;
const MAX_POLL_MS = 8000;
const GIVE_UP_MS = 10 * 60 * 1000;
const MAX_LISTED_CLASSES = 12;  // a model with more (COCO's 80) shows its count

const $ = (selector, root = document) => root.querySelector(selector);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// --- API key (only where the server is configured with keys) --------------------------------------
const apiKey = () => localStorage.getItem(API_KEY_STORE);
const keyHeaders = () => (apiKey() ? { "X-API-Key": apiKey() } : {});

function askForKey() {
  const key = window.prompt("This server needs an API key:");
  if (!key) return false;
  localStorage.setItem(API_KEY_STORE, key.trim());
  return true;
}

async function api(url) {
  const response = await fetch(url, { cache: "no-store", headers: keyHeaders() });
  if (response.status === 401 && askForKey()) return api(url);
  return response;
}

async function sendJson(method, url, body) {
  const response = await fetch(url, {
    method, cache: "no-store", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", ...keyHeaders() },
  });
  if (response.status === 401 && askForKey()) return sendJson(method, url, body);
  return response;
}

// A URL the page can show or offer for download: with a key, the file is fetched with it.
async function fileUrl(url) {
  if (!apiKey()) return url;
  const response = await api(url);
  return URL.createObjectURL(await response.blob());
}

// --- Jobs remembered across reloads -------------------------------------------------------------
function savedJobs() {
  try { return JSON.parse(localStorage.getItem(STORE_KEY)) || []; } catch { return []; }
}
function rememberJob(job) {
  const jobs = savedJobs().filter((j) => j.sid !== job.sid);
  jobs.push(job);
  localStorage.setItem(STORE_KEY, JSON.stringify(jobs.slice(-50)));
}

// --- A job card ---------------------------------------------------------------------------------
class JobCard {
  constructor(name) {
    this.el = $("#job-template").content.firstElementChild.cloneNode(true);
    $(".job-name", this.el).textContent = name;
    this.image = $(".result", this.el);
    this.highlight = $(".highlight", this.el);
    $("#jobs").prepend(this.el);
    $("#no-jobs").hidden = true;
  }
  setState(state, label = state) {
    const badge = $(".state", this.el);
    badge.className = `state ${state}`;
    badge.textContent = label;
    this.el.dataset.state = state;
  }
  setMessage(text, isError = false) {
    const message = $(".message", this.el);
    message.hidden = !text;
    message.textContent = text || "";
    message.classList.toggle("error", isError);
  }
  fail(reason) {
    this.setState("failed");
    this.setMessage(reason, true);
    $(".upload-progress", this.el).hidden = true;
  }
  showProgress(fraction) {
    const bar = $(".upload-progress", this.el);
    bar.hidden = fraction >= 1;
    bar.value = fraction;
  }
  async showStatus(status) {
    if (status.kind === "download") {
      this.showDownload(status);
    } else if (status.kind === "video") {
      await this.showVideo(status);
    } else if (status.kind === "batch") {
      await this.showBatch(status);
    } else if (status.state === "queued") {
      this.setState("queued");
      this.setMessage(`Waiting in the queue, position ${status.queue_position}.`);
    } else if (status.state === "running") {
      this.setState("running");
      this.setMessage("Detecting objects…");
    } else if (status.state === "failed") {
      this.fail(`Detection failed: ${status.error}`);
    } else if (status.state === "done") {
      await this.showResult(status);
    }
  }
  showDownload(status) {
    const bar = $(".upload-progress", this.el);
    if (status.state === "queued") {
      this.setState("queued");
      this.setMessage(`Waiting in the queue, position ${status.queue_position}.`);
    } else if (status.state === "running") {
      this.setState("running", "downloading");
      bar.hidden = false;
      bar.value = status.progress || 0;
      this.setMessage(status.stage ? `${status.stage[0].toUpperCase()}${status.stage.slice(1)}…` : "Starting…");
    } else if (status.state === "failed") {
      this.fail(`Download failed: ${status.error}`);
    } else if (status.state === "done") {
      this.setState("done", "installed");
      bar.hidden = true;
      this.setMessage(`Model ${status.model} is installed: ${(status.bytes / 2 ** 20).toFixed(1)} MB, ` +
                      `sha256 ${status.sha256.slice(0, 12)}…`);
      loadModels();
    }
  }
  // A video's or a batch's card while it waits, runs (its bar and "Image 3 of 10, about 4 s
  // left…") or failed; true once it is done (the caller shows its result)
  showLongJob(status, what, unit, done, total) {
    const bar = $(".upload-progress", this.el);
    $(".figure", this.el).hidden = true;
    if (status.state === "queued") {
      this.setState("queued");
      this.setMessage(`Waiting in the queue, position ${status.queue_position}.`);
    } else if (status.state === "running") {
      this.setState("running", "detecting");
      bar.hidden = false;
      bar.value = status.progress || 0;
      const eta = status.eta_seconds ? `, about ${Math.ceil(status.eta_seconds)} s left` : "";
      this.setMessage(done ? `${unit} ${done}${total ? ` of ${total}` : ""}${eta}…` : "Starting…");
    } else if (status.state === "failed") {
      this.fail(`The ${what} failed: ${status.error}`);
    } else if (status.state === "done") {
      this.setState("done");
      this.setMessage("");
      bar.hidden = true;
      return true;
    }
    return false;
  }
  async showBatch(status) {
    if (this.showLongJob(status, "batch", "Image", status.images_done, status.images_total)) {
      const view = $("#batch-template").content.firstElementChild.cloneNode(true);
      const counts = Object.entries(status.counts).sort((a, b) => b[1] - a[1]).map(([l, n]) => `${n} × ${l}`);
      $(".batch-summary", view).textContent = `${status.images.length} images (model ${status.model}): ` +
        (counts.length ? counts.join(", ") : "no objects above the threshold");
      for (const [cls, url] of [[".coco-link", status.coco_url], [".csv-link", status.csv_url],
                                [".zip-link", status.result_url], [".json-link", status.json_url]]) {
        $(cls, view).href = await fileUrl(url);
      }
      if (status.failed.length) {
        const failed = $(".batch-failed", view);
        failed.hidden = false;
        failed.textContent = `Not read: ${status.failed.map((f) => `${f.file_name} (${f.error})`).join("; ")}`;
      }
      const coco = await (await api(status.coco_url)).json();
      const grid = $(".batch-grid", view);
      coco.images.forEach((image) => grid.append(this.batchItem(image, coco)));
      $(".batch-result", this.el)?.remove();
      this.el.append(view);
    }
  }
  // A batch's image: its own file where this page still has it, with its boxes on top
  batchItem(image, coco) {
    const item = document.createElement("li");
    item.className = "gallery-item";
    const found = coco.annotations.filter((a) => a.image_id === image.id);
    const file = (this.files || []).find((f) => f.name === image.file_name);
    if (file) {
      const figure = document.createElement("div");
      figure.className = "figure";
      const img = document.createElement("img");
      img.src = URL.createObjectURL(file);
      img.alt = `${image.file_name}: ${found.length} detections`;
      figure.append(img);
      for (const a of found) {
        const box = document.createElement("div");
        box.className = "gallery-box";
        const [x, y, w, h] = a.bbox;
        Object.assign(box.style, { left: `${(100 * x) / image.width}%`, top: `${(100 * y) / image.height}%`,
                                   width: `${(100 * w) / image.width}%`, height: `${(100 * h) / image.height}%` });
        box.title = `${coco.categories[a.category_id].name} ${a.score.toFixed(2)}`;
        figure.append(box);
      }
      item.append(figure);
    }
    const caption = document.createElement("p");
    const labels = {};
    for (const a of found) labels[coco.categories[a.category_id].name] = (labels[coco.categories[a.category_id].name] || 0) + 1;
    caption.textContent = `${image.file_name}: ${Object.entries(labels).map(([l, n]) => `${n} × ${l}`).join(", ") || "nothing found"}`;
    item.append(caption);
    return item;
  }
  async showVideo(status) {
    if (this.showLongJob(status, "video", "Detecting frame", status.frames_done, status.frames_total)) {
      const view = $("#video-template").content.firstElementChild.cloneNode(true);
      const video = $("video", view);
      video.src = await fileUrl(status.result_url);
      $(".mp4-link", view).href = video.src;
      $(".frames-link", view).href = await fileUrl(status.frames_url);
      $(".json-link", view).href = await fileUrl(status.json_url);
      const counts = Object.entries(status.counts).sort((a, b) => b[1] - a[1]).map(([l, n]) => `${n} × ${l}`);
      $(".video-summary", view).textContent =
        `${status.frames} frames at ${status.fps} a second (model ${status.model}): ` +
        (counts.length ? counts.join(", ") : "no objects above the threshold");
      drawTimeline($(".timeline", view), status, video);
      $(".video-result", this.el)?.remove();
      this.el.append(view);
    }
  }
  async showResult(status) {
    this.setState("done");
    this.setMessage("");
    this.image.classList.remove("preview");
    this.image.alt = `Result: ${summarize(status.detections)}`;
    this.image.src = await fileUrl(status.result_url);
    const png = $(".png-link", this.el);
    const json = $(".json-link", this.el);
    png.href = this.image.src;
    json.href = await fileUrl(status.json_url);
    png.download = `${status.sid}.out.png`;
    json.download = `${status.sid}.json`;
    const seconds = (status.timings.inference_ms / 1000).toFixed(2);
    const only = status.classes && status.classes.length ? `, only ${status.classes.join(", ")}` : "";
    $(".summary", this.el).textContent =
      `${summarize(status.detections)} (model ${status.model}, threshold ${status.threshold}${only}, inference ${seconds} s)`;
    const rows = $("tbody", this.el);
    rows.replaceChildren(...status.detections.map((d, i) => this.row(d, i, status.image)));
    $(".details", this.el).hidden = false;
    const correct = $(".correct", this.el);
    correct.onclick = () => {
      if (this.el.classList.contains("editing")) return;
      new BoxEditor({ el: this.el, image: this.image, after: $(".details", this.el),
                      imageUrl: status.result_url.replace(".out.png", ".png") },
                    status, { api, fileUrl, sendJson }).open();
    };
    loadReview();
  }
  row(detection, index, size) {
    const tr = document.createElement("tr");
    tr.tabIndex = 0;
    const box = detection.bbox.map((v) => Math.round(v)).join(", ");
    for (const text of [index + 1, detection.label, detection.score.toFixed(2), box]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    const show = () => this.highlightBox(detection.bbox, size);
    const hide = () => { this.highlight.hidden = true; };
    tr.addEventListener("mouseenter", show);
    tr.addEventListener("focus", show);
    tr.addEventListener("mouseleave", hide);
    tr.addEventListener("blur", hide);
    return tr;
  }
  highlightBox([x1, y1, x2, y2], size) {
    const scale = this.image.clientWidth / size.width;
    Object.assign(this.highlight.style, {
      left: `${x1 * scale}px`, top: `${y1 * scale}px`,
      width: `${(x2 - x1) * scale}px`, height: `${(y2 - y1) * scale}px`,
    });
    this.highlight.hidden = false;
  }
}

// --- Uploads kept for review (a model's review rule): correct them, or dismiss them ----------
async function loadReview() {
  const response = await api("/review");
  if (!response.ok) return;
  const { items } = await response.json();
  $("#review").hidden = !items.length;
  $("#review-count").textContent = items.length;
  const shown = new Set([...document.querySelectorAll(".review-item")].map((el) => el.dataset.sid));
  const fresh = items.filter((item) => !shown.has(item.sid));
  $("#review-items").prepend(...await Promise.all(fresh.map(reviewItem)));
}

async function reviewItem(item) {
  const el = $("#review-template").content.firstElementChild.cloneNode(true);
  el.dataset.sid = item.sid;
  const image = $("img", el);
  image.src = await fileUrl(item.image_url);
  image.alt = `Kept for review: ${summarize(item.detections)}`;
  const why = $(".review-why", el);
  why.textContent = `${item.model}: ${item.reasons.join("; ")}`;
  const dismiss = async () => {
    await sendJson("DELETE", `/review/${item.sid}`);
    el.remove();
    $("#review-count").textContent = document.querySelectorAll(".review-item").length;
  };
  $(".dismiss", el).onclick = dismiss;
  $(".correct", el).onclick = () => {
    if (el.classList.contains("editing")) return;
    new BoxEditor({ el, image, after: why, imageUrl: item.image_url, onSaved: dismiss },
                  item, { api, fileUrl, sendJson }).open();
  };
  return el;
}

// One row a track, from when it was first seen to when last; a click plays from its start.
function drawTimeline(svg, status, video) {
  const NS = "http://www.w3.org/2000/svg";
  const tracks = status.tracks.slice(0, 40);
  const seconds = Math.max(status.video.seconds || 0, ...tracks.map((t) => t.last_seen), 0.1);
  const row = 16, left = 110, width = 600;
  svg.setAttribute("viewBox", `0 0 ${left + width + 10} ${Math.max(1, tracks.length) * row + 4}`);
  svg.setAttribute("aria-label", `${status.tracks.length} tracks over ${seconds.toFixed(1)} s`);
  svg.replaceChildren();
  tracks.forEach((track, i) => {
    const y = i * row + 2;
    const name = document.createElementNS(NS, "text");
    Object.entries({ x: 0, y: y + 11, class: "track-name" }).forEach(([k, v]) => name.setAttribute(k, v));
    name.textContent = `${track.label} #${track.id}`;
    const bar = document.createElementNS(NS, "rect");
    const x = left + (track.first_seen / seconds) * width;
    const w = Math.max(3, ((track.last_seen - track.first_seen) / seconds) * width);
    Object.entries({ x, y, width: w, height: row - 4, rx: 3, class: "track",
                     fill: `hsl(${(track.id * 137.5) % 360} 70% 50%)` })
      .forEach(([k, v]) => bar.setAttribute(k, v));
    const title = document.createElementNS(NS, "title");
    title.textContent = `${track.label} #${track.id}: ${track.first_seen}–${track.last_seen} s, ${track.frames} frames`;
    bar.append(title);
    bar.addEventListener("click", () => { video.currentTime = track.first_seen; video.play(); });
    svg.append(name, bar);
  });
}

function summarize(detections) {
  if (!detections.length) return "No objects above the threshold";
  const counts = {};
  for (const d of detections) counts[d.label] = (counts[d.label] || 0) + 1;
  const parts = Object.entries(counts).sort((a, b) => b[1] - a[1]).map(([l, n]) => `${n} × ${l}`);
  return `${detections.length} object${detections.length > 1 ? "s" : ""}: ${parts.join(", ")}`;
}

// --- Upload and poll ----------------------------------------------------------------------------
function upload(file, card, choice) {
  const form = new FormData();
  for (const each of card.files || [file]) form.append("image", each);
  form.append("threshold", choice.threshold);
  form.append("model", choice.model);
  form.append("classes", choice.classes);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", card.files && card.files.length > 1 ? "/upload?batch=1" : "/upload");
  for (const [name, value] of Object.entries(keyHeaders())) xhr.setRequestHeader(name, value);
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) card.showProgress(e.loaded / e.total); };
  xhr.onload = () => {
    card.showProgress(1);
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch { /* not JSON: described below */ }
    if (xhr.status === 202) {
      const job = { sid: body.sid, name: file.name, started: Date.now(),
                    kind: body.frames_url ? "video" : body.coco_url ? "batch" : "detect" };
      rememberJob(job);
      poll(card, job);
    } else if (xhr.status === 401 && askForKey()) {
      upload(file, card, choice);
    } else if (xhr.status === 503 && xhr.getResponseHeader("Retry-After")) {
      retryLater(file, card, choice, Number(xhr.getResponseHeader("Retry-After")));
    } else {
      card.fail(`Upload refused: ${body.error || `HTTP ${xhr.status}`}`);
    }
  };
  xhr.onerror = () => card.fail("The upload did not reach the server (network error).");
  card.setState("uploading");
  card.setMessage("Uploading…");
  xhr.send(form);
}

async function retryLater(file, card, choice, seconds) {
  card.setState("waiting", "busy");
  for (let left = Math.max(1, seconds); left > 0; left--) {
    card.setMessage(`The server is busy (its queue is full): retrying in ${left} s…`);
    await sleep(1000);
  }
  upload(file, card, choice);
}

async function poll(card, job) {
  let delay = POLL_MS;
  let next = false; // the job is next or running: wait for its end on the server (long-poll)
  for (;;) {
    if (Date.now() - job.started > GIVE_UP_MS) {
      card.fail("Gave up waiting after 10 minutes; the server may be overloaded. Try again later.");
      return;
    }
    try {
      // The server answers a long-poll as soon as the job ends (or at once when it has too many
      // waiting); further back in the queue, a poll a second shows the position moving.
      const longPoll = next;
      const response = await api(`/status/${job.sid}${longPoll ? `?wait=${LONG_POLL_S}` : ""}`);
      const status = await response.json();
      if (response.status === 404) {
        card.fail("The server no longer has this job (it expired or was removed).");
        return;
      }
      if (!response.ok) throw new Error(status.error || `HTTP ${response.status}`);
      await card.showStatus(status);
      if (status.state === "done" || status.state === "failed") return;
      // A download or a video says how far it is: poll it (a long-poll answers only at the end).
      const reports = ["download", "video", "batch"].includes(status.kind);
      next = !reports && (status.state === "running" || status.queue_position === 1);
      delay = next && !longPoll ? 0 : POLL_MS; // the first long-poll at once; then at most 1/s
    } catch (error) {
      delay = Math.min(delay * 2, MAX_POLL_MS);
      card.setMessage(`Lost contact with the server (${error.message}); retrying in ${delay / 1000} s.`, true);
    }
    await sleep(delay);
  }
}

// --- Controls -----------------------------------------------------------------------------------
let modelInfo = { hints: {}, classes: {} };

async function loadModels() {
  const select = $("#model");
  try {
    const response = await api("/models");
    const body = await response.json();
    const chosen = select.value || body.default;
    modelInfo = { hints: {}, classes: {} };
    select.replaceChildren();
    for (const model of body.models) {
      modelInfo.classes[model.name] = model.classes;
      const option = new Option(model.available ? model.name : `${model.name} (not installed)`, model.name);
      option.disabled = !model.available;
      option.selected = model.name === chosen && model.available;
      const detects = model.classes.length <= MAX_LISTED_CLASSES ? model.classes.join(", ") : `${model.classes.length} classes`;
      modelInfo.hints[model.name] = [model.hint, model.box_ap && `COCO box AP ${model.box_ap}`, `detects ${detects}`]
        .filter(Boolean).join("; ");
      select.append(option);
    }
    showModelHint();
    const missing = body.models.filter((model) => !model.available && model.downloadable);
    $("#download-model").replaceChildren(...missing.map((model) => new Option(model.name, model.name)));
    $("#downloads").hidden = !missing.length;
    return body;
  } catch (error) {
    $("#model-hint").textContent = `Could not load the model list (${error.message}); the server default is used.`;
    return null;
  }
}

function showModelHint() {
  const name = $("#model").value;
  $("#model-hint").textContent = modelInfo.hints[name] || "";
  $("#class-names").replaceChildren(...(modelInfo.classes[name] || []).map((label) => new Option(label)));
}

// A model's weights downloaded by the server, as a job with progress.
async function startDownload(name) {
  const card = new JobCard(`Download of model ${name}`);
  card.setState("uploading", "asking");
  const response = await fetch(`/models/${encodeURIComponent(name)}/download`,
                               { method: "POST", headers: keyHeaders() });
  let body = {};
  try { body = await response.json(); } catch { /* not JSON: described below */ }
  if (response.status === 401 && askForKey()) {
    card.el.remove();
    startDownload(name);
  } else if (response.status === 200) {
    card.setState("done", "installed");
    card.setMessage(`Model ${name} is installed already.`);
    loadModels();
  } else if (response.status === 202) {
    const job = { sid: body.sid, name: `Download of model ${name}`, kind: "download", started: Date.now() };
    rememberJob(job);
    poll(card, job);
  } else {
    card.fail(`Download refused: ${body.error || `HTTP ${response.status}`}`);
  }
}

function startJobs(files) {
  const images = files.filter((f) => f.type.startsWith("image/"));
  if ($("#as-batch").checked && images.length > 1) { // one card, one job for all the images
    const card = new JobCard(`${images.length} images (a batch)`);
    card.files = images;
    $(".figure", card.el).hidden = true;
    upload(images[0], card, { model: $("#model").value, threshold: $("#threshold").value,
                              classes: $("#classes").value });
    files = files.filter((f) => !images.includes(f));
  }
  for (const file of files) {
    const card = new JobCard(file.name);
    if (file.type.startsWith("video/") || /\.zip$/i.test(file.name)) {
      $(".figure", card.el).hidden = true;
    } else {
      card.image.classList.add("preview");
      card.image.alt = `Preview of ${file.name}`;
      card.image.src = URL.createObjectURL(file);
    }
    upload(file, card, { model: $("#model").value, threshold: $("#threshold").value,
                         classes: $("#classes").value });
  }
}

function setUp() {
  const zone = $("#drop-zone");
  const input = $("#file-input");
  zone.addEventListener("click", () => input.click());
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
  });
  input.addEventListener("change", () => { startJobs([...input.files]); input.value = ""; });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    startJobs([...e.dataTransfer.files]);
  });
  const slider = $("#threshold");
  slider.addEventListener("input", () => { $("#threshold-value").textContent = Number(slider.value).toFixed(2); });
  $("#clear-jobs").addEventListener("click", () => {
    localStorage.removeItem(STORE_KEY);
    $("#jobs").replaceChildren();
    $("#no-jobs").hidden = false;
  });
  $("#model").addEventListener("change", showModelHint);
  $("#download-button").addEventListener("click", () => startDownload($("#download-model").value));
  loadReview();
  loadModels().then((body) => {
    if (!body) return;
    slider.value = body.default_threshold;
    slider.dispatchEvent(new Event("input"));
  });
  for (const job of savedJobs()) {
    const card = new JobCard(job.name);
    card.setState("queued", "checking");
    poll(card, job);
  }
}

document.addEventListener("DOMContentLoaded", setUp);
