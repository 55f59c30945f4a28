"""The model's configuration: everything needed to rebuild the network and to feed it.

It travels inside every checkpoint and (as the input spec) inside every model bundle, so a model
is never separated from its preprocessing contract.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class InputSpec:
    """How an image becomes the network's input tensor (shared by training and serving)."""

    height: int = 28  # pixels after resize
    width: int = 28
    channels: int = 1  # 1 = greyscale ("L"), 3 = RGB
    mean: list[float] = field(default_factory=lambda: [0.5])  # per channel, on [0, 1] pixels
    std: list[float] = field(default_factory=lambda: [0.5])

    @property
    def color_mode(self) -> str:
        """The Pillow mode images are converted to."""
        return "L" if self.channels == 1 else "RGB"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        return cls(**data)


DEFAULT_CLEANER_LOSS = "bce"


@dataclass
class ModelConfig:
    """Architecture of the joint cleaner + classifier network."""

    num_classes: int  # d: size of the label vocabulary
    backbone: str = "small_cnn"  # a name from model.backbones.BACKBONES
    feature_dim: int = 128  # size of f(I) for small_cnn; torchvision backbones fix their own
    cleaner_embed_dim: int = 16  # size of each of the cleaner's two projections
    width: int = 16  # small_cnn: channels of the first conv block (doubled per block)
    dropout: float = 0.0  # before the classifier
    # How noisy labels y are encoded: "confidence" (the machine's score, 1.0 when none is given)
    # or "binary" (1 for every listed label). Serving encodes requests the same way.
    noisy_labels: str = "confidence"
    # The cleaner's output and loss: "bce" (c = sigmoid(logit(y) + g), binary cross-entropy on
    # its logits: scores keep a ranking; the default, better on the demo benchmark) or "l1" (the
    # paper's: c = clip(y + g, 0, 1), L1 loss). Checkpoints made before the option are "l1".
    cleaner_loss: str = DEFAULT_CLEANER_LOSS
    # Machine labels are clamped to [label_floor, 1 - label_floor] before a logit (the bce
    # cleaner and the issue head read logit(y)): an unlisted label reads logit(1e-4) = -9.2.
    label_floor: float = 1e-4
    input: InputSpec = field(default_factory=InputSpec)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        data.setdefault("cleaner_loss", "l1")  # saved before the option: the paper's cleaner
        data["input"] = InputSpec.from_dict(data.get("input", {}))
        return cls(**data)
