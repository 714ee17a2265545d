// Datasets and teaching on the page: each dataset with its counts per class and a gallery of its
// images with their boxes; a COCO zip imported (POST /datasets/NAME/import); a training started
// (POST /training) and followed through /status (progress bar, loss and validation mAP plotted),
// cancelled, and its versions compared and promoted (GET /models/NAME, POST .../promote).
// Uses app.js's helpers ($, api, sendJson, fileUrl, sleep). Trainings resume after a reload.
"use strict";

const TRAININGS_KEY = "detection.trainings";
const GALLERY_PAGE = 60;  // images shown at once in a dataset's gallery
const SVG = "http://www.w3.org/2000/svg";

const savedTrainings = () => { try { return JSON.parse(localStorage.getItem(TRAININGS_KEY)) || []; } catch { return []; } };
function rememberTraining(training) {
  const kept = savedTrainings().filter((t) => t.sid !== training.sid);
  localStorage.setItem(TRAININGS_KEY, JSON.stringify([...kept, training].slice(-10)));
}
const forgetTraining = (sid) => localStorage.setItem(TRAININGS_KEY, JSON.stringify(savedTrainings().filter((t) => t.sid !== sid)));
const errorOf = async (response) => (await response.json().catch(() => ({}))).error || `HTTP ${response.status}`;
const score = (value) => (typeof value === "number" ? value.toFixed(3) : "–");

// --- The dataset list ----------------------------------------------------------------------------
async function loadDatasets() {
  const response = await api("/datasets");
  if (!response.ok) return;
  const { datasets } = await response.json();
  $("#dataset-count").textContent = datasets.length;
  $("#no-datasets").hidden = datasets.length > 0;
  const open = new Set([...document.querySelectorAll(".dataset .gallery:not([hidden])")].map((g) => g.closest(".dataset").dataset.name));
  $("#dataset-list").replaceChildren(...datasets.map((d) => datasetCard(d, open.has(d.name))));
}

function datasetCard(dataset, showImages) {
  const el = $("#dataset-template").content.firstElementChild.cloneNode(true);
  el.dataset.name = dataset.name;
  $(".dataset-name", el).textContent = dataset.name;
  $(".dataset-size", el).textContent = `${dataset.images} image${dataset.images === 1 ? "" : "s"} (${dataset.split.held_out} held out)`;
  const counts = Object.entries(dataset.boxes).map(([label, n]) => `${label} ${n}`).join(" · ");
  $(".class-counts", el).textContent = counts ? `Boxes per class: ${counts}` : "No classes yet.";
  const toggle = $(".show-images", el);
  toggle.onclick = () => showGallery(el, dataset, toggle.getAttribute("aria-expanded") !== "true");
  $(".train", el).onclick = () => openTrainForm(el, dataset);
  $(".delete-dataset", el).onclick = async () => {
    if (!window.confirm(`Delete dataset ${dataset.name} and its ${dataset.images} images?`)) return;
    const response = await sendJson("DELETE", dataset.url);
    if (response.ok) loadDatasets(); else window.alert(await errorOf(response));
  };
  if (showImages) showGallery(el, dataset, true);
  return el;
}

async function showGallery(el, dataset, show) {
  const gallery = $(".gallery", el);
  const toggle = $(".show-images", el);
  toggle.setAttribute("aria-expanded", String(show));
  toggle.textContent = show ? "Hide images" : "Show images";
  gallery.hidden = !show;
  if (!show) return;
  const response = await api(dataset.images_url);
  if (!response.ok) return;
  const { images } = await response.json();
  const shown = images.slice(-GALLERY_PAGE).reverse();  // the newest first
  gallery.replaceChildren(...await Promise.all(shown.map(galleryItem)));
  $(".gallery-note", el).hidden = images.length <= GALLERY_PAGE;
  $(".gallery-note", el).textContent = `The newest ${GALLERY_PAGE} of ${images.length} images.`;
}

// An image with its boxes, placed in percentages of its size: they follow the image as it scales.
async function galleryItem(image) {
  const item = document.createElement("li");
  item.className = "gallery-item" + (image.split === "held_out" ? " held-out" : "");
  const figure = document.createElement("div");
  figure.className = "figure";
  const img = document.createElement("img");
  img.loading = "lazy";
  img.src = await fileUrl(image.image_url);
  img.alt = `${image.annotations.length} boxes: ${image.annotations.map((a) => a.label).join(", ") || "none"}`;
  figure.append(img, ...image.annotations.map(({ label, box: [x1, y1, x2, y2] }) => {
    const box = document.createElement("div");
    box.className = "gallery-box";
    Object.assign(box.style, {
      left: `${(100 * x1) / image.width}%`, top: `${(100 * y1) / image.height}%`,
      width: `${(100 * (x2 - x1)) / image.width}%`, height: `${(100 * (y2 - y1)) / image.height}%`,
    });
    const tag = document.createElement("span");
    tag.className = "box-tag";
    tag.textContent = label;
    box.append(tag);
    return box;
  }));
  const caption = document.createElement("p");
  caption.className = "help";
  caption.textContent = image.split === "held_out" ? "held out (scores versions)" : "training";
  item.append(figure, caption);
  return item;
}

async function importZip() {
  const input = $("#import-file");
  const name = $("#import-name").value.trim();
  const message = $("#import-message");
  const file = input.files[0];
  if (!file || !name) { message.textContent = "Name a dataset and choose a zip."; return; }
  message.textContent = `Importing ${file.name}…`;
  const button = $("#import-button");
  button.disabled = true;
  try {
    const response = await fetch(`/datasets/${encodeURIComponent(name)}/import`, {
      method: "POST", body: file, headers: { "Content-Type": "application/zip", ...keyHeaders() },
    });
    message.textContent = response.ok ? `Imported ${(await response.json()).imported} images into ${name}.`
      : `Not imported: ${await errorOf(response)}`;
  } catch (error) {
    message.textContent = `Not imported: ${error.message}`;
  } finally {
    button.disabled = false;
    input.value = "";
  }
  loadDatasets();
}

// --- Training: start, follow, cancel, compare, promote ------------------------------------------
async function openTrainForm(el, dataset) {
  const form = $(".train-form", el);
  form.hidden = !form.hidden;
  if (form.hidden) return;
  const { models } = await (await api("/models")).json();
  const bases = models.filter((m) => m.trainable && m.available);
  form.elements.base.replaceChildren(...bases.map((m) => new Option(m.name, m.name)));
  form.elements.name.value ||= dataset.name.replace(/[^A-Za-z0-9_-]/g, "_");
  form.onsubmit = async (event) => {
    event.preventDefault();
    const fields = form.elements;
    const body = { dataset: dataset.name, base: fields.base.value, name: fields.name.value.trim() };
    if (fields.epochs.value) body.epochs = Number(fields.epochs.value);
    if (fields.time_budget.value !== "") body.time_budget = Number(fields.time_budget.value);
    const response = await sendJson("POST", "/training", body);
    const note = $(".train-message", el);
    if (!response.ok) { note.textContent = `Not started: ${await errorOf(response)}`; return; }
    note.textContent = "";
    form.hidden = true;
    const started = await response.json();
    const training = { sid: started.sid, model: started.model, dataset: dataset.name, status_url: started.status_url };
    rememberTraining(training);
    followTraining(training);
  };
}

async function followTraining(training) {
  const card = $("#training-template").content.firstElementChild.cloneNode(true);
  $(".training-name", card).textContent = `${training.model}, from dataset ${training.dataset}`;
  $("#trainings").prepend(card);
  $("#no-trainings").hidden = true;
  const cancel = $(".cancel-training", card);
  cancel.onclick = async () => {
    cancel.disabled = true;
    const response = await sendJson("DELETE", `/training/${training.sid}`);
    if (!response.ok) { $(".stage", card).textContent = await errorOf(response); cancel.disabled = false; }
  };
  $(".dismiss-training", card).onclick = () => { forgetTraining(training.sid); card.remove(); };
  for (;;) {
    const response = await api(training.status_url).catch(() => null);  // offline a moment
    if (!response) { await sleep(2000); continue; }
    if (response.status === 404) { setTrainingState(card, "failed", "gone (its record was pruned)"); break; }
    if (!response.ok) { await sleep(2000); continue; }
    const status = await response.json();
    showTrainingStatus(card, status);
    if (status.state === "done" || status.state === "failed") {
      cancel.hidden = true;
      if (status.state === "done") await showVersions(card, training.model, status.version);
      break;
    }
    await sleep(POLL_MS * 1.5);
  }
}

function setTrainingState(card, state, text) {
  const badge = $(".state", card);
  badge.className = `state ${state}`;
  badge.textContent = state;
  card.dataset.state = state;
  $(".stage", card).textContent = text;
}

function showTrainingStatus(card, status) {
  const bar = $(".training-progress", card);
  bar.value = status.state === "done" ? 1 : status.progress || 0;
  if (status.state === "queued") setTrainingState(card, "queued", `waiting (position ${status.queue_position}); one training at a time`);
  else if (status.state === "running") setTrainingState(card, "running", status.stage || "starting");
  else if (status.state === "failed") setTrainingState(card, "failed", status.error);
  else {
    const served = status.served ? `; the served ${status.served.version}: ${score(status.served.bbox_map50)}` : "";
    setTrainingState(card, "done", `${status.version}: mAP@0.5 ${score(status.metrics.bbox_map50)} on the held-out images${served}.`
      + (status.promoted ? " Promoted: it is served now." : "") + (status.warning ? ` ${status.warning}` : ""));
  }
  if (status.losses) {
    card.plotted = { losses: status.losses, iterations: status.iterations, epochs: status.epochs_planned };
    plot($(".plot", card), status.losses, status.validations || [], status.iterations, status.epochs_planned);
  }
}

// Loss against iterations (left axis, scaled to its range) and each validation's mAP@0.5 (0..1)
// against the epoch it ended, on one time axis.
function plot(svg, losses, validations, iterations, epochs) {
  const [width, height, pad] = [300, 120, 4];
  losses = losses.filter(([, loss]) => Number.isFinite(loss));
  const most = Math.max(...losses.map(([, loss]) => loss), 1e-6);
  const x = (fraction) => pad + fraction * (width - 2 * pad);
  const y = (fraction) => height - pad - fraction * (height - 2 * pad);
  const line = (points, className) => {
    const path = document.createElementNS(SVG, "polyline");
    path.setAttribute("class", className);
    path.setAttribute("points", points.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" "));
    return path;
  };
  svg.replaceChildren(
    line(losses.map(([i, loss]) => [x(i / iterations), y(loss / most)]), "loss-line"),
    line(validations.map(([epoch, map50]) => [x(epoch / epochs), y(map50)]), "map-line"));
  const loss = losses.length ? `loss ${losses.at(-1)[1]} (started at ${losses[0][1]})` : "no loss yet";
  svg.setAttribute("aria-label", `${loss}; validation mAP@0.5: `
    + `${validations.map(([e, m]) => `epoch ${e} ${m}`).join(", ") || "none yet"}`);
}

// The model's versions with their held-out scores; the one this card trained, its validation
// curve plotted whole (the loss as last seen while it ran).
async function showVersions(card, model, trained) {
  const response = await api(`/models/${encodeURIComponent(model)}`);
  if (!response.ok) return;
  const { versions } = await response.json();
  const made = versions.find((v) => v.version === trained);
  if (made?.curve?.length) {
    const seen = card.plotted || { losses: [], iterations: 1 };
    plot($(".plot", card), seen.losses, made.curve.map(([epoch, map50]) => [epoch, map50]),
         seen.iterations, made.epochs?.[1] || made.curve.at(-1)[0]);
  }
  const table = $(".versions", card);
  table.hidden = !versions.length;
  $("tbody", table).replaceChildren(...versions.map((v) => {
    const row = document.createElement("tr");
    const cells = [v.version, score(v.metrics?.bbox_map50), score(v.metrics?.bbox_map), `${v.epochs?.[0]} of ${v.epochs?.[1]}`];
    row.append(...cells.map((text) => Object.assign(document.createElement("td"), { textContent: text })));
    const action = document.createElement("td");
    if (v.served) action.textContent = "served";
    else {
      const button = Object.assign(document.createElement("button"), { type: "button", textContent: "Promote", className: "promote" });
      button.onclick = async () => {
        const promoted = await sendJson("POST", `/models/${encodeURIComponent(model)}/promote`, { version: v.number });
        if (!promoted.ok) { window.alert(await errorOf(promoted)); return; }
        await showVersions(card, model, trained);
        loadModels();  // the upload form's list: the model now serves this version
      };
      action.append(button);
    }
    row.append(action);
    return row;
  }));
}

function setUpTeaching() {
  $("#import-button").addEventListener("click", importZip);
  $("#datasets-details").addEventListener("toggle", (e) => { if (e.target.open) loadDatasets(); });
  loadDatasets();
  for (const training of savedTrainings()) followTraining(training);
}

document.addEventListener("DOMContentLoaded", setUpTeaching);
