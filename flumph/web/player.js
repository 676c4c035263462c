// Flumph live player: the ingest's viewer WebSocket into Media Source Extensions.
//
// Protocol (see ARCHITECTURE.md): send {"type":"subscribe"}, get "subscribed", then a "media" text
// message with the mime, a binary init segment, and one moof+mdat per frame. A new "media" message
// means a new init segment follows (codec or size changed): the MediaSource is rebuilt.
//
// Measured in headless Chromium: playback stalls repeatedly when held < 0.1 s ahead of the buffered
// end, so the target lag is a little above that; a late joiner's first fragment starts at the
// stream's own timestamp, so playback must seek to buffered.start(0).

const TARGET_LAG_S = 0.15;
const SEEK_LAG_S = 1.0;
const KEEP_BEHIND_S = 10;

export class FlumphPlayer {
  constructor(video, { wsUrl, streamId, onStatus = () => {}, onUnsupported = () => {} }) {
    this.video = video;
    this.wsUrl = wsUrl;
    this.streamId = streamId;
    this.onStatus = onStatus;
    this.onUnsupported = onUnsupported;
    this.stats = {
      state: "idle", mime: null, fragments: 0, bytes: 0, skipped: 0, stalls: 0,
      lagS: null, inits: 0, error: null,
    };
    this.pending = [];
    this.ws = null;
    this.ms = null;
    this.sb = null;
    this.stopped = false;
    this.retryMs = 500;
    video.muted = true; // autoplay policy: only muted video starts without a gesture
    video.playsInline = true;
    video.addEventListener("waiting", () => { this.stats.stalls += 1; this._status("stalled"); });
    video.addEventListener("playing", () => this._status("playing"));
  }

  start() {
    this.stopped = false;
    this._connect();
  }

  stop() {
    this.stopped = true;
    if (this.ws) this.ws.close(1000);
    this._resetMedia();
    this._status("stopped");
  }

  _status(state, detail = null) {
    this.stats.state = state;
    if (detail !== null) this.stats.error = detail;
    this.onStatus(state, detail, this.stats);
  }

  _connect() {
    const ws = new WebSocket(this.wsUrl);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this._status("connecting");
    ws.onopen = () => ws.send(JSON.stringify({ type: "subscribe", stream_id: this.streamId }));
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") this._onText(JSON.parse(ev.data));
      else this._onBinary(ev.data);
    };
    ws.onclose = () => {
      if (this.ws !== ws || this.stopped) return;
      // The stream may come back (publisher reconnect, on-demand start): rejoin by ourselves.
      setTimeout(() => { if (!this.stopped) this._connect(); }, this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 5000);
    };
  }

  _onText(msg) {
    switch (msg.type) {
      case "subscribed":
        this.retryMs = 500;
        this._status("subscribed");
        break;
      case "media":
        this._newMedia(msg.mime);
        break;
      case "skipped":
        this.stats.skipped += msg.dropped || 0;
        break;
      case "ended":
        this._status("ended");
        break;
      case "error":
        this._status("error", msg.message);
        break;
      default:
        break;
    }
  }

  _newMedia(mime) {
    this.stats.mime = mime;
    this.stats.inits += 1;
    this._resetMedia();
    if (!window.MediaSource || !MediaSource.isTypeSupported(mime)) {
      this._status("unsupported", `this browser cannot play ${mime}`);
      this.onUnsupported(mime);
      return;
    }
    const ms = new MediaSource();
    this.ms = ms;
    this.video.src = URL.createObjectURL(ms);
    ms.addEventListener("sourceopen", () => {
      if (this.ms !== ms) return;
      URL.revokeObjectURL(this.video.src);
      this.sb = ms.addSourceBuffer(mime);
      this.sb.mode = "segments";
      this.sb.addEventListener("updateend", () => this._pump());
      this._pump();
    }, { once: true });
  }

  _resetMedia() {
    this.pending = [];
    this.sb = null;
    if (this.ms) {
      try { if (this.ms.readyState === "open") this.ms.endOfStream(); } catch (e) { /* closing */ }
    }
    this.ms = null;
  }

  _onBinary(buf) {
    if (!this.stats.mime) return; // opaque relay stream: nothing to play
    this.stats.fragments += 1;
    this.stats.bytes += buf.byteLength;
    this.pending.push(buf);
    // Bounded: a tab in the background must not hoard frames; drop all but the newest init.
    if (this.pending.length > 600) this.pending.splice(1, this.pending.length - 1);
    this._pump();
  }

  _pump() {
    const sb = this.sb;
    if (!sb || sb.updating || this.ms.readyState !== "open") return;
    this._followLiveEdge();
    if (this._trimIfDue(sb)) return;
    const next = this.pending.shift();
    if (!next) return;
    try {
      sb.appendBuffer(next);
    } catch (e) {
      this._status("error", `append failed: ${e.name}`);
    }
  }

  _trimIfDue(sb) {
    const v = this.video;
    if (!sb.buffered.length) return false;
    const start = sb.buffered.start(0);
    if (v.currentTime - start > KEEP_BEHIND_S * 2) {
      sb.remove(start, v.currentTime - KEEP_BEHIND_S);
      return true;
    }
    return false;
  }

  _followLiveEdge() {
    const v = this.video;
    const b = v.buffered;
    if (!b.length) return;
    const end = b.end(b.length - 1);
    if (v.currentTime < b.start(0)) v.currentTime = b.start(0);
    const lag = end - v.currentTime;
    this.stats.lagS = lag;
    if (lag > SEEK_LAG_S) {
      v.currentTime = end - TARGET_LAG_S;
      v.playbackRate = 1.0;
    } else if (lag > TARGET_LAG_S * 2) {
      v.playbackRate = 1.1; // catch up without a visible jump
    } else {
      v.playbackRate = 1.0;
    }
    if (v.paused) v.play().catch(() => {});
  }
}
