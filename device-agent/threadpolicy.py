"""Keeps every thread of the agent on the normal scheduler.

SVT-AV1, opened by a process running as root, switches the opening thread to SCHED_FIFO at
priority 99, and every thread it then creates inherits that policy (measured: 42 of 42 threads
after ``CodecContext.open()`` with SVT-AV1 4.1). A busy encoder at realtime priority can starve
what must never starve on a device: the MQTT session that keeps control of it, the SRT sender, the
kernel's own work. Anything the process starts afterwards (a child process, a Python thread)
inherits the policy too; on a 2-core CI machine a browser launched so starved the whole run. So
after opening an encoder the agent puts every realtime thread of its process back to SCHED_OTHER.
"""

from __future__ import annotations

import os

_TASKS = "/proc/self/task"


def leave_realtime_scheduling() -> int:
    """Moves each thread of this process on a realtime policy back to SCHED_OTHER; returns how many.

    A no-op where there is no /proc (not Linux) or nothing runs at realtime priority. A thread that
    ends while we look is skipped.
    """
    try:
        tids = [int(name) for name in os.listdir(_TASKS)]
    except OSError:
        return 0
    normal = os.sched_param(0)
    moved = 0
    for tid in tids:
        try:
            if os.sched_getscheduler(tid) in (os.SCHED_FIFO, os.SCHED_RR):
                os.sched_setscheduler(tid, os.SCHED_OTHER, normal)
                moved += 1
        except (ProcessLookupError, PermissionError):
            continue
    return moved


def realtime_threads() -> list[int]:
    """The ids of this process's threads on a realtime policy (for tests and diagnostics)."""
    found = []
    for name in os.listdir(_TASKS):
        try:
            if os.sched_getscheduler(int(name)) in (os.SCHED_FIFO, os.SCHED_RR):
                found.append(int(name))
        except ProcessLookupError:
            continue
    return found
