// Correcting a result on the page: the drawn boxes become editable ones over the uploaded image
// (drag to move, corners to resize, drag on the image to draw a new one; a label from the list or
// a new one; Delete removes, arrows nudge, ] and [ select the next or previous box, Escape
// deselects), then "Save to dataset" adds the
// upload with its corrected boxes to a dataset of the service (POST /datasets/NAME/images with
// its sid). Mouse, pen and touch alike (pointer events). Boxes are kept in image pixels.
"use strict";

const MIN_BOX = 2;  // image pixels: a smaller drag is a click, not a box
const CORNERS = ["nw", "ne", "sw", "se"];

class BoxEditor {
  // host: { el (what holds the image), image, after (the editor's controls go after it),
  // imageUrl (the upload as stored, not drawn on), onSaved }; status: { sid, image, detections }
  constructor(host, status, { api, fileUrl, sendJson }) {
    this.host = host;
    this.status = status;
    this.io = { api, fileUrl, sendJson };
    this.size = status.image;
    this.boxes = status.detections.map((d) => ({ label: d.label, box: d.bbox.map(Number) }));
    this.selected = null;
    this.el = $("#editor-template").content.firstElementChild.cloneNode(true);
    this.layer = $(".box-layer", this.el);
    this.labelInput = $(".label-input", this.el);
    this.datasetSelect = $(".dataset-select", this.el);
    this.newName = $(".new-dataset", this.el);
    this.message = $(".editor-message", this.el);
  }

  async open() {
    this.image = this.host.image;
    this.drawnSrc = this.image.src;
    this.image.src = await this.io.fileUrl(this.host.imageUrl);
    await this.image.decode().catch(() => {});
    this.image.parentElement.append(this.layer);
    this.host.after.after(this.el);
    this.host.el.classList.add("editing");
    this.bind();
    await this.loadDatasets();
    this.render();
  }

  close() {
    this.layer.remove();
    this.el.remove();
    this.image.src = this.drawnSrc;
    this.host.el.classList.remove("editing");
    window.removeEventListener("resize", this.onResize);
  }

  scale() { return this.image.clientWidth / this.size.width; }

  // --- rendering --------------------------------------------------------------------------------
  render() {
    const s = this.scale();
    this.layer.replaceChildren(...this.boxes.map((b, i) => {
      const div = document.createElement("div");
      div.className = "edit-box" + (i === this.selected ? " selected" : "");
      div.dataset.index = i;
      const [x1, y1, x2, y2] = b.box;
      Object.assign(div.style, { left: `${x1 * s}px`, top: `${y1 * s}px`,
                                 width: `${(x2 - x1) * s}px`, height: `${(y2 - y1) * s}px` });
      const tag = document.createElement("span");
      tag.className = "box-tag";
      tag.textContent = b.label || "?";
      div.append(tag);
      for (const corner of CORNERS) {
        const handle = document.createElement("span");
        handle.className = `handle ${corner}`;
        handle.dataset.corner = corner;
        div.append(handle);
      }
      return div;
    }));
    $(".box-count", this.el).textContent = `${this.boxes.length} box${this.boxes.length === 1 ? "" : "es"}`;
    if (this.selected !== null) this.labelInput.value = this.boxes[this.selected].label;
  }

  select(index) {
    this.selected = index;
    this.render();
  }

  // --- pointer and keyboard ---------------------------------------------------------------------
  bind() {
    this.layer.addEventListener("pointerdown", (e) => this.pointerDown(e));
    this.layer.addEventListener("keydown", (e) => this.key(e));
    this.labelInput.addEventListener("input", () => {
      if (this.selected === null) return;
      this.boxes[this.selected].label = this.labelInput.value.trim();
      this.render();
    });
    $(".delete-box", this.el).addEventListener("click", () => this.removeSelected());
    $(".save-box", this.el).addEventListener("click", () => this.save());
    $(".cancel-edit", this.el).addEventListener("click", () => this.close());
    this.datasetSelect.addEventListener("change", () => {
      this.newName.hidden = this.datasetSelect.value !== "";
    });
    this.onResize = () => this.render();
    window.addEventListener("resize", this.onResize);
  }

  point(e) {  // the pointer in image pixels, within the image
    const rect = this.layer.getBoundingClientRect();
    const s = this.scale();
    const clamp = (v, high) => Math.min(high, Math.max(0, v));
    return [clamp((e.clientX - rect.left) / s, this.size.width),
            clamp((e.clientY - rect.top) / s, this.size.height)];
  }

  pointerDown(e) {
    e.preventDefault();
    this.layer.focus();
    this.layer.setPointerCapture(e.pointerId);
    const start = this.point(e);
    const target = e.target.closest(".edit-box");
    const corner = e.target.dataset.corner;
    let index = target ? Number(target.dataset.index) : null;
    let original = index === null ? null : [...this.boxes[index].box];
    if (index === null) {  // a new box, drawn from here
      this.boxes.push({ label: this.labelInput.value.trim(), box: [...start, ...start] });
      index = this.boxes.length - 1;
      original = [...start, ...start];
    }
    this.select(index);
    const move = (ev) => {
      const [x, y] = this.point(ev);
      const [dx, dy] = [x - start[0], y - start[1]];
      let [x1, y1, x2, y2] = original;
      if (!target) {
        [x1, x2] = [Math.min(start[0], x), Math.max(start[0], x)];
        [y1, y2] = [Math.min(start[1], y), Math.max(start[1], y)];
      } else if (corner) {
        if (corner.includes("w")) x1 = Math.min(x, x2 - MIN_BOX); else x2 = Math.max(x, x1 + MIN_BOX);
        if (corner.includes("n")) y1 = Math.min(y, y2 - MIN_BOX); else y2 = Math.max(y, y1 + MIN_BOX);
      } else {  // the whole box, kept within the image
        const mx = Math.min(Math.max(dx, -x1), this.size.width - x2);
        const my = Math.min(Math.max(dy, -y1), this.size.height - y2);
        [x1, y1, x2, y2] = [x1 + mx, y1 + my, x2 + mx, y2 + my];
      }
      this.boxes[index].box = [x1, y1, x2, y2];
      this.render();
    };
    const up = () => {
      this.layer.removeEventListener("pointermove", move);
      this.layer.removeEventListener("pointerup", up);
      this.layer.removeEventListener("pointercancel", up);
      const [x1, y1, x2, y2] = this.boxes[index].box;
      if (!target && (x2 - x1 < MIN_BOX || y2 - y1 < MIN_BOX)) {  // a click on the image
        this.boxes.splice(index, 1);
        this.select(null);
      }
    };
    this.layer.addEventListener("pointermove", move);
    this.layer.addEventListener("pointerup", up);
    this.layer.addEventListener("pointercancel", up);
  }

  key(e) {
    if (e.key === "Escape") { this.select(null); return; }
    if ((e.key === "]" || e.key === "[") && this.boxes.length) {
      const step = e.key === "]" ? 1 : -1;
      const from = this.selected === null ? (step > 0 ? -1 : 0) : this.selected;
      this.select((from + step + this.boxes.length) % this.boxes.length);
      return;
    }
    if (this.selected === null) return;
    if (e.key === "Delete" || e.key === "Backspace") {
      e.preventDefault();
      this.removeSelected();
      return;
    }
    const step = e.shiftKey ? 10 : 1;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (!(e.key in moves)) return;
    e.preventDefault();
    const [dx, dy] = moves[e.key];
    const [x1, y1, x2, y2] = this.boxes[this.selected].box;
    const mx = Math.min(Math.max(dx, -x1), this.size.width - x2);
    const my = Math.min(Math.max(dy, -y1), this.size.height - y2);
    this.boxes[this.selected].box = [x1 + mx, y1 + my, x2 + mx, y2 + my];
    this.render();
  }

  removeSelected() {
    if (this.selected === null) return;
    this.boxes.splice(this.selected, 1);
    this.select(null);
  }

  // --- saving -----------------------------------------------------------------------------------
  async loadDatasets() {
    const response = await this.io.api("/datasets");
    const datasets = response.ok ? (await response.json()).datasets : [];
    const options = datasets.map((d) => new Option(`${d.name} (${d.images} image${d.images === 1 ? "" : "s"})`, d.name));
    this.datasetSelect.replaceChildren(...options, new Option("New dataset…", ""));
    this.newName.hidden = datasets.length > 0;
    const labels = new Set([...this.boxes.map((b) => b.label), ...datasets.flatMap((d) => d.classes)]);
    $(".label-names", this.el).replaceChildren(...[...labels].filter(Boolean).map((l) => new Option(l)));
  }

  async save() {
    const button = $(".save-box", this.el);
    if (button.disabled) return;
    button.disabled = true;  // one save at a time: a double click must not add it twice
    try { await this.saveOnce(); } finally { button.disabled = false; }
  }

  async saveOnce() {
    const unlabelled = this.boxes.findIndex((b) => !b.label);
    if (unlabelled >= 0) {
      this.select(unlabelled);
      this.say("Give every box a label first.", true);
      return;
    }
    const flat = this.boxes.findIndex(({ box: [x1, y1, x2, y2] }) => x2 - x1 < 1 || y2 - y1 < 1);
    if (flat >= 0) {  // a detection can be a sliver at the image's edge
      this.select(flat);
      this.say("This box is under a pixel wide or high: resize it or delete it.", true);
      return;
    }
    let name = this.datasetSelect.value;
    if (!name) {
      name = this.newName.value.trim();
      const created = await this.io.sendJson("POST", "/datasets", { name, classes: [] });
      if (!created.ok) { this.say((await created.json()).error, true); return; }
    }
    const round = (v) => Math.round(v * 10) / 10;
    const annotations = this.boxes.map((b) => ({ label: b.label, box: b.box.map(round) }));
    const added = await this.io.sendJson("POST", `/datasets/${encodeURIComponent(name)}/images`,
                                         { sid: this.status.sid, annotations, add_classes: true });
    const body = await added.json();
    if (!added.ok) { this.say(body.error, true); return; }
    this.say(`Saved to dataset ${name} (${annotations.length} boxes, ${body.split === "held_out" ? "held out for comparing versions" : "for training"}).`);
    await this.loadDatasets();
    this.datasetSelect.value = name;
    this.newName.hidden = true;
    if (typeof loadDatasets === "function") loadDatasets();  // the page's list (teaching.js)
    if (this.host.onSaved) await this.host.onSaved();
  }

  say(text, isError = false) {
    this.message.textContent = text;
    this.message.classList.toggle("error", isError);
  }
}
