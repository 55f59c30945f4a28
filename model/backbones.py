"""Feature extractors f(I), chosen by name: a small CNN for CPUs and torchvision architectures.

Weights are never downloaded: torchvision backbones start from random weights or from a local
state-dict file (``weights=PATH``).
"""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .config import InputSpec, ModelConfig


class SmallCNN(nn.Module):
    """Three conv blocks and global average pooling: (N, C, H, W) -> (N, feature_dim)."""

    def __init__(self, in_channels: int, width: int, feature_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(3):
            out = width * 2**i
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.Conv2d(out, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            if i < 2:
                layers.append(nn.MaxPool2d(2))
            channels = out
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, feature_dim), nn.ReLU()
        )
        self.out_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def import_torchvision() -> types.ModuleType:
    """Import torchvision, tolerating a build whose compiled ops do not match this torch.

    The model definitions are plain PyTorch; only detection ops (nms, roi_align) live in the
    compiled extension. When that extension cannot load (a CUDA torchvision wheel beside a CPU
    torch), importing torchvision fails while registering those ops; we skip that registration.
    """
    try:
        import torchvision

        return torchvision
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("_meta_registrations")
    warnings.warn(
        "torchvision's compiled ops do not match this torch build; its models still work",
        RuntimeWarning,
        stacklevel=2,
    )
    import torchvision

    return torchvision


def _torchvision_backbone(name: str) -> Callable[[ModelConfig], nn.Module]:
    def build(config: ModelConfig) -> nn.Module:
        tv = import_torchvision()
        kwargs = {"weights": None}
        if name == "inception_v3":
            kwargs.update(aux_logits=False, init_weights=False)
        net = getattr(tv.models, name)(**kwargs)
        head_attr = "classifier" if hasattr(net, "classifier") else "fc"
        head = getattr(net, head_attr)
        if isinstance(head, nn.Linear):
            in_features = head.in_features
            setattr(net, head_attr, nn.Identity())
            dropped = f"{head_attr}."
        else:
            # A Sequential ending in the ImageNet Linear. Only that Linear goes: a hidden layer
            # before it (mobilenet_v3's 960 -> 1280) is part of f(I), and its dropout is
            # replaced by ModelConfig.dropout before the classifier. Indices stay, so the
            # hidden layer's weights keep their torchvision names.
            last = len(head) - 1
            in_features = head[last].in_features
            for i, layer in enumerate(head):
                if i == last or isinstance(layer, nn.Dropout):
                    head[i] = nn.Identity()
            dropped = f"{head_attr}.{last}."
        net.out_dim = in_features
        # Weights of a torchvision state dict that this backbone does not have: the ImageNet
        # head, and inception_v3's auxiliary classifier (a training aid, built without here).
        net.dropped_weights = (dropped, "AuxLogits.") if name == "inception_v3" else (dropped,)
        return net

    return build


BACKBONES: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "small_cnn": lambda c: SmallCNN(c.input.channels, c.width, c.feature_dim),
    **{
        name: _torchvision_backbone(name)
        for name in (
            "resnet18",
            "resnet50",
            "inception_v3",
            "efficientnet_b0",
            "mobilenet_v3_large",
        )
    },
}


def default_input_spec(backbone: str) -> InputSpec:
    """The input contract a backbone expects by default (ImageNet's for torchvision ones)."""
    if backbone == "small_cnn":
        return InputSpec()
    if backbone == "inception_v3":
        # torchvision's Inception-v3 weights (ported from TensorFlow) expect pixels scaled to
        # [-1, 1]; torchvision builds that model with transform_input=True, which maps
        # ImageNet-normalised input to exactly (x - 0.5) / 0.5. This backbone is built without
        # the transform, so its input contract says (x - 0.5) / 0.5 directly.
        return InputSpec(299, 299, 3, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    return InputSpec(224, 224, 3, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def create_backbone(config: ModelConfig, weights: Path | None = None) -> nn.Module:
    """Build the backbone named in ``config``; load a local state dict when ``weights`` is given.

    Raises ValueError for an unknown name or a weights file that does not fit.
    """
    if config.backbone not in BACKBONES:
        raise ValueError(
            f"unknown backbone {config.backbone!r}; choose one of {', '.join(sorted(BACKBONES))}"
        )
    net = BACKBONES[config.backbone](config)
    if weights is not None:
        load_backbone_weights(net, weights, config.backbone)
    return net


def load_backbone_weights(net: nn.Module, path: Path, name: str = "this backbone") -> None:
    """Load a state dict from a local file into ``net``, all of it or nothing.

    The file may hold weights ``net`` does not have (``net.dropped_weights``: the original
    classification head, inception_v3's auxiliary classifier); any other key it lacks or adds,
    or a tensor of another shape, is a ValueError that names them.
    """
    if not path.is_file():
        raise ValueError(f"backbone weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise ValueError(f"cannot read backbone weights {path}: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"backbone weights {path}: not a state dict (parameter name -> tensor)")
    state = {
        k: v for k, v in state.items() if not k.startswith(getattr(net, "dropped_weights", ()))
    }
    own = net.state_dict()
    # Files saved before BatchNorm counted its batches lack num_batches_tracked; torch fills it.
    missing = [k for k in own if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(v.shape)} instead of {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    problems = [
        f"{len(keys)} {what}: {_names(keys)}"
        for what, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("tensors of another shape", shapes),
        )
        if keys
    ]
    if problems:
        raise ValueError(f"backbone weights {path} do not fit {name}: {'; '.join(problems)}")
    net.load_state_dict(state)


def _names(keys: list[str], shown: int = 10) -> str:
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more
