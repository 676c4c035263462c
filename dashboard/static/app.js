// The dashboard page: one card per device, kept current by the fleet's live feed
// (Server-Sent Events on /api/events: "devices" once, then "device" per change, "removed" when
// one is forgotten, "resync" after an overflow). No polling: the only timers are local (relative ages, tile readouts).

import { loadConfig, toLogin } from "./api.js";
import { Card } from "./card.js";

const grid = document.getElementById("grid");
const empty = document.getElementById("empty");
const summary = document.getElementById("summary");
const feedState = document.getElementById("feed-state");
const banner = document.getElementById("banner");
const logout = document.getElementById("logout");
const cards = new Map();

function place(card) {
  // Keep the grid sorted by device id without moving cards that are already in place
  // (moving a node would restart a playing video).
  const ids = [...cards.keys()].sort();
  const next = ids[ids.indexOf(card.id) + 1];
  const before = next ? cards.get(next).root : null;
  grid.insertBefore(card.root, before);
}

function upsert(view) {
  const card = cards.get(view.id);
  if (card) {
    card.update(view);
    return;
  }
  const created = new Card(view);
  cards.set(view.id, created);
  place(created);
}

function replaceAll(views) {
  const seen = new Set(views.map((v) => v.id));
  for (const [id, card] of cards) {
    if (!seen.has(id)) {
      card.closeTile();
      card.root.remove();
      cards.delete(id);
    }
  }
  for (const v of views) upsert(v);
}

function renderSummary() {
  const views = [...cards.values()].map((c) => c.view);
  const online = views.filter((v) => v.presence === "online").length;
  const streaming = views.filter((v) => v.streaming).length;
  summary.textContent = `${views.length} device${views.length === 1 ? "" : "s"} · ${online} online`
    + ` · ${streaming} streaming`;
  empty.hidden = views.length > 0;
}

function setFeed(state, text) {
  feedState.dataset.state = state;
  feedState.textContent = text;
}

function connectFeed() {
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => setFeed("live", "live"));
  source.addEventListener("devices", (ev) => {
    replaceAll(JSON.parse(ev.data));
    renderSummary();
  });
  source.addEventListener("resync", (ev) => {
    replaceAll(JSON.parse(ev.data).devices);
    renderSummary();
  });
  source.addEventListener("device", (ev) => {
    upsert(JSON.parse(ev.data));
    renderSummary();
  });
  source.addEventListener("removed", (ev) => {
    const { id } = JSON.parse(ev.data);
    const card = cards.get(id);
    if (card) {
      card.closeTile();
      card.root.remove();
      cards.delete(id);
    }
    renderSummary();
  });
  source.addEventListener("error", async () => {
    setFeed("down", "reconnecting…");
    // EventSource retries by itself; a 401 (session expired) would make it retry forever.
    try {
      const r = await fetch("/api/config", { cache: "no-store" });
      if (r.status === 401) {
        source.close();
        toLogin();
      }
    } catch (e) {
      /* the backend is down: EventSource keeps trying */
    }
  });
  return source;
}

async function main() {
  const config = await loadConfig();
  if (config.banner) {
    banner.textContent = config.banner;
    banner.hidden = false;
  }
  logout.hidden = config.auth !== "password";
  connectFeed();
  setInterval(() => { for (const card of cards.values()) card.tick(); }, 1000);
  window.flumph = { cards, config };
}

main().catch((e) => setFeed("down", `cannot start: ${e.message || e}`));
