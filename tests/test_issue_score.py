"""The label-issue score and the bce cleaner: what the head computes, how it is fitted on held-out
V, that old checkpoints still load, and the bce loss by hand."""

from __future__ import annotations

import math

import pytest
import torch
from labelclean.model.config import ModelConfig
from labelclean.model.network import EPS, IssueHead, LabelCleaningNet, logit
from labelclean.training.batches import Part
from labelclean.training.checkpoint import CheckpointError, rebuild
from labelclean.training.issue_fit import fit_issue_head

from .test_training_rules import _batch, _bce, _fixed_outputs, _stepper

D = 2
CPU = torch.device("cpu")


def _net(loss: str = "l1", seed: int = 0) -> LabelCleaningNet:
    torch.manual_seed(seed)
    return LabelCleaningNet(ModelConfig(num_classes=D, width=4, feature_dim=8, cleaner_loss=loss))


def test_untrained_bce_cleaner_returns_y_and_its_issue_score_follows_c():
    net = _net("bce").eval()
    y = torch.tensor([[0.0, 0.3], [0.9, 1.0]])
    scores, cleaned, issue = net(torch.randn(2, 1, 28, 28), y)
    torch.testing.assert_close(cleaned, y.clamp(EPS, 1 - EPS))
    # unfitted, P(present) is about c: a listed label's issue 1 - c, an unlisted one's c
    # (the classifier's logit only breaks ties, at 1e-3 of its value)
    torch.testing.assert_close(issue, torch.where(y > 0, 1 - cleaned, cleaned), atol=1e-3, rtol=0)
    assert not torch.equal(issue, torch.where(y > 0, 1 - cleaned, cleaned))


def test_issue_head_uses_one_regression_for_listed_and_one_for_unlisted_labels():
    head = IssueHead()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 0.5]]))
        head.bias.copy_(torch.tensor([-1.0, 0.25]))
    noisy = torch.tensor([[0.0, 0.8]])
    raw, logits = torch.tensor([[0.3, -2.0]]), torch.tensor([[1.5, 4.0]])
    got = head(noisy, raw, logits)
    unlisted = torch.sigmoid(torch.tensor(2.0 * 0.3 - 1.0))  # P(present) = P(missing)
    listed = 1 - torch.sigmoid(logit(torch.tensor(0.8)) + 0.5 * 4.0 + 0.25)  # P(wrong)
    torch.testing.assert_close(got, torch.stack([unlisted, listed])[None], atol=1e-6, rtol=0)


def test_issue_scores_of_confident_labels_do_not_round_to_ties():
    """sigmoid(-z), not 1 - sigmoid(z): far-apart confident labels keep distinct scores."""
    head = IssueHead("bce")
    noisy = torch.ones(1, 4)
    raw = torch.tensor([[20.0, 21.0, 22.0, 23.0]])
    issue = head(noisy, raw, torch.zeros(1, 4))
    assert len(set(issue[0].tolist())) == 4 and (issue > 0).all()


def _calibration(n: int, seed: int, missing: int) -> Part:
    """Random images and labels: class 0 is wrong on a quarter of the images that list it
    (and its confidence says the opposite), ``missing`` unlisted labels of class 1 are present,
    everything else is as listed."""
    g = torch.Generator().manual_seed(seed)
    noisy = (torch.rand(n, D, generator=g) > 0.5).float()
    human = noisy.clone()
    flip = torch.randperm(n, generator=g)[: n // 4]
    human[flip, 0] = 0.0  # a quarter of the images: class 0 is wrong where listed
    # an annotator whose confidence is upside down: 0.9 on its wrong labels, 0.4 on right ones
    noisy = noisy * torch.where(human > 0, 0.4, 0.9)
    unlisted = torch.nonzero(noisy[:, 1] == 0).flatten()[:missing]
    human[unlisted, 1] = 1.0
    pixels = torch.randint(0, 256, (n, 28, 28, 1), dtype=torch.uint8, generator=g)
    return Part([str(i) for i in range(n)], pixels, noisy, human, torch.ones(n, D))


def test_fit_learns_from_held_out_labels_and_keeps_the_default_where_it_cannot():
    net = _net("bce")
    part = _calibration(200, 0, missing=0)  # no unlisted label is present: nothing to learn
    default = net.issue_head.weight.clone(), net.issue_head.bias.clone()
    info = fit_issue_head(net, part, CPU)
    assert info["unlisted"]["fitted"] is False and "needs" in info["unlisted"]["why"]
    torch.testing.assert_close(net.issue_head.weight[0], default[0][0])
    assert info["listed"]["fitted"] is True
    assert info["listed"]["pairs"] == int((part.noisy > 0).sum())
    assert net.issue_head.weight[1].tolist() == pytest.approx(info["listed"]["weight"])
    # the default (issue = 1 - c = 1 - y) ranks every wrong label last; the fitted head learnt
    # that a high confidence means wrong here, and ranks them first
    from sklearn.metrics import average_precision_score

    x = part.pixels.permute(0, 3, 1, 2).float() / 255
    listed = part.noisy.numpy() > 0
    wrong = (part.human.numpy() < 0.5)[listed]
    with torch.no_grad():
        fitted = net(x, part.noisy)[2].numpy()[listed]
        net.issue_head.weight.copy_(default[0])
        net.issue_head.bias.copy_(default[1])
        unfitted = net(x, part.noisy)[2].numpy()[listed]
    assert average_precision_score(wrong, unfitted) < 0.5
    assert average_precision_score(wrong, fitted) == pytest.approx(1.0)


def test_fit_needs_both_outcomes_in_a_group():
    net = _net()
    part = _calibration(40, 1, missing=3)  # 3 missing labels: fewer than MIN_PAIRS
    assert fit_issue_head(net, part, CPU)["unlisted"]["fitted"] is False
    part = _calibration(200, 1, missing=30)
    info = fit_issue_head(net, part, CPU)
    assert info["unlisted"]["fitted"] is True and info["unlisted"]["present"] == 30


def test_checkpoints_without_an_issue_head_load_with_the_default():
    net = _net()
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("issue_head.")}
    checkpoint = {"model_config": net.config.to_dict(), "state_dict": state, "classes": []}
    rebuilt, _ = rebuild(checkpoint)
    torch.testing.assert_close(rebuilt.issue_head.weight, IssueHead().weight)
    del state["classifier.bias"]
    with pytest.raises(CheckpointError, match="classifier.bias"):
        rebuild(checkpoint)


def test_old_model_configs_mean_the_l1_cleaner():
    config = _net().config.to_dict()
    del config["cleaner_loss"]
    assert ModelConfig.from_dict(config).cleaner_loss == "l1"
    with pytest.raises(ValueError, match="cleaner_loss"):
        LabelCleaningNet(ModelConfig(num_classes=D, width=4, feature_dim=8, cleaner_loss="l2"))


def test_bce_cleaner_loss_by_hand():
    """1 V image; logits 0; the cleaner adds (0.5, -1) to logit(y): L_clean is BCE on its
    logits over the verified classes only, and the T targets are its sigmoid."""
    net = _net("bce")
    _fixed_outputs(net, [0.0, 0.0], [0.5, -1.0])
    stepper = _stepper(net, "joint")
    t = _batch(1, [[0.5, 0.25]], [[0, 0]], [[0, 0]])
    v = _batch(2, [[0.5, 0.8]], [[1.0, 1.0]], [[1.0, 0.0]])  # class 1 not verified
    z_v = 0.0 + 0.5  # logit(0.5) + 0.5
    c_t = [1 / (1 + math.exp(-(0.0 + 0.5))), 1 / (1 + math.exp(-(math.log(1 / 3) - 1.0)))]
    clean_sum = _bce(1 / (1 + math.exp(-z_v)), 1.0)
    classify_sum = _bce(0.5, c_t[0]) + _bce(0.5, c_t[1]) + _bce(0.5, 1.0)
    expected = 0.1 * clean_sum / 2 + classify_sum / 2
    assert stepper.loss(t, v).item() == pytest.approx(expected, rel=1e-5)
