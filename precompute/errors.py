"""The error type for failures a user can act on; the CLI prints its message, not a traceback."""


class PrecomputeError(Exception):
    """A failure with a message that says what was wrong, where, and what to do."""
