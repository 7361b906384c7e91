"""The project's error base (:class:`methods.errors.SegreproError`, defined in the lower layer so
that ``methods/`` raises it too) and the harness's own kinds. The command line prints a
``SegreproError`` (or an ``OSError`` from the system) as a single ``error:`` line (exit 2); anything
else is a bug and keeps its traceback."""

from methods.errors import MethodError, SegreproError

__all__ = ["CRFParameterError", "MethodError", "RecipeError", "SegreproError", "UsageError", "WeightsError"]


class UsageError(SegreproError, ValueError):
    """A command line or call that cannot be carried out as given; the message says what to pass instead."""


class WeightsError(SegreproError, ValueError):
    """Weights that cannot be used: they do not fit the network, or hold NaN or inf."""


class CRFParameterError(SegreproError, ValueError):
    """A dense-CRF parameter out of range (from ``--set``, a grid or a stored CRF search)."""


class RecipeError(SegreproError, ValueError):
    """An unknown method, profile or override key, a value of the wrong type or out of range."""
