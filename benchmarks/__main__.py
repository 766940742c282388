"""``python -m benchmarks``: run the benchmark sections and write a markdown report.

The report is rewritten after every section, so an interrupted run still leaves what it measured.
A full run writes ``benchmarks/RESULTS.md``; ``--quick`` or ``--only`` runs write
``benchmarks/RESULTS-partial.md`` unless ``--output`` says otherwise, so a smoke run never
replaces the full results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import allpairs, e2e, mining, step, time_to_target, tsne
from .common import REPO_ROOT, Settings, load_note, log
from .machine import describe

SECTIONS: dict[str, Callable[[Settings], str]] = {
    "mining": mining.run,
    "step": step.run,
    "e2e": e2e.run,
    "allpairs": allpairs.run,
    "tsne": tsne.run,
    "time_to_target": time_to_target.run,
}
HERE = Path(__file__).resolve().parent
# 1-minute load above this before we start means someone else is using the CPUs.
SHARED_LOAD = 0.5


def _section_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"sections are {', '.join(SECTIONS)}; got {text!r}")
    return [name for name in SECTIONS if name in names]


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller N: a smoke run of a few minutes")
    parser.add_argument(
        "--only", type=_section_list, help=f"run these sections, comma-separated, in the usual order ({', '.join(SECTIONS)})",
    )
    parser.add_argument("--mining-batches", type=_int_list, help="batch sizes of the mining section (default 256,1024,4096)")
    parser.add_argument("--e2e-images", type=int, help="images per end-to-end training run (default one epoch, 59904)")
    parser.add_argument("--tsne-n", type=int, help="embeddings in the t-SNE section (default 10000)")
    parser.add_argument("--no-allpairs-70k", action="store_true", help="skip the all-pairs section's 70,000-embedding case")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for every measurement (default 2)")
    parser.add_argument(
        "--data_path", default=str(REPO_ROOT.parent / "shared" / "datasets"),
        help="folder holding MNIST for the end-to-end section (default: ../shared/datasets from the repository)",
    )
    parser.add_argument("--memory-cap-gib", type=float, default=12.0, help="address-space cap per measured subprocess")
    parser.add_argument(
        "--runs", nargs="*", default=[],
        help="run folders with a committed metrics.jsonl for the time-to-target section (python -m benchmarks.time_to_target)",
    )
    parser.add_argument(
        "--output", help="report path (default: benchmarks/RESULTS.md, or RESULTS-partial.md with --quick/--only)",
    )
    return parser.parse_args(argv)


def header(command: str, threads: int, started: dt.datetime, load_start: tuple[float, float, float]) -> list[str]:
    shared = (
        f" — **the machine was shared**: load was already {load_start[0]:.2f} before this run started, so other "
        f"processes competed for the {os.cpu_count()} cores and timings are slower and noisier than on an idle machine"
        if load_start[0] > SHARED_LOAD else " (idle before the run)"
    )
    return [
        "# tripletnet benchmarks",
        "\n".join([
            f"- **Date**: {started.isoformat(timespec='seconds')}",
            *describe(threads),
            f"- **Command**: `cd {REPO_ROOT} && {command}`",
            f"- **Load average at start**: {load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f} "
            f"(1 / 5 / 15 min){shared}",
        ]),
        "Measurement only: nothing here asserts on time. Every figure is the median of the repeats shown (n), and "
        "every ratio is computed from medians measured side by side in this run.",
    ]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    partial = args.quick or args.only is not None or any(
        size is not None for size in (args.mining_batches, args.e2e_images, args.tsne_n)
    ) or args.no_allpairs_70k
    output = Path(args.output) if args.output else HERE / ("RESULTS-partial.md" if partial else "RESULTS.md")
    command = " ".join(["python -m benchmarks", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    settings = Settings(
        quick=args.quick, threads=args.threads, data_path=Path(args.data_path).resolve(), memory_cap_gib=args.memory_cap_gib,
        runs=tuple(Path(run) for run in args.runs),
        mining_batches=args.mining_batches, e2e_images=args.e2e_images, tsne_n=args.tsne_n,
        allpairs_70k=not args.no_allpairs_70k,
    )
    started, clock = dt.datetime.now().astimezone(), time.perf_counter()
    load_start = os.getloadavg()
    top = header(command, args.threads, started, load_start)
    names = args.only or list(SECTIONS)
    done: list[str] = []

    def write(status: str) -> None:
        output.write_text("\n\n".join([*top, status, *done]) + "\n", encoding="utf-8")

    for name in names:
        log(f"section {name}")
        write(f"_Run in progress: section {name} of {', '.join(names)}._")
        done.append(SECTIONS[name](settings))
    minutes = (time.perf_counter() - clock) / 60
    one, five, fifteen = os.getloadavg()
    write(f"- **Load average at end**: {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min); "
          f"whole run {minutes:.1f} min{' (--quick: smoke-run sizes, not for comparison)' if args.quick else ''}")
    log(f"wrote {output} ({minutes:.1f} min; load {load_note()})")


if __name__ == "__main__":
    main()
