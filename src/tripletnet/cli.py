"""The ``tripletnet`` command: a thin layer over the library API.

Every option of ``train`` comes from a :class:`~tripletnet.config.TrainConfig` field and is
accepted both as the reference spells it (``--num_images``) and in kebab-case (``--num-images``).
Precedence: defaults < ``--preset`` < ``--config FILE.toml`` < command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any, NoReturn

from .config import PRESETS, TrainConfig, load_toml
from .errors import ParameterError, UserError
from .evaluation.report import PROTOCOLS

PROG = "tripletnet"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (exit 2) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    for f in fields(TrainConfig):
        spellings = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        help_text = f"{f.metadata.get('help', '')} (default: {f.default})"
        if isinstance(f.default, bool):
            parser.add_argument(*spellings, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        kind: Any = type(f.default) if f.default is not None else str
        parser.add_argument(*spellings, dest=f.name, type=kind, default=None, metavar=f.name.upper(), help=help_text)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Train triplet-loss embedding networks and evaluate them like verification systems.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    train = sub.add_parser(
        "train",
        help="train an embedding network",
        description=(
            "Train a CNN that maps 28x28 images to L2-normalised embeddings with online triplet mining. "
            "Every epoch writes <checkpoint_path>/epoch_<n>.pt, last.pt and a line of metrics.jsonl."
        ),
    )
    train.add_argument("--config", metavar="FILE.toml", help="read options from a TOML file (flat, or under [train]); the command line wins")
    train.add_argument("--preset", choices=sorted(PRESETS), help="start from a named set of options")
    train.add_argument("--resume", metavar="CHECKPOINT", help="continue a run from its checkpoint (e.g. checkpoints/last.pt)")
    train.add_argument("--overwrite", action="store_true", help="replace a run already in --checkpoint_path")
    _add_config_options(train)
    train.set_defaults(handler=_cmd_train)

    evaluate = sub.add_parser(
        "evaluate",
        help="verification, retrieval and clustering metrics of a checkpoint or embeddings file",
        description=(
            "Evaluate on the test split like a verification system: the distance threshold at a target "
            "false-accept rate, VAL = TP/(TP+FN), accuracy, positive/negative distance statistics, ROC AUC and "
            "EER, plus precision@1, R-precision, MAP@R, recall@k and k-means NMI/AMI."
        ),
    )
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a tripletnet checkpoint (its dataset's test split is embedded)")
    source.add_argument("--embeddings", help="an .npz from 'tripletnet embed' (arrays embeddings, labels)")
    evaluate.add_argument("--data_path", "--data-path", dest="data_path", help="dataset folder (default: the checkpoint's, $TRIPLETNET_DATA, ./data/)")
    evaluate.add_argument("--protocol", choices=PROTOCOLS, default="all-pairs",
                          help="all-pairs: every test pair, exact (default); pairs: the reference's random pairs; kfold: LFW-style 10 folds")
    evaluate.add_argument("--far", type=float, default=1e-3, help="target false-accept rate for the threshold (default: 1e-3)")
    evaluate.add_argument("--n_pairs", "--n-pairs", dest="n_pairs", type=int, default=None,
                          help="pairs for --protocol pairs (default 1024) or kfold (default 6000)")
    evaluate.add_argument("--repeats", type=int, default=1, help="with --protocol pairs: also report mean ± std over this many draws")
    evaluate.add_argument("--seed", type=int, default=0, help="seed for random pairs and k-means (default: 0)")
    evaluate.add_argument("--no-clustering", dest="clustering", action="store_false", help="skip k-means NMI/AMI")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    evaluate.add_argument("--out", metavar="DIR", help="write metrics.json and plots (distances, ROC, t-SNE, per-epoch curves) here")
    evaluate.add_argument("--no-tsne", dest="tsne", action="store_false", help="with --out: skip the t-SNE plot")
    evaluate.set_defaults(handler=_cmd_evaluate)

    embed = sub.add_parser("embed", help="write the embeddings of a dataset split as .npz",
                           description="Embed a split of the checkpoint's dataset; writes arrays embeddings (N x D float32) and labels (N int64).")
    embed.add_argument("--checkpoint", required=True, help="a tripletnet checkpoint")
    embed.add_argument("--split", choices=("train", "test"), default="test", help="which split (default: test)")
    embed.add_argument("--out", required=True, metavar="FILE.npz", help="output file")
    embed.add_argument("--data_path", "--data-path", dest="data_path", help="dataset folder (default: the checkpoint's, $TRIPLETNET_DATA, ./data/)")
    embed.set_defaults(handler=_cmd_embed)
    return parser


def build_train_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < preset < resumed checkpoint < TOML file < command line."""
    config = TrainConfig()
    if args.preset:
        config = config.updated(PRESETS[args.preset], source=f"preset {args.preset}")
    if args.resume:
        from .checkpoint import load_checkpoint

        config = TrainConfig.from_dict(load_checkpoint(args.resume)["config"], source=args.resume)
    if args.config:
        config = config.updated(load_toml(args.config), source=args.config)
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    config = config.updated(given, source="command line")
    config.validate()
    return config


def _cmd_train(args: argparse.Namespace) -> int:
    config = build_train_config(args)
    from .training import train  # after validation: a bad option costs no import time

    result = train(config, resume=args.resume, overwrite=args.overwrite)
    last = result.history[-1] if result.history else {}
    print(f"done: {len(result.history)} epochs, final train loss {last.get('train_loss', float('nan')):.4f}, "
          f"checkpoints in {result.run_dir}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .api import evaluate
    from .evaluation import format_table

    if not 0 < args.far <= 1:
        raise UserError(f"--far must be in (0, 1], got {args.far}")
    result = evaluate(
        checkpoint=args.checkpoint, embeddings_file=args.embeddings, data_path=args.data_path, protocol=args.protocol,
        far=args.far, n_pairs=args.n_pairs, repeats=args.repeats, seed=args.seed, clustering=args.clustering,
        out_dir=args.out, tsne=args.tsne,
    )
    print(json.dumps(result.to_dict(), allow_nan=False) if args.json else format_table(result))
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from .api import embed_checkpoint, save_embeddings

    if not args.out.endswith(".npz"):
        raise UserError(f"--out must name an .npz file, got {args.out!r}")
    split = embed_checkpoint(args.checkpoint, args.split, args.data_path)
    path = save_embeddings(args.out, split.embeddings, split.labels)
    print(f"wrote {len(split.embeddings):,} embeddings of size {split.embeddings.shape[1]} ({args.split} split) to {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except ParameterError as exc:  # a library argument is the flag of the same name
        print(f"{PROG}: error: --{exc.parameter} {exc.problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; completed epochs are saved as checkpoints (resume with --resume .../last.pt)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
