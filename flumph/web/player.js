// Flumph live player: the ingest's viewer WebSocket into Media Source Extensions.
//
// Protocol (see ARCHITECTURE.md): send {"type":"subscribe"} (with "wait": true for a device that
// may be idle: the ingest then counts this viewer as demand and the camera starts on demand), get
// "subscribed" (and "waiting" while no stream runs), then a "media" text message with the mime,
// a binary init segment, and one moof+mdat per frame. A new "media" message means a new init
// segment follows (codec or size changed): the MediaSource is rebuilt. "ended" and a closed socket
// make the player rejoin by itself, with backoff.
//
// Live edge: how much lag is held and how it is caught up, see liveedge.js.
//
// Buffer: what lies more than 20 s behind the playhead is removed down to 10 s (and at once, to
// 1 s, if the browser refuses an append for quota); fragments not yet appended are bounded.
//
// Latency readout: the arrival time of each fragment is kept by its decode time (tfdt); when
// requestVideoFrameCallback presents a frame, arrival -> display is the delay added in the
// browser. What came before (capture, encode, SRT latency) is not visible here.

import { canPlay, codecLabel } from "./codecs.js";
import { fragmentDecodeTime, initTimescale } from "./fmp4read.js";
import {
  LAG_DECAY_INTERVAL_MS, SEEK_LAG_S, afterStall, catchUpRate, decayed, frameInterval, lagToHold,
} from "./liveedge.js";

const BURST_QUIET_MS = 20; // live frames come >= 33 ms apart; a GOP burst's within a few ms
const KEEP_BEHIND_S = 10;
const MAX_PENDING = 600;
const STALL_AFTER_MS = 1500; // no new frame for this long while data flows: shown as stalled
const ARRIVALS_KEPT = 256;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 5000;

export class FlumphPlayer {
  // wsUrl: a string, or a function returning one (or a promise of one) before every connect,
  // e.g. to put a fresh viewer token in it. wait: subscribe with "wait": true (on-demand start).
  constructor(video, {
    wsUrl, streamId, wait = false, targetLagS = null,
    onStatus = () => {}, onUnsupported = () => {}, onFirstFrame = () => {},
  }) {
    this.video = video;
    this.wsUrl = wsUrl;
    this.streamId = streamId;
    this.wait = wait;
    this.targetLagS = targetLagS; // null: adapt to the frame rate (see targetLag())
    this.onStatus = onStatus;
    this.onUnsupported = onUnsupported;
    this.onFirstFrame = onFirstFrame;
    this.stats = {
      state: "idle", mime: null, codec: null, fragments: 0, bytes: 0, skipped: 0, stalls: 0,
      stalled: false, lagS: null, targetLagS: null, latencyMs: null, frames: 0,
      firstFrameMs: null, inits: 0, unsupported: null, error: null, width: 0, height: 0,
      rejoins: 0, trims: 0, gapJumps: 0,
    };
    this.pending = [];
    this.ws = null;
    this.ms = null;
    this.sb = null;
    this.stopped = true;
    this.retryMs = RETRY_MIN_MS;
    this.retryTimer = null;
    this.startedAt = 0;
    this.lastFrameAt = 0;
    this.lastDataAt = 0;
    this.timescale = null;
    this.arrivals = []; // [decode time s, performance.now() at arrival], oldest first
    this.burstDone = false;
    this.burstTimer = null;
    this.extraLagS = 0; // added to the lag after stalls (see liveedge.js)
    this.extraChangedAt = 0;
    video.muted = true; // autoplay policy: only muted video starts without a gesture
    video.playsInline = true;
    video.addEventListener("waiting", () => {
      // A seek (joining, catching up) waits briefly by design: not a stall.
      if (this.stopped || !this.sb || video.seeking || !this.stats.frames) return;
      this._setStalled();
    });
    video.addEventListener("playing", () => this._playing());
    this._watchdog = null;
    this._generation = 0;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.startedAt = performance.now();
    this.extraLagS = 0;
    this.extraChangedAt = 0;
    this.stats.firstFrameMs = null;
    this.stats.frames = 0;
    this._watchFrames();
    this._watchdog = setInterval(() => this._checkStall(), 500);
    this._connect();
  }

  stop() {
    this.stopped = true;
    this._connGen = (this._connGen || 0) + 1;
    clearTimeout(this.retryTimer);
    clearTimeout(this.burstTimer);
    clearInterval(this._watchdog);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
    this._resetMedia();
    this.video.removeAttribute("src");
    this.video.load();
    this._status("stopped");
  }

  _status(state, detail = null) {
    this.stats.state = state;
    this.stats.error = detail;
    this.onStatus(state, detail, this.stats);
  }

  _setStalled() {
    if (this.stats.stalled) return;
    this.stats.stalled = true;
    this.stats.stalls += 1;
    this.extraLagS = afterStall(this.extraLagS);
    this.extraChangedAt = performance.now();
    if (this.sb) this._status("stalled");
  }

  _playing() {
    this.stats.stalled = false;
    if (this.sb && this.stats.state !== "playing") this._status("playing");
  }

  async _connect() {
    // A stop() (or a newer connect) while the URL is being fetched makes this attempt stale.
    this._connGen = (this._connGen || 0) + 1;
    const gen = this._connGen;
    let url;
    try {
      url = typeof this.wsUrl === "function" ? await this.wsUrl() : this.wsUrl;
    } catch (e) {
      if (gen !== this._connGen || this.stopped) return;
      this._status("error", `cannot reach the stream: ${e.message || e}`);
      this._retry();
      return;
    }
    if (gen !== this._connGen || this.stopped) return;
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this._status("connecting");
    ws.onopen = () => {
      const msg = { type: "subscribe", stream_id: this.streamId };
      if (this.wait) msg.wait = true;
      ws.send(JSON.stringify(msg));
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      if (typeof ev.data === "string") this._onText(JSON.parse(ev.data));
      else this._onBinary(ev.data);
    };
    ws.onclose = () => {
      if (this.ws !== ws || this.stopped) return;
      // The stream may come back (publisher reconnect, on-demand start): rejoin by ourselves.
      this.stats.rejoins += 1;
      this._retry();
    };
  }

  _retry() {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => { if (!this.stopped) this._connect(); }, this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
  }

  _onText(msg) {
    switch (msg.type) {
      case "subscribed":
        this.retryMs = RETRY_MIN_MS;
        this._status("subscribed");
        break;
      case "waiting":
        this._status("waiting", "waiting for the camera to start");
        break;
      case "unavailable":
        // The camera may not stream now (its data budget is used up): the ingest says why.
        this._status("unavailable", msg.message || "the camera cannot stream now");
        break;
      case "media":
        this._newMedia(msg.mime);
        break;
      case "skipped":
        this.stats.skipped += msg.dropped || 0;
        break;
      case "ended":
        this._resetMedia(); // the last picture stays; a new "media" message starts afresh
        this._status("ended", "the stream ended; rejoining");
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
    this.stats.codec = codecLabel(mime);
    this.stats.inits += 1;
    this._resetMedia();
    if (!canPlay(mime)) {
      this.stats.unsupported = mime;
      this._status("unsupported", `this browser cannot play ${this.stats.codec} (${mime})`);
      this.onUnsupported(mime, this.stats.codec);
      return;
    }
    this.stats.unsupported = null;
    const ms = new MediaSource();
    this.ms = ms;
    this.video.src = URL.createObjectURL(ms);
    ms.addEventListener("sourceopen", () => {
      if (this.ms !== ms) return;
      URL.revokeObjectURL(this.video.src);
      try {
        this.sb = ms.addSourceBuffer(mime);
      } catch (e) {
        this._status("error", `cannot open a ${mime} buffer: ${e.name}`);
        return;
      }
      this.sb.mode = "segments";
      this._status("starting");
      this.sb.addEventListener("updateend", () => this._pump());
      this._pump();
    }, { once: true });
  }

  _resetMedia() {
    this.pending = [];
    this.sb = null;
    this.timescale = null;
    this.arrivals = [];
    this.burstDone = false;
    this.stats.stalled = false;
    if (this.ms) {
      try { if (this.ms.readyState === "open") this.ms.endOfStream(); } catch (e) { /* closing */ }
    }
    this.ms = null;
  }

  _onBinary(buf) {
    // Opaque relay stream (no "media" message), or a codec this browser cannot decode.
    if (!this.stats.mime || this.stats.unsupported) return;
    const now = performance.now();
    this.lastDataAt = now;
    this.stats.fragments += 1;
    this.stats.bytes += buf.byteLength;
    if (this.timescale === null) {
      this.timescale = initTimescale(buf);
    } else {
      const t = fragmentDecodeTime(buf);
      if (t !== null) {
        this.arrivals.push([t / this.timescale, now]);
        if (this.arrivals.length > ARRIVALS_KEPT) this.arrivals.shift();
      }
    }
    this.pending.push(buf);
    // Bounded: a tab in the background must not hoard frames; keep the init segment (first) and
    // let the decoder resync at the next keyframe the ingest sends after its own skip.
    if (this.pending.length > MAX_PENDING) this.pending.splice(1, this.pending.length - 1);
    this._pump();
  }

  _pump() {
    const sb = this.sb;
    if (!sb || sb.updating || !this.ms || this.ms.readyState !== "open") return;
    this._followLiveEdge();
    if (this._trimIfDue(sb)) return;
    const next = this.pending.shift();
    if (!next) return;
    try {
      sb.appendBuffer(next);
    } catch (e) {
      if (e.name === "QuotaExceededError" && this._trimNow(sb, 1)) {
        this.pending.unshift(next); // appended again once the removal is done
        return;
      }
      this._status("error", `append failed: ${e.name}`);
    }
  }

  _trimIfDue(sb) {
    if (!sb.buffered.length) return false;
    if (this.video.currentTime - sb.buffered.start(0) > KEEP_BEHIND_S * 2) {
      return this._trimNow(sb, KEEP_BEHIND_S);
    }
    return false;
  }

  _trimNow(sb, keepS) {
    if (!sb.buffered.length || sb.updating) return false;
    const start = sb.buffered.start(0);
    const upTo = this.video.currentTime - keepS;
    if (upTo <= start) return false;
    sb.remove(start, upTo);
    this.stats.trims += 1;
    return true;
  }

  // The lag to hold, as measured right after an append (its highest point, one frame interval
  // above its lowest).
  targetLag() {
    if (this.targetLagS !== null) return this.targetLagS;
    const now = performance.now();
    if (this.extraLagS > 0 && now - this.extraChangedAt > LAG_DECAY_INTERVAL_MS) {
      this.extraLagS = decayed(this.extraLagS);
      this.extraChangedAt = now;
    }
    return lagToHold(frameInterval(this.arrivals), this.extraLagS);
  }

  _followLiveEdge() {
    const v = this.video;
    const b = v.buffered;
    if (!b.length) return;
    const end = b.end(b.length - 1);
    const target = this.targetLag();
    if (!this.burstDone) {
      // A joiner gets the cached GOP in one burst: start once all of it is in (nothing queued,
      // and the socket quiet for a moment), at the live edge, so that the first picture shown
      // is a live one rather than the GOP's first.
      if (this.pending.length > 0) return;
      const quietMs = performance.now() - this.lastDataAt;
      if (quietMs < BURST_QUIET_MS) {
        clearTimeout(this.burstTimer);
        this.burstTimer = setTimeout(() => this._pump(), BURST_QUIET_MS - quietMs + 1);
        return;
      }
      this.burstDone = true;
      v.currentTime = Math.max(b.start(0), end - target);
    }
    if (b.length > 1 && v.currentTime < b.start(b.length - 1)) {
      // A hole (the ingest skipped to a keyframe for us, or the camera dropped frames beyond
      // what Chromium bridges by itself): playback would wait at its edge forever.
      v.currentTime = Math.max(b.start(b.length - 1), end - target);
      this.stats.gapJumps += 1;
    }
    if (v.currentTime < b.start(0)) v.currentTime = b.start(0);
    const lag = end - v.currentTime;
    this.stats.lagS = lag;
    this.stats.targetLagS = target;
    let rate = 1.0;
    if (lag > SEEK_LAG_S && !v.seeking) {
      // Not again while a seek is under way: inside a long GOP (30 s between keyframes) a seek
      // decodes from the GOP's keyframe, and a new one each time the lag passes 1 s could chase
      // the live edge for ever on a slow machine.
      v.currentTime = end - target;
    } else {
      rate = catchUpRate(lag, target);
    }
    if (v.playbackRate !== rate) v.playbackRate = rate;
    // Start only with a little in hand: from a single frame, playback would stall at once.
    if (v.paused && (lag >= target * 0.9 || this.stats.frames > 1)) v.play().catch(() => {});
  }

  _watchFrames() {
    const v = this.video;
    if (!v.requestVideoFrameCallback) return;
    this._generation += 1;
    const generation = this._generation;
    const onFrame = (now, meta) => {
      if (this.stopped || generation !== this._generation) return;
      this.lastFrameAt = now;
      this.stats.frames += 1;
      this.stats.width = meta.width;
      this.stats.height = meta.height;
      if (this.stats.firstFrameMs === null) {
        this.stats.firstFrameMs = now - this.startedAt;
        this.onFirstFrame(this.stats.firstFrameMs, meta);
      }
      const arrived = this._arrivalOf(meta.mediaTime);
      if (arrived !== null) this.stats.latencyMs = meta.expectedDisplayTime - arrived;
      if (!v.paused && (this.stats.stalled || this.stats.state !== "playing")) this._playing();
      v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
  }

  _arrivalOf(mediaTime) {
    // Newest first: the frame on screen is nearly always among the last few that arrived.
    for (let i = this.arrivals.length - 1; i >= 0; i -= 1) {
      const [t, at] = this.arrivals[i];
      if (Math.abs(t - mediaTime) < 0.002) return at;
      if (t < mediaTime - 1) break;
    }
    return null;
  }

  _checkStall() {
    if (this.stopped || !this.sb || this.stats.unsupported) return;
    const now = performance.now();
    // Frozen picture while fragments keep arriving (or nothing arrives at all after playing).
    const noFrames = this.lastFrameAt && now - this.lastFrameAt > STALL_AFTER_MS;
    if (noFrames) this._setStalled();
  }
}
