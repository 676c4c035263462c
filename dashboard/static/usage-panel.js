// A device card's data budget: its state (ok / warn / pacing / exhausted), used against the
// budget, when it resets, the usage charts, a "grant N MB" action, and the budget fields of the
// settings form. The state comes with the live feed (view.budget, view.usage); the charts'
// history is fetched from GET /api/devices/{id}/usage when the device's count changes (at most
// every REFRESH_MS) and when the hour turns.

import { post } from "./api.js";
import { bytes } from "./format.js";
import { UsageCharts } from "./usage-chart.js";

const REFRESH_MS = 30_000;
const STATE_TEXT = {
  ok: "within budget",
  warn: "80 % of the budget used",
  pacing: "pacing: bitrate lowered to last the period",
  exhausted: "budget used up: streaming stopped",
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function utcText(epochS) {
  if (!epochS) return "—";
  const d = new Date(epochS * 1000);
  return `${d.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

// The card's "data" fact: the period's use, and the budget when there is one.
export function renderUsageFact(dd, view) {
  dd.replaceChildren();
  const u = view.usage;
  const b = view.budget;
  if (!u && !b) {
    dd.textContent = "—";
    return;
  }
  const used = b ? b.used_bytes : u.bytes_total;
  const limit = b ? b.limit_bytes : u.budget_bytes;
  const period = b ? "this period" : (u.month ? `in ${u.month}` : "this period");
  dd.append(el("span", "u-used", `${bytes(used)} ${period}`));
  if (limit) {
    const pct = (100 * used) / limit;
    const meter = el("meter");
    Object.assign(meter, { min: 0, max: limit, value: Math.min(used, limit),
      low: limit * 0.8, high: limit * 0.95, optimum: 0 });
    meter.title = `${pct.toFixed(1)} % of ${bytes(limit)}`;
    dd.append(" ", meter, ` ${pct.toFixed(0)} % of ${bytes(limit)}`);
  } else {
    dd.append(el("span", "muted", " · no budget"));
  }
}

export class UsagePanel {
  constructor(deviceId, { say }) {
    this.id = deviceId;
    this.say = say;
    this.doc = null;
    this.fetchedAt = 0;
    this.fetchedHour = null;
    this.key = null;
    this.inflight = null;
    this.root = el("section", "usage");
    const head = el("div", "u-head");
    this.badge = el("span", "badge budget");
    this.text = el("span", "u-text");
    this.grantButton = el("button", "grant-toggle", "Grant…");
    this.grantButton.type = "button";
    this.grantButton.title = "a one-shot allowance for this budget period";
    this.grantButton.addEventListener("click", () => this.toggleGrant());
    head.append(this.badge, this.text, this.grantButton);
    this.grantForm = this._buildGrant();
    this.grantForm.hidden = true;
    this.charts = el("div", "u-charts");
    this.projection = el("div", "u-projection");
    this.root.append(head, this.grantForm, this.charts, this.projection);
    this.chart = new UsageCharts(this.charts);
  }

  _buildGrant() {
    const form = el("form", "grant");
    const label = el("label", null, "Grant ");
    this.grantInput = el("input");
    Object.assign(this.grantInput, { type: "number", name: "grant_mb", min: 1, max: 1000000,
      step: 1, required: true, value: 50 });
    label.append(this.grantInput, " MB for this period");
    const send = el("button", "grant primary", "Grant");
    send.type = "submit";
    form.append(label, send);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.grant(Number(this.grantInput.value));
    });
    return form;
  }

  update(view) {
    const b = view.budget;
    const state = b ? b.state : "none";
    this.root.dataset.state = state;
    this.badge.dataset.state = state;
    this.badge.textContent = b ? b.state : "no budget";
    let text = b ? STATE_TEXT[b.state] || b.state : "";
    if (b) {
      text += ` · resets ${utcText(b.resets_at)}`;
      if (b.cap_kbps) text += ` · cap ${b.cap_kbps} kbit/s`;
      if (b.allowance_bytes) text += ` · ${bytes(b.allowance_bytes)} granted`;
      if (b.message) text += ` · ${b.message}`;
    }
    this.text.textContent = text;
    const key = JSON.stringify([view.usage && view.usage.at, b && b.state, b && b.used_bytes,
      b && b.limit_bytes]);
    const changed = key !== this.key;
    this.key = key;
    if (changed && (this.doc === null || Date.now() - this.fetchedAt > REFRESH_MS
      || (b && this.doc.state !== b.state))) {
      this.refresh();
    }
  }

  // Called by the card's local timer: the hour turning moves the 48 h window.
  tick() {
    const hour = Math.floor(Date.now() / 3_600_000);
    if (this.fetchedHour !== null && hour !== this.fetchedHour) this.refresh();
  }

  async refresh() {
    if (this.inflight) return this.inflight;
    this.inflight = (async () => {
      try {
        const r = await fetch(`/api/devices/${encodeURIComponent(this.id)}/usage`,
          { cache: "no-store" });
        if (!r.ok) return;
        this.doc = await r.json();
        this.fetchedAt = Date.now();
        this.fetchedHour = Math.floor(this.fetchedAt / 3_600_000);
        this._renderProjection(this.doc);
        await this.chart.render(this.doc);
        this.root.dataset.rendered = String(this.fetchedAt);
      } catch (e) {
        this.projection.textContent = `usage history unavailable: ${e.message || e}`;
      } finally {
        this.inflight = null;
      }
    })();
    return this.inflight;
  }

  _renderProjection(doc) {
    if (doc.projected_bytes === null) {
      this.projection.textContent = "no usage reported this period yet";
      return;
    }
    let text = `at this pace ${bytes(doc.projected_bytes)} by ${utcText(doc.period.end)}`;
    if (doc.limit_bytes) {
      text += ` (${doc.projected_pct.toFixed(0)} % of the budget)`;
      this.projection.dataset.over = String(doc.projected_bytes > doc.limit_bytes);
    }
    this.projection.textContent = text;
  }

  toggleGrant() {
    this.grantForm.hidden = !this.grantForm.hidden;
  }

  async grant(mb) {
    this.say(`granting ${mb} MB…`);
    const r = await post(`/api/devices/${encodeURIComponent(this.id)}/grant?wait=10`, { mb });
    if (r.status === 504) {
      this.say(`grant of ${mb} MB sent; no answer from the device within 10 s`, "error");
    } else if (!r.ok) {
      this.say(`grant refused: ${r.detail}`, "error");
    } else if (r.doc.state === "failed") {
      this.say(`grant failed: ${r.doc.error}`, "error");
    } else {
      this.grantForm.hidden = true;
      this.say(`${mb} MB granted for this period`);
    }
  }
}

// --- the budget fields of the card's settings form ----------------------------------------------

export const BUDGET_DEFAULTS = { data_budget_mb: null, budget_reset_day: 1, budget_pacing: false };

export function addBudgetFields(form, before) {
  const fields = el("fieldset", "budget-fields");
  fields.append(el("legend", null, "Data budget"));
  const mb = el("input");
  Object.assign(mb, { type: "number", name: "data_budget_mb", min: 0.001, step: "any",
    placeholder: "none" });
  const day = el("input");
  Object.assign(day, { type: "number", name: "budget_reset_day", min: 1, max: 28, step: 1,
    required: true });
  const pacing = el("input");
  pacing.type = "checkbox";
  pacing.name = "budget_pacing";
  const lMb = el("label", null, "Monthly budget (MB, empty: none)");
  lMb.append(mb);
  const lDay = el("label", null, "Resets on day (00:00 UTC)");
  lDay.append(day);
  const lPacing = el("label", "check", "Pace the bitrate to last the month");
  lPacing.prepend(pacing);
  fields.append(lMb, lDay, lPacing);
  form.insertBefore(fields, before);
  return { mb, day, pacing };
}

export function fillBudgetFields(inputs, cur) {
  inputs.mb.value = cur.data_budget_mb === null || cur.data_budget_mb === undefined
    ? "" : cur.data_budget_mb;
  inputs.day.value = cur.budget_reset_day || 1;
  inputs.pacing.checked = Boolean(cur.budget_pacing);
}

export function readBudgetFields(inputs) {
  const text = inputs.mb.value.trim();
  return {
    data_budget_mb: text === "" ? null : Number(text),
    budget_reset_day: Number(inputs.day.value),
    budget_pacing: inputs.pacing.checked,
  };
}
