"""``python -m benchmarks.glyphs build OUT [options]`` and ``python -m benchmarks.glyphs run DATA [options]``."""

from __future__ import annotations

import argparse
import sys

from tripletnet.errors import ParameterError, UserError

from .build import CHARSETS, SIZES, BuildOptions, build
from .fonts import FONT_DIRS


def _names(text: str) -> tuple[str, ...]:
    return tuple(name for name in text.split(",") if name)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.glyphs", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="render the benchmark into a new folder")
    b.add_argument("out", help="the folder to create")
    b.add_argument("--charset", choices=tuple(CHARSETS), default="gb2312-1",
                   help="gb2312-1: the 3,755 level-1 hanzi; latin: 0-9 A-Z a-z")
    b.add_argument("--chars", type=int, help="characters to use, train + test, drawn from the set with --seed (default: all)")
    b.add_argument("--test_chars", type=int, help="how many of them are test characters (default: a fifth)")
    b.add_argument("--size", type=int, choices=SIZES, default=32, help="image side in pixels")
    b.add_argument("--test_fonts", type=_names, default=(), help="comma-separated test font names (file stems)")
    b.add_argument("--train_fonts", type=_names, default=(), help="comma-separated training font names (default: the others)")
    b.add_argument("--n_test_fonts", type=int,
                   help="without --test_fonts: how many test fonts to draw with --font_seed (default: a quarter)")
    b.add_argument("--font_dirs", type=_names, default=FONT_DIRS, help="comma-separated font files or folders to search")
    b.add_argument("--min_coverage", type=float, default=0.99, help="use a font whose character map holds this share of the set")
    b.add_argument("--seed", type=int, default=0, help="which characters are train and test")
    b.add_argument("--font_seed", type=int, default=0, help="which fonts are train and test")
    b.add_argument("--overwrite", action="store_true", help="replace a previous build in OUT")
    r = commands.add_parser("run", help="score a checkpoint, raw pixels and a PML loop on the three test conditions")
    from .score import add_run_arguments

    add_run_arguments(r)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "build":
            options = BuildOptions(
                charset=args.charset, chars=args.chars, test_chars=args.test_chars, size=args.size,
                test_fonts=args.test_fonts, train_fonts=args.train_fonts, n_test_fonts=args.n_test_fonts,
                font_dirs=tuple(args.font_dirs), min_coverage=args.min_coverage, seed=args.seed, font_seed=args.font_seed,
            )
            build(args.out, options, overwrite=args.overwrite)
        else:
            from .score import run_from_args

            run_from_args(args)
    except ParameterError as exc:
        print(f"python -m benchmarks.glyphs: error: --{exc.parameter} {exc.problem}", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"python -m benchmarks.glyphs: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a build leaves nothing behind (it writes beside its folder): say so in one line
        print("python -m benchmarks.glyphs: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
