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
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..fileio import WriteError
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
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        return int(state["epoch"])
    except Exception:  # noqa: BLE001 - absent, damaged or foreign: it simply tells no epoch
        return None


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
            epoch_files = [p for p in artefacts if _epoch_of_file(p) is not None]
            newest = max(epoch_files, key=lambda p: _epoch_of_file(p) or 0, default=None)
            restart = run_dir / "last.pt" if (run_dir / "last.pt").is_file() else newest
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
                raise UserError(
                    f"resuming {run_dir} from epoch {epoch} would discard its later epochs ({_describe(conflicting)}): "
                    f"resume from {run_dir / 'last.pt'}, give another --checkpoint_path to branch off, "
                    "or pass --overwrite to discard them"
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
