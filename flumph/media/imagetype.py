"""What kind of picture a snapshot is, from its first bytes: the one place both the dashboard (a
Content-Type) and ``flumph ctl snapshot`` (a file extension) ask. Pure bytes."""

from __future__ import annotations

_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "image/avif": "avif",
    "image/heic": "heic",
    "image/heif": "heif",
}
_ISOBMFF_BRANDS = (
    (b"avif", "image/avif"),
    (b"avis", "image/avif"),
    (b"heic", "image/heic"),
    (b"mif1", "image/heif"),
)


def image_type(data: bytes) -> str:
    """The content type of a snapshot; ``application/octet-stream`` when it is none we know."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp" and len(data) >= 16:
        # The major brand, then the compatible brands (after the minor version) within the box.
        size = int.from_bytes(data[:4], "big")
        brands = data[8:12] + data[16 : min(max(size, 16), 64)]
        for brand, kind in _ISOBMFF_BRANDS:
            if any(brands[i : i + 4] == brand for i in range(0, len(brands) - 3, 4)):
                return kind
    return "application/octet-stream"


def image_extension(data: bytes) -> str:
    """A file extension for a snapshot (``bin`` when it is no picture we know)."""
    return _EXTENSIONS.get(image_type(data), "bin")
