"""A real RTSP server for tests and benchmarks: GStreamer's gst-rtsp-server serving H.264 or H.265.

Run it with the *system* python3 (``python3-gi`` and ``gir1.2-gst-rtsp-server-1.0`` are Debian
packages that a virtualenv cannot import):

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --codec hevc --size 640x360 --fps 15

It serves ``rtsp://127.0.0.1:PORT/cam`` and writes one JSON line per event to stdout, flushed:
``{"event": "ready", "url": ...}`` once listening, ``{"event": "client-connected"}`` and
``{"event": "client-closed"}`` per RTSP client (a test asserts that the agent leaves),
``{"event": "media-configure"}`` when a pipeline is built for a client and
``{"event": "media-done", "video_bytes": N, "frames": M}`` when it ends (the encoded video that
client was sent, before RTP: the benchmark's "source video bytes"). ``--source FILE`` serves a
camera-like clip (any file GStreamer decodes; not looped, so longer than the run) instead of
``videotestsrc``. The encoder is x264/x265 at ``--bitrate`` kbit/s with a keyframe every
``--gop`` frames and no B-frames, and the parameter sets go in-band before every keyframe
(``config-interval=-1``), as camera apps send them.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def launch_line(args: argparse.Namespace) -> str:
    width, height = args.size.split("x")
    caps = f"video/x-raw,width={width},height={height},framerate={args.fps}/1"
    if args.source:
        # Looping a file in a live RTSP pipeline is awkward; the clip is expected to be long enough.
        src = f"filesrc location={args.source} ! decodebin ! videoconvert ! videoscale ! videorate"
        src += " ! identity sync=true"
    else:
        src = f"videotestsrc is-live=true pattern={args.pattern} ! timeoverlay"
    if args.codec == "h264":
        enc = (
            "x264enc tune=zerolatency speed-preset=ultrafast sliced-threads=false "
            f"bitrate={args.bitrate} key-int-max={args.gop} bframes=0 ! video/x-h264,profile=main "
            "! rtph264pay name=pay0 pt=96 config-interval=-1"
        )
    else:
        enc = (
            f"x265enc tune=zerolatency speed-preset=ultrafast bitrate={args.bitrate} "
            f"key-int-max={args.gop} option-string=bframes=0:log-level=none "
            "! rtph265pay name=pay0 pt=96 config-interval=-1"
        )
    return f"( {src} ! {caps} ! videoconvert ! video/x-raw,format=I420 ! {enc} )"


def count_video_bytes(_factory: Any, media: Any) -> None:
    """Count the encoded video handed to the payloader (what this client is sent, before RTP);
    reported when the media ends (the client's TEARDOWN), for the pass-through benchmark."""
    emit("media-configure")
    counted = {"video_bytes": 0, "frames": 0}

    def probe(_pad: Any, info: Any) -> Any:
        counted["video_bytes"] += info.get_buffer().get_size()
        counted["frames"] += 1
        return Gst.PadProbeReturn.OK

    payloader = media.get_element().get_by_name("pay0")
    payloader.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    media.connect("unprepared", lambda *_: emit("media-done", **counted))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--codec", choices=("h264", "hevc"), default="hevc")
    p.add_argument("--size", default="640x360")
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--bitrate", type=int, default=300, help="kbit/s")
    p.add_argument("--gop", type=int, default=30, help="frames between keyframes")
    p.add_argument("--pattern", default="ball", help="videotestsrc pattern")
    p.add_argument("--source", help="a clip to serve instead of videotestsrc")
    p.add_argument("--path", default="/cam")
    p.add_argument(
        "--shared", action="store_true", help="one encoder for every client, as a camera has"
    )
    args = p.parse_args()

    Gst.init(None)
    loop = GLib.MainLoop()
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args))
    factory.set_shared(args.shared)
    factory.connect("media-configure", count_video_bytes)
    server.get_mount_points().add_factory(args.path, factory)

    def on_client(_server: Any, client: Any) -> None:
        emit("client-connected")
        client.connect("closed", lambda *_: emit("client-closed"))

    server.connect("client-connected", on_client)
    if server.attach(None) == 0:
        emit("error", message=f"cannot listen on port {args.port}")
        return 1
    emit("ready", url=f"rtsp://127.0.0.1:{args.port}{args.path}")
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, lambda *_: loop.quit() or False)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
