// The two usage charts of a device card, drawn by the vendored uPlot (static/vendor/README.md):
//   - bytes per hour over the last 48 h, stacked by kind of traffic (SRT video, MQTT control,
//     snapshots);
//   - the budget period to date: use so far (walked back from the device's own count), the
//     budget (plus one-shot allowances) and where the period ends at its pace so far (dashed).
// Input: the dashboard's GET /api/devices/{id}/usage document. uPlot is loaded on first use.

import { bytes } from "./format.js";

const KIND_COLORS = { srt: "#4ea1ff", mqtt: "#3ccf7a", snapshot: "#f0b43c" };
const KIND_LABELS = { srt: "video (SRT)", mqtt: "control (MQTT)", snapshot: "snapshots" };
// uPlot keeps state in the option objects it is given: a fresh set for every chart.
function timeAxis() {
  return { stroke: "#8a949f", grid: { stroke: "#2c323a", width: 1 },
    ticks: { stroke: "#2c323a", width: 1 } };
}
const HEIGHT = 130;

let uPlotModule = null;

async function loadUPlot() {
  if (!uPlotModule) {
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = "/static/vendor/uPlot.min.css";
    document.head.append(link);
    uPlotModule = import("./vendor/uPlot.esm.js").then((m) => m.default);
  }
  return uPlotModule;
}

function byteAxis() {
  return { ...timeAxis(), size: 72, values: (u, ticks) => ticks.map((v) => bytes(v)) };
}

// The hourly bars, stacked: each kind is drawn as the sum of itself and the kinds below it, the
// tallest first, so later (shorter) bars paint over the earlier; the legend shows each kind's
// own bytes.
export function hourlyData(doc) {
  const h = doc.hourly;
  const kinds = Object.keys(h.by_kind).filter((k) => k in KIND_COLORS
    || h.by_kind[k].some((v) => v > 0));
  const stacked = [];
  let running = h.hours.map(() => 0);
  for (const k of kinds) {
    running = running.map((v, i) => v + h.by_kind[k][i]);
    stacked.push(running);
  }
  // Draw order: the full stack first.
  const order = kinds.map((k, i) => i).reverse();
  return {
    kinds: order.map((i) => kinds[i]),
    raw: order.map((i) => h.by_kind[kinds[i]]),
    data: [h.hours, ...order.map((i) => stacked[i])],
  };
}

// The period to date: one x axis for the three series (uPlot's model), nulls where a series has
// no point.
export function periodData(doc) {
  const xs = doc.cumulative.map(([t]) => t);
  const used = doc.cumulative.map(([, v]) => v);
  const end = doc.period.end;
  const projected = xs.map(() => null);
  if (doc.projected_bytes !== null && doc.used_bytes !== null && xs.length) {
    projected[projected.length - 1] = doc.used_bytes;
  }
  if (!xs.length || xs[xs.length - 1] < end) {
    xs.push(end);
    used.push(null);
    projected.push(doc.projected_bytes);
  }
  const limit = doc.limit_bytes;
  const budget = xs.map(() => limit);
  return { data: [xs, used, budget, projected] };
}

export class UsageCharts {
  constructor(container) {
    this.container = container;
    this.hourly = null;
    this.period = null;
    this.hourlyBox = document.createElement("div");
    this.hourlyBox.className = "u-chart u-hourly";
    this.periodBox = document.createElement("div");
    this.periodBox.className = "u-chart u-period";
    container.append(this.hourlyBox, this.periodBox);
    this.width = 320;
    this.resizer = new ResizeObserver(() => this._resize());
    this.resizer.observe(container);
  }

  _resize() {
    const w = Math.max(200, Math.floor(this.container.clientWidth));
    if (w === this.width) return;
    this.width = w;
    for (const chart of [this.hourly, this.period]) {
      if (chart) chart.setSize({ width: w, height: HEIGHT });
    }
  }

  async render(doc) {
    const uPlot = await loadUPlot();
    this.width = Math.max(200, Math.floor(this.container.clientWidth || this.width));
    this._renderHourly(uPlot, doc);
    this._renderPeriod(uPlot, doc);
  }

  _renderHourly(uPlot, doc) {
    const { kinds, raw, data } = hourlyData(doc);
    const key = kinds.join(",");
    if (this.hourly && this.hourlyKinds === key) {
      this.hourlyRaw = raw;
      this.hourly.setData(data);
      return;
    }
    if (this.hourly) this.hourly.destroy();
    this.hourlyKinds = key;
    this.hourlyRaw = raw;
    const bars = uPlot.paths.bars({ size: [0.85, 12], align: 1 });
    const opts = {
      title: "bytes per hour, last 48 h",
      width: this.width,
      height: HEIGHT,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1000, max)] } },
      axes: [timeAxis(), byteAxis()],
      legend: { live: true },
      cursor: { points: { show: false } },
      series: [
        { value: "{YYYY}-{MM}-{DD} {HH}:00" },
        ...kinds.map((k) => ({
          label: KIND_LABELS[k] || k,
          stroke: KIND_COLORS[k] || "#b08cff",
          fill: KIND_COLORS[k] || "#b08cff",
          paths: bars,
          points: { show: false },
          value: (u, v, si, idx) => (idx === null ? "—" : bytes(this.hourlyRaw[si - 1][idx])),
        })),
      ],
    };
    this.hourly = new uPlot(opts, data, this.hourlyBox);
  }

  _renderPeriod(uPlot, doc) {
    const { data } = periodData(doc);
    if (this.period) {
      this.period.setData(data);
      return;
    }
    const opts = {
      title: "this budget period",
      width: this.width,
      height: HEIGHT,
      scales: {
        x: { time: true },
        y: { range: (u, min, max) => [0, Math.max(1000, max * 1.05)] },
      },
      axes: [timeAxis(), byteAxis()],
      cursor: { points: { show: false } },
      series: [
        { value: "{YYYY}-{MM}-{DD} {HH}:{mm}" },
        { label: "used", stroke: "#4ea1ff", width: 2, fill: "rgba(78,161,255,0.12)",
          spanGaps: true, points: { show: false }, value: (u, v) => bytes(v) },
        { label: "budget", stroke: "#f06262", width: 1.5, points: { show: false },
          value: (u, v) => (v === null ? "—" : bytes(v)) },
        { label: "projected", stroke: "#f0b43c", width: 1.5, dash: [6, 4], spanGaps: true,
          points: { show: false }, value: (u, v) => bytes(v) },
      ],
    };
    this.period = new uPlot(opts, data, this.periodBox);
  }

  destroy() {
    this.resizer.disconnect();
    for (const chart of [this.hourly, this.period]) if (chart) chart.destroy();
  }
}
