// The live edge, pure: the lag (buffered end - playhead) the player holds and how it catches up.
//
// Live edge: the lag (buffered end - playhead) is measured right after each append, where it is
// highest; it then falls by one frame interval until the next frame lands. Chromium stalls when
// the playhead reaches the buffered end, so the lag held is one frame interval plus a jitter
// margin (at least 0.1 s), raised after each stall and lowered again while none happens; larger
// lags are caught up by playbackRate (1.1, 1.25) and beyond 1 s by a seek. Measured in headless
// Chromium 156 on loopback, 640x360 AV1 at 15 fps: holding 0.10 / 0.12 / 0.14 / 0.167 s gave
// glass-to-glass p50 206 / 222 / 238 / 273 ms (bench/dashboard_latency.py; every 20 ms of lag is
// 20 ms of latency). A late joiner's first fragment starts at the stream's own timestamp, so
// playback must seek into the buffered range. A joiner receives the cached GOP (up to the
// keyframe interval, 30 s by default, unless the ingest got it a fresh keyframe) in one burst:
// playback starts only once the burst is in,
// at the live edge, so the first picture shown is a live one and not the GOP's first.
//

// Lag held (buffered end - playhead, measured right after an append): one frame interval plus
// a margin for arrival jitter, at least 0.1 s; every stall adds STALL_BACKOFF_S (a jittery link
// or a busy machine), which then wears off by LAG_DECAY_S every LAG_DECAY_INTERVAL_MS without one.
const JITTER_MARGIN_S = 0.04;
const MIN_TARGET_LAG_S = 0.1;
const STALL_BACKOFF_S = 0.03;
const MAX_EXTRA_LAG_S = 0.3;
const LAG_DECAY_S = 0.01;
export const LAG_DECAY_INTERVAL_MS = 10000;
export const SEEK_LAG_S = 1.0; // beyond this lag the player seeks instead of speeding up

// Frame interval from the decode times of the last fragments (1/15 s until known).
// arrivals: [decode time s, arrival time], oldest first.
export function frameInterval(arrivals) {
  const a = arrivals;
  const deltas = [];
  for (let i = Math.max(1, a.length - 16); i < a.length; i += 1) {
    const d = a[i][0] - a[i - 1][0];
    if (d > 0 && d < 1) deltas.push(d);
  }
  if (!deltas.length) return 1 / 15;
  deltas.sort((x, y) => x - y);
  return deltas[deltas.length >> 1];
}

// The lag to hold, as measured right after an append (its highest point, one frame interval
// above its lowest), plus what stalls added.
export function lagToHold(frameIntervalS, extraLagS) {
  return Math.max(MIN_TARGET_LAG_S, JITTER_MARGIN_S + frameIntervalS) + extraLagS;
}

// The extra lag after one more stall.
export function afterStall(extraLagS) {
  return Math.min(MAX_EXTRA_LAG_S, extraLagS + STALL_BACKOFF_S);
}

// The extra lag after LAG_DECAY_INTERVAL_MS without a stall.
export function decayed(extraLagS) {
  return Math.max(0, extraLagS - LAG_DECAY_S);
}

// The playback rate for a lag below SEEK_LAG_S.
export function catchUpRate(lag, target) {
  if (lag > target + 0.3) return 1.25;
  if (lag > target + 0.05) return 1.1; // catch up without a visible jump
  if (lag < target - 0.04) return 0.9; // let the next frame land before the buffer runs dry
  return 1.0;
}
