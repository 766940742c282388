"""The single source of truth for every hyperparameter of a training run.

The CLI builds a :class:`TrainConfig` from defaults, an optional TOML file and command-line
options (in that order of precedence, last wins); a notebook builds one directly. The config is
saved as JSON beside every run and inside every checkpoint, so a run can always be re-created.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DATASETS = ("mnist", "fashion-mnist")
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """Hyperparameters of one training run.

    Defaults are tripletnet's (chosen by measurement, see the README); ``PRESETS["reference"]``
    restores the reference project's network, learning rate, fp32 and no augmentation.
    """

    # data
    dataset: str = field(default="mnist", metadata={"help": "dataset: mnist, fashion-mnist, or a folder of class subfolders"})
    data_path: str | None = field(default=None, metadata={"help": "where the dataset files are (default: $TRIPLETNET_DATA, else ./data/)"})
    download: bool = field(default=True, metadata={"help": "download missing dataset files from the public mirrors"})
    num_images: int = field(default=59904, metadata={"help": "training images per epoch: a class-stratified subset drawn from the seed"})
    augment: bool = field(default=True, metadata={"help": "augment training images: random rotation (±10°), scale (±10%%) and shift (±2 px) per image"})
    # batches
    batch_size: int = field(default=256, metadata={"help": "images per batch (class-balanced: every class present when it fits)"})
    num_workers: int = field(default=0, metadata={"help": "accepted for compatibility with the reference; data is held in memory, so no loader workers are used"})
    # model
    network: str = field(default="conv3", metadata={"help": "conv3: three conv blocks, 15 MFLOPs/image; reference: the reference project's two-block CNN, 8 MFLOPs; wide: five convs, 44 MFLOPs"})
    embedding_dim: int = field(default=64, metadata={"help": "size of the L2-normalised embedding"})
    # mining and loss
    margin: float = field(default=1.0, metadata={"help": "triplet margin"})
    mining: str = field(default="semihard:0.4,hard", metadata={"help": "mining schedule, e.g. 'semihard:0.4,hard' = semi-hard for the first 40%% of epochs, then hard (each miner at least one epoch); miners: semihard, hard, batch_all"})
    collapse_fallback: bool = field(default=True, metadata={"help": "if hard mining collapses the embeddings (a batch's spread falls below half of the last epoch's), undo that epoch and continue with semi-hard mining"})
    # optimisation
    epochs: int = field(default=20, metadata={"help": "number of epochs"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    lr_drop_epoch: int = field(default=15, metadata={"help": "multiply the learning rate by lr_drop_factor after this many epochs (0 = never)"})
    lr_drop_factor: float = field(default=0.1, metadata={"help": "learning-rate drop factor"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay"})
    precision: str = field(default="bf16", metadata={"help": "training arithmetic: fp32, or bf16 (autocast; faster on CPUs with AVX-512 BF16; evaluation stays fp32)"})
    device: str = field(default="auto", metadata={"help": "where to train: auto (cuda if available, else cpu), cpu, cuda or mps; model, batches and mining all run there"})
    # bookkeeping
    seed: int = field(default=0, metadata={"help": "random seed: subset, batches, validation triplets and initial weights"})
    num_val_triplets: int = field(default=128, metadata={"help": "fixed random test triplets for the per-epoch validation loss"})
    eval_every: int = field(default=1, metadata={"help": "run the fast verification evaluation every N epochs (0 = never)"})
    eval_images: int = field(default=2000, metadata={"help": "test images in the per-epoch evaluation: a fixed class-stratified subset (0 = all); 'tripletnet evaluate' always uses all"})
    checkpoint_path: str = field(default="./checkpoints/", metadata={"help": "folder for checkpoints, metrics.jsonl, config.json and plots"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})

    def validate(self) -> None:
        """Raise :class:`UserError` for values no run can use. Called before anything is written."""
        checks = [
            (self.num_images > 0, f"--num_images must be positive, got {self.num_images}"),
            (self.batch_size >= 4, f"--batch_size must be at least 4 (two classes with two images each), got {self.batch_size}"),
            (self.epochs > 0, f"--epochs must be positive, got {self.epochs}"),
            (self.margin > 0, f"--margin must be positive, got {self.margin}"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.lr_drop_epoch >= 0, f"--lr_drop_epoch must be >= 0, got {self.lr_drop_epoch}"),
            (0 < self.lr_drop_factor <= 1, f"--lr_drop_factor must be in (0, 1], got {self.lr_drop_factor}"),
            (self.weight_decay >= 0, f"--weight_decay must be >= 0, got {self.weight_decay}"),
            (self.embedding_dim > 0, f"--embedding_dim must be positive, got {self.embedding_dim}"),
            (self.num_val_triplets > 0, f"--num_val_triplets must be positive, got {self.num_val_triplets}"),
            (self.num_workers >= 0, f"--num_workers must be >= 0, got {self.num_workers}"),
            (self.eval_every >= 0, f"--eval_every must be >= 0, got {self.eval_every}"),
            (self.eval_images >= 0, f"--eval_images must be >= 0, got {self.eval_images}"),
            (self.threads >= 0, f"--threads must be >= 0, got {self.threads}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.dataset not in DATASETS and not Path(self.dataset).is_dir():
            raise UserError(
                f"unknown dataset {self.dataset!r}: choose one of {', '.join(DATASETS)} or give a folder of class subfolders"
            )
        # Imported here to keep config importable without torch-heavy modules.
        from .models import NETWORKS
        from .schedule import parse_schedule

        if self.network not in NETWORKS:
            raise UserError(f"unknown network {self.network!r}: choose one of {', '.join(NETWORKS)}")
        parse_schedule(self.mining)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> "TrainConfig":
        return cls().updated(values, source=source)

    def updated(self, values: dict[str, Any], *, source: str = "config") -> "TrainConfig":
        """Return a copy with ``values`` applied, checking names and types."""
        known = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for raw_key, value in values.items():
            key = raw_key.replace("-", "_")
            if key not in known:
                raise UserError(f"{source}: unknown option {raw_key!r}")
            changes[key] = _coerce(value, getattr(self, key), key, known[key].type, source)
        return dataclasses.replace(self, **changes)


def _coerce(value: Any, default: Any, key: str, annotation: Any, source: str) -> Any:
    """Check a value from TOML/JSON against the field's type (ints may stand for floats)."""
    if value is None and "None" in str(annotation):
        return None
    expected = type(default) if default is not None else str
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        raise UserError(f"{source}: option {key!r} must be {expected.__name__}, got {value!r}")
    return value


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file; a flat table or one under ``[train]``."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    if isinstance(data.get("train"), dict):
        data = data["train"]
    return data


# Named starting points. "reference" reproduces the reference MNIST-triplet project's settings.
PRESETS: dict[str, dict[str, Any]] = {
    "reference": {"network": "reference", "lr": 1e-4, "augment": False, "precision": "fp32", "collapse_fallback": False},
}
