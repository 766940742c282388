"""The ``tripletnet`` command: a thin layer over the library API.

The options of ``train`` and ``evaluate`` are generated from the fields of
:class:`~tripletnet.config.TrainConfig` and :class:`~tripletnet.config.EvalConfig`, each accepted
both as the reference spells it (``--num_images``) and in kebab-case (``--num-images``).
Precedence: defaults < ``--preset`` < ``--config FILE.toml`` < command line; a resumed run keeps
its recorded settings (see :func:`~tripletnet.config.layered_config`).

Library functions name their parameters (:class:`~tripletnet.errors.ParameterError`); this module
turns those names into flags and every user mistake into one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import signal
import sys
import typing
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal, NoReturn

from . import __version__
from .allocator import keep_freed_memory
from .config import (
    OPTION_GROUPS,
    PRESETS,
    RESUMABLE_FIELDS,
    ConfigLayer,
    Device,
    EvalConfig,
    ImpliedPreset,
    TrainConfig,
    implied_preset,
    layered_config,
    load_toml,
    value_type,
)
from .console import Logger, log_stderr
from .data.types import CLASS_CHOICES
from .errors import ParameterError, UserError
from .fileio import refuse_special_file
from .inference.formats import (
    CALIBRATION_SUFFIX,
    export_name_problem,
    file_head,
    holds_torchscript,
    is_onnx_file,
    is_torchscript_file,
    zip_names,
)

PROG = "tripletnet"

# Library parameters whose flag is spelled differently; every other parameter `x` is the flag `--x`.
FLAG_OF_PARAMETER = {"embeddings_file": "--embeddings", "out_dir": "--out", "k": "-k"}


def flag(parameter: str) -> str:
    """The command-line flag for a library parameter or config field."""
    return FLAG_OF_PARAMETER.get(parameter, f"--{parameter}")


def parameter_message(error: ParameterError) -> str:
    """``error`` in the CLI's words: its parameter, and the related ones its problem names, as flags."""
    problem = error.problem
    for name in error.related:
        problem = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", flag(name), problem)
    return f"{flag(error.parameter)} {problem}"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (exit 2) instead of usage + error."""

    given: list[str] | None = None  # this parser's own arguments, for the hint below

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:  # (args=None, namespace=None), as argparse's
        given = args[0] if args else kwargs.get("args")
        self.given = list(sys.argv[1:] if given is None else given)
        return super().parse_known_args(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}{self._flag_hint(message)} (see '{self.prog} --help')\n")

    def _flag_hint(self, message: str) -> str:
        """Point at the flag of a checkpoint or run folder given as a bare argument (``evaluate run/last.pt``),
        when the error is about that argument or that missing flag (not for any other mistake on the same line)."""
        given = self.given or []
        if any(_spells(arg, flag) for arg in given for flag in ("--checkpoint", "--run")):
            return ""  # the model is given: a stray argument is something else
        for flag, spell, looks_like in (("--checkpoint", "a checkpoint", _names_a_checkpoint),
                                        ("--run", "a run folder", _holds_a_run)):
            if flag not in self._option_string_actions:
                continue
            bare = [arg for arg in given if not arg.startswith("-") and looks_like(arg)]
            if bare and (flag in message or bare[0] in message):
                return f"; {spell} is given as {flag} {bare[0]}"
        return ""


def _spells(arg: str, flag: str) -> bool:
    """Whether ``arg`` gives ``flag``, as argparse reads it: whole, with ``=value``, or as a prefix of it."""
    name = arg.split("=")[0]
    return len(name) > 2 and name.startswith("--") and flag.startswith(name)


def _names_a_checkpoint(arg: str) -> bool:
    return arg.endswith((".pt", ".pth"))


def _holds_a_run(folder: str) -> bool:
    try:
        return Path(folder, "last.pt").is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte: no run folder, and no reason for a traceback here
        return False


KEBAB_NOTE = "Every option is also accepted in kebab-case (--num-images for --num_images)."


def add_config_options(parser: argparse.ArgumentParser, config_class: type[TrainConfig] | type[EvalConfig]) -> None:
    """One option per field of ``config_class``: ``--name`` (and ``--kebab-name``), typed, with the field's help.

    Options default to None (not given), so that a layer below the command line shows through.
    Booleans get ``--name`` / ``--no-name``; ``Literal`` fields list their choices. Fields with a
    ``group`` (TrainConfig's) are listed under that group's heading. The kebab-case spelling is
    accepted but not listed, so that each option takes one line of ``--help`` and one place in its usage.
    """
    types = typing.get_type_hints(config_class)
    groups: dict[str, Any] = {}
    for f in fields(config_class):
        group_name = f.metadata.get("group")
        if group_name is None:
            target: Any = parser
        else:
            if group_name not in groups:
                groups[group_name] = parser.add_argument_group(f"{group_name} options")
            target = groups[group_name]
        help_text = f.metadata.get("help", "")
        if f.default is not None and f.default != "" and "default" not in help_text:  # never a second default
            help_text += f" (default: {f.default})"
        annotation = types[f.name]
        kind = value_type(annotation)
        spellings = [f"--{f.name}"]
        aliases = [f"--{f.name.replace('_', '-')}"] if "_" in f.name else []
        if kind is bool:
            options: dict[str, Any] = {"action": argparse.BooleanOptionalAction}
        elif typing.get_origin(annotation) is Literal:
            options = {"choices": typing.get_args(annotation)}
        else:
            metavar = f.metadata.get("metavar") or {int: "N", float: "X"}.get(kind, f.name.upper())
            options = {"type": kind, "metavar": metavar}
        target.add_argument(*spellings, dest=f.name, default=None, help=help_text, **options)
        if aliases:
            parser.add_argument(*aliases, dest=f.name, default=None, help=argparse.SUPPRESS, **options)
    # argparse lists groups in the order they were added; put them in OPTION_GROUPS' order.
    order = {f"{name} options": n for n, name in enumerate(OPTION_GROUPS)}
    added = [group for group in parser._action_groups if group.title in order]
    others = [group for group in parser._action_groups if group.title not in order]
    parser._action_groups[:] = others + sorted(added, key=lambda group: order[str(group.title)])


def _help_formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's formatter with room for an option and its metavar before the help, so each option takes one line."""
    return argparse.HelpFormatter(prog, max_help_position=32)


def _given(args: argparse.Namespace, config_class: type[TrainConfig] | type[EvalConfig]) -> dict[str, Any]:
    """The config fields given on the command line."""
    return {f.name: getattr(args, f.name) for f in fields(config_class) if getattr(args, f.name) is not None}


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Train triplet-loss embedding networks and evaluate them like verification systems.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    train = sub.add_parser(
        "train",
        help="train an embedding network",
        description=(
            "Train a CNN that maps images (MNIST's 28x28, or your own folder or CSV list) to L2-normalised embeddings "
            "with online triplet mining; --train_classes/--holdout_classes keep classes unseen for evaluation. "
            "Every epoch writes <checkpoint_path>/epoch_<n>.pt, last.pt and a line of metrics.jsonl. "
            f"{KEBAB_NOTE} Each option is explained in the documentation's options reference."
        ),
        usage=f"{PROG} train [--preset NAME] [--config FILE.toml] [--resume CHECKPOINT] [--overwrite] [OPTION ...]",
        formatter_class=_help_formatter,
    )
    train.add_argument("--config", metavar="FILE.toml",
                       help="read options from a TOML file (flat, or under [train]; an [eval] table is ignored); "
                            "the command line wins")
    train.add_argument("--preset", choices=sorted(PRESETS), metavar="NAME",
                       help=f"start from a named set of options: {', '.join(sorted(PRESETS))}")
    train.add_argument("--resume", metavar="CHECKPOINT",
                       help="continue a run from its checkpoint (e.g. checkpoints/last.pt) with its recorded settings; only "
                            f"{', '.join(flag(name) for name in sorted(RESUMABLE_FIELDS))} may change")
    train.add_argument("--overwrite", action="store_true", help="replace a run already in --checkpoint_path")
    add_config_options(train, TrainConfig)
    train.set_defaults(handler=_cmd_train)

    evaluate = sub.add_parser(
        "evaluate",
        help="verification, retrieval and clustering metrics of a checkpoint or embeddings file",
        description=(
            "Evaluate on the test split like a verification system: the distance threshold at a target "
            "false-accept rate, VAL = TP/(TP+FN), accuracy, positive/negative distance statistics, ROC AUC and "
            "EER, plus precision@1, R-precision, MAP@R, recall@k and k-means NMI/AMI. " + KEBAB_NOTE
        ),
        formatter_class=_help_formatter,
    )
    evaluate.add_argument("--config", metavar="FILE.toml",
                          help="read options from the [eval] table of a TOML file; the command line wins")
    add_config_options(evaluate, EvalConfig)
    evaluate.set_defaults(handler=_cmd_evaluate)

    embed = sub.add_parser("embed", help="write the embeddings of a dataset split as .npz",
                           description="Embed a split of the checkpoint's dataset; "
                                       "writes arrays embeddings (N x D float32) and labels (N int64).")
    embed.add_argument("--checkpoint", required=True, help="a tripletnet checkpoint")
    embed.add_argument("--split", choices=("train", "test"), default="test", help="which split (default: test)")
    embed.add_argument("--out", required=True, metavar="FILE.npz", help="output file")
    _add_data_path_option(embed)
    embed.add_argument("--classes", choices=CLASS_CHOICES,
                       help="which classes: unseen (held out of training), seen, or all "
                            "(default: unseen when the run held classes out, else all)")
    embed.set_defaults(handler=_cmd_embed)

    pairs = sub.add_parser("pairs", help="write a balanced, seeded pairs file from a folder of identities",
                           description="Draw matched and mismatched pairs from <images>/<identity>/<image> into an LFW "
                                       "pairs.txt (or CSV when --out ends in .csv), every identity in one fold.")
    pairs.add_argument("--images", required=True, metavar="DIR", help="one subfolder per identity (e.g. a test split)")
    pairs.add_argument("--out", required=True, metavar="FILE", help="the pairs file to write (.csv: CSV, else LFW format)")
    pairs.add_argument("--folds", type=int, default=10, help="number of folds (default: 10)")
    pairs.add_argument("--per_fold", "--per-fold", dest="per_fold", type=int, default=600,
                       help="pairs per fold, half matched and half mismatched (default: 600)")
    pairs.add_argument("--seed", type=int, default=0, help="seed of the draw (default: 0)")
    pairs.add_argument("--overwrite", action="store_true", help="replace --out even when it is not a pairs file")
    pairs.set_defaults(handler=_cmd_pairs)
    add_use_commands(sub)
    for name, subparser in sub.choices.items():
        subparser.set_defaults(prog=f"{PROG} {name}", command_parser=subparser)
    return parser


def _add_data_path_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data_path", "--data-path", dest="data_path",
                        help="dataset folder (default: the checkpoint's, $TRIPLETNET_DATA, ./data/); for a run on an "
                             "image folder or CSV list, its new place if it moved")


def build_train_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < preset < TOML file < command line; a resumed run starts from its recorded config instead.

    On ``--resume``, the run writes into the folder holding the checkpoint unless ``--checkpoint_path``
    (or the TOML file) names another; the layers may change only the resumable fields, and any other
    value they give that differs from the run's is refused with a message naming all of them.
    """
    return _train_config_and_implied_preset(args)[0]


def _train_config_and_implied_preset(args: argparse.Namespace) -> tuple[TrainConfig, ImpliedPreset | None]:
    """:func:`build_train_config`, and the preset a new run starts from without naming one (None if none)."""
    layers = []
    if args.resume:
        # A resumed run writes beside its checkpoint, not into the folder its config recorded (that may be
        # another run's); --checkpoint_path or the TOML file may still say otherwise.
        layers.append(ConfigLayer("the checkpoint's folder", {"checkpoint_path": str(Path(args.resume).parent)}))
    if args.preset:
        layers.append(ConfigLayer(f"preset {args.preset}", PRESETS[args.preset]))
    if args.config:
        table = load_toml(args.config, "train")
        for other in table.other_tables:
            print(f"{args.prog}: warning: ignoring the [{other}] table of {args.config} (it configures 'tripletnet evaluate')",
                  file=sys.stderr)
        layers.append(ConfigLayer(args.config, table.values))
    layers.append(ConfigLayer("command line", _given(args, TrainConfig), spell=flag))
    if not args.resume:
        if args.preset:
            return layered_config(layers), None
        # Whether the data's test identities are unseen is read from the config without a preset
        # (a preset never changes the dataset or its split).
        implied = implied_preset(layers, layered_config(layers))
        if implied:  # lowest precedence: anything the user set still wins
            layers.insert(0, ConfigLayer(f"preset {implied.name}", PRESETS[implied.name]))
        return layered_config(layers), implied
    from .data.datasets import DATASETS
    from .training.checkpoint import load_checkpoint

    state = load_checkpoint(args.resume)
    recorded = dict(state["config"])
    if DATASETS.is_path(str(recorded.get("dataset", ""))):
        # A folder or CSV list is found as evaluate finds it: at its new place (--data_path), else at the
        # absolute path the run recorded, since the run may have been started from another working directory.
        where = _given(args, TrainConfig).get("data_path") or (state.get("dataset_source") or {}).get("path")
        if where:
            recorded["dataset"] = str(where)
    return layered_config(layers, recorded, resumed_source=args.resume), None


def build_eval_config(args: argparse.Namespace) -> EvalConfig:
    """Defaults < the ``[eval]`` table of ``--config`` < command line, validated."""
    config = EvalConfig()
    if args.config:
        config = config.updated(load_toml(args.config, "eval").values, source=args.config)
    config = config.updated(_given(args, EvalConfig), source="command line")
    config.validate()
    return config


def _with_first_line(log: Logger, first: str) -> Logger:
    """``log``, saying ``first`` before its first message."""
    pending = [first]

    def logged(message: str) -> None:
        while pending:
            log(pending.pop())
        log(message)

    return logged


def _cmd_train(args: argparse.Namespace) -> int:
    config, implied = _train_config_and_implied_preset(args)
    from .training import train  # after validation: a bad option costs no import time

    log: Logger = log_stderr
    if implied:
        # The preset's values this run takes; an option the user gave instead is named as theirs.
        preset = PRESETS[implied.name]
        taken = [f"{flag(key)} {value}" for key, value in preset.items() if getattr(config, key) == value]
        given = [flag(key) for key, value in preset.items() if getattr(config, key) != value]
        settings = " ".join(taken) + (f"; {', '.join(given)} as given" if given else "")
        # Said with the run's first line, so that a run refused while its data is checked stays one line.
        if implied.from_data:  # many identities never seen: why this preset and not open-set
            line = (f"{implied.reason}: an open set, so the run starts from --preset {implied.name} ({settings}), "
                    "which the glyph benchmark measured best with many training identities; --preset default keeps "
                    "the defaults, --preset open-set suits only a few (docs/results/glyphs.md)")
        else:
            line = (f"{implied.reason}, so the run starts from --preset {implied.name} ({settings}); "
                    "--preset default keeps the closed-set defaults")
        # A folder's loader logs its summary itself, before the run's first line: said now, as its listing
        # was already read without error.
        if implied.from_data:
            log(line)
        else:
            log = _with_first_line(log, line)
    result = train(config, resume=args.resume, overwrite=args.overwrite, log=log)
    from .training.distributed import context_from_environment

    if not context_from_environment().is_main_process:
        return 0  # the main process speaks for the run: "done" once, not once per process
    last = result.history[-1] if result.history else {}
    epochs = len(result.history)
    print(f"done: {epochs} epoch{'' if epochs == 1 else 's'}, final train loss {last.get('train_loss', float('nan')):.4f}, "
          f"checkpoints in {result.run_dir}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .api import evaluate
    from .evaluation import format_table

    config = build_eval_config(args)
    if config.pairs is not None:
        from .api import evaluate_pairs_file, format_pair_folds

        assert config.checkpoint is not None  # validate() requires it with pairs
        folds = evaluate_pairs_file(config.checkpoint, config.pairs, config.images, flip=config.flip, far=config.far)
        print(json.dumps(folds.to_dict()) if config.json else format_pair_folds(folds, config.pairs))
        return 0
    result = evaluate(
        checkpoint=config.checkpoint, embeddings_file=config.embeddings, data_path=config.data_path,
        protocol=config.protocol, far=config.far, n_pairs=config.n_pairs, repeats=config.repeats, seed=config.seed,
        clustering=config.clustering, out_dir=config.out, tsne=config.tsne, classes=config.classes,
    )
    print(json.dumps(result.to_dict(), allow_nan=False) if config.json else format_table(result))
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from .api import embed_checkpoint, save_embeddings

    if not args.out.endswith(".npz"):
        raise ParameterError("out", f"must name an .npz file, got {args.out!r}")
    split = embed_checkpoint(args.checkpoint, args.split, args.data_path, classes=args.classes)
    path = save_embeddings(args.out, split.embeddings, split.labels)
    print(f"wrote {len(split.embeddings):,} embeddings of size {split.embeddings.shape[1]} ({args.split} split) to {path}")
    return 0


def _cmd_pairs(args: argparse.Namespace) -> int:
    from .data.pairs import looks_like_pairs_file, write_pairs_file

    _check_out_replaceable(args.out, "a pairs file", looks_like_pairs_file, args.overwrite)
    write_pairs_file(args.images, args.out, folds=args.folds, per_fold=args.per_fold, seed=args.seed)
    return 0




# ============================================================================ using a trained model
# verify, index, search, export, report (issue 9). Self-contained: add_use_commands registers the
# subcommands and their handlers; nothing else in this file refers to them.


def add_use_commands(subparsers: Any) -> None:
    """Register ``verify``, ``index``, ``search``, ``export`` and ``report`` on ``subparsers``."""
    from .inference.formats import EXPORT_FORMATS
    from .inference.index import APPROXIMATE_KINDS, DEFAULT_APPROXIMATE, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, IVF_NPROBE

    verify = subparsers.add_parser(
        "verify", help="do two images show the same identity? (distance, decision, threshold)",
        description="Embed two images with a checkpoint and compare their distance with a threshold: --threshold, else the "
                    "checkpoint's calibration (<checkpoint>.calibration.json, written by 'tripletnet evaluate'). "
                    "Exit code 0 whatever the decision.")
    verify.add_argument("--checkpoint", required=True, help="a tripletnet checkpoint")
    verify.add_argument("images", nargs=2, metavar="IMAGE", help="two image files (any format Pillow reads)")
    verify.add_argument("--threshold", type=float, help="distance threshold (default: the checkpoint's calibration)")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(handler=_cmd_verify)

    index = subparsers.add_parser(
        "index", help="embed a gallery into a faiss index folder",
        description="Embed a split of the checkpoint's dataset or a folder of images and write an index folder "
                    "(faiss index, labels/paths, the checkpoint's fingerprint) for 'tripletnet search'.")
    index.add_argument("--checkpoint", required=True, help="a tripletnet checkpoint")
    gallery = index.add_mutually_exclusive_group(required=True)
    gallery.add_argument("--split", choices=("train", "test"), help="a split of the checkpoint's dataset")
    gallery.add_argument(
        "--images", metavar="DIR", help="a folder of images (searched recursively; a subfolder name is the label)"
    )
    index.add_argument("--out", required=True, metavar="DIR", help="index folder to write (replaced if it is one)")
    index.add_argument("--device", choices=typing.get_args(Device), default="auto",
                       help="where the gallery is embedded (default: auto, cuda when present); faiss runs on the CPU")
    index.add_argument("--skip_bad_images", "--skip-bad-images", action="store_true",
                       help="with --images: leave out and count files that do not decode instead of stopping at the first")
    approximate = index.add_argument_group(
        "approximate search, for large galleries (benchmarks/RESULTS-inference.md measures them)")
    kind = approximate.add_mutually_exclusive_group()  # "--approximate ivf --hnsw" would silently build hnsw
    kind.add_argument("--approximate", nargs="?", const=DEFAULT_APPROXIMATE, choices=APPROXIMATE_KINDS, metavar="KIND",
                      help="an approximate index: ivf (IVF-Flat, the default KIND) or hnsw (default: exact search)")
    kind.add_argument("--hnsw", dest="approximate", action="store_const", const="hnsw",
                      help="the same as --approximate hnsw")
    approximate.add_argument("--nlist", type=int, help="ivf: k-means cells (default: 4 x the square root of the gallery size)")
    approximate.add_argument("--nprobe", type=int,
                             help=f"ivf: cells searched per query (default: {IVF_NPROBE})")
    approximate.add_argument("--hnsw-m", "--hnsw_m", dest="hnsw_m", type=int,
                             help=f"hnsw: graph degree (default: {HNSW_M})")
    approximate.add_argument("--ef-construction", "--ef_construction", dest="ef_construction", type=int,
                             help=f"hnsw: build breadth (default: {HNSW_EF_CONSTRUCTION})")
    approximate.add_argument("--ef-search", "--ef_search", dest="ef_search", type=int,
                             help=f"hnsw: search breadth (default: {HNSW_EF_SEARCH})")
    _add_data_path_option(index)
    index.set_defaults(handler=_cmd_index)

    search = subparsers.add_parser(
        "search", help="nearest gallery images of query images",
        description="Search an index folder from 'tripletnet index' with query images embedded by the same checkpoint.")
    search.add_argument("--index", required=True, metavar="DIR", help="an index folder")
    queries = search.add_mutually_exclusive_group(required=True)
    queries.add_argument("--query", metavar="IMAGE", help="one query image")
    queries.add_argument("--queries", metavar="DIR", help="a folder of query images (searched recursively)")
    search.add_argument("-k", type=int, default=5, help="neighbours per query (default: 5)")
    search.add_argument("--checkpoint",
                        help="the checkpoint the index was built with, if it has moved (it must hold the same weights)")
    search.add_argument("--json", action="store_true", help="print one JSON object")
    search.add_argument("--skip_bad_images", "--skip-bad-images", action="store_true",
                        help="leave out and count query files that do not decode instead of stopping at the first")
    search.set_defaults(handler=_cmd_search)

    export = subparsers.add_parser(
        "export", help="export the network as ONNX or TorchScript",
        description="The exported graph takes uint8 images N x C x H x W (dynamic N) and returns L2-normalised fp32 embeddings.")
    export.add_argument("--checkpoint", required=True, help="a tripletnet checkpoint")
    # The choices are listed, and checked in _cmd_export, where a wrong one gets the one-line error with exit 2.
    export.add_argument("--format", default="onnx", metavar="{" + ",".join(EXPORT_FORMATS) + "}",
                        help="onnx (opset 18) or torchscript (default: onnx)")
    export.add_argument("--out", required=True, metavar="FILE", help="file to write (an earlier export is replaced)")
    export.add_argument("--overwrite", action="store_true", help="replace --out even when it is not an export of --format")
    export.set_defaults(handler=_cmd_export)

    report = subparsers.add_parser(
        "report", help="one self-contained HTML report of a run",
        description="Evaluate a run's checkpoint on its test split and write one HTML file with everything inline: "
                    "configuration, curves, verification table, ROC, distances, t-SNE, retrieval, worst mistakes, queries.")
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", metavar="DIR", help="a run folder (its last.pt is reported)")
    source.add_argument("--checkpoint", help="a tripletnet checkpoint")
    report.add_argument("--out", required=True, metavar="FILE.html", help="HTML file to write (an earlier report is replaced)")
    report.add_argument("--overwrite", action="store_true", help="replace --out even when it is not an HTML report")
    _add_data_path_option(report)
    report.add_argument("--far", type=float, default=1e-3, help="target false-accept rate (default: 1e-3)")
    report.add_argument("--test_images", "--test-images", dest="test_images", type=int, default=0,
                        help="evaluate a class-stratified subset of this many test images (default: 0 = all)")
    report.add_argument("--no-tsne", dest="tsne", action="store_false", help="skip the t-SNE map")
    report.set_defaults(handler=_cmd_report)


def _cmd_verify(args: argparse.Namespace) -> int:
    import json

    from .inference.model import load_model

    model = load_model(args.checkpoint)
    result = model.verify(args.images[0], args.images[1], threshold=args.threshold)
    if args.json:
        print(json.dumps({"a": args.images[0], "b": args.images[1], **result.to_dict()}))
    else:
        decision = "same" if result.same else "different"
        print(f"{decision}: distance {result.distance:.4f} {'<=' if result.same else '>'} threshold {result.threshold:.4f} "
              f"({_threshold_origin(model, given=args.threshold is not None)})")
    return 0


def _threshold_origin(model: Any, *, given: bool) -> str:
    """Where verify's threshold comes from, in words: given, or the calibration's FAR and the data it was chosen on
    (only the facts it recorded: a calibration from an embeddings file has no dataset path)."""
    if given:
        return "given"
    calibration = model.threshold
    facts = [f"{key} {value:,}" if isinstance(value, int) else f"{key} {value}"
             for key, value in calibration.data.items() if value is not None]
    reached = f", reached {calibration.far_reached:.2g}" if calibration.far_reached is not None else ""
    return f"at FAR {calibration.far:g}{reached}, calibrated on {', '.join(facts) or 'unrecorded data'}"


def _cmd_index(args: argparse.Namespace) -> int:
    from .inference.index import check_settings

    # The kind each setting belongs to; the settings not given keep the library's defaults.
    kind_of = {"nlist": "ivf", "nprobe": "ivf", "hnsw_m": "hnsw", "ef_construction": "hnsw", "ef_search": "hnsw"}
    kind = args.approximate or "exact"
    settings: dict[str, Any] = {name: getattr(args, name) for name in kind_of if getattr(args, name) is not None}
    for name in settings:
        if kind_of[name] != kind:  # a setting that would be ignored is refused, not dropped
            raise ParameterError(name, f"applies only to --approximate {kind_of[name]}, the index here is {kind}",
                                 related=("approximate",))
    if args.skip_bad_images and args.images is None:
        raise ParameterError("skip_bad_images", "applies only to --images: a split was read whole at training")
    # Before the checkpoint is loaded and the gallery embedded (minutes for a large one), not after.
    check_settings(kind, **settings)
    from .api import index_gallery

    written = index_gallery(args.checkpoint, args.out, split=args.split, images=args.images, data_path=args.data_path,
                            kind=kind, device=args.device, skip_bad_images=args.skip_bad_images, **settings)
    print(f"indexed {written.index.size:,} embeddings of {written.description} ({written.index.kind}) in {written.folder}")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    import json

    from .api import search_gallery

    # one image and a folder take different flags: say which, rather than "not found" or "Is a directory"
    if args.queries is not None and Path(args.queries).is_file():
        raise UserError(f"--queries takes a folder of images; give the one image {args.queries} with --query")
    if args.query is not None and Path(args.query).is_dir():
        raise UserError(f"--query takes one image; give the folder {args.query} with --queries")
    results = search_gallery(args.index, [args.query] if args.query else args.queries, k=args.k, checkpoint=args.checkpoint,
                             skip_bad_images=args.skip_bad_images)
    if args.json:
        print(json.dumps({"index": str(args.index), "k": args.k, "results": results}))
        return 0
    for result in results:
        print(f"query {_one_line(result['query'])}")
        first = result["neighbours"][0] if result["neighbours"] else {}
        columns = (["label"] if "label" in first else []) + (["image"] if "path" in first else ["gallery #"])
        print(f"  {'rank':>4}  {'distance':>8}  {'  '.join(columns)}")
        for n in result["neighbours"]:
            # Without paths (a dataset split), the gallery position identifies the image.
            named = [_one_line(str(n[key])) for key in ("label", "path") if key in n]
            described = "  ".join(named if "path" in n else [*named, f"#{n['index']}"])
            print(f"  {n['rank']:>4}  {n['distance']:>8.4f}  {described}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .inference.export import FORMATS, INPUT_NAME, ONNX_OPSET, export_model
    from .inference.model import load_model

    if args.format not in FORMATS:  # before loading anything: a typo costs nothing
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {args.format!r}")
    own_kind = is_onnx_file if args.format == "onnx" else is_torchscript_file
    _check_out_replaceable(args.out, f"an {args.format} export" if args.format == "onnx" else "a TorchScript export", own_kind,
                           args.overwrite, reads=[args.checkpoint])
    if problem := export_name_problem(Path(args.out), args.format):  # before loading: a forgotten --format costs nothing
        raise ParameterError("out", problem, related=("format",))
    model = load_model(args.checkpoint)
    path = export_model(model, args.out, args.format)
    c, h, w = model.input_shape
    detail = f"ONNX opset {ONNX_OPSET}" if args.format == "onnx" else "TorchScript"
    print(f"wrote {path} ({detail}): input '{INPUT_NAME}' uint8 N x {c} x {h} x {w}, "
          f"output embeddings N x {model.embedding_dim} fp32")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report.html import write_html_report

    reads = [args.checkpoint, str(Path(args.run) / "last.pt") if args.run else None]
    _check_out_replaceable(args.out, "an HTML report", _is_html_report, args.overwrite, reads=reads)
    path = write_html_report(args.run or args.checkpoint, args.out, data_path=args.data_path, far=args.far,
                             test_images=args.test_images, tsne=args.tsne)
    print(f"wrote {path}")
    return 0


def _check_out_replaceable(out: str, kind: str, is_own_kind: Any, overwrite: bool, reads: Sequence[str | None] = ()) -> None:
    """Refuse an --out that names an existing file of another kind (a dataset file, a page), unless --overwrite.

    An earlier output of the same command is replaced without asking, as re-running it is meant to.
    Never replaced, --overwrite or not: a file the command reads (``reads``), a training run's own
    files and a PyTorch checkpoint, which took a training run to make.
    """
    path = Path(out)
    refuse_special_file(path)  # before any work, and even with --overwrite: the write would replace the device
    if not path.is_file():
        return
    if any(source and Path(source).is_file() and path.samefile(source) for source in reads):
        raise UserError(f"--out {path} is the file this command reads: choose another --out")
    if is_own_kind(path):
        return
    from .training.runfolder import run_artefacts

    in_run = path in run_artefacts(path.parent)
    calibration = path.name.endswith(CALIBRATION_SUFFIX) and path.with_name(path.name.removesuffix(CALIBRATION_SUFFIX)).is_file()
    found = _kind_of_file(path)
    if in_run or calibration or found == _CHECKPOINT_KIND:
        what = (f"a file of the training run in {path.parent}" if in_run else "the calibration of the checkpoint beside it"
                if calibration else found)
        raise UserError(f"--out {path} exists and is {what}, which --overwrite does not replace: choose another --out "
                        "(or delete the file first if you mean to lose it)")
    if overwrite:
        return
    raise UserError(f"--out {path} exists and is not {kind} (it is {found}): choose another --out, "
                    "or pass --overwrite to replace it")


def _is_html_file(path: Path) -> bool:
    return file_head(path).lstrip().lower().startswith((b"<!doctype html", b"<html"))


def _is_html_report(path: Path) -> bool:
    """An HTML report of tripletnet's (its title says so), not any page a user keeps under that name."""
    return _is_html_file(path) and b"<title>tripletnet report" in file_head(path, 1024)


_CHECKPOINT_KIND = "a PyTorch file, e.g. a tripletnet checkpoint"


def _kind_of_file(path: Path) -> str:
    names = zip_names(path)
    if holds_torchscript(names):
        return "a TorchScript export"
    if any(name.endswith("/data.pkl") for name in names):
        return _CHECKPOINT_KIND
    if _is_html_file(path):
        return "an HTML file"
    return "a file of another kind"


# ============================================================================ end of the use commands


# A path no file system can hold (a name over 255 bytes) or resolve (a symlink loop): the user's to change.
_UNUSABLE_PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ELOOP})


def _shortened(path: str, keep: int = 100) -> str:
    return path if len(path) <= keep else f"{path[:keep // 2]}...{path[-keep // 2:]} ({len(path)} characters)"


def _one_line(name: str) -> str:
    """A file name or label for a table row: a newline (or another control character) in it escaped, as repr does."""
    return name if name.isprintable() else repr(name)[1:-1]


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # a scheduler's or a container's stop ends a run as Ctrl-C does


def repeated_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[tuple[str, int]]:
    """The options of ``parser`` that ``argv`` sets more than once to different values, with how often.

    argparse keeps the last of them without a word, so ``--epochs 30 ... --epochs 3`` trains 3 epochs;
    a note says so. Spellings of one setting count together: ``--num_images``, ``--num-images``, an
    abbreviation such as ``--num_im``, ``--name=value``, and ``--flag`` with ``--no-flag``.
    """
    spellings = parser._option_string_actions  # argparse's own map from every option string to its action
    values: dict[str, list[str]] = {}
    shown: dict[str, str] = {}
    for position, token in enumerate(argv):
        if token == "--":
            break
        if not token.startswith("--"):
            continue
        name, equals, inline = token.partition("=")
        action = spellings.get(name)
        if action is None:  # an abbreviation argparse accepted: the one option it is a prefix of
            matches = {spellings[option] for option in spellings if option.startswith(name)}
            action = matches.pop() if len(matches) == 1 else None
        if isinstance(action, argparse.BooleanOptionalAction):
            value = str(not name.startswith("--no-"))
        elif isinstance(action, argparse._StoreAction) and action.nargs is None:
            value = inline if equals else (argv[position + 1] if position + 1 < len(argv) else "")
        else:  # help, version, store_true and the like: repeating them changes nothing
            continue
        values.setdefault(action.dest, []).append(value)
        listed = f"--{action.dest}" if f"--{action.dest}" in spellings else action.option_strings[0]
        shown.setdefault(action.dest, f"{listed}/--no-{listed[2:]}" if isinstance(action, argparse.BooleanOptionalAction)
                         else listed)
    return [(shown[dest], len(given)) for dest, given in values.items() if len(set(given)) > 1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's own parser, so that the advice is its --help, as for its other errors
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if os.environ.get("RANK", "0") == "0":  # one note for a torchrun job, not one per process
        for option, times in repeated_options(args.command_parser, sys.argv[1:] if argv is None else argv):
            print(f"{args.prog}: note: {option} was given {times} times with different values; the last one is used",
                  file=sys.stderr)
    previous = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        return int(args.handler(args))
    except ParameterError as exc:
        print(f"{args.prog}: error: {parameter_message(exc)} (see '{args.prog} --help')", file=sys.stderr)
        return 2
    except UserError as exc:
        # Exit 2 for what the user can fix in the command; errors that carry their own code (a full disk: 1) keep it.
        print(f"{args.prog}: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except OSError as exc:
        if exc.errno not in _UNUSABLE_PATH_ERRNOS or exc.filename is None:
            raise
        # pathlib's exists()/is_file() raise these rather than answer False, from wherever a path is first looked at.
        print(f"{args.prog}: error: cannot use {_shortened(os.fsdecode(exc.filename))}: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        # A training run says what it saved and the command that continues it (TrainingInterrupted).
        # Under torchrun the main process speaks for the job: the others are stopped by its agent
        # when the main one fails (their "interrupted" would be a second, misleading line) or by the same Ctrl-C.
        if os.environ.get("RANK", "0") == "0":
            print(f"{PROG}: {str(exc) or 'interrupted'}", file=sys.stderr)  # a plain Ctrl-C carries no message
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def run() -> NoReturn:
    """The command (``tripletnet``, ``python -m tripletnet``, both through ``tripletnet.__main__``, which imports
    this module): :func:`main`, then exit with its code.

    A process of a multi-process run (torchrun's WORLD_SIZE > 1) that failed, most often because a
    peer died, leaves at once: torch's process-group teardown at interpreter exit can wait on the
    dead peer's connection (seen here under load: the message printed, the process still there
    two minutes later). Nothing is lost by it: checkpoints are written atomically and the run
    folder's lock is released before :func:`main` returns.

    The process is the command's alone, so malloc keeps freed memory for reuse from the start
    (:func:`~tripletnet.allocator.keep_freed_memory`): ``evaluate`` on the CPU measured
    1.3x faster with it, and training sets it anyway.
    """
    keep_freed_memory()
    code = main()
    if code != 0 and os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
