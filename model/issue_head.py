"""The label-issue score: per (image, label), the probability that a listed label is wrong and
that an unlisted one is missing. Part of the exported graph (its ``issue`` output).

    head = IssueHead(num_classes, "bce")
    head.set_hierarchy(parents, children)      # column lists, from model.hierarchy
    issue = head(noisy, cleaner_raw, logits)   # (N, d) in [0, 1]

P(present) = sigmoid(w[g, k] . x + b[g, k]) for label k of group g (unlisted: y = 0, listed:
y > 0), where x holds FEATURES: the label's own evidence (logit(y), the cleaner's raw output,
the classifier's logit) and its relatives' in the class hierarchy (the lowest of its parents',
the highest of its children's: a child on the image implies its parents). ``w`` and ``b`` are
per class: training.issue_fit fits a pooled regression per group plus per-class terms shrunk
towards it, on human-verified images the network did not train on. issue = 1 - P(present) for a
listed label (computed as sigmoid(-z): no rounding to 0), P(present) for an unlisted one.

Unfitted, P(present) follows the cleaner: about c for ``bce`` (sigmoid(raw)), sigmoid(8 (raw -
0.5)) for ``l1`` (c's order without the clip's ties), plus TIEBREAK times the classifier's
logit, which orders labels the cleaner scores alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

EPS = 1e-4  # the default label floor: labels are clamped to [EPS, 1 - EPS] before a logit
FEATURES = (
    "logit(y)",
    "cleaner raw",
    "classifier logit",
    "parents: lowest logit(y)",
    "parents: lowest cleaner raw",
    "parents: lowest classifier logit",
    "children: highest logit(y)",
    "children: highest cleaner raw",
    "children: highest classifier logit",
    "has a parent",
    "has a child",
)
OWN = 3  # FEATURES[:OWN] are the label's own evidence
GROUPS = ("unlisted", "listed")  # first axis of IssueHead.weight and .bias
_FAR = 1e4  # pads a class's relatives: never the lowest (parents) or highest (children)


def logit(p: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    p = torch.clamp(p, eps, 1.0 - eps)
    return torch.log(p) - torch.log1p(-p)


def _padded(columns: Sequence[Sequence[int]], d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class its relatives' columns as a (d, P) index and a (d, P) 0/1 mask, P >= 1."""
    width = max([len(c) for c in columns] + [1])
    index = torch.zeros(d, width, dtype=torch.long)
    mask = torch.zeros(d, width)
    for k, cols in enumerate(columns):
        index[k, : len(cols)] = torch.as_tensor(list(cols), dtype=torch.long)
        mask[k, : len(cols)] = 1.0
    return index, mask


class IssueHead(nn.Module):
    """See the module docstring. Buffers: ``weight`` (2, d, F), ``bias`` (2, d), the hierarchy's
    ``parent_index`` / ``parent_mask`` and ``child_index`` / ``child_mask`` ((d, P) each)."""

    TIEBREAK = 1e-3

    def __init__(self, num_classes: int, cleaner_loss: str = "l1", eps: float = EPS) -> None:
        super().__init__()
        self.eps = eps
        d, f = num_classes, len(FEATURES)
        scale, shift = (1.0, 0.0) if cleaner_loss == "bce" else (8.0, -4.0)
        weight = torch.zeros(2, d, f)
        weight[:, :, 1], weight[:, :, 2] = scale, self.TIEBREAK
        self.register_buffer("weight", weight)
        self.register_buffer("bias", torch.full((2, d), shift))
        none = [[] for _ in range(d)]
        for name, (index, mask) in (("parent", _padded(none, d)), ("child", _padded(none, d))):
            self.register_buffer(f"{name}_index", index)
            self.register_buffer(f"{name}_mask", mask)

    def set_hierarchy(
        self, parents: Sequence[Sequence[int]], children: Sequence[Sequence[int]]
    ) -> None:
        """Each class's parent and child columns (empty lists without a hierarchy)."""
        d = self.weight.shape[1]
        device = self.weight.device
        for name, columns in (("parent", parents), ("child", children)):
            index, mask = _padded(columns, d)
            setattr(self, f"{name}_index", index.to(device))
            setattr(self, f"{name}_mask", mask.to(device))

    def relatives(self) -> tuple[list[list[int]], list[list[int]]]:
        """(parents, children): each class's columns, as ``set_hierarchy`` takes them."""
        found = []
        for name in ("parent", "child"):
            index, mask = getattr(self, f"{name}_index"), getattr(self, f"{name}_mask")
            found.append(
                [
                    [int(i) for i, m in zip(idx, msk, strict=True) if m]
                    for idx, msk in zip(index.tolist(), mask.tolist(), strict=True)
                ]
            )
        return found[0], found[1]

    def _relatives(self, values: torch.Tensor, name: str, lowest: bool) -> torch.Tensor:
        index, mask = getattr(self, f"{name}_index"), getattr(self, f"{name}_mask")
        gathered = values[:, index]  # (N, d, P)
        pad = (1.0 - mask) * (_FAR if lowest else -_FAR)
        picked = (gathered + pad).amin(-1) if lowest else (gathered + pad).amax(-1)
        return picked * mask.amax(-1)  # 0 for a class without such relatives

    def inputs(
        self, noisy: torch.Tensor, cleaner_raw: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor:
        """(N, d, F) float32: FEATURES of every pair, what the regressions read."""
        own = [logit(noisy.float(), self.eps), cleaner_raw.float(), logits.float()]
        parents = [self._relatives(v, "parent", lowest=True) for v in own]
        children = [self._relatives(v, "child", lowest=False) for v in own]
        n = noisy.shape[0]
        flags = [
            self.parent_mask.amax(-1).expand(n, -1),
            self.child_mask.amax(-1).expand(n, -1),
        ]
        return torch.stack(own + parents + children + flags, dim=-1)

    def forward(
        self, noisy: torch.Tensor, cleaner_raw: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor:
        x = self.inputs(noisy, cleaner_raw, logits)
        z_unlisted = (x * self.weight[0]).sum(-1) + self.bias[0]
        z_listed = (x * self.weight[1]).sum(-1) + self.bias[1]
        # sigmoid(-z) rather than 1 - sigmoid(z): no rounding to 0 for confidently right labels
        return torch.sigmoid(torch.where(noisy > 0, -z_listed, z_unlisted))

    def _load_from_state_dict(  # noqa: PLR0913 - torch's signature
        self, state_dict: dict[str, Any], prefix: str, local_metadata: Any, strict: bool,
        missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str],
    ) -> None:  # fmt: skip
        """The hierarchy buffers take the stored shapes (P varies with the hierarchy). A head of
        an older layout (weights of another shape) is left out: the head keeps its default and
        its keys count as missing, as for a checkpoint without a head."""
        weight = state_dict.get(prefix + "weight")
        if weight is not None and tuple(weight.shape) != tuple(self.weight.shape):
            for name, _ in self.named_buffers(recurse=False):
                if state_dict.pop(prefix + name, None) is not None:
                    missing_keys.append(prefix + name)
            return
        for name in ("parent_index", "parent_mask", "child_index", "child_mask"):
            stored = state_dict.get(prefix + name)
            if stored is not None and stored.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(stored, device=self.weight.device))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
