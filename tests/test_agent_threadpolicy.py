"""The agent never runs at realtime priority, even as root where SVT-AV1 raises itself to
SCHED_FIFO 99: an encoder at that priority starves the device's control link, and every process
the agent starts would inherit it. On a machine that is not root the encoder cannot raise itself
and these tests check the same end state (the CI machine runs as root)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from flumph.agent.encoders import VideoEncoder
from flumph.agent.threadpolicy import leave_realtime_scheduling, realtime_threads
from flumph.settings import StreamSettings


def test_an_opened_av1_encoder_leaves_no_thread_at_realtime_priority() -> None:
    settings = StreamSettings(codec="av1", width=320, height=180, fps=15, bitrate_kbps=100)
    encoder = VideoEncoder("libsvtav1", "av1", settings)
    try:
        assert realtime_threads() == []
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        assert int(child.stdout) == os.SCHED_OTHER
    finally:
        encoder.close()


def test_realtime_threads_are_put_back_to_normal() -> None:
    ready, done = threading.Event(), threading.Event()
    tid: list[int] = []

    def raised() -> None:
        tid.append(threading.get_native_id())
        ready.set()
        done.wait(10)

    thread = threading.Thread(target=raised)
    thread.start()
    try:
        ready.wait(10)
        try:
            os.sched_setscheduler(tid[0], os.SCHED_FIFO, os.sched_param(1))
        except PermissionError:
            pytest.skip("raising a thread to SCHED_FIFO needs CAP_SYS_NICE (root)")
        assert tid[0] in realtime_threads()
        assert leave_realtime_scheduling() >= 1
        assert tid[0] not in realtime_threads()
        assert os.sched_getscheduler(tid[0]) == os.SCHED_OTHER
    finally:
        done.set()
        thread.join()
