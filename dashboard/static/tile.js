// A live player tile inside a device card: the shared FlumphPlayer plus what the operator needs
// to see: state, latency, stalls, and a way out when the browser cannot decode the codec.
// ``root`` (the video) goes where the card's picture is; ``bar`` (the readouts) goes in the
// caption below it, never over the picture (see stage.js).
//
// Opening a tile subscribes with "wait": true, so the ingest counts it as a viewer and an idle
// camera starts on demand; closing it ends the subscription, and the backend stops the camera
// after its linger when nobody else watches.

import { unsupportedHint } from "./codecs.js";
import { FlumphPlayer } from "./player.js";
import { viewerUrl } from "./api.js";

const STATE_TEXT = {
  idle: "idle",
  connecting: "connecting…",
  subscribed: "connected",
  starting: "starting…",
  waiting: "waiting for the camera to start…",
  unavailable: "the camera cannot stream now",
  playing: "live",
  stalled: "stalled",
  ended: "stream ended — rejoining…",
  unsupported: "cannot play",
  error: "error",
  stopped: "closed",
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export class Tile {
  constructor(deviceId, { onSwitchToAv1 }) {
    this.deviceId = deviceId;
    this.onSwitchToAv1 = onSwitchToAv1;
    this.root = el("div", "tile");
    this.video = el("video");
    this.video.muted = true;
    this.video.playsInline = true;
    this.state = el("span", "t-state", "connecting…");
    this.latency = el("span", "t-latency");
    this.latency.title = "arrival at this browser → on screen (capture, encoding and the SRT "
      + "latency come before it)";
    this.stall = el("span", "t-stall");
    this.stall.title = "stalls since the tile opened";
    this.info = el("span", "t-info");
    this.bar = el("span", "t-bar");
    this.bar.append(this.state, this.stall, this.latency, this.info);
    this.unsupported = el("div", "unsupported");
    this.unsupported.hidden = true;
    this.unsupportedText = el("p");
    this.switchButton = el("button", "switch-av1", "Switch this camera to AV1");
    this.switchButton.type = "button";
    this.switchNote = el("p", "switch-note");
    this.switchButton.addEventListener("click", () => this._switch());
    this.unsupported.append(this.unsupportedText, this.switchButton, this.switchNote);
    this.root.append(this.video, this.unsupported);
    this.player = new FlumphPlayer(this.video, {
      wsUrl: () => viewerUrl(deviceId),
      streamId: deviceId,
      wait: true,
      onUnsupported: (mime, codec) => this._showUnsupported(mime, codec),
      onStatus: () => this.update(),
    });
    this.timer = null;
  }

  open() {
    this.player.start();
    this.timer = setInterval(() => this.update(), 250);
    this.update();
  }

  close() {
    clearInterval(this.timer);
    this.player.stop();
    this.root.remove();
    this.bar.remove();
  }

  update() {
    const s = this.player.stats;
    let text = STATE_TEXT[s.state] || s.state;
    if (s.state === "subscribed" && s.mime) text = "starting…";
    if (s.error && ["error", "waiting", "unavailable"].includes(s.state)) text = s.error;
    this.state.textContent = text;
    this.root.dataset.state = s.state;
    this.bar.dataset.state = s.state;
    this.root.classList.toggle("is-stalled", s.stalled);
    this.bar.classList.toggle("is-stalled", s.stalled);
    this.stall.textContent = s.stalled ? `stalled (${s.stalls})` : s.stalls ? `${s.stalls} stall${s.stalls === 1 ? "" : "s"}` : "";
    this.latency.textContent = s.latencyMs !== null && s.state !== "unsupported"
      ? `delay ${Math.max(0, Math.round(s.latencyMs))} ms` : "";
    const size = s.width ? ` ${s.width}×${s.height}` : "";
    const lag = s.lagS !== null ? ` · buffer ${s.lagS.toFixed(2)} s` : "";
    this.info.textContent = s.codec ? `${s.codec}${size}${lag}` : "";
    if (!s.unsupported && !this.unsupported.hidden) this.unsupported.hidden = true;
  }

  _showUnsupported(mime, codec) {
    this.unsupportedText.textContent = `This browser cannot play ${codec} (${mime}). `
      + unsupportedHint(codec);
    this.switchButton.hidden = false;
    this.switchButton.disabled = false;
    this.switchNote.textContent = "";
    this.unsupported.hidden = false;
    this.update();
  }

  async _switch() {
    this.switchButton.disabled = true;
    this.switchNote.textContent = "switching to AV1…";
    const result = await this.onSwitchToAv1();
    if (result.ok) {
      this.switchNote.textContent = `asked for AV1 (settings v${result.doc.v}); `
        + "the picture appears when the camera restarts its encoder";
    } else {
      this.switchButton.disabled = false;
      this.switchNote.textContent = `refused: ${result.detail}`;
    }
  }
}
