"""The ``labelclean`` subcommands, one module per group, each with its options beside its
handler: ``train`` (demo-data, train, benchmark, benchmark-report; their shared options in
``train_options``), ``bundle`` (export, evaluate), ``serve`` (serve, worker, train-worker),
``clean``, ``review``, ``suggest`` (suggest-verify) and ``import_reviews``. ``common`` holds
what they share (``Command``, the user errors, whether PyTorch is here); ``labelclean.cli``
puts them together. Imports of the rooms stay inside the handlers (and the training options'
defaults), so building the parser loads no model, service or training code."""

from .train_options import configs as _configs
from .train_options import load_data as _load_data

__all__ = ["_configs", "_load_data"]
