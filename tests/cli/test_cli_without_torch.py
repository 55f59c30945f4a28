"""``labelclean`` where PyTorch is not installed (the serving image): --help, an unknown command
and the serving commands' help work; a training command says it needs PyTorch in one line.
Each runs in a fresh interpreter whose imports of torch and torchvision fail, as they do there."""

from __future__ import annotations

import subprocess
import sys

import pytest

WITHOUT_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoTorch())
from labelclean.cli import main

sys.exit(main(sys.argv[1:]))
"""


def labelclean(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, *args], capture_output=True, text=True, timeout=60
    )  # fmt: skip


def test_help_lists_every_command() -> None:
    out = labelclean("--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: labelclean")
    for command in ("train", "serve", "clean", "worker", "review", "export", "evaluate"):
        assert command in out.stdout


def test_an_unknown_command_is_a_usage_error() -> None:
    out = labelclean("frobnicate")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("usage: labelclean")
    assert "invalid choice: 'frobnicate'" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("command", ["serve", "worker", "clean", "review"])
def test_serving_commands_explain_themselves(command: str) -> None:
    out = labelclean(command, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: labelclean {command}") and "--model" in out.stdout


@pytest.mark.parametrize("args", [("train", "--data", "d", "--out", "r"), ("export", "--help")])
def test_training_commands_say_they_need_torch(args: tuple[str, ...]) -> None:
    out = labelclean(*args)
    assert out.returncode == 2, out.stdout
    assert out.stderr == (
        f"labelclean {args[0]}: error: needs PyTorch, which this install lacks (the serving "
        "install): pip install 'labelclean[train]'\n"
    )


def test_building_the_parser_imports_no_torch_and_no_room() -> None:
    """`labelclean --help` stays quick where torch is installed too: the top-level parser is
    built from the command modules alone (each subcommand's options are added when it is used)."""
    probe = (
        "import sys; from labelclean.cli import build_parser; build_parser().format_help(); "
        "print(sorted({m.split('.')[0] if not m.startswith('labelclean.') else "
        "'.'.join(m.split('.')[:2]) for m in sys.modules if m.startswith(('torch', "
        "'labelclean.model', 'labelclean.training', 'labelclean.service', 'onnxruntime'))}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
