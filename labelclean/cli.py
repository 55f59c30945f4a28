"""The ``labelclean`` command. Each subcommand imports only what it needs, so serving commands
never load PyTorch.

    labelclean demo-data --out DATA                 # a multi-label set from Fashion-MNIST
    labelclean train --data DATA --out RUN          # joint model -> RUN/bundle
    labelclean benchmark --data DATA --out BENCH    # the paper's table, five modes
    labelclean benchmark-report --runs bce=BENCH1 --runs l1=BENCH2 --out DIR   # no training
    labelclean export --checkpoint RUN/checkpoint.pt --out BUNDLE
    labelclean evaluate --model BUNDLE --data DATA
    labelclean serve --model BUNDLE [--host H --port P --workers N]   # HTTP service, no torch
    labelclean clean --model BUNDLE --images URI --labels URI --out URI  # bulk, no torch
    labelclean worker --model BUNDLE [--burst]      # bulk jobs from Redis (POST /jobs), no torch
    labelclean review --model BUNDLE --data DATA --out DIR   # ranked label-issue queue, no torch
    labelclean import-reviews --label-studio EXPORT.json --model BUNDLE --out REVIEWS.csv
    labelclean suggest-verify --model BUNDLE --data DATA --budget 100 --out VERIFY.csv  # no torch

The subcommands live in ``labelclean/commands/``, one module per group, each with its options
beside its handler; this module puts them in one parser and runs the one asked for.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands import bundle, clean, import_reviews, review, serve, suggest, train
from .commands.common import NEEDS_TORCH, USER_ERRORS, Command, torch_missing

# settings_doc lists the options of serve and worker that set a setting; it reads them here.

# Every subcommand, in the order `labelclean --help` lists them.
COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        train.DEMO_DATA,
        train.TRAIN,
        train.BENCHMARK,
        train.BENCHMARK_REPORT,
        bundle.EXPORT,
        bundle.EVALUATE,
        serve.SERVE,
        clean.CLEAN,
        serve.WORKER,
        serve.TRAIN_WORKER,
        review.REVIEW,
        import_reviews.IMPORT_REVIEWS,
        suggest.SUGGEST_VERIFY,
    )
}


class _CommandParser(argparse.ArgumentParser):
    """A subcommand's parser that adds its options the first time it is used (to parse, or to
    print its usage or help): building the top-level parser runs no command's code, and the
    training options' defaults, which come from training code and so import torch, are read
    only for a training command."""

    def __init__(self, *args, add_args=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._add_args = add_args

    def _complete(self) -> None:
        add, self._add_args = self._add_args, None
        if add is not None:
            add(self)

    def parse_known_args(self, args=None, namespace=None):
        self._complete()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._complete()
        return super().format_usage()

    def format_help(self) -> str:
        self._complete()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labelclean",
        description="Find wrong and missing image labels with a small human-verified set "
        "(Veit et al., CVPR 2017), and serve the model over HTTP.",
    )
    parser.add_argument("--version", action="version", version=f"labelclean {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser
    )
    for command in COMMANDS.values():
        sub.add_parser(
            command.name, help=command.help, add_args=command.add_args, **command.parser_options
        )
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line parsed. ``--help``, an unknown command and the torch-free commands work
    without PyTorch; a command that needs it stops with one line saying so (exit 2). A torch-free
    command is parsed by its own parser, so that its usage errors name it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = COMMANDS.get(argv[0]) if argv else None
    if command is not None and not command.needs_torch:
        p = argparse.ArgumentParser(prog=f"labelclean {command.name}", **command.parser_options)
        command.add_args(p)
        return p.parse_args(argv[1:], argparse.Namespace(command=command.name))
    parser = build_parser()
    if command is not None and torch_missing():
        parser.exit(2, f"labelclean {command.name}: error: {NEEDS_TORCH}\n")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        return int(COMMANDS[args.command].run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        print(f"labelclean {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
