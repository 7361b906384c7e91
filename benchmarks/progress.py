"""Live progress on a terminal: tqdm bars (count, rate, ETA) on stderr when it is a terminal and
this is the main process; elsewhere (CI, logs, other DDP ranks) the bars are disabled and the
log lines are exactly what they were without them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

__all__ = ["bar", "beside_bars", "on_terminal"]


def on_terminal() -> bool:
    """Whether stderr, where the bars go, is a terminal."""
    return sys.stderr is not None and sys.stderr.isatty()


def bar(description: str, total: float, unit: str, *, main: bool = True, **options: Any) -> tqdm:
    """A tqdm bar of ``total`` ``unit``s on stderr, or a disabled one (``update`` and ``close`` do
    nothing) off a terminal or on a process other than the main one. ``options`` go to tqdm
    (``initial``, ``iterable``, ``bar_format``)."""
    return tqdm(desc=description, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=not (main and on_terminal()), **options)


def beside_bars(progress: Callable[[str], None]) -> Callable[[str], None]:
    """``progress`` writing its lines above the live bars (cleared while it writes, redrawn after)
    on a terminal; ``progress`` itself elsewhere."""
    if not on_terminal():
        return progress

    def write(line: str) -> None:
        with tqdm.external_write_mode():
            progress(line)

    return write
