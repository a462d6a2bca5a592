"""The project's own error for bad input: a value a user gave that cannot be used.

The command line (reinlite.cli) prints these, and ``FileNotFoundError``, as one line and exits
with status 2; any other exception is a bug and keeps its traceback. The config's
:class:`reinlite.config.ConfigError` and the weights' :class:`reinlite.weights.CheckpointError`
are the other two kinds the command line treats the same way.
"""


class InputError(ValueError):
    """A value given by the user (a file, an argument, a name) that cannot be used; the message
    names the value and what was expected."""
