"""The picture ladder: what the agent streams when the bits per pixel are too few for the rate.

Pure. Below a codec's floor of bits per pixel the encoder cannot hold its rate at all (it
overshoots whatever it is told) and the picture is mush anyway; fewer frames, then fewer pixels,
give each remaining pixel enough bits. Order: the frame rate first (30 -> 15 -> 10 fps: motion
gets choppier, every frame stays sharp), then the size (x0.75, x0.5, x0.375, x0.25 of each side).

Floors, measured on the synthetic camera (PyAV 18, 60 s GOP, bench/rate_matrix.py): SVT-AV1 preset
10 delivered 1.07x at 0.0036 bit/pixel (100 kbit/s 720p30) and 1.40x at 0.0018; x265 ultrafast
0.97x at 0.0018 and 1.25x at 0.0011; x264 veryfast 1.01x at 0.0011 and 1.12x at 0.0007. The
floors below sit just above each encoder's last good point. When an encoder still cannot hold the
rate above its floor (the rate controller's ``cannot_hold``), the ladder steps down one rung more.
Back up only with ``UP_MARGIN`` of headroom, so a target moving around a floor does not flap.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_BITS_PER_PIXEL = {"libsvtav1": 0.004, "libx265": 0.0015, "libx264": 0.001}
DEFAULT_MIN_BITS_PER_PIXEL = 0.004  # hardware encoders: unmeasured here, take the strictest
FPS_STEPS = (30, 15, 10)  # below the setting's own fps
SIZE_STEPS = (0.75, 0.5, 0.375, 0.25)
MIN_WIDTH = 160
UP_MARGIN = 1.3


@dataclass(frozen=True)
class Rung:
    width: int
    height: int
    fps: int

    def bits_per_pixel(self, kbps: float) -> float:
        return kbps * 1000 / (self.width * self.height * self.fps)


@dataclass(frozen=True)
class LadderChoice:
    rung: Rung
    index: int  # 0 = the settings' own size and fps
    reason: str | None  # None on rung 0


def _even(x: float) -> int:
    return max(2, round(x / 2) * 2)


def rungs(width: int, height: int, fps: int) -> list[Rung]:
    """The settings' own picture first, then fewer frames, then fewer pixels."""
    out = [Rung(width, height, fps)]
    for step in FPS_STEPS:
        if step < fps:
            out.append(Rung(width, height, step))
    lowest = out[-1].fps
    for scale in SIZE_STEPS:
        w, h = _even(width * scale), _even(height * scale)
        if w < MIN_WIDTH:
            break
        out.append(Rung(w, h, lowest))
    return out


def floor_for(encoder: str) -> float:
    return MIN_BITS_PER_PIXEL.get(encoder, DEFAULT_MIN_BITS_PER_PIXEL)


def choose(
    ladder: list[Rung],
    encoder: str,
    target_kbps: float,
    current: int = 0,
    *,
    step_down: bool = False,
) -> LadderChoice:
    """The highest rung with enough bits per pixel at ``target_kbps``.

    From ``current``, going up needs ``UP_MARGIN`` x the floor at the higher rung. ``step_down``:
    the encoder cannot hold the rate here (measured), go at least one rung lower.
    """
    floor = floor_for(encoder)
    current = min(max(current, 0), len(ladder) - 1)
    index = len(ladder) - 1
    for i, rung in enumerate(ladder):
        needed = floor * (UP_MARGIN if i < current else 1.0)
        if rung.bits_per_pixel(target_kbps) >= needed:
            index = i
            break
    why = f"{target_kbps:.0f} kbit/s is under {floor} bit/pixel at the settings' picture"
    if step_down and index <= current < len(ladder) - 1:
        index = current + 1
        why = f"the encoder could not hold {target_kbps:.0f} kbit/s at the picture before"
    if index == 0:
        return LadderChoice(ladder[0], 0, None)
    rung = ladder[index]
    return LadderChoice(rung, index, f"{why}: {rung.width}x{rung.height} at {rung.fps} fps")
