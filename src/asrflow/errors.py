"""The one base class of errors a user can fix: the CLI prints their message (which names the file/row/key and the
fix) and exits with status 2 instead of a traceback."""


class AsrflowError(ValueError):
    """A problem in the user's inputs or settings, explained in the message."""
