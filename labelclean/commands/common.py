"""What every subcommand shares: how it is described to the CLI (``Command``), the errors a
user can fix, and whether PyTorch is here. Imports nothing of the rooms: building the parser
stays light."""

from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

# Problems a user can fix: printed as one line, exit status 2 (LABELCLEAN_DEBUG=1 shows tracebacks).
USER_ERRORS: tuple[type[BaseException], ...] = (
    () if os.environ.get("LABELCLEAN_DEBUG") else (ValueError, OSError, RuntimeError)
)

NEEDS_TORCH = (
    "needs PyTorch, which this install lacks (the serving install): pip install 'labelclean[train]'"
)

DEVICES = ("auto", "cpu", "cuda")


def torch_missing() -> bool:
    """Whether PyTorch cannot be imported here (the serving image has none)."""
    try:
        return importlib.util.find_spec("torch") is None
    except (ImportError, ValueError):
        return True


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, its help line in ``labelclean --help``, its parser's description
    and epilog, the function that adds its options, and the one that runs it (its exit status)."""

    name: str
    help: str
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None
    epilog: str | None = None
    needs_torch: bool = True  # False: parses and runs where PyTorch is not installed

    @property
    def parser_options(self) -> dict[str, str | None]:
        return {"description": self.description, "epilog": self.epilog}
