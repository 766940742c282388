"""The ``tripletnet`` command (console script and ``python -m tripletnet``).

The command-line module is imported here rather than by the script itself, so that a Ctrl-C while
it imports (numpy, then torch: a second or two) ends as every other interrupt does, in one line
with exit code 130, instead of a traceback through the imports.
"""

from __future__ import annotations

import sys
from typing import NoReturn


def run() -> NoReturn:
    try:
        from .cli import run as run_command
    except KeyboardInterrupt:
        sys.stderr.write("tripletnet: interrupted\n")
        raise SystemExit(130) from None
    run_command()


if __name__ == "__main__":
    run()
