"""Exit codes of the long-running commands, as README.md documents them: 0 after a clean stop,
1 when the service could not start (a port in use, a bind or startup error), 2 for bad usage or
configuration (decided before anything runs)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2

log = logging.getLogger("flumph")


def run_service(run: Callable[[], object], started: Callable[[], bool]) -> int:
    """``run()`` serves until the service ends; ``started()`` says afterwards whether it came up.

    uvicorn re-raises a captured Ctrl-C once it has shut down cleanly (KeyboardInterrupt: a clean
    stop here), and ends a failed startup with ``sys.exit(3)`` after logging why, which would
    leak out as exit code 3, which no documentation promises: it becomes 1 here.
    """
    try:
        with contextlib.suppress(KeyboardInterrupt):
            run()
    except SystemExit as e:
        log.debug("the server exited during startup (%s)", e.code)
        return EXIT_RUNTIME
    return EXIT_OK if started() else EXIT_RUNTIME
