"""Wall-clock time as the engine reads it, so tests can move it by hand."""

from __future__ import annotations

import time


class Clock:
    """Wall-clock time (unix seconds) as the send policy and the dispatcher read
    it: quiet hours, the service window, retry and due times. Tests hand the
    daemon one they move by hand (``wahub.testing.ManualClock``)."""

    def time(self) -> float:
        return time.time()
