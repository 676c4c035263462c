// The newest picture of a streaming camera, from the ingest: a subscribe with "still": true
// answers with the media message, the init segment and the newest keyframe's fragment, then
// closes. It is not a viewer, so it neither starts a camera nor keeps one streaming, and the
// device sends nothing for it (the keyframe is already at the ingest). The fragment is decoded
// the way the live tile decodes (Media Source Extensions) into a detached video element and
// drawn once into a canvas; the result is a JPEG object URL the card shows like a snapshot.

import { viewerUrl } from "./api.js";
import { canPlay, codecLabel } from "./codecs.js";

const ANSWER_TIMEOUT_MS = 8000;
const DECODE_TIMEOUT_MS = 5000;
const JPEG_QUALITY = 0.85;

export class StillError extends Error {
  constructor(message, kind) {
    super(message);
    this.kind = kind; // "unsupported" (the browser cannot decode it) or "unavailable"
  }
}

// One grab at a time for the whole page: a grid of streaming cameras must not open a burst of
// sockets and decoders at once.
let queue = Promise.resolve();

export function grabStill(deviceId) {
  const run = queue.then(() => grab(deviceId));
  queue = run.catch(() => {});
  return run;
}

async function grab(deviceId) {
  const { mime, parts } = await receive(deviceId);
  if (!canPlay(mime)) {
    throw new StillError(`this browser cannot play ${codecLabel(mime)}`, "unsupported");
  }
  return decode(mime, parts);
}

async function receive(deviceId) {
  const url = await viewerUrl(deviceId);
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    const parts = [];
    let mime = null;
    let refusal = null;
    const timer = setTimeout(() => {
      refusal = "the ingest did not answer";
      ws.close();
    }, ANSWER_TIMEOUT_MS);
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "subscribe", stream_id: deviceId, still: true }));
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") {
        if (parts.length < 2) parts.push(ev.data);
        return;
      }
      const msg = JSON.parse(ev.data);
      if (msg.type === "media") mime = msg.mime;
      else if (msg.type === "error") refusal = msg.message;
    };
    ws.onclose = () => {
      clearTimeout(timer);
      if (mime && parts.length === 2) resolve({ mime, parts });
      else reject(new StillError(refusal || "no picture", "unavailable"));
    };
  });
}

function once(target, name, timeoutMs) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new StillError(`no ${name}`, "unavailable")), timeoutMs);
    target.addEventListener(name, () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

async function decode(mime, parts) {
  const video = document.createElement("video");
  video.muted = true;
  video.playsInline = true;
  const ms = new MediaSource();
  const src = URL.createObjectURL(ms);
  video.src = src;
  try {
    await once(ms, "sourceopen", DECODE_TIMEOUT_MS);
    const sb = ms.addSourceBuffer(mime);
    sb.mode = "segments";
    for (const part of parts) {
      sb.appendBuffer(part);
      await once(sb, "updateend", DECODE_TIMEOUT_MS);
    }
    // End of stream flushes the decoder: one frame in, that frame out.
    ms.endOfStream();
    if (!video.buffered.length) throw new StillError("the keyframe did not decode", "unavailable");
    const seeked = once(video, "seeked", DECODE_TIMEOUT_MS);
    video.currentTime = video.buffered.start(0);
    await seeked;
    if (video.readyState < 2) await once(video, "loadeddata", DECODE_TIMEOUT_MS);
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
    if (!blob) throw new StillError("could not encode the picture", "unavailable");
    return { url: URL.createObjectURL(blob), width: canvas.width, height: canvas.height };
  } finally {
    URL.revokeObjectURL(src);
    video.removeAttribute("src");
    video.load();
  }
}

// The frame a video element shows now, as a JPEG object URL (null if it shows none).
export async function frameOf(video) {
  if (!video || video.readyState < 2 || !video.videoWidth) return null;
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
  return blob ? { url: URL.createObjectURL(blob), width: canvas.width, height: canvas.height } : null;
}
