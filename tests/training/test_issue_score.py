"""The label-issue score and the bce cleaner: what the head computes, how it is fitted on
out-of-sample reads of V (per group, per class, out of fold), that old checkpoints still load,
and the bce loss by hand."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from labelclean.model.bundle import LabelClass
from labelclean.model.config import ModelConfig
from labelclean.model.decision import Decision
from labelclean.model.export import PARITY_ATOL, export_bundle
from labelclean.model.network import EPS, FEATURES, IssueHead, LabelCleaningNet, logit
from labelclean.training.checkpoint import CheckpointError, rebuild
from labelclean.training.crossfit import OutOfFold
from labelclean.training.issue_fit import default_parameters, fit_issue, issue_scores
from sklearn.metrics import average_precision_score

from .test_training_rules import _batch, _bce, _fixed_outputs, _stepper

D = 2


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


def test_issue_head_has_a_regression_per_group_and_class_over_own_and_related_evidence():
    """P(present) = sigmoid(w[g, k] . x + b[g, k]): g listed or unlisted, k the class; x the
    label's own evidence and its parents' (lowest) and children's (highest)."""
    head = IssueHead(3, "bce")
    head.set_hierarchy(parents=[[], [0], [0]], children=[[1, 2], [], []])  # 0 above 1 and 2
    weight = torch.zeros(2, 3, len(FEATURES))
    col = {name: i for i, name in enumerate(FEATURES)}
    weight[0, 0, col["children: highest classifier logit"]] = 2.0  # unlisted parent: children
    weight[1, 1, col["cleaner raw"]] = 1.0  # listed child 1: its cleaner
    weight[1, 2, col["parents: lowest logit(y)"]] = 0.5  # listed child 2: its parent's listing
    weight[1, 2, col["has a parent"]] = 3.0
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(torch.tensor([[-1.0, 0.0, 0.0], [0.0, 0.25, -2.0]]))
    noisy = torch.tensor([[0.0, 0.8, 0.6]])
    raw, logits = torch.tensor([[0.3, -2.0, 1.0]]), torch.tensor([[1.5, 4.0, -3.0]])
    got = head(noisy, raw, logits)
    missing_0 = torch.sigmoid(torch.tensor(2.0 * max(4.0, -3.0) - 1.0))
    wrong_1 = 1 - torch.sigmoid(torch.tensor(-2.0 + 0.25))
    wrong_2 = 1 - torch.sigmoid(0.5 * logit(torch.tensor(0.0)) + 3.0 - 2.0)
    expected = torch.stack([missing_0, wrong_1, wrong_2])[None]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_issue_scores_of_confident_labels_do_not_round_to_ties():
    """sigmoid(-z), not 1 - sigmoid(z): far-apart confident labels keep distinct scores."""
    head = IssueHead(4, "bce")
    noisy = torch.ones(1, 4)
    raw = torch.tensor([[20.0, 21.0, 22.0, 23.0]])
    issue = head(noisy, raw, torch.zeros(1, 4))
    assert len(set(issue[0].tolist())) == 4 and (issue > 0).all()


def _reads(n: int, seed: int, missing: int, d: int = D, folds: int = 5) -> OutOfFold:
    """Out-of-sample reads where a listed label is wrong on a quarter of the images, and its
    cleaner's raw output says the opposite of the truth (high when wrong); ``missing`` unlisted
    labels of class 1 are present, with a high classifier logit."""
    rng = np.random.default_rng(seed)
    noisy = (rng.random((n, d)) > 0.5).astype(np.float32)
    human = noisy.copy()
    wrong = (rng.random((n, d)) < 0.25) & (noisy > 0)
    human[wrong] = 0.0
    unlisted = np.flatnonzero(noisy[:, 1] == 0)[:missing]
    human[unlisted, 1] = 1.0
    inputs = rng.normal(size=(n, d, len(FEATURES))).astype(np.float32)
    inputs[..., 0] = np.where(noisy > 0, 2.0, -9.2)
    inputs[..., 1] += np.where(wrong, 3.0, 0.0)  # upside down: high raw = wrong
    inputs[..., 2] += np.where((human > 0) & (noisy == 0), 4.0, 0.0)
    inputs[..., 3:] = 0.0  # no hierarchy
    fold = np.arange(n) % folds
    return OutOfFold([str(i) for i in range(n)], inputs, noisy, human, np.ones((n, d), bool),
                     fold, "bce")  # fmt: skip


def test_fit_learns_from_out_of_sample_reads_and_keeps_the_default_where_it_cannot():
    oof = _reads(200, 0, missing=0)  # no unlisted label is present: nothing to learn
    fit = fit_issue(oof)
    default_w, default_b = default_parameters(D, "bce")
    assert fit.info["unlisted"]["fitted"] is False and "needs" in fit.info["unlisted"]["why"]
    np.testing.assert_array_equal(fit.weight[0], default_w[0])
    np.testing.assert_array_equal(fit.bias[0], default_b[0])
    assert fit.info["listed"]["fitted"] is True
    assert fit.info["listed"]["pairs"] == int((oof.noisy > 0).sum())
    listed = oof.noisy > 0
    wrong = (oof.human < 0.5)[listed]
    unfitted = issue_scores(oof.inputs, oof.noisy, default_w, default_b)[listed]
    fitted = issue_scores(oof.inputs, oof.noisy, fit.weight, fit.bias)[listed]
    # the default (issue = 1 - c) ranks the wrong labels last; the fit learnt the opposite
    assert average_precision_score(wrong, unfitted) < 0.5
    assert average_precision_score(wrong, fitted) > 0.95
    assert average_precision_score(wrong, fit.oof_issue[listed]) > 0.95


def test_fit_needs_both_outcomes_in_a_group():
    assert fit_issue(_reads(40, 1, missing=3)).info["unlisted"]["fitted"] is False
    info = fit_issue(_reads(200, 1, missing=30)).info
    assert info["unlisted"]["fitted"] is True and info["unlisted"]["present"] == 30


def test_out_of_fold_scores_never_see_their_own_labels():
    """With a fixed shrinkage, a fold's scores depend only on the other folds' human labels."""
    oof = _reads(200, 2, missing=20)
    before = fit_issue(oof, lambdas=(1e-2,)).oof_issue
    changed = copy.deepcopy(oof)
    held = oof.fold == 3
    changed.human[held] = 1.0 - changed.human[held]
    after = fit_issue(changed, lambdas=(1e-2,)).oof_issue
    np.testing.assert_array_equal(after[held], before[held])
    assert not np.array_equal(after[~held], before[~held])


def test_per_class_terms_learn_what_differs_by_class_and_shrink_where_pairs_are_few():
    """Class 0's wrong labels have a high cleaner output, class 1's a low one: one pooled
    regression cannot rank both, the per-class terms can; class 2 with a handful of pairs stays
    near the pooled fit."""
    oof = _reads(600, 3, missing=0, d=3)
    wrong = (oof.noisy > 0) & (oof.human < 0.5)
    oof.inputs[..., 1] = np.where(wrong, 1.0, -1.0) * np.array([1.0, -1.0, 1.0])
    oof.inputs[..., 1] += np.random.default_rng(0).normal(scale=0.3, size=oof.inputs[..., 1].shape)
    oof.known[20:, 2] = False  # class 2: 20 images verified
    listed = (oof.noisy > 0) & oof.known
    pooled = fit_issue(oof, lambdas=(math.inf,))
    per_class = fit_issue(oof, lambdas=(1e-3,))
    for k in (0, 1):
        truth, rows = wrong[listed[:, k], k], listed[:, k]
        assert average_precision_score(truth, per_class.oof_issue[rows, k]) > 0.95
    ap_pooled = [average_precision_score(wrong[listed[:, k], k], pooled.oof_issue[listed[:, k], k])
                 for k in (0, 1)]  # fmt: skip
    assert min(ap_pooled) < 0.6
    w = per_class.weight[1]  # listed group, (d, F)
    spread = np.abs(w[2] - w[:2].mean(0)).sum()
    assert spread < 0.5 * np.abs(w[0] - w[1]).sum()


def test_the_fitted_head_in_the_network_computes_what_the_fit_predicts():
    torch.manual_seed(0)
    net = LabelCleaningNet(ModelConfig(num_classes=D, width=4, feature_dim=8, cleaner_loss="bce"))
    net.eval()
    x, noisy = torch.randn(6, 1, 28, 28), (torch.rand(6, D) > 0.5).float()
    fit = fit_issue(_reads(200, 4, missing=20))
    fit.apply(net.issue_head)
    with torch.no_grad():
        inputs = net.issue_inputs(x, noisy).numpy()
        issue = net(x, noisy)[2].numpy()
    expected = issue_scores(inputs, noisy.numpy(), fit.weight, fit.bias)
    np.testing.assert_allclose(issue, expected, atol=1e-6)


def test_on_a_tiny_v_nearly_constant_features_get_tame_weights_and_the_head_exports(tmp_path):
    """40 verified images read by a barely trained bce cleaner: an unlisted label's logit(y) is
    logit(EPS) on every pair and its cleaner output moves by hundredths (here the sign of a
    missing label). Standardised by a spread of float32 rounding, the constant feature once got
    a weight of 8e4 against a bias of 7.5e5, and ONNX Runtime then differed from PyTorch by 5e-4
    (on the demo data's retrain, by 1e-2). Now it gets no weight, and the nearly constant one a
    weight whose product with the feature stays well within float32's precision."""
    d, n = 3, 40
    torch.manual_seed(1)
    net = LabelCleaningNet(ModelConfig(num_classes=d, width=4, feature_dim=8, cleaner_loss="bce"))
    torch.nn.init.normal_(net.cleaner.out.weight, std=0.03)
    net.eval()
    rng = np.random.default_rng(1)
    images = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    noisy = np.where(rng.random((n, d)) < 0.5, 0.0, rng.uniform(0.05, 1, (n, d)))
    noisy = noisy.astype(np.float32)
    with torch.no_grad():
        inputs = net.issue_inputs(torch.from_numpy(images), torch.from_numpy(noisy)).numpy()
    moved = inputs[..., 1] - inputs[..., 0]  # the cleaner's change to logit(y)
    moved = (moved - moved.mean()) / moved.std()
    unlisted = noisy == 0
    wrong = rng.random((n, d)) < 0.25
    present = np.where(unlisted, moved + rng.normal(size=(n, d)) > 1.2, ~wrong)
    oof = OutOfFold([str(i) for i in range(n)], inputs, noisy, present.astype(np.float32),
                    np.ones((n, d), bool), np.arange(n) % 2, "bce")  # fmt: skip
    assert np.ptp(inputs[..., 0][unlisted]) == 0 and inputs[..., 1][unlisted].std() < 0.02
    fit = fit_issue(oof)
    assert fit.info["unlisted"]["fitted"] and fit.info["listed"]["fitted"]
    assert np.all(fit.weight[0, :, 0] == 0)  # logit(y) of an unlisted label: constant
    largest = max(np.abs(inputs * fit.weight[g]).sum(-1).max() for g in (0, 1))
    assert largest < 1e4 and np.abs(fit.bias).max() < 1e4  # were 7.5e5 before the fix
    fit.apply(net.issue_head)
    classes = [LabelClass(f"/m/{k}", f"class {k}") for k in range(d)]
    bundle = export_bundle(
        net, tmp_path / "b", classes, sample=(images, noisy), thresholds_cleaned=[0.5] * d,
        thresholds_scores=[0.5] * d, decision=Decision.paper([0.5] * d), mode="joint", metrics={},
    )  # fmt: skip
    assert bundle.metrics["onnx_parity_max_abs_diff"] <= PARITY_ATOL / 10


def test_checkpoints_without_an_issue_head_or_with_an_older_one_load_with_the_default():
    net = _net()
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("issue_head.")}
    checkpoint = {"model_config": net.config.to_dict(), "state_dict": state, "classes": []}
    rebuilt, _ = rebuild(checkpoint)
    torch.testing.assert_close(rebuilt.issue_head.weight, IssueHead(D).weight)
    state["issue_head.weight"] = torch.ones(2, 3)  # the three-input head of bundle format 2
    state["issue_head.bias"] = torch.ones(2)
    rebuilt, _ = rebuild(checkpoint)
    torch.testing.assert_close(rebuilt.issue_head.weight, IssueHead(D).weight)
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
