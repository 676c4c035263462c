// Reading the few fMP4 fields the player needs from the bytes it receives (pure): an init
// segment's timescale and a fragment's decode time.

// Walks ISO-BMFF boxes: [offset, end) of the first box of `type` inside [start, end).
function findBox(view, start, end, type) {
  let pos = start;
  while (pos + 8 <= end) {
    let size = view.getUint32(pos);
    const name = String.fromCharCode(
      view.getUint8(pos + 4), view.getUint8(pos + 5), view.getUint8(pos + 6), view.getUint8(pos + 7),
    );
    let header = 8;
    if (size === 1 && pos + 16 <= end) {
      size = Number(view.getBigUint64(pos + 8));
      header = 16;
    } else if (size === 0) {
      size = end - pos;
    }
    if (size < header || pos + size > end) return null;
    if (name === type) return [pos + header, pos + size];
    pos += size;
  }
  return null;
}

function findPath(buf, path) {
  const view = new DataView(buf);
  let range = [0, buf.byteLength];
  for (const type of path) {
    range = findBox(view, range[0], range[1], type);
    if (!range) return null;
  }
  return [view, range[0]];
}

// The media timescale of an init segment (moov/trak/mdia/mdhd), or null.
export function initTimescale(buf) {
  const hit = findPath(buf, ["moov", "trak", "mdia", "mdhd"]);
  if (!hit) return null;
  const [view, at] = hit;
  const version = view.getUint8(at);
  return view.getUint32(at + (version === 1 ? 20 : 12));
}

// The decode time (tfdt) of a media fragment, in timescale units, or null.
export function fragmentDecodeTime(buf) {
  const hit = findPath(buf, ["moof", "traf", "tfdt"]);
  if (!hit) return null;
  const [view, at] = hit;
  return view.getUint8(at) === 1 ? Number(view.getBigUint64(at + 4)) : view.getUint32(at + 4);
}
