"""The joint network of Veit et al. (CVPR 2017): shared features, a label cleaner, a classifier,
and a calibrated label-issue score on top.

f = backbone(image)                                   # (N, F)
c = clip(y + g(y, f), 0, 1)                           # cleaner g, residual on noisy labels y
  or sigmoid(logit(y) + g(y, f))                      # ... with cleaner_loss "bce"
scores = sigmoid(h(f))                                # classifier h, linear over d classes
issue = IssueHead(y, cleaner raw, h(f), hierarchy)   # P(listed label wrong / unlisted missing)
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .backbones import create_backbone
from .config import ModelConfig
from .issue_head import EPS, FEATURES, IssueHead, logit

__all__ = ["EPS", "FEATURES", "IssueHead", "LabelCleaner", "LabelCleaningNet", "logit"]

CLEANER_LOSSES = ("bce", "l1")


def _check_loss(loss: str) -> None:
    if loss not in CLEANER_LOSSES:
        raise ValueError(f"cleaner_loss must be one of {', '.join(CLEANER_LOSSES)}, not {loss!r}")


class LabelCleaner(nn.Module):
    """g: noisy labels (N, d) and features (N, F) -> cleaned labels (N, d) in [0, 1].

    Each input is projected to a small embedding, the two are concatenated and passed through a
    hidden layer, then projected back to d classes and added to y: to y itself (``l1``, the
    paper's: c = clip(y + g, 0, 1)), or to logit(y) (``bce``: c = sigmoid(logit(y) + g), whose
    logits a binary cross-entropy trains without the clip's flat regions and ties). The last
    layer starts at zero, so an untrained cleaner returns y unchanged (``bce``: y clamped to
    [EPS, 1 - EPS]).
    """

    def __init__(
        self, num_classes: int, feature_dim: int, embed_dim: int, loss: str = "l1",
        eps: float = EPS,
    ) -> None:  # fmt: skip
        super().__init__()
        _check_loss(loss)
        self.loss, self.eps = loss, eps
        self.label_proj = nn.Linear(num_classes, embed_dim)
        self.feature_proj = nn.Linear(feature_dim, embed_dim)
        self.hidden = nn.Linear(2 * embed_dim, 2 * embed_dim)
        self.out = nn.Linear(2 * embed_dim, num_classes)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def raw(self, noisy: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Before the clip (``l1``: y + g) or the sigmoid (``bce``: logit(y) + g): unbounded."""
        joint = torch.cat([self.label_proj(noisy), self.feature_proj(features)], dim=1)
        residual = self.out(torch.relu(self.hidden(joint)))
        return (logit(noisy, self.eps) if self.loss == "bce" else noisy) + residual

    def squash(self, raw: torch.Tensor) -> torch.Tensor:
        """``raw`` -> cleaned labels c in [0, 1]."""
        return torch.sigmoid(raw) if self.loss == "bce" else torch.clamp(raw, 0.0, 1.0)

    def forward(self, noisy: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.squash(self.raw(noisy, features))


class LabelCleaningNet(nn.Module):
    """Backbone + cleaner g + classifier h. ``forward`` is the exported (inference) graph."""

    def __init__(self, config: ModelConfig, backbone_weights: Path | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = create_backbone(config, backbone_weights)
        feature_dim = self.backbone.out_dim
        self.cleaner = LabelCleaner(
            config.num_classes, feature_dim, config.cleaner_embed_dim, config.cleaner_loss,
            config.label_floor,
        )  # fmt: skip
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(feature_dim, config.num_classes)
        self.issue_head = IssueHead(config.num_classes, config.cleaner_loss, config.label_floor)

    def set_cleaner_loss(self, loss: str) -> None:
        """Switch the cleaner's output and loss (before the cleaner is trained: a noisy-phase
        model's cleaner is still the identity, so it starts either way) and reset the issue
        head to that cleaner's default."""
        _check_loss(loss)
        self.cleaner.loss = loss
        head = IssueHead(self.config.num_classes, loss, self.config.label_floor)
        head = head.to(self.classifier.weight.device)
        head.set_hierarchy(*self.issue_head.relatives())
        self.issue_head = head
        self.config.cleaner_loss = loss

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """f(I): (N, C, H, W) -> (N, F)."""
        return self.backbone(image)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """h before the sigmoid: (N, F) -> (N, d)."""
        return self.classifier(self.dropout(features))

    def forward(
        self, image: torch.Tensor, noisy_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, C, H, W) images and (N, d) noisy labels -> (scores, cleaned, issue), all (N, d)."""
        features = self.features(image)
        logits = self.logits(features)
        raw = self.cleaner.raw(noisy_labels, features)
        issue = self.issue_head(noisy_labels, raw, logits)
        return torch.sigmoid(logits), self.cleaner.squash(raw), issue

    def issue_inputs(self, image: torch.Tensor, noisy_labels: torch.Tensor) -> torch.Tensor:
        """(N, d, F): what the issue head reads for these images (``IssueHead.inputs``)."""
        features = self.features(image)
        raw, logits = self.cleaner.raw(noisy_labels, features), self.logits(features)
        return self.issue_head.inputs(noisy_labels, raw, logits)
