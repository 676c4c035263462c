"""The SRT server thread's name as the OS sees it."""

from __future__ import annotations

import ctypes

_PR_SET_NAME = 15


def name_os_thread(name: bytes) -> None:
    """Give the calling thread ``name`` in /proc (``comm``), where per-thread CPU is measured next
    to libsrt's own "SRT:RcvQ"/"SRT:TsbPd" threads; Python before 3.14 leaves every thread named
    after the process. Best effort: Linux only, 15 bytes."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name[:15]), 0, 0, 0)
    except (OSError, AttributeError):
        pass
