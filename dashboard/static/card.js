// One device card: presence, streaming state, video and link figures, data used, its picture
// (stage.js: snapshot, live still or last frame; the live tile), controls, and the settings form
// with pending -> applied -> error.

import { post } from "./api.js";
import { ago, bytes, codecName, codecOfEncoder, num } from "./format.js";
import { Stage } from "./stage.js";
import { Tile } from "./tile.js";
import {
  BUDGET_DEFAULTS, UsagePanel, addBudgetFields, fillBudgetFields, readBudgetFields,
  renderUsageFact,
} from "./usage-panel.js";

const RESOLUTIONS = [[320, 180], [426, 240], [640, 360], [854, 480], [1280, 720], [1920, 1080]];
const CODECS = [["auto", "auto (forward a camera's stream, else hardware H.265, else AV1)"],
  ["av1", "AV1"], ["hevc", "H.265"], ["h264", "H.264"],
  ["copy", "copy (forward the camera's own H.264/H.265)"]];
const DEFAULTS = {
  codec: "auto", bitrate_kbps: 250, width: 640, height: 360, fps: 15, keyint_s: 30,
  srt_latency_ms: 120, always_on: false, ...BUDGET_DEFAULTS,
};
const NUMBER_FIELDS = [
  ["bitrate_kbps", "Bitrate (kbit/s)", 20, 20000, 1],
  ["fps", "Frames per second", 1, 60, 1],
  ["keyint_s", "Keyframe interval (s)", 0.5, 60, 0.5],
  ["srt_latency_ms", "SRT latency (ms)", 20, 8000, 10],
];

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(className, text, onClick) {
  const b = el("button", className, text);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

function fact(list, label, className) {
  const dt = el("dt", null, label);
  const dd = el("dd", className);
  list.append(dt, dd);
  return dd;
}

// Measured figures, or "measuring" while a (re)started stream has none yet (never the previous
// session's, never a rate over a few milliseconds: see the dashboard's _live_figures).
function rateText(view) {
  const v = view.video || {};
  const target = `${num(v.target_fps)} fps · ${num(v.target_bitrate_kbps)} kbit/s`;
  if (!view.streaming) return `target ${target}`;
  if (v.fps === null || v.fps === undefined) return `measuring… (target ${target})`;
  return `${num(v.fps, 1)} / ${num(v.target_fps)} fps · ${num(v.bitrate_kbps)} / `
    + `${num(v.target_bitrate_kbps)} kbit/s`;
}

export class Card {
  constructor(view) {
    this.id = view.id;
    this.view = view;
    this.receivedAt = performance.now();
    this.tile = null;
    this.formBase = null;
    this._build();
    this.update(view);
  }

  _build() {
    const root = el("article", "card");
    root.dataset.device = this.id;
    const head = el("header");
    this.dot = el("span", "dot");
    const name = el("h2", null, this.id);
    this.presence = el("span", "badge presence");
    this.streaming = el("span", "badge streaming");
    head.append(this.dot, name, this.presence, this.streaming);

    this.stage = new Stage(this.id);

    const facts = el("dl", "facts");
    this.fVideo = fact(facts, "video", "f-video");
    this.fRate = fact(facts, "rate", "f-rate");
    this.fControl = fact(facts, "held at", "f-control");
    this.fLink = fact(facts, "SRT", "f-link");
    this.fUsage = fact(facts, "data", "f-usage");
    this.fViewers = fact(facts, "viewers", "f-viewers");

    this.sync = el("div", "sync");
    const actions = el("div", "actions");
    this.watchButton = button("watch primary", "Watch", () => this.toggleWatch());
    this.startButton = button("start", "Start", () => this.setStreaming(true));
    this.stopButton = button("stop", "Stop", () => this.setStreaming(false));
    this.snapButton = button("snapshot", "Snapshot", () => this.command("snapshot", 15));
    this.keyButton = button("keyframe", "Keyframe", () => this.command("keyframe", 5));
    this.settingsButton = button("settings-toggle", "Settings", () => this.toggleSettings());
    this.forgetButton = button("forget", "Forget", () => this.forget());
    actions.append(this.watchButton, this.startButton, this.stopButton, this.snapButton,
      this.keyButton, this.settingsButton, this.forgetButton);
    this.result = el("div", "result");
    this.result.setAttribute("role", "status");
    this.form = this._buildForm();
    this.form.hidden = true;
    this.usage = new UsagePanel(this.id, { say: (text, kind) => this.say(text, kind) });
    root.append(head, this.stage.root, facts, this.usage.root, this.sync, actions, this.result,
      this.form);
    this.root = root;
  }

  _buildForm() {
    const form = el("form", "settings");
    const add = (label, input) => {
      const l = el("label", null, label);
      l.append(input);
      form.append(l);
      return input;
    };
    this.inResolution = add("Resolution", el("select"));
    this.inResolution.name = "resolution";
    this.inCodec = add("Codec", el("select"));
    this.inCodec.name = "codec";
    for (const [value, label] of CODECS) this.inCodec.append(new Option(label, value));
    this.inputs = {};
    for (const [key, label, min, max, step] of NUMBER_FIELDS) {
      const input = el("input");
      Object.assign(input, { type: "number", name: key, min, max, step, required: true });
      this.inputs[key] = add(label, input);
    }
    this.inAlwaysOn = el("input");
    this.inAlwaysOn.type = "checkbox";
    this.inAlwaysOn.name = "always_on";
    const l = el("label", "check", "Always on (stream with no viewer)");
    l.prepend(this.inAlwaysOn);
    form.append(l);
    const row = el("div", "form-actions");
    this.budgetInputs = addBudgetFields(form, null);
    const apply = el("button", "apply primary", "Apply");
    apply.type = "submit";
    row.append(apply, button("cancel", "Cancel", () => { form.hidden = true; }));
    this.formNote = el("span", "form-note");
    row.append(this.formNote);
    form.append(row);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.applySettings();
    });
    return form;
  }

  // --- rendering ---------------------------------------------------------------------------

  update(view) {
    this.view = view;
    this.receivedAt = performance.now();
    const r = this.root;
    r.dataset.presence = view.presence;
    r.dataset.streaming = String(view.streaming);
    this.presence.textContent = view.presence;
    this.presence.title = `last seen ${ago(view.last_seen)}`;
    this.streaming.textContent = view.state === "restarting" ? "restarting"
      : view.streaming ? "streaming" : view.streaming === false ? "idle" : "?";
    const v = view.video || {};
    const codec = codecOfEncoder(v.encoder) || v.codec;
    const size = v.width ? ` · ${v.width}×${v.height}` : "";
    this.fVideo.textContent = `${codecName(codec)}${v.encoder ? ` (${v.encoder})` : ""}${size}`;
    this.fRate.textContent = rateText(view);
    const srt = view.srt;
    this.fLink.textContent = srt && view.streaming
      ? `RTT ${num(srt.rtt_ms, 1)} ms · loss ${num(srt.loss_pct, 2)} %`
        + (srt.retransmits ? ` · ${srt.retransmits} retransmits` : "")
      : "—";
    this._renderRateControl(view);
    renderUsageFact(this.fUsage, view);
    this.usage.update(view);
    this.stage.setView(view);
    this._renderSync(view);
    this._renderButtons(view);
    this.tick();
  }

  // Time-dependent text (relative ages, countdowns); called by a local timer, never the network.
  tick() {
    const view = this.view;
    const od = view.ondemand || {};
    let text = od.viewers === null || od.viewers === undefined ? "—" : String(od.viewers);
    if (od.pinned) text += " · started by an operator";
    if (od.stops_in_s !== null && od.stops_in_s !== undefined) {
      const left = od.stops_in_s - (performance.now() - this.receivedAt) / 1000;
      text += left > 0 ? ` · stops in ${Math.ceil(left)} s` : " · stopping";
    }
    this.fViewers.textContent = text;
    this.stage.tick();
    this.usage.tick();
    this.presence.title = `last seen ${ago(view.last_seen)}`;
  }

  // What the device's rate loop aims at and why (telemetry.rate), and a smaller picture it chose
  // itself (reported.ladder). "setting" means nothing holds it below bitrate_kbps.
  _renderRateControl(view) {
    const rate = view.streaming ? view.rate : null;
    const ladder = view.streaming ? view.ladder : null;
    const row = this.fControl;
    row.replaceChildren();
    row.title = "";
    if (!rate) {
      row.textContent = "—";
      return;
    }
    const held = rate.reason !== "setting";
    row.classList.toggle("held", held);
    row.append(`${num(rate.target_kbps)} kbit/s`);
    row.append(el("span", "muted", held ? ` · ${rate.reason}` : " · the setting"));
    if (ladder) {
      row.append(el("span", "ladder", ` · ${ladder.width}×${ladder.height} ${ladder.fps} fps`));
      row.title = ladder.reason;
    }
  }

  _renderSync(view) {
    let state = view.sync;
    let text;
    const dv = view.desired_v;
    const av = view.applied_v;
    if (state === "none") {
      text = "settings: the device's own (none sent)";
    } else if (state === "applied") {
      text = `settings v${dv} applied`;
    } else if (state === "error") {
      text = `settings v${dv} not applied: ${view.error}`;
    } else {
      text = `pending: settings v${dv} sent, device at ${av === null ? "none" : `v${av}`}`;
      if (view.presence !== "online") text += " (applied when it comes back online)";
    }
    if (view.error && state === "applied") {
      state = "error";
      text = `device error: ${view.error}`;
    }
    if (view.last_set_error) {
      text += ` · last change refused: ${view.last_set_error.error}`;
    }
    if (view.notice) text += ` · ${view.notice}`;
    this.sync.dataset.state = state;
    this.sync.textContent = text;
  }

  _renderButtons(view) {
    const online = view.presence === "online";
    this.startButton.hidden = Boolean(view.streaming);
    this.stopButton.hidden = !view.streaming;
    this.keyButton.disabled = !online || !view.streaming;
    this.snapButton.disabled = !online;
  }

  // --- actions -----------------------------------------------------------------------------

  say(text, kind = "info") {
    this.result.textContent = text;
    this.result.dataset.kind = kind;
  }

  async setStreaming(on) {
    if (!on) this.closeTile(); // a tile would rejoin and start the camera again on demand
    const r = await post(`/api/devices/${this.id}/set`, { streaming: on });
    if (r.ok) {
      this.say(on ? `start sent (settings v${r.doc.v})` : `stop sent (settings v${r.doc.v})`);
    } else {
      this.say(`${on ? "start" : "stop"} refused: ${r.detail}`, "error");
    }
  }

  async command(name, waitS) {
    this.say(`${name}: sent, waiting for the device…`);
    const r = await post(`/api/devices/${this.id}/cmd/${name}?wait=${waitS}`);
    if (r.status === 504) {
      this.say(`${name}: no answer within ${waitS} s`, "error");
    } else if (!r.ok) {
      this.say(`${name} refused: ${r.detail}`, "error");
    } else if (r.doc.state === "failed") {
      this.say(`${name} failed: ${r.doc.error}`, "error");
    } else {
      this.say(`${name}: done`);
    }
  }

  async forget() {
    const note = this.view.presence === "online"
      ? " It is online: it comes back when it next connects unless its account is removed too."
      : "";
    if (!window.confirm(`Forget ${this.id}? Its settings, state and snapshot are deleted.${note}`)) {
      return;
    }
    this.closeTile();
    const r = await post(`/api/devices/${this.id}/forget`);
    if (!r.ok) this.say(`forget refused: ${r.detail}`, "error");
  }

  toggleWatch() {
    if (this.tile) this.closeTile();
    else this.openTile();
  }

  openTile() {
    if (this.tile) return;
    this.tile = new Tile(this.id, {
      onSwitchToAv1: async () => {
        return post(`/api/devices/${this.id}/set`, { codec: "av1" });
      },
    });
    this.stage.attach(this.tile);
    this.root.classList.add("watching");
    this.watchButton.textContent = "Close";
    this.tile.open();
  }

  closeTile() {
    if (!this.tile) return;
    this.stage.detach(this.tile);
    this.tile = null;
    this.root.classList.remove("watching");
    this.watchButton.textContent = "Watch";
  }

  toggleSettings() {
    if (!this.form.hidden) {
      this.form.hidden = true;
      return;
    }
    this._fillForm();
    this.form.hidden = false;
  }

  _current() {
    const desired = { ...(this.view.desired || {}) };
    delete desired.v;
    return { ...DEFAULTS, ...(this.view.settings || {}), ...desired };
  }

  _fillForm() {
    const cur = this._current();
    this.formBase = cur;
    const sel = this.inResolution;
    sel.replaceChildren();
    const sizes = RESOLUTIONS.slice();
    if (!sizes.some(([w, h]) => w === cur.width && h === cur.height)) {
      sizes.push([cur.width, cur.height]);
    }
    for (const [w, h] of sizes) sel.append(new Option(`${w}×${h}`, `${w}x${h}`));
    sel.value = `${cur.width}x${cur.height}`;
    this.inCodec.value = cur.codec;
    for (const [key] of NUMBER_FIELDS) this.inputs[key].value = cur[key];
    this.inAlwaysOn.checked = Boolean(cur.always_on);
    fillBudgetFields(this.budgetInputs, cur);
    this.formNote.textContent = "";
  }

  async applySettings() {
    const base = this.formBase || this._current();
    const [width, height] = this.inResolution.value.split("x").map(Number);
    const wanted = {
      width, height, codec: this.inCodec.value, always_on: this.inAlwaysOn.checked,
    };
    for (const [key] of NUMBER_FIELDS) wanted[key] = Number(this.inputs[key].value);
    Object.assign(wanted, readBudgetFields(this.budgetInputs));
    const patch = {};
    for (const [key, value] of Object.entries(wanted)) {
      if (value !== base[key]) patch[key] = value;
    }
    if (!Object.keys(patch).length) {
      this.formNote.textContent = "nothing changed";
      return;
    }
    this.formNote.textContent = "sending…";
    const r = await post(`/api/devices/${this.id}/set`, patch);
    if (r.ok) {
      this.formBase = { ...base, ...patch };
      this.formNote.textContent = `sent as settings v${r.doc.v}`;
      this.form.hidden = true;
      this.say(`settings v${r.doc.v} sent: ${Object.keys(patch).join(", ")}`);
    } else {
      this.formNote.textContent = `refused: ${r.detail}`;
    }
  }
}
