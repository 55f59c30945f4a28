"""labelclean: find wrong and missing image labels with a small verified set.

The code lives in three packages mapped under this one: ``labelclean.model`` (network, export,
bundle, ONNX Runtime wrapper), ``labelclean.training`` and ``labelclean.service``.
"""

__version__ = "0.1.0"
