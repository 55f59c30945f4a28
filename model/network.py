"""The joint network of Veit et al. (CVPR 2017): shared features, a label cleaner, a classifier.

f = backbone(image)                                   # (N, F)
c = clip(y + g(y, f), 0, 1)                           # cleaner g, residual on noisy labels y
scores = sigmoid(h(f))                                # classifier h, linear over d classes
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .backbones import create_backbone
from .config import ModelConfig


class LabelCleaner(nn.Module):
    """g: noisy labels (N, d) and features (N, F) -> cleaned labels (N, d) in [0, 1].

    Each input is projected to a small embedding, the two are concatenated and passed through a
    hidden layer, then projected back to d classes and added to y. The last layer starts at zero,
    so an untrained cleaner returns y unchanged.
    """

    def __init__(self, num_classes: int, feature_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.label_proj = nn.Linear(num_classes, embed_dim)
        self.feature_proj = nn.Linear(feature_dim, embed_dim)
        self.hidden = nn.Linear(2 * embed_dim, 2 * embed_dim)
        self.out = nn.Linear(2 * embed_dim, num_classes)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, noisy: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        joint = torch.cat([self.label_proj(noisy), self.feature_proj(features)], dim=1)
        residual = self.out(torch.relu(self.hidden(joint)))
        return torch.clamp(noisy + residual, 0.0, 1.0)


class LabelCleaningNet(nn.Module):
    """Backbone + cleaner g + classifier h. ``forward`` is the exported (inference) graph."""

    def __init__(self, config: ModelConfig, backbone_weights: Path | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = create_backbone(config, backbone_weights)
        feature_dim = self.backbone.out_dim
        self.cleaner = LabelCleaner(config.num_classes, feature_dim, config.cleaner_embed_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(feature_dim, config.num_classes)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """f(I): (N, C, H, W) -> (N, F)."""
        return self.backbone(image)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """h before the sigmoid: (N, F) -> (N, d)."""
        return self.classifier(self.dropout(features))

    def forward(
        self, image: torch.Tensor, noisy_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, H, W) images and (N, d) noisy labels -> (scores, cleaned), both (N, d)."""
        features = self.features(image)
        scores = torch.sigmoid(self.logits(features))
        cleaned = self.cleaner(noisy_labels, features)
        return scores, cleaned
