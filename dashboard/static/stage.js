// The picture area of a device card and its caption. Nothing is ever drawn over the picture:
// what the card says about it (which picture, how old, the live tile's state and delay) sits in
// the caption below it, so a camera's burned-in clock or a white wall stays readable.
//
// The picture is the newest of: the camera's retained snapshot; a still from the live stream
// (see still.js: taken while the camera streams and nobody watches here, every STILL_EVERY_MS,
// at no cost to the camera's link); the last frame this page's tile showed before it closed.
// When watching, the live tile takes the picture's place and its readouts fill the caption.
//
// Enlarge makes the card span the grid's width (the video element stays where it is, so
// playback goes on); Fullscreen puts picture and caption on the whole screen (double-click
// does the same; iPhone Safari, which has no element fullscreen, gets its native player).

import { ago } from "./format.js";
import { StillError, frameOf, grabStill } from "./still.js";

const STILL_FIRST_DELAY_MS = 1500; // a stream that just started needs its first keyframe
const STILL_EVERY_MS = 30_000;
const STILL_RETRY_MS = [5_000, 15_000, 60_000];

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(className, text, title, onClick) {
  const b = el("button", className, text);
  b.type = "button";
  b.title = title;
  b.addEventListener("click", onClick);
  return b;
}

export class Stage {
  constructor(deviceId) {
    this.deviceId = deviceId;
    this.root = el("div", "stage");
    this.media = el("div", "media");
    this.picture = el("img", "thumb");
    this.picture.alt = `latest picture of ${deviceId}`;
    this.picture.hidden = true;
    this.noPicture = el("div", "no-thumb");
    this.media.append(this.picture, this.noPicture);
    this.media.addEventListener("dblclick", () => this.toggleFullscreen());

    this.caption = el("div", "caption");
    this.captionText = el("span", "c-text");
    this.readouts = el("span", "c-readouts"); // the live tile's bar goes here
    this.enlargeButton = button("enlarge", "Enlarge", "span the whole width", () => this.toggleEnlarged());
    this.fullButton = button("fullscreen", "Fullscreen", "whole screen (Esc leaves)", () => this.toggleFullscreen());
    this.caption.append(this.captionText, this.readouts, this.enlargeButton, this.fullButton);
    this.root.append(this.media, this.caption);
    document.addEventListener("fullscreenchange", () => this._fullscreenChanged());

    this.view = null;
    this.tile = null;
    this.snapshot = null; // {url, at (epoch s)}
    this.still = null; // {url, at, width, height}
    this.lastFrame = null; // {url, at, width, height}
    this.shown = null;
    this.stillDue = 0; // performance.now() time of the next still
    this.stillBusy = false;
    this.stillFailures = 0;
    this.stillProblem = null; // why no still (e.g. the browser cannot decode the codec)
    this.wasStreaming = false;
    this.encoder = null;
  }

  // --- what the card tells us ----------------------------------------------------------------

  setView(view) {
    this.view = view;
    const s = view.snapshot;
    this.snapshot = s ? { url: `${s.url}?at=${encodeURIComponent(s.at)}`, at: s.at } : null;
    const encoder = (view.video && view.video.encoder) || null;
    if ((view.streaming && !this.wasStreaming) || encoder !== this.encoder) {
      // A new stream (or a new codec): try for a still again.
      this.stillDue = performance.now() + STILL_FIRST_DELAY_MS;
      this.stillFailures = 0;
      this.stillProblem = null;
    }
    this.wasStreaming = Boolean(view.streaming);
    this.encoder = encoder;
    this._render();
    this.tick();
  }

  // Relative ages and the still's schedule; called every second by the page.
  tick() {
    this._renderCaption();
    if (this._stillWanted()) this._takeStill();
  }

  attach(tile) {
    this.tile = tile;
    this.media.append(tile.root);
    this.readouts.append(tile.bar);
    this.root.classList.add("live");
    this._renderCaption();
  }

  // Closes the tile; its last frame stays as the picture.
  async detach(tile) {
    const frame = frameOf(tile.video); // drawn now, before the player lets go of the video
    tile.close();
    this.tile = null;
    this.root.classList.remove("live");
    if (document.fullscreenElement === this.root) document.exitFullscreen().catch(() => {});
    this.stillDue = performance.now() + STILL_EVERY_MS;
    const got = await frame;
    if (got) {
      this._replace("lastFrame", { ...got, at: Date.now() / 1000 });
    }
    this._render();
  }

  // --- enlarge and fullscreen ----------------------------------------------------------------

  toggleEnlarged() {
    const card = this.root.closest(".card");
    if (!card) return;
    const on = card.classList.toggle("enlarged");
    this.enlargeButton.textContent = on ? "Shrink" : "Enlarge";
    this.root.scrollIntoView({ block: "nearest" });
  }

  toggleFullscreen() {
    if (document.fullscreenElement === this.root) {
      document.exitFullscreen().catch(() => {});
    } else if (this.root.requestFullscreen) {
      this.root.requestFullscreen().catch(() => this._nativeFullscreen());
    } else {
      this._nativeFullscreen();
    }
  }

  _nativeFullscreen() {
    const video = this.tile && this.tile.video;
    if (video && video.webkitEnterFullscreen) video.webkitEnterFullscreen();
  }

  _fullscreenChanged() {
    const on = document.fullscreenElement === this.root;
    this.root.classList.toggle("is-fullscreen", on);
    this.fullButton.textContent = on ? "Exit fullscreen" : "Fullscreen";
  }

  // --- the picture ---------------------------------------------------------------------------

  _newest() {
    let best = null;
    for (const [kind, p] of [["snapshot", this.snapshot], ["live frame", this.still],
      ["last frame seen", this.lastFrame]]) {
      if (p && (!best || p.at > best.at)) best = { kind, ...p };
    }
    return best;
  }

  _render() {
    const best = this._newest();
    this.shown = best;
    if (!best) {
      delete this.root.dataset.picture;
      this.picture.hidden = true;
      this.picture.removeAttribute("src");
      this.noPicture.hidden = false;
      this.noPicture.textContent = this.view && this.view.streaming
        ? "streaming: its picture appears in a moment"
        : "no picture yet: Snapshot asks the camera for one";
    } else {
      if (this.picture.getAttribute("src") !== best.url) this.picture.src = best.url;
      this.picture.hidden = false;
      this.noPicture.hidden = true;
      this.root.dataset.picture = best.kind.replaceAll(" ", "-");
    }
    this._renderCaption();
  }

  _renderCaption() {
    if (this.tile) {
      this.captionText.textContent = "";
      return;
    }
    const best = this.shown;
    let text = best ? `${best.kind} · ${ago(best.at)}` : "no picture";
    if (this.stillProblem && this.view && this.view.streaming) text += ` · ${this.stillProblem}`;
    this.captionText.textContent = text;
  }

  _replace(slot, picture) {
    const old = this[slot];
    this[slot] = picture;
    if (old && old.url.startsWith("blob:")) URL.revokeObjectURL(old.url);
  }

  _stillWanted() {
    const v = this.view;
    return Boolean(v && v.streaming && v.presence === "online") && !this.tile && !this.stillBusy
      && this.stillProblem === null && document.visibilityState === "visible"
      && performance.now() >= this.stillDue;
  }

  async _takeStill() {
    this.stillBusy = true;
    try {
      const got = await grabStill(this.deviceId);
      this._replace("still", { ...got, at: Date.now() / 1000 });
      this.stillFailures = 0;
      this.stillDue = performance.now() + STILL_EVERY_MS;
      this.root.dataset.stillWidth = String(got.width);
    } catch (e) {
      if (e instanceof StillError && e.kind === "unsupported") {
        // Until the camera changes codec (a new streaming session): the snapshot stands in.
        this.stillProblem = `no live picture: ${e.message}`;
      } else {
        const wait = STILL_RETRY_MS[Math.min(this.stillFailures, STILL_RETRY_MS.length - 1)];
        this.stillFailures += 1;
        this.stillDue = performance.now() + wait;
      }
    } finally {
      this.stillBusy = false;
    }
    this._render();
  }
}
