"""Run folders: which files make a run, and the rules that keep one run from overwriting another.

The rule for where a run writes: ``--checkpoint_path`` (for ``--resume``, the folder holding the
checkpoint unless ``--checkpoint_path`` names another; the CLI applies that). A folder is *in use*
when it holds any run artefact (:data:`ARTEFACT_PATTERNS`), not only ``last.pt``: a crash before the
first ``last.pt`` still leaves epochs worth keeping. Without ``overwrite``:

* a new run refuses a folder in use;
* a resumed run refuses a folder that holds epochs after the one it resumes from (resuming would
  cut that history short) or that holds another run (it would mix two runs).

With ``overwrite`` the artefacts that would be cut or mixed are removed first (for a new run: all;
for a resumed run in its own folder: those after its epoch), so no stale ``epoch_N.pt`` stays.

A killed run can leave two kinds of debris, both handled when the folder is next locked: hidden
temporary files of the atomic writes (:func:`remove_stale_temporaries`), and a save cut short
between last.pt and epoch_N.pt or best.pt (:func:`complete_interrupted_save`, on resume).
Every refusal names a command that works on the folder as it is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fileio import TEMPORARY_NAME, WriteError, atomic_write_bytes
from .checkpoint import load_checkpoint
from .runlog import METRICS_FILE

ARTEFACT_PATTERNS = ("last.pt", "best.pt", "epoch_*.pt", METRICS_FILE, "config.json", "losses.png")
_EPOCH_FILE = re.compile(r"epoch_(\d+)\.pt$")


def run_artefacts(folder: str | Path) -> list[Path]:
    """The run artefacts in ``folder`` (none when it does not exist), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted({path for pattern in ARTEFACT_PATTERNS for path in folder.glob(pattern) if path.is_file()})


def _epoch_of_file(path: Path) -> int | None:
    match = _EPOCH_FILE.search(path.name)
    return int(match.group(1)) if match else None


def _recorded_epoch(checkpoint: Path) -> int | None:
    """The epoch a checkpoint (``last.pt``, ``best.pt``) records, or None when it is absent or unreadable."""
    try:
        return int(load_checkpoint(checkpoint)["epoch"])  # quiet: torch's warnings about a foreign file stay unsaid
    except UserError:  # absent, damaged or foreign: it simply tells no epoch
        return None


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the hidden temporaries (``.last.pt.<hex>.tmp``, ...) that a killed run's atomic writes left.

    Only temporaries of run artefacts: the caller holds the folder's lock, so no living run is
    writing them. Returns the paths removed.
    """
    removed = []
    for pattern in ARTEFACT_PATTERNS:
        for path in folder.glob(f".{pattern}.*.tmp"):
            if TEMPORARY_NAME.fullmatch(path.name) and path.is_file():
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise WriteError(path, exc) from None
                removed.append(path)
    return removed


def complete_interrupted_save(run_dir: Path, resume: Path, state: dict[str, Any]) -> list[Path]:
    """Write the files of the resumed epoch that a kill during its save left missing or behind.

    A save writes last.pt, then epoch_<n>.pt, then best.pt (when that epoch is the best). Resuming
    epoch n from its own folder, each of them that does not hold what the save would have written is
    written now from the checkpoint resumed (or, for best.pt, the epoch file of the best epoch).
    Returns the paths written.
    """
    if resume.resolve().parent != run_dir.resolve():
        return []
    epoch = int(state["epoch"])
    wanted = {run_dir / "last.pt": (resume, epoch), run_dir / f"epoch_{epoch}.pt": (resume, epoch)}
    history = state.get("history") or []
    best = history[-1].get("best_epoch") if history else None
    if isinstance(best, int):
        source = resume if best == epoch else run_dir / f"epoch_{best}.pt"
        wanted[run_dir / "best.pt"] = (source, best)
    written = []
    for target, (source, source_epoch) in wanted.items():
        if target.resolve() == source.resolve() or _recorded_epoch(target) == source_epoch:
            continue
        if _recorded_epoch(source) != source_epoch:
            continue  # the best epoch's file is gone too: nothing to restore it from
        atomic_write_bytes(target, source.read_bytes())
        written.append(target)
    return written


def _newest_checkpoint(run_dir: Path) -> Path | None:
    """The run's checkpoint of the highest epoch that loads (last.pt on a tie), or None."""
    candidates = [run_dir / "last.pt", *sorted(run_dir.glob("epoch_*.pt"), key=lambda p: _epoch_of_file(p) or 0, reverse=True)]
    best: tuple[int, Path] | None = None
    for path in candidates:
        recorded = _recorded_epoch(path) if path.is_file() else None
        if recorded is not None and (best is None or recorded > best[0]):
            best = (recorded, path)
    return best[1] if best else None


def _describe(paths: list[Path]) -> str:
    names = [path.name for path in paths]
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def prepare_run_folder(run_dir: Path, *, resume: Path | None, resume_state: dict[str, Any] | None, overwrite: bool) -> None:
    """Refuse (or, with ``overwrite``, clear) what a run into ``run_dir`` would cut short or mix with.

    Args:
        run_dir: the folder the run will write into.
        resume: the checkpoint a resumed run continues from (None for a new run).
        resume_state: that checkpoint, loaded.
        overwrite: remove the conflicting artefacts instead of refusing.

    Raises:
        UserError: the folder is in use and ``overwrite`` is off; the message says what to do.
        WriteError: ``run_dir`` is a file, or an artefact cannot be removed.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise WriteError(run_dir, NotADirectoryError(20, "it exists and is not a folder"))
    artefacts = run_artefacts(run_dir)
    if not artefacts:
        return
    if resume is None or resume_state is None:
        conflicting = artefacts
        if not overwrite:
            restart = _newest_checkpoint(run_dir)
            how = f"continue it with --resume {restart}, " if restart is not None else ""
            raise UserError(
                f"{run_dir} already holds a run ({_describe(artefacts)}): {how}choose another --checkpoint_path, "
                "or pass --overwrite to remove those files"
            )
    else:
        epoch = int(resume_state["epoch"])
        own_folder = resume.resolve().parent == run_dir.resolve()
        if own_folder:
            conflicting = [p for p in artefacts if (_epoch_of_file(p) or 0) > epoch]
            for name in ("last.pt", "best.pt"):  # a best.pt from a discarded epoch would outlive it
                recorded = _recorded_epoch(run_dir / name)
                if recorded is not None and recorded > epoch:
                    conflicting.append(run_dir / name)
            if conflicting and not overwrite:
                newest = _newest_checkpoint(run_dir)
                how = f"resume with --resume {newest}, " if newest is not None and _recorded_epoch(newest) != epoch else ""
                raise UserError(
                    f"resuming {run_dir} from epoch {epoch} would discard its later epochs ({_describe(conflicting)}): "
                    f"{how}give another --checkpoint_path to branch off, or pass --overwrite to discard them"
                )
        else:
            conflicting = artefacts
            if not overwrite:
                raise UserError(
                    f"{run_dir} already holds another run ({_describe(artefacts)}): resuming {resume} there would mix "
                    "the two; choose another --checkpoint_path, or pass --overwrite to remove those files"
                )
    for path in conflicting:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise WriteError(path, exc) from None
