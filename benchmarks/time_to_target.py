"""Time to target: how soon training reaches a figure, read from runs' committed metrics.jsonl files.

Each epoch record of ``metrics.jsonl`` (``tripletnet.training.runlog``) holds the epoch's training
seconds (``epoch_seconds``) and, when the per-epoch evaluation ran, ``val`` (VAL at FAR 1e-3) and
``precision_at_1``. From them, per run:

- MNIST: the training seconds until VAL@1e-3 first reaches 0.99;
- Fashion-MNIST: precision@1 at fixed budgets of 60 s, 5 min and 20 min of training (the figure of
  the last evaluated epoch that ended within the budget: what stopping there would give).

*Training seconds* are the sum of ``epoch_seconds`` (the training loop); ``--with-eval`` adds each
epoch's ``eval_seconds``. The per-epoch evaluation uses a fixed subset of the test set
(``--eval_images``), not the all-pairs evaluation of ``tripletnet evaluate``.

Run alone: ``python -m benchmarks.time_to_target runs/a runs/b --plot time_to_target.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tripletnet.errors import UserError
from tripletnet.training.runlog import read_records

from .common import Settings, load_note, table

VAL_TARGET = 0.99  # MNIST: VAL@1e-3 the speedrun preset must reach
BUDGETS_SECONDS = (60.0, 300.0, 1200.0)  # Fashion-MNIST: 60 s, 5 min, 20 min of training


@dataclass(frozen=True)
class Curve:
    """One run's evaluated epochs: cumulative training seconds at each epoch's end and its figures."""

    name: str
    dataset: str  # from the run's config.json; "unknown" without one
    seconds: tuple[float, ...]
    val: tuple[float | None, ...]  # None where the evaluation could not reach the FAR (too few pairs)
    precision_at_1: tuple[float, ...]
    total_seconds: float  # training seconds of the whole run, evaluated epochs or not


def read_curve(run: str | Path, *, with_eval: bool = False) -> Curve:
    """Read one run folder (or its metrics.jsonl) into a :class:`Curve`.

    Args:
        run: a run folder holding metrics.jsonl (and config.json, for the dataset's name), or the file itself.
        with_eval: count each epoch's evaluation seconds as training time too.

    Returns:
        The run's curve over the epochs that were evaluated.

    Raises:
        UserError: no readable metrics file, or one without per-epoch timings.
    """
    path = Path(run)
    folder = path if path.is_dir() else path.parent
    records = read_records(path)
    dataset = "unknown"
    try:
        dataset = str(json.loads((folder / "config.json").read_text(encoding="utf-8")).get("dataset", "unknown"))
    except (OSError, ValueError):
        pass  # a metrics file alone still has its curve
    elapsed = 0.0
    seconds: list[float] = []
    val: list[float | None] = []
    p_at_1: list[float] = []
    for record in records:
        if "epoch_seconds" not in record:
            raise UserError(f"{path}: epoch {record.get('epoch', '?')} has no epoch_seconds")
        elapsed += float(record["epoch_seconds"]) + (float(record.get("eval_seconds", 0.0)) if with_eval else 0.0)
        if "precision_at_1" in record:  # an evaluated epoch (--eval_every may skip some)
            seconds.append(elapsed)
            val.append(None if record.get("val") is None else float(record["val"]))
            p_at_1.append(float(record["precision_at_1"]))
    name = folder.name if path.is_dir() or path.name == "metrics.jsonl" else path.stem
    return Curve(name, dataset, tuple(seconds), tuple(val), tuple(p_at_1), elapsed)


def seconds_to_val(curve: Curve, target: float = VAL_TARGET) -> float | None:
    """Training seconds at the end of the first evaluated epoch with VAL >= ``target``; None if never."""
    return next((s for s, v in zip(curve.seconds, curve.val, strict=True) if v is not None and v >= target), None)


def precision_at_budget(curve: Curve, budget_seconds: float) -> float | None:
    """Precision@1 of the last evaluated epoch that ended within ``budget_seconds``; None if none did."""
    within = [p for s, p in zip(curve.seconds, curve.precision_at_1, strict=True) if s <= budget_seconds]
    return within[-1] if within else None


def _budget_label(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _val_cell(curve: Curve, target: float) -> str:
    reached = seconds_to_val(curve, target)
    if reached is not None:
        return f"**{reached:.1f} s**"
    known = [(v, s) for s, v in zip(curve.seconds, curve.val, strict=True) if v is not None]
    if not known:
        return "not reached (no VAL recorded)"
    best, at = max(known)
    return f"not reached (best {best:.4f} at {at:.1f} s)"


def _budget_cell(curve: Curve, budget: float) -> str:
    value = precision_at_budget(curve, budget)
    if value is None:
        first = f"; first evaluated epoch ended at {curve.seconds[0]:.1f} s" if curve.seconds else ""
        return f"none{first}"
    # A run that ended before the budget is reported at its end, and says so.
    short = f" (run ended at {curve.total_seconds:.0f} s)" if curve.total_seconds < budget else ""
    return f"{value:.4f}{short}"


def report(curves: Sequence[Curve], *, target: float = VAL_TARGET, budgets: Sequence[float] = BUDGETS_SECONDS) -> str:
    """Markdown tables: seconds to VAL >= target for MNIST runs, precision@1 at budgets for Fashion-MNIST runs.

    A run whose dataset is unknown (no config.json) appears in both tables.
    """
    mnist = [c for c in curves if c.dataset in ("mnist", "unknown")]
    fashion = [c for c in curves if c.dataset in ("fashion-mnist", "unknown")]
    others = [c for c in curves if c not in mnist and c not in fashion]
    parts = []
    if mnist:
        parts.append(table(
            ["run (MNIST)", f"training s to VAL@1e-3 >= {target}", "final VAL@1e-3", "final P@1", "training s in all"],
            [[c.name, _val_cell(c, target), _last(c.val), _last(c.precision_at_1), f"{c.total_seconds:.1f}"] for c in mnist],
        ))
    if fashion:
        parts.append(table(
            ["run (Fashion-MNIST)", *(f"P@1 at {_budget_label(b)}" for b in budgets), "final P@1", "training s in all"],
            [[c.name, *(_budget_cell(c, b) for b in budgets), _last(c.precision_at_1), f"{c.total_seconds:.1f}"]
             for c in fashion],
        ))
    if others:
        parts.append("Runs on other datasets, not in the tables: " + ", ".join(f"{c.name} ({c.dataset})" for c in others))
    return "\n\n".join(parts)


def _last(values: Sequence[float | None]) -> str:
    return "n/a" if not values or values[-1] is None else f"{values[-1]:.4f}"


def time_to_target_figure(curves: Sequence[Curve], *, target: float = VAL_TARGET,
                          budgets: Sequence[float] = BUDGETS_SECONDS) -> Any:
    """A matplotlib Figure: VAL@1e-3 (left) and precision@1 (right) against training seconds, one line per run."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    val_axes, p_axes = fig.subplots(1, 2)
    for curve in curves:
        label = f"{curve.name} ({curve.dataset})"
        known = [(s, v) for s, v in zip(curve.seconds, curve.val, strict=True) if v is not None]
        val_axes.plot([s for s, _ in known], [v for _, v in known], marker=".", label=label)
        p_axes.plot(curve.seconds, curve.precision_at_1, marker=".", label=label)
    val_axes.axhline(target, color="0.3", linestyle="--", linewidth=1, label=f"VAL target {target}")
    for budget in budgets:
        p_axes.axvline(budget, color="0.6", linestyle=":", linewidth=1)
    for axes, ylabel in ((val_axes, "VAL @ FAR 1e-3 (per-epoch evaluation)"), (p_axes, "precision@1 (per-epoch evaluation)")):
        axes.set_xlabel("training seconds")
        axes.set_ylabel(ylabel)
        axes.grid(True, alpha=0.3)
    val_axes.legend(fontsize="small")
    p_axes.set_title("dotted: budgets " + ", ".join(_budget_label(b) for b in budgets), fontsize="small")
    return fig


def plot_time_to_target(curves: Sequence[Curve], out: str | Path) -> Path:
    """Write :func:`time_to_target_figure` as a PNG at ``out`` (atomically) and return the path."""
    from tripletnet.plots import save_figure

    return save_figure(time_to_target_figure(curves), out)


def run(settings: Settings) -> str:
    """The ``python -m benchmarks`` section: the runs given with ``--runs``."""
    heading = "## 6. Time to target"
    intro = (
        f"From each run's committed `metrics.jsonl` (`python -m benchmarks.time_to_target RUN...`): training seconds "
        f"(sum of `epoch_seconds`, evaluation excluded) until the per-epoch VAL@1e-3 first reaches {VAL_TARGET} on "
        "MNIST, and the per-epoch precision@1 at training budgets of "
        + ", ".join(_budget_label(b) for b in BUDGETS_SECONDS)
        + " on Fashion-MNIST (the last evaluated epoch within the budget). These are the runs' own timings, "
        "made when they ran, not re-measured here; each run's settings are in its folder's `config.json`. "
        "The PML loop's peer runs come from `python -m benchmarks.pml_loop --epochs N --run_dir DIR`."
    )
    if not settings.runs:
        return "\n\n".join([heading, intro, "_No runs given (`python -m benchmarks --runs runs/a runs/b ...`)._"])
    curves = [read_curve(run) for run in settings.runs]
    listing = "\n".join(f"- {c.name}: `{path}`" for c, path in zip(curves, settings.runs, strict=True))
    return "\n\n".join([heading, intro, listing, report(curves), f"Load average when read: {load_note()}."])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.time_to_target",
        description="Seconds to VAL@1e-3 >= 0.99 (MNIST), P@1 at 60 s / 5 min / 20 min (Fashion-MNIST), from metrics.jsonl.",
    )
    parser.add_argument("runs", nargs="+", help="run folders (holding metrics.jsonl and config.json) or metrics.jsonl files")
    parser.add_argument("--plot", help="also write VAL and P@1 against training seconds as this PNG")
    parser.add_argument("--with-eval", action="store_true", help="count the per-epoch evaluation's seconds as training time")
    args = parser.parse_args(argv)
    try:
        curves = [read_curve(run, with_eval=args.with_eval) for run in args.runs]
        print(report(curves))
        if args.plot:
            print(f"wrote {plot_time_to_target(curves, args.plot)}", file=sys.stderr)
    except UserError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
