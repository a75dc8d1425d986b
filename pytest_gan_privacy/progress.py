"""Progress lines for long stages (encoding thousands of images, training the MAE)."""

from __future__ import annotations

import time
from collections.abc import Callable


class ProgressPrinter:
    """Calls `write(text)` as stages advance: one line rewritten in place on a
    terminal, a few plain lines (0, 25, 50, 75, 100 %) in a CI log."""

    def __init__(self, write: Callable[[str], None], interactive: bool):
        self.write, self.interactive = write, interactive
        self._stage, self._last_quarter, self._last_time = "", -1, 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self._stage, self._last_quarter, self._started = stage, -1, time.perf_counter()
        percent = 100 * done // max(total, 1)
        line = f"gan-audit: {stage} {done}/{total} ({percent}%)"
        if self.interactive:
            now = time.perf_counter()
            if done == total or now - self._last_time > 0.2:  # don't flood the terminal
                self._last_time = now
                self.write("\r" + line + ("\n" if done == total else ""))
        elif percent // 25 > self._last_quarter:
            self._last_quarter = percent // 25
            self.write(line + "\n")
