"""The base of every failure a user causes and fixes (a bad option, file, recipe or dataset), in
``methods/`` and ``benchmarks/`` alike: the command line prints one as a single ``error:`` line."""

__all__ = ["MethodError", "SegreproError", "described"]


class SegreproError(Exception):
    """A failure the user causes and fixes; the message names the file or option and the fix."""


class MethodError(SegreproError, ValueError):
    """A method registered, built or run with arguments or inputs it cannot take (a width, a
    builder option, a name, a map too small for a layer); the message says which and what fits."""


def described(error: BaseException) -> str:
    """``Type: first line of the message`` of an error raised by code the user supplied, for a
    one-line :class:`MethodError` that names it."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
