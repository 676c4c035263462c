// Codecs as people read them, and whether this browser's Media Source Extensions play one.
// Shared by the player and the dashboard's page.

export function codecLabel(mime) {
  const m = /codecs="?([a-z0-9]+)/i.exec(mime || "");
  if (!m) return "unknown";
  const tag = m[1].toLowerCase();
  if (tag === "av01") return "AV1";
  if (tag === "hvc1" || tag === "hev1") return "H.265";
  if (tag === "avc1" || tag === "avc3") return "H.264";
  return tag;
}

// What to do about a codec this browser refuses (measured: Chromium has no software H.265).
export function unsupportedHint(codec) {
  if (codec === "H.265") {
    return "Chromium and Firefox decode H.265 only with a hardware decoder, and this machine "
      + "has none; switch the camera to AV1 (codec = av1), or watch in Safari or Edge with "
      + "hardware decoding.";
  }
  return "This browser's Media Source Extensions refuse this codec; AV1 and H.264 play "
    + "almost everywhere.";
}

export function canPlay(mime) {
  return Boolean(window.MediaSource && MediaSource.isTypeSupported(mime));
}
