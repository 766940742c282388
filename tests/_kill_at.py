"""Run ``tripletnet`` and stop it at one named moment of a file write: the deterministic fault of the kill tests.

    python tests/_kill_at.py MOMENT FILE N [--signal SIGTERM] -- tripletnet-arguments...

MOMENT is where, in the N-th atomic write of the file named FILE (``last.pt``, ``epoch_2.pt``,
``config.json``), the process ends:

* ``before``: the hidden temporary exists, empty, and nothing is written into it yet;
* ``during``: half of the file's bytes are in the temporary;
* ``after``: the temporary has replaced FILE, and the next write has not begun.

By default the process ends as ``kill -9`` would end it (``os._exit``: no cleanup, no ``finally``);
with ``--signal SIGTERM`` it sends itself that signal there instead and runs on. MOMENT ``step``
(FILE and N ignored) sends the signal at the first training step.
"""

from __future__ import annotations

import os
import pathlib
import signal
import sys

KILLED = 137  # what a shell reports for kill -9


def main() -> int:
    moment, name, nth, *rest = sys.argv[1:]
    stop_signal = None
    if rest[:2] and rest[0] == "--signal":
        stop_signal, rest = getattr(signal, rest[1]), rest[2:]
    assert rest[0] == "--", rest
    argv = rest[1:]
    seen = {"count": 0}

    def stop() -> None:
        if stop_signal is None:
            os._exit(KILLED)
        os.kill(os.getpid(), stop_signal)

    def is_ours(path: os.PathLike) -> bool:
        return pathlib.Path(path).name.startswith(f".{name}.") and str(path).endswith(".tmp")

    real_write_bytes, real_replace = pathlib.Path.write_bytes, os.replace

    def write_bytes(self: pathlib.Path, data: bytes) -> int:
        if is_ours(self):
            seen["count"] += 1
            if seen["count"] == int(nth) and moment == "before":
                stop()
            if seen["count"] == int(nth) and moment == "during":
                with open(self, "wb") as fh:
                    fh.write(data[: len(data) // 2])
                    fh.flush()
                stop()
        return real_write_bytes(self, data)

    def replace(src: os.PathLike, dst: os.PathLike) -> None:
        real_replace(src, dst)
        if is_ours(src) and pathlib.Path(dst).name == name and seen["count"] == int(nth) and moment == "after":
            stop()

    pathlib.Path.write_bytes = write_bytes  # type: ignore[method-assign]
    os.replace = replace  # type: ignore[assignment]
    if moment == "step":
        import tripletnet.training.loop as loop

        real_step = loop.train_step

        def step(*args: object, **kwargs: object) -> object:
            stop()
            return real_step(*args, **kwargs)

        loop.train_step = step  # type: ignore[assignment]

    from tripletnet.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
