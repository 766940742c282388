"""The single source of truth for every option of a training run and of an evaluation.

The CLI builds a :class:`TrainConfig` (or an :class:`EvalConfig`) from defaults, a preset, an
optional TOML file and command-line options (in that order of precedence, last wins); a notebook
builds one directly. Each field's name, type, default and help text generate the command's flag.
A training config is saved as JSON beside every run and inside every checkpoint, so a run can
always be re-created; :func:`resumed_config` decides what a resumed run may change.

Validation raises :class:`~tripletnet.errors.ParameterError` naming the field; only the CLI turns
field names into flags.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from .data.datasets import DATASETS
from .errors import ParameterError, UserError
from .seeds import check_seed

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Precision = Literal["auto", "fp32", "bf16", "fp64"]
Device = Literal["auto", "cpu", "cuda", "mps"]
Protocol = Literal["all-pairs", "pairs", "kfold"]
SplitBy = Literal["identity", "image"]
LrSchedule = Literal["step", "cosine"]
Flip = Literal["none", "mean", "concat"]
Classes = Literal["unseen", "seen", "all"]

# Upper bounds that keep every step's arithmetic finite (issue 10: --lr 1e300 overflowed).
LR_MAX = 1.0
MARGIN_MAX = 2.0  # the largest distance between two L2-normalised embeddings

# What a resumed run may change: where and how long it runs and how often it is evaluated, never
# what it learns (network, data subset, optimiser, mining), which the checkpoint records.
RESUMABLE_FIELDS = frozenset({"epochs", "threads", "eval_every", "eval_images", "data_path", "download", "checkpoint_path",
                              "num_workers", "cache_images", "patience"})


OPTION_GROUPS = ("data", "augmentation", "model", "mining and loss", "optimisation", "evaluation", "run")
"""The groups of :class:`TrainConfig`'s fields (each field's metadata ``group``), in the order a run
is described: the headings of ``train --help``, of the options reference and of the report's
configuration."""


@dataclass
class TrainConfig:
    """Hyperparameters of one training run.

    Defaults are tripletnet's (chosen by measurement, see the README); ``PRESETS["reference"]``
    restores the reference project's network, learning rate, fp32 and no augmentation.
    """

    # data
    dataset: str = field(default="mnist", metadata={"help": f"dataset: {DATASETS.describe()}", "group": "data"})
    data_path: str | None = field(default=None, metadata={"help": "where the dataset files are (default: $TRIPLETNET_DATA, else ./data/)", "group": "data", "metavar": "DIR"})
    download: bool = field(default=True, metadata={"help": "download missing dataset files from the public mirrors", "group": "data"})
    num_images: int = field(default=59904, metadata={"help": "training images per epoch (a class-stratified subset)", "doc": "training images per epoch: a class-stratified subset drawn from the seed", "group": "data"})
    augment: bool = field(default=True, metadata={"help": "random rotation, scaling and shift per training image", "doc": "augment training images: a random rotation, scaling and shift per image (their sizes: --rotation, --scaling, --shift)", "group": "augmentation"})
    rotation: float = field(default=10.0, metadata={"help": "largest rotation, degrees (0 = none)", "doc": "with --augment: largest rotation either way, in degrees (0 = none)", "group": "augmentation"})
    scaling: float = field(default=0.1, metadata={"help": "largest change of size, a fraction (0 = none)", "doc": "with --augment: largest change of size either way, as a fraction (0.1 = ±10%%; 0 = none)", "group": "augmentation"})
    shift: float = field(default=2.0, metadata={"help": "largest shift, pixels (0 = none)", "doc": "with --augment: largest shift either way, in pixels (0 = none; --rotation 0 --scaling 0 shifts only)", "group": "augmentation"})
    hflip: float = field(default=0.0, metadata={"help": "probability of a left-right mirror (not for digits)", "doc": "with --augment: probability of mirroring a training image left-right; for data whose mirror image is the same class (clothes, faces), not digits", "group": "augmentation"})
    elastic: float = field(default=0.0, metadata={"help": "elastic distortion strength, pixels (0 = off)", "doc": "with --augment: elastic distortion strength in pixels (Simard et al. 2003: a random displacement field smoothed by a 4-px Gaussian, times this; 34 is their MNIST value, moving pixels about 1.4 px); 0 = off", "group": "augmentation"})
    stroke: float = field(default=0.0, metadata={"help": "probability of thickening or thinning strokes (0 = off)", "doc": "with --augment: probability of thickening or thinning an image's strokes by a 3x3 max or min filter (pen width, for handwriting); 0 = off", "group": "augmentation"})
    erasing: float = field(default=0.0, metadata={"help": "probability of blanking a random rectangle (0 = off)", "doc": "with --augment: probability of random erasing (Zhong et al. 2020): a rectangle of 2-20%% of the image, of height/width between 0.3 and 3.3, set to black (0), so that no one part of a pattern is relied on; 0 = off", "group": "augmentation"})
    image_size: int | None = field(default=None, metadata={"help": "folders and CSV lists: side of the square images (default: the data's own)", "doc": "image folders and CSV lists: side of the square images (resize the short side, centre-crop); None: the data's own (median short side, within 28-64); MNIST is 28", "group": "data"})
    channels: int | None = field(default=None, metadata={"help": "folders and CSV lists: 1 (grey) or 3 (RGB) (default: from the data)", "doc": "image folders and CSV lists: 1 (grey) or 3 (RGB); None: from the data (any colour image -> 3)", "group": "data"})
    split_by: SplitBy = field(default="identity", metadata={"help": "folders and CSV lists without a split: hold out whole identities, or images", "doc": "image folders and CSV lists without a train/test split: identity (test identities never seen in training) or image (every identity in both)", "group": "data"})
    skip_bad_images: bool = field(default=False, metadata={"help": "skip and count unreadable images instead of stopping at the first", "group": "data"})
    train_classes: str | None = field(default=None, metadata={"help": "open set: train on these classes only, e.g. 0-4 or 1,3,5", "doc": "open set: train on these classes only, e.g. 0-4 or 1,3,5 (labels, or class names for folders); the per-epoch evaluation uses the other classes' test images", "group": "data", "metavar": "CLASSES"})
    holdout_classes: str | None = field(default=None, metadata={"help": "open set: hold these classes out of training", "doc": "open set: hold these classes out of training (same syntax); with --train_classes, evaluate on these only", "group": "data", "metavar": "CLASSES"})
    selection_classes: int = field(default=0, metadata={"help": "open set: training classes kept aside to choose best.pt on (0 = off)", "doc": "open set: keep this many of the training classes (drawn from the seed, at least 2) out of training as selection identities; every epoch is also evaluated on their training images (the select_ figures) and the epoch with the best VAL@1e-3 on them is saved as best.pt: model selection on classes the model never saw, never on the test classes (0 = off)", "group": "data"})
    patience: int = field(default=0, metadata={"help": "with --selection_classes: epochs without progress before stopping (0 = never)", "doc": "with --selection_classes: stop after this many epochs without a better selection VAL@1e-3 (0 = train every epoch)", "group": "evaluation"})
    # batches
    batch_size: int = field(default=256, metadata={"help": "images per class-balanced batch", "doc": "images per batch (class-balanced: every class present when it fits)", "group": "optimisation"})
    images_per_class: int = field(default=2, metadata={"help": "K of the P x K batches: images of each class in a batch", "doc": "K of the class-balanced P x K batches: each batch holds batch_size / K classes (all of them when fewer) with at least K images each; 2 puts the most classes in a batch, more gives each anchor more positives", "group": "optimisation", "metavar": "K"})
    num_workers: int = field(default=0, metadata={"help": "processes that decode batches streamed from disk (0: the main process)", "doc": "image folders and CSV lists read from disk (see --cache_images): processes that decode the batches (0: the main process); results do not depend on it", "group": "data"})
    cache_images: int = field(default=2048, metadata={"help": "MiB of decoded folder/CSV images held in memory; more is streamed from disk", "doc": "MiB of decoded images an image folder or CSV list may hold in memory (all images x channels x size^2 bytes); over it (0: always) images are decoded from disk for every batch by --num_workers processes, with the same batches and results; MNIST and Fashion-MNIST are always held in memory", "group": "data"})
    # model
    network: str = field(default="conv3", metadata={"help": "conv3 (15 MFLOPs/image), conv3p (conv3 pooling before BatchNorm: faster on a CPU, slightly lower VAL), reference (8), wide (44) or resnet (18)", "doc": "conv3: three conv blocks, 15 MFLOPs/image at 28x28; conv3p: conv3 max-pooling before each BatchNorm, the same FLOPs, a step about 1.3x shorter on a 2-core CPU and VAL@1e-3 about 0.001 lower on MNIST (benchmarks/RESULTS-conv3p.md); reference: the reference project's two-block CNN, 8 MFLOPs; wide: five convs, 44 MFLOPs; resnet: a conv stem and three residual blocks (seven convs), 18 MFLOPs", "group": "model", "metavar": "NAME"})
    embedding_dim: int = field(default=64, metadata={"help": "size of the L2-normalised embedding", "group": "model"})
    projection_dim: int = field(default=0, metadata={"help": "size of a projection head that inference drops (0 = none)", "doc": "train through a projection head of this size that inference drops (a ReLU and a linear layer after the embedding layer); 0 = none", "group": "model"})
    # mining and loss
    margin: float = field(default=1.0, metadata={"help": f"triplet margin, in (0, {MARGIN_MAX:g}]", "doc": f"triplet margin, in (0, {MARGIN_MAX:g}]: unit-length embeddings are at most 2 apart", "group": "mining and loss"})
    mining: str = field(default="semihard:0.4,hard", metadata={"help": "mining schedule, e.g. semihard:0.4,hard (miners: semihard, hard, batch_all)", "doc": "mining schedule, e.g. 'semihard:0.4,hard' = semi-hard for the first 40%% of epochs, then hard (each miner at least one epoch); miners: semihard, hard, batch_all", "group": "mining and loss", "metavar": "SCHEDULE"})
    instance_weight: float = field(default=0.0, metadata={"help": "weight of instance-level triplets between two views of an image (0 = off)", "doc": "weight of instance-level triplets: each image is embedded in two augmented views, the other view is its positive and every other image a negative (semi-hard), added to the class triplets; keeps what tells images apart, which helps on classes never seen in training; doubles the step's work (0 = off)", "group": "mining and loss"})
    instance_margin: float = field(default=0.2, metadata={"help": f"margin of the instance-level triplets, in (0, {MARGIN_MAX:g}]", "group": "mining and loss"})
    xbm_size: int = field(default=0, metadata={"help": "cross-batch memory: a queue of this many past embeddings gives extra negatives (0 = off)", "doc": "cross-batch memory (XBM, Wang et al. 2020): keep the last N training embeddings in a queue and add batch-all triplets of each batch's anchors against it, so an anchor meets negatives from far more classes than one batch holds (for thousands of identities); N at least the batch size (twice it with instance triplets); 0 = off", "group": "mining and loss", "metavar": "N"})
    xbm_weight: float = field(default=1.0, metadata={"help": "with --xbm_size: weight of the cross-batch memory term, in [0, 100]", "group": "mining and loss"})
    collapse_fallback: bool = field(default=True, metadata={"help": "redo a hard-mining epoch that collapses the embeddings with semi-hard mining", "doc": "if hard mining collapses the embeddings (a batch's spread falls below half of the last epoch's), undo that epoch and continue with semi-hard mining", "group": "mining and loss"})
    # optimisation
    epochs: int = field(default=20, metadata={"help": "number of epochs", "group": "optimisation"})
    lr: float = field(default=1e-3, metadata={"help": f"Adam learning rate, in (0, {LR_MAX:g}]", "group": "optimisation"})
    lr_schedule: LrSchedule = field(default="step", metadata={"help": "step (drop after --lr_drop_epoch) or cosine", "doc": "step: multiply the learning rate by lr_drop_factor after lr_drop_epoch epochs; cosine: from lr down to lr x lr_drop_factor in the last epoch, along a half cosine", "group": "optimisation"})
    lr_drop_epoch: int = field(default=15, metadata={"help": "epochs before the step drop (0 = never)", "doc": "multiply the learning rate by lr_drop_factor after this many epochs (0 = never)", "group": "optimisation"})
    lr_drop_factor: float = field(default=0.1, metadata={"help": "learning-rate drop factor", "group": "optimisation"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay", "group": "optimisation"})
    precision: Precision = field(default="auto", metadata={"help": "auto: bf16 where the hardware computes it natively, else fp32", "doc": "training arithmetic: auto (bf16 where the hardware computes it natively: CPUs with AVX-512 BF16 or AMX, GPUs that support it; else fp32), fp32, bf16 (autocast; evaluation stays fp32), or fp64 (weights and training in float64: slow; for checking that runs agree, e.g. several processes against one)", "group": "optimisation"})
    device: Device = field(default="auto", metadata={"help": "auto: cuda if available, else cpu", "doc": "where to train: auto (cuda if available, else cpu), cpu, cuda or mps; model, batches and mining all run there", "group": "run"})
    compile: bool = field(default=False, metadata={"help": "train through torch.compile (pays on a GPU over long runs; slower on CPU)", "doc": "run the training steps through torch.compile (inductor); the first steps wait for the compilation, tens of seconds. On the 2-core CPUs it was measured slower than eager (fp32: conv3 994 against 1,357 images/s, reference 828 against 1,179; bf16 with AMX: a default step 63.5 against 46.0 ms, benchmarks/RESULTS-step-profile-amx.md), so it is off; evaluation and checkpoints use the eager network", "group": "optimisation"})
    # bookkeeping
    seed: int = field(default=0, metadata={"help": "random seed of subset, batches, validation triplets and weights", "doc": "random seed: subset, batches, validation triplets and initial weights", "group": "run"})
    num_val_triplets: int = field(default=128, metadata={"help": "fixed test triplets of the per-epoch validation loss", "doc": "fixed random test triplets for the per-epoch validation loss", "group": "evaluation"})
    eval_every: int = field(default=1, metadata={"help": "evaluate every N epochs (0 = never)", "doc": "run the fast verification evaluation every N epochs (0 = never)", "group": "evaluation"})
    eval_images: int = field(default=2000, metadata={"help": "test images of the per-epoch evaluation (0 = all)", "doc": "test images in the per-epoch evaluation: a fixed class-stratified subset (0 = all); 'tripletnet evaluate' always uses all", "group": "evaluation"})
    checkpoint_path: str = field(default="./checkpoints/", metadata={"help": "folder for checkpoints, metrics.jsonl, config.json and plots", "group": "run", "metavar": "DIR"})
    tensorboard: str = field(default="", metadata={"help": "also write TensorBoard logs into this folder (needs the tensorboard extra)", "doc": "also write TensorBoard logs into this folder: the per-epoch figures, and the test embeddings for its projector at the end (needs the tensorboard extra); default: none", "metavar": "DIR", "group": "run"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)", "group": "run"})

    def validate(self) -> None:
        """Raise :class:`ParameterError` naming the field of a value no run can use.

        Called before anything is written.
        """
        check_seed(self.seed)
        _check_all([
            ("num_images", self.num_images > 0, "must be positive"),
            ("batch_size", self.batch_size >= 4, "must be at least 4 (two classes with two images each)"),
            ("images_per_class", 2 <= self.images_per_class <= max(2, self.batch_size // 2),
             "must be between 2 and half the batch size: a batch needs two classes of at least two images"),
            ("epochs", self.epochs > 0, "must be positive"),
            ("margin", _finite_in(self.margin, 0, MARGIN_MAX), f"must be in (0, {MARGIN_MAX:g}]"),
            ("instance_margin", _finite_in(self.instance_margin, 0, MARGIN_MAX), f"must be in (0, {MARGIN_MAX:g}]"),
            ("instance_weight", math.isfinite(self.instance_weight) and 0 <= self.instance_weight <= 100, "must be in [0, 100]"),
            ("lr", _finite_in(self.lr, 0, LR_MAX), f"must be in (0, {LR_MAX:g}]"),
            ("lr_drop_epoch", self.lr_drop_epoch >= 0, "must be >= 0"),
            ("lr_drop_factor", _finite_in(self.lr_drop_factor, 0, 1), "must be in (0, 1]"),
            ("weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0, "must be finite and >= 0"),
            ("embedding_dim", self.embedding_dim > 0, "must be positive"),
            ("projection_dim", self.projection_dim >= 0, "must be >= 0"),
            ("rotation", math.isfinite(self.rotation) and 0 <= self.rotation <= 180, "must be in [0, 180] degrees"),
            ("scaling", math.isfinite(self.scaling) and 0 <= self.scaling < 1, "must be in [0, 1): a fraction of the size"),
            ("shift", math.isfinite(self.shift) and 0 <= self.shift <= 1000, "must be in [0, 1000] pixels"),
            ("hflip", 0 <= self.hflip <= 1, "must be a probability in [0, 1]"),
            ("stroke", 0 <= self.stroke <= 1, "must be a probability in [0, 1]"),
            ("erasing", 0 <= self.erasing <= 1, "must be a probability in [0, 1]"),
            ("elastic", math.isfinite(self.elastic) and 0 <= self.elastic <= 1000, "must be in [0, 1000] pixels"),
            ("num_val_triplets", self.num_val_triplets > 0, "must be positive"),
            ("num_workers", self.num_workers >= 0, "must be >= 0"),
            ("cache_images", self.cache_images >= 0, "must be >= 0 (MiB)"),
            ("selection_classes", self.selection_classes == 0 or self.selection_classes >= 2,
             "must be 0 (off) or at least 2: verification needs pairs of two different classes"),
            ("patience", self.patience >= 0, "must be >= 0"),
            ("xbm_size", self.xbm_size == 0 or self.xbm_size >= self.batch_size * (2 if self.instance_weight > 0 else 1),
             "must be 0 (off) or at least the batch size (twice it with instance triplets): a batch must fit the queue"),
            ("xbm_weight", math.isfinite(self.xbm_weight) and 0 <= self.xbm_weight <= 100, "must be in [0, 100]"),
            ("eval_every", self.eval_every >= 0, "must be >= 0"),
            ("eval_images", self.eval_images >= 0, "must be >= 0"),
            ("threads", self.threads >= 0, "must be >= 0"),
            # "" would mean the current directory (issue 10): name it "." if that is meant.
            ("checkpoint_path", self.checkpoint_path.strip() != "", "must name a folder (write . for the current one)"),
        ], self)
        if self.patience and not self.selection_classes:
            raise ParameterError("patience", "needs --selection_classes: early stopping watches the selection classes' VAL@1e-3")
        _check_choice("precision", self.precision, typing.get_args(Precision))
        _check_choice("lr_schedule", self.lr_schedule, typing.get_args(LrSchedule))
        _check_choice("split_by", self.split_by, typing.get_args(SplitBy))
        from .data.classes import check_class_spec
        from .data.transforms import check_channels, check_image_size

        check_channels(self.channels)
        if self.image_size is not None:
            check_image_size(self.image_size)
        check_class_spec(self.train_classes, "train_classes")
        check_class_spec(self.holdout_classes, "holdout_classes")
        if not DATASETS.is_path(self.dataset):
            for name, value in (("image_size", self.image_size), ("channels", self.channels)):
                if value is not None:
                    raise ParameterError(name, f"applies to image folders and CSV lists; {self.dataset} has its own format (28x28 grey)")
        _check_choice("device", self.device, typing.get_args(Device))
        DATASETS.check(self.dataset)
        # Imported here: the network and miner registries pull in the models.
        from .mining import parse_schedule
        from .models import NETWORKS

        _check_choice("network", self.network, tuple(NETWORKS))
        parse_schedule(self.mining)

    def image_options(self) -> Any:
        """The :class:`~tripletnet.data.folder.ImageOptions` this config gives image folders and CSV lists."""
        from .data.folder import ImageOptions

        return ImageOptions(image_size=self.image_size, channels=self.channels, split_by=self.split_by,
                            skip_bad_images=self.skip_bad_images)

    def to_dict(self) -> dict[str, Any]:
        """Every field by name: what config.json and checkpoints record."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
        """The defaults with ``values`` applied; ``source`` names where they come from in messages."""
        return cls().updated(values, source=source)

    def updated(self, values: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
        """Return a copy with ``values`` applied, checking names and types."""
        return _updated(self, values, source)


@dataclass
class EvalConfig:
    """Options of one evaluation (``tripletnet evaluate``, or the TOML table ``[eval]``)."""

    checkpoint: str | None = field(default=None, metadata={"help": "a tripletnet checkpoint (its dataset's test split is embedded); give this or --embeddings", "metavar": "FILE.pt"})
    embeddings: str | None = field(default=None, metadata={"help": "an .npz from 'tripletnet embed' (arrays embeddings, labels)", "metavar": "FILE.npz"})
    data_path: str | None = field(default=None, metadata={"help": "dataset folder (default: the checkpoint's, $TRIPLETNET_DATA, ./data/); for a run on an image folder or CSV list, its new place if it moved"})
    classes: Classes | None = field(default=None, metadata={"help": "which test classes: unseen (held out of training), seen, or all (default: unseen when the run held classes out, else all)"})
    pairs: str | None = field(default=None, metadata={"help": "evaluate a pairs file instead (LFW pairs.txt, or CSV path_a,path_b,same[,fold]) with its folds: needs --checkpoint", "metavar": "FILE"})
    images: str | None = field(default=None, metadata={"help": "with --pairs: the folder its image names are relative to (default: the pairs file's folder)", "metavar": "DIR"})
    flip: Flip = field(default="none", metadata={"help": "with --pairs: horizontal-flip test-time augmentation: mean (average an image's and its mirror's embeddings), concat (join them), none"})
    protocol: Protocol = field(default="all-pairs", metadata={"help": "all-pairs: every test pair, exact; pairs: the reference's random pairs; kfold: LFW-style 10 folds"})
    far: float = field(default=1e-3, metadata={"help": "target false-accept rate for the threshold, in (0, 1)"})
    n_pairs: int | None = field(default=None, metadata={"help": "pairs for --protocol pairs (default 1024) or kfold (default 6000); all-pairs uses every pair"})
    repeats: int = field(default=1, metadata={"help": "with --protocol pairs: also report mean ± std over this many draws"})
    seed: int = field(default=0, metadata={"help": "seed for random pairs and k-means"})
    clustering: bool = field(default=True, metadata={"help": "k-means NMI/AMI (--no-clustering skips them)"})
    json: bool = field(default=False, metadata={"help": "print one JSON object instead of the table"})
    out: str | None = field(default=None, metadata={"help": "write metrics.json and plots (distances, ROC, t-SNE, per-epoch curves) here", "metavar": "DIR"})
    tsne: bool = field(default=True, metadata={"help": "with --out: the t-SNE plot (--no-tsne skips it)"})

    def validate(self) -> None:
        """Raise :class:`ParameterError` naming the field of a value, or a combination, no evaluation can use.

        Options the chosen protocol would ignore are refused rather than silently dropped.
        """
        if (self.checkpoint is None) == (self.embeddings is None):
            given = "both" if self.checkpoint is not None else "neither"
            raise ParameterError("checkpoint", f"or embeddings: give exactly one of the two, got {given}", related=("embeddings",))
        _check_choice("protocol", self.protocol, typing.get_args(Protocol))
        check_threshold_far(self.far)
        check_seed(self.seed)
        _check_choice("flip", self.flip, typing.get_args(Flip))
        if self.classes is not None:
            _check_choice("classes", self.classes, typing.get_args(Classes))
        if self.pairs is None:
            for name in ("images", "flip"):
                if getattr(self, name) != getattr(EvalConfig, name):
                    raise ParameterError(name, "applies only with pairs (a pairs file)", related=("pairs",))
        elif self.checkpoint is None:
            raise ParameterError("pairs", "needs checkpoint (the model that embeds the pairs' images)", related=("checkpoint",))
        elif self.classes is not None:
            raise ParameterError("classes", "does not apply with pairs: the pairs file chooses the images", related=("pairs",))
        elif self.out is not None:
            raise ParameterError("out", "does not apply with pairs (use --json for a machine-readable result)", related=("pairs",))
        elif self.protocol != EvalConfig.protocol:
            raise ParameterError("protocol", "does not apply with pairs: the file is evaluated by its own folds",
                                 related=("pairs",))
        # The protocol registry knows which options each protocol reads and how many pairs fit in memory.
        from .evaluation.verification.protocols import get_protocol

        get_protocol(self.protocol).check_options(n_pairs=self.n_pairs, repeats=self.repeats)

    def to_dict(self) -> dict[str, Any]:
        """Every field by name."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config") -> EvalConfig:
        """The defaults with ``values`` applied; ``source`` names where they come from in messages."""
        return cls().updated(values, source=source)

    def updated(self, values: Mapping[str, Any], *, source: str = "config") -> EvalConfig:
        """Return a copy with ``values`` applied, checking names and types."""
        return _updated(self, values, source)


ConfigT = TypeVar("ConfigT", TrainConfig, EvalConfig)


def check_threshold_far(far: float) -> None:
    """Raise :class:`ParameterError` unless ``far`` is a target FAR a threshold can be chosen at.

    FAR 1 accepts every pair: its threshold is no distance (the table would show "-"), so there
    would be nothing to calibrate ``verify`` with; 0 or less, NaN and non-numbers mean nothing.
    """
    if isinstance(far, bool) or not isinstance(far, (int, float)) or not 0 < far < 1:
        raise ParameterError("far", f"must be above 0 and below 1 (at 1 every pair is accepted), got {far}")


def _finite_in(value: float, low: float, high: float) -> bool:
    """``low < value <= high`` and finite (False for NaN, whose comparisons are all False)."""
    return math.isfinite(value) and low < value <= high


def _check_all(checks: Iterable[tuple[str, bool, str]], config: object) -> None:
    for name, ok, problem in checks:
        if not ok:
            raise ParameterError(name, f"{problem}, got {getattr(config, name)}")


def _check_choice(name: str, value: object, choices: tuple[object, ...]) -> None:
    if value not in choices:
        raise ParameterError(name, f"must be one of {', '.join(map(str, choices))}, got {value!r}")


def _updated(config: ConfigT, values: Mapping[str, Any], source: str) -> ConfigT:
    """A copy of ``config`` with ``values`` (keys in snake- or kebab-case) applied, names and types checked."""
    known = {f.name for f in fields(config)}
    types = typing.get_type_hints(type(config))
    changes: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = raw_key.replace("-", "_")
        if key not in known:
            raise UserError(f"{source}: unknown option {raw_key!r}")
        if key in OPEN_SET_FIELDS and isinstance(value, list) and all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in value):
            value = ",".join(map(str, value))  # TOML's natural spelling, [0, 1, 3], of the flag's "0,1,3"
        changes[key] = _coerce(value, types[key], key, source)
    return dataclasses.replace(config, **changes)


def value_type(annotation: Any) -> type:
    """The Python type a field's values have: ``int | None`` -> int, ``Literal["a", "b"]`` -> str."""
    if typing.get_origin(annotation) is Literal:
        return type(typing.get_args(annotation)[0])
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return value_type(args[0]) if args else annotation


def _coerce(value: Any, annotation: Any, key: str, source: str) -> Any:
    """Check a value from TOML/JSON against the field's type (ints may stand for floats)."""
    if value is None and type(None) in typing.get_args(annotation):
        return None
    expected = value_type(annotation)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        raise UserError(f"{source}: option {key!r} must be {expected.__name__}, got {value!r}")
    return value


# --- TOML files: one table per command ------------------------------------------------------------

TABLES = ("train", "eval")


@dataclass(frozen=True)
class TomlTable:
    """The options a TOML file holds for one command, and the other commands' tables it also holds."""

    values: dict[str, Any]
    other_tables: tuple[str, ...]


def load_toml(path: str | Path, table: Literal["train", "eval"] = "train") -> TomlTable:
    """Read one command's options from a TOML config file.

    Args:
        path: the file.
        table: ``"train"`` reads ``[train]`` or, in a file without tables, its top-level keys;
            ``"eval"`` reads ``[eval]``, which it requires.

    Returns:
        The table's options, and which of the other commands' tables the file also holds (so the
        caller can say it ignores them).
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        # A UTF-8 byte-order mark (Windows Notepad writes one) is no TOML, yet the text after it is the user's config.
        data = tomllib.loads(raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    others = tuple(name for name in TABLES if name != table and isinstance(data.get(name), dict))
    unknown = [name for name, value in data.items() if isinstance(value, dict) and name not in TABLES]
    if unknown and (others or isinstance(data.get(table), dict)):  # a file of command tables: every table must be one
        known = ", ".join(f"[{name}]" for name in TABLES)
        raise UserError(f"config file {path} has an unknown table [{unknown[0]}] (its tables can be {known})")
    if isinstance(data.get(table), dict):
        return TomlTable(data[table], others)
    if table != "train":
        raise UserError(f"config file {path} has no [{table}] table")
    return TomlTable({key: value for key, value in data.items() if key not in others}, others)


# --- precedence, and what a resumed run may change ------------------------------------------------


@dataclass(frozen=True)
class ConfigLayer:
    """Options from one source, in precedence order (later layers win).

    Args:
        source: where they come from, as a message names it ("preset reference", "run.toml",
            "command line").
        values: field name (snake or kebab case) -> value.
        spell: how a message names a field from this source (e.g. ``lambda n: "--" + n`` for flags).
    """

    source: str
    values: Mapping[str, Any]
    spell: Callable[[str], str] = str


def layered_config(layers: Iterable[ConfigLayer], resumed: Mapping[str, Any] | None = None, *,
                   resumed_source: str = "checkpoint") -> TrainConfig:
    """Defaults < each layer in turn; or, for a resumed run, the run's recorded config < the layers' resumable fields.

    A resumed run keeps every setting it recorded (its preset's included). Layers may change the
    fields in :data:`RESUMABLE_FIELDS`; any other value that differs from the recorded one is
    refused, all of them named in one message, rather than silently dropped.

    Args:
        layers: option sources, lowest precedence first.
        resumed: the checkpoint's recorded config, when resuming.
        resumed_source: how messages name the checkpoint.

    Returns:
        The validated config.
    """
    if resumed is None:
        config = TrainConfig()
        for layer in layers:
            config = config.updated(layer.values, source=layer.source)
        config.validate()
        return config
    recorded = TrainConfig.from_dict(resumed, source=resumed_source)
    try:
        check_seed(recorded.seed)
    except ParameterError:  # an earlier version accepted it; the run cannot replay with another seed
        raise UserError(f"{resumed_source} was trained with --seed {recorded.seed}, outside the 0 to 2**32 - 1 that "
                        "every seed now takes, so it cannot be resumed; start a new run") from None
    config = recorded
    conflicts: list[str] = []
    for layer in layers:
        wanted = recorded.updated(layer.values, source=layer.source)  # checks names and types
        for raw_key in layer.values:
            key = raw_key.replace("-", "_")
            new, old = getattr(wanted, key), getattr(recorded, key)
            if key in RESUMABLE_FIELDS:
                config = dataclasses.replace(config, **{key: new})
            elif new != old:
                conflicts.append(f"{layer.spell(key)} {new!r} ({layer.source}; the run has {old!r})")
    if conflicts:
        allowed = ", ".join(sorted(RESUMABLE_FIELDS))
        raise UserError(
            f"a resumed run keeps its recorded settings, so {resumed_source} cannot take {'; '.join(conflicts)}; "
            f"on resume only {allowed} may change (start a new run for other settings)"
        )
    config.validate()
    return config


# Named starting points. "reference" reproduces the reference MNIST-triplet project's settings.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "reference": {"network": "reference", "lr": 1e-4, "augment": False, "precision": "fp32", "collapse_fallback": False},
    # Classes unseen in training (README, "Unseen digits"): hard mining and a wide margin fit the
    # training classes at the expense of what transfers; instance-level triplets keep it.
    "open-set": {"mining": "semihard", "margin": 0.2, "instance_weight": 1.0, "instance_margin": 0.2},
    # Many identities never seen (the glyph benchmark, docs/results/glyphs.md): the defaults' recipe
    # for longer, the learning-rate drop at the same share of the run; VAL@1e-5 on unseen characters
    # in unseen fonts 0.89 / 0.94 on two font splits against 0.82-0.85 / 0.91 after 20 epochs.
    "many-identities": {"epochs": 30, "lr_drop_epoch": 23},
    # The fewest steps to the MNIST marks (VAL@1e-3 >= 0.99, P@1 >= 0.995, all pairs): a network
    # three times conv3's FLOPs at twice the batch costs a GPU little more per step, where a step is
    # bound by kernel launches, and 10 epochs of it are a quarter of the defaults' steps
    # (docs/results/index.md, "Speedrun": three seeds on the CPU; the GPU time is benchmarks/gpu.py's).
    "speedrun": {"network": "wide", "batch_size": 512, "epochs": 10, "lr": 2e-3, "lr_schedule": "cosine",
                 "lr_drop_factor": 0.01},
}
OPEN_SET_FIELDS = ("train_classes", "holdout_classes")
OPEN_SET_PRESET = "open-set"
# An image folder or CSV list whose test identities are all unseen: on the glyph benchmark (1,500
# training identities, two font splits; docs/results/glyphs.md) the defaults' settings beat the
# open-set preset on every condition (VAL@1e-3 0.98 / 0.998 against 0.74 / 0.43 on unseen characters
# in unseen fonts): the open-set preset fits few training identities (MNIST 0-4), not many. Of the
# single changes measured there (margin, embedding size, P x K shape, stroke, erasing, a residual
# network, XBM, mining, batch size) none beat them on both splits by more than a change of seed
# does; a longer run did, on every condition of both splits, within 20 minutes on two cores.
MANY_IDENTITIES_PRESET = "many-identities"
SPEEDRUN_PRESET = "speedrun"


@dataclass(frozen=True)
class ImpliedPreset:
    """The preset a run starts from without naming one, and why (the run's first line says it)."""

    name: str
    reason: str
    from_data: bool = False  # read from the data's file listing (which then already loaded once), not from the options


def implied_preset(layers: Iterable[ConfigLayer], config: TrainConfig | None = None) -> ImpliedPreset | None:
    """The preset a run starts from when none is named: ``open-set`` when a layer holds classes
    out of training (``train_classes`` or ``holdout_classes``: a few identities of a registered
    dataset); :data:`MANY_IDENTITIES_PRESET` when ``config`` (the run's config without a preset)
    trains on an image folder or CSV list whose test identities are all unseen in training
    (:func:`unseen_test_identities`), so that its first line says which settings an open set of
    many identities gets and why; else none."""
    for layer in layers:
        for key, value in layer.values.items():
            if key.replace("-", "_") in OPEN_SET_FIELDS and value is not None:
                return ImpliedPreset(OPEN_SET_PRESET, "classes are held out of training")
    if config is not None:
        reason = unseen_test_identities(config)
        if reason is not None:
            return ImpliedPreset(MANY_IDENTITIES_PRESET, reason, from_data=True)
    return None


def unseen_test_identities(config: TrainConfig) -> str | None:
    """Why every test identity of the run's image folder or CSV list is unseen in training, or None
    when some are seen (or the dataset is a registered one, or cannot be listed: loading it will say why).

    Only the file listing is read, no image: a given split (``train/`` and ``test/`` folders, a
    CSV ``split`` column) is unseen when the two splits share no identity; data without one is
    unseen when it is split by identity.
    """
    if not DATASETS.is_path(config.dataset):
        return None
    from .data.csv import read_image_list_csv
    from .data.folder import list_image_folder

    path = Path(config.dataset).expanduser()
    try:
        entries = read_image_list_csv(path) if path.suffix.lower() == ".csv" else list_image_folder(path)
    except (UserError, OSError):
        return None
    if all(entry.split is None for entry in entries):
        if config.split_by != "identity":
            return None
        return f"{config.dataset} is split by identity (its test identities are never seen in training)"
    train = {entry.identity for entry in entries if entry.split == "train"}
    test = {entry.identity for entry in entries if entry.split == "test"}
    if not test or train & test:
        return None
    return f"the {len(test):,} test identities of {config.dataset} are none of its {len(train):,} training identities"
