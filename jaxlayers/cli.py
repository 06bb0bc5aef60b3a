"""The ``jaxlayers`` command: ``jaxlayers gradcheck`` (and ``train``, ...).

Nothing in the package imports this module.
"""

from __future__ import annotations

import argparse
import sys


def _gradcheck(args: argparse.Namespace) -> int:
    from jaxlayers.gradcheck import main as gradcheck_main

    return gradcheck_main(verbose=args.verbose)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxlayers", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "gradcheck",
        help="check every op's custom VJP against autodiff and finite differences (float64)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="one row per sample, not per op")
    p.set_defaults(func=_gradcheck)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
