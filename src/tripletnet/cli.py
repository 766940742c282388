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
from .errors import UserError

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; completed epochs are saved as checkpoints (resume with --resume .../last.pt)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
