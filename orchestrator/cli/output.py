"""How the command line writes: colour only on a terminal and never with NO_COLOR
(no-color.org), counts spelled as words, and `up`'s report: a summary by kind (every action
with -v), a progress bar while a large lab is built on a terminal (rich)."""

from __future__ import annotations

import os
import sys
from collections import Counter


def color_enabled(stream=None) -> bool:
    stream = stream or sys.stdout
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def colorizer(enabled: bool):
    def c(code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if enabled else text
    return c


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def summary(actions) -> str:
    """'namespace 3, link 6, address 4' — what changed, by resource kind."""
    by = Counter(a.metric for a in actions)
    return ", ".join(f"{k} {n}" for k, n in sorted(by.items(), key=lambda kv: (-kv[1], kv[0])))


class Progress:
    """A progress bar for `up` on a terminal when there is much to do; nothing otherwise."""

    THRESHOLD = 50  # actions: below this the run is over before a bar is worth drawing

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.task = None

    def start(self, total: int) -> None:
        if not self.enabled or total < self.THRESHOLD:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn
        self.bar = Bar(TextColumn("up"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("{task.description}"), transient=True, console=None)
        self.bar.start()
        self.task = self.bar.add_task("", total=total)

    def phase(self, name: str, done: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, description=name)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
