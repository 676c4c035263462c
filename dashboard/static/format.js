// Small formatters for the device cards. Pure functions, no DOM.

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = n;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${v >= 100 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

export function num(v, digits = 0) {
  return v === null || v === undefined ? "—" : Number(v).toFixed(digits);
}

export function ago(epochS, nowMs = Date.now()) {
  if (!epochS) return "never";
  const s = Math.max(0, nowMs / 1000 - epochS);
  if (s < 5) return "just now";
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

const CODECS = { av1: "AV1", hevc: "H.265", h264: "H.264", auto: "auto", copy: "copy" };

export function codecName(codec) {
  return CODECS[codec] || codec || "—";
}

export function codecOfEncoder(encoder) {
  if (!encoder) return null;
  if (/av1/.test(encoder)) return "av1";
  if (/hevc|265/.test(encoder)) return "hevc";
  if (/h264|264/.test(encoder)) return "h264";
  return null;
}
