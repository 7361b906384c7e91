"""The two type checks behind every numeric setting (recipes, CRF parameters): a bool is neither."""

from __future__ import annotations

import math

__all__ = ["is_finite_number", "is_whole_number"]


def is_finite_number(value: object) -> bool:
    """An ``int`` or ``float`` that is neither NaN nor infinite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_whole_number(value: object) -> bool:
    """An ``int``."""
    return isinstance(value, int) and not isinstance(value, bool)
