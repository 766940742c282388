"""The one exception type that means "the user asked for something we cannot do"."""


class UserError(Exception):
    """A mistake in the user's input (options, files, data).

    The CLI prints its message as one line on stderr and exits with code 2; library callers
    can catch it like any other exception. Never raise it for a bug in tripletnet itself.
    """
