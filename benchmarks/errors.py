"""The project's error base: a failure the user causes and fixes. The command line prints one as a
single ``error:`` line (exit 2); any other exception is a bug and keeps its traceback."""


class SegreproError(Exception):
    """A failure the user causes and fixes; the message names the file or option and the fix."""


class UsageError(SegreproError):
    """A command line that cannot be carried out as given; the message says what to pass instead."""
