"""The joint network of Veit et al. (CVPR 2017): shared features, a label cleaner, a classifier,
and a calibrated label-issue score on top.

f = backbone(image)                                   # (N, F)
c = clip(y + g(y, f), 0, 1)                           # cleaner g, residual on noisy labels y
  or sigmoid(logit(y) + g(y, f))                      # ... with cleaner_loss "bce"
scores = sigmoid(h(f))                                # classifier h, linear over d classes
issue = IssueHead(y, cleaner's raw output, h(f))      # P(listed label wrong / unlisted missing)
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .backbones import create_backbone
from .config import ModelConfig

CLEANER_LOSSES = ("bce", "l1")
EPS = 1e-4  # labels and probabilities are clamped to [EPS, 1 - EPS] before a logit


def _check_loss(loss: str) -> None:
    if loss not in CLEANER_LOSSES:
        raise ValueError(f"cleaner_loss must be one of {', '.join(CLEANER_LOSSES)}, not {loss!r}")


def logit(p: torch.Tensor) -> torch.Tensor:
    p = torch.clamp(p, EPS, 1.0 - EPS)
    return torch.log(p) - torch.log1p(-p)


class LabelCleaner(nn.Module):
    """g: noisy labels (N, d) and features (N, F) -> cleaned labels (N, d) in [0, 1].

    Each input is projected to a small embedding, the two are concatenated and passed through a
    hidden layer, then projected back to d classes and added to y: to y itself (``l1``, the
    paper's: c = clip(y + g, 0, 1)), or to logit(y) (``bce``: c = sigmoid(logit(y) + g), whose
    logits a binary cross-entropy trains without the clip's flat regions and ties). The last
    layer starts at zero, so an untrained cleaner returns y unchanged (``bce``: y clamped to
    [EPS, 1 - EPS]).
    """

    def __init__(self, num_classes: int, feature_dim: int, embed_dim: int, loss: str = "l1"):
        super().__init__()
        _check_loss(loss)
        self.loss = loss
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
        return (logit(noisy) if self.loss == "bce" else noisy) + residual

    def squash(self, raw: torch.Tensor) -> torch.Tensor:
        """``raw`` -> cleaned labels c in [0, 1]."""
        return torch.sigmoid(raw) if self.loss == "bce" else torch.clamp(raw, 0.0, 1.0)

    def forward(self, noisy: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.squash(self.raw(noisy, features))


ISSUE_FEATURES = ("logit(y)", "cleaner raw", "classifier logit")


class IssueHead(nn.Module):
    """The label-issue score: per (image, label), the probability that the label is wrong when
    listed and missing when not.

    P(present) = sigmoid(w . [logit(y), cleaner raw, classifier logit] + b), with one (w, b) for
    listed labels (y > 0) and one for unlisted ones, fitted by logistic regression on held-out
    human-verified images (training.issue_fit); issue = 1 - P(present) for a listed label,
    P(present) for an unlisted one. Its inputs are unbounded (no clip, no saturated sigmoid), so
    it ranks pairs without the ties of c. Unfitted, P(present) follows the cleaner: about c
    for ``bce`` (sigmoid(raw)), sigmoid(8 (raw - 0.5)) for ``l1`` (c's order without the
    clip's ties), plus TIEBREAK times the classifier's logit, which orders labels the cleaner
    scores alike (classes it never saw verified keep identical rows in g).
    """

    TIEBREAK = 1e-3

    def __init__(self, cleaner_loss: str = "l1") -> None:
        super().__init__()
        scale, shift = (1.0, 0.0) if cleaner_loss == "bce" else (8.0, -4.0)
        row = [0.0, scale, self.TIEBREAK]
        weight = torch.tensor([row, row])  # rows: unlisted, listed
        self.register_buffer("weight", weight)
        self.register_buffer("bias", torch.tensor([shift, shift]))

    @staticmethod
    def inputs(
        noisy: torch.Tensor, cleaner_raw: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor:
        """(N, d, 3) float32: ISSUE_FEATURES of every pair, what the regressions read."""
        return torch.stack([logit(noisy), cleaner_raw.float(), logits.float()], dim=-1)

    def forward(
        self, noisy: torch.Tensor, cleaner_raw: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor:
        x = self.inputs(noisy, cleaner_raw, logits)
        z_unlisted = x @ self.weight[0] + self.bias[0]
        z_listed = x @ self.weight[1] + self.bias[1]
        # sigmoid(-z) rather than 1 - sigmoid(z): no rounding to 0 for confidently right labels
        return torch.sigmoid(torch.where(noisy > 0, -z_listed, z_unlisted))


class LabelCleaningNet(nn.Module):
    """Backbone + cleaner g + classifier h. ``forward`` is the exported (inference) graph."""

    def __init__(self, config: ModelConfig, backbone_weights: Path | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = create_backbone(config, backbone_weights)
        feature_dim = self.backbone.out_dim
        self.cleaner = LabelCleaner(
            config.num_classes, feature_dim, config.cleaner_embed_dim, config.cleaner_loss
        )
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(feature_dim, config.num_classes)
        self.issue_head = IssueHead(config.cleaner_loss)

    def set_cleaner_loss(self, loss: str) -> None:
        """Switch the cleaner's output and loss (before the cleaner is trained: a noisy-phase
        model's cleaner is still the identity, so it starts either way) and reset the issue
        head to that cleaner's default."""
        _check_loss(loss)
        self.cleaner.loss = loss
        self.issue_head = IssueHead(loss).to(self.classifier.weight.device)
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
        """(N, d, 3): what the issue head reads for these images (``IssueHead.inputs``)."""
        features = self.features(image)
        raw, logits = self.cleaner.raw(noisy_labels, features), self.logits(features)
        return IssueHead.inputs(noisy_labels, raw, logits)
