"""The exceptions that mean "the caller asked for something we cannot do"."""

from __future__ import annotations

from collections.abc import Sequence


class UserError(Exception):
    """A mistake in the user's input (files, data, a combination of options).

    The CLI prints its message as one line on stderr and exits with code 2; library callers
    can catch it like any other exception. Never raise it for a bug in tripletnet itself.
    """


class ParameterError(ValueError):
    """A library argument with a value no call can use; it names the parameter.

    Library functions speak in parameter names (``far must be in (0, 1], got 2.0``); the CLI
    turns ``parameter`` into the flag the user typed (``--far must be in (0, 1], got 2.0``).

    Args:
        parameter: the parameter's name as the function (or config field) spells it.
        problem: what is wrong with its value, e.g. ``"must be positive, got 0"``.
        related: other parameters that ``problem`` names (a combination of values), so that the
            CLI can spell them as flags too, e.g. ``ParameterError("repeats", "applies only to
            protocol pairs", related=("protocol",))``.
    """

    def __init__(self, parameter: str, problem: str, *, related: Sequence[str] = ()) -> None:
        super().__init__(f"{parameter} {problem}")
        self.parameter = parameter
        self.problem = problem
        self.related = tuple(related)
