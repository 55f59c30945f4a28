"""The loss rules of Veit et al. on tiny real networks: what each term reads, what it is divided
by, what it leaves out, and what the cleaner-only phase leaves untouched."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from labelclean.model.config import ModelConfig
from labelclean.model.network import LabelCleaningNet
from labelclean.training.batches import Batch, Part, TrainingData
from labelclean.training.loop import Stepper, TrainConfig, phases_for, run_phase

D = 2  # classes
CPU = torch.device("cpu")


def _net(seed: int = 0) -> LabelCleaningNet:
    torch.manual_seed(seed)
    # the paper's cleaner, c = clip(y + g, 0, 1), whose rules these tests check by hand
    return LabelCleaningNet(ModelConfig(num_classes=D, width=4, feature_dim=8, cleaner_loss="l1"))


def _part(n: int, seed: int, human: bool) -> Part:
    g = torch.Generator().manual_seed(seed)
    known = (torch.rand(n, D, generator=g) > 0.3).float() if human else torch.zeros(n, D)
    return Part(
        [f"{seed}-{i}" for i in range(n)],
        torch.randint(0, 256, (n, 28, 28, 1), dtype=torch.uint8, generator=g),
        torch.rand(n, D, generator=g),
        (torch.rand(n, D, generator=g) > 0.5).float() * known,
        known,
    )


def _data(n_t: int = 24, n_v: int = 16) -> TrainingData:
    v = _part(n_v, 2, human=True)
    return TrainingData([], _part(n_t, 1, human=False), v, v, _part(8, 3, human=True))


def _stepper(net: LabelCleaningNet, phase: str, **cfg) -> Stepper:
    generator = torch.Generator().manual_seed(0)
    return Stepper(net, _data(), TrainConfig(device="cpu", **cfg), phase, CPU, generator)


def _batch(pixels: int, noisy, human, known) -> Batch:
    n = len(noisy)
    pix = torch.randint(0, 256, (n, 28, 28, 1), dtype=torch.uint8, generator=_gen(pixels))
    return Batch(pix, *(torch.tensor(x, dtype=torch.float32) for x in (noisy, human, known)))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _fixed_outputs(net: LabelCleaningNet, logits, residual) -> None:
    """h(f) = ``logits`` and g(y, f) = ``residual`` for every image, whatever its pixels."""
    with torch.no_grad():
        net.classifier.weight.zero_()
        net.classifier.bias.copy_(torch.tensor(logits))
        net.cleaner.out.weight.zero_()
        net.cleaner.out.bias.copy_(torch.tensor(residual))


def _bce(p: float, target: float) -> float:
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


@pytest.mark.parametrize("reduction", ["batch", "per-set"])
def test_joint_loss_by_hand(reduction):
    """2 T images, 1 V image; logits give p = (0.5, 0.75), the cleaner adds (0.25, -0.5)."""
    net = _net()
    _fixed_outputs(net, [0.0, math.log(3.0)], [0.25, -0.5])
    stepper = _stepper(net, "joint", loss_reduction=reduction)
    t = _batch(1, [[1.0, 0.5], [0.0, 1.0]], [[0, 0], [0, 0]], [[0, 0], [0, 0]])
    v = _batch(2, [[0.0, 1.0]], [[1.0, 0.0]], [[1.0, 1.0]])
    # c = clip(y + r): T -> (1, 0), (0.25, 0.5); V -> (0.25, 0.5) against v = (1, 0)
    clean_sum = abs(0.25 - 1.0) + abs(0.5 - 0.0)
    classify_sum = (
        _bce(0.5, 1.0) + _bce(0.75, 0.0)  # T image 1 against c
        + _bce(0.5, 0.25) + _bce(0.75, 0.5)  # T image 2 against c
        + _bce(0.5, 1.0) + _bce(0.75, 0.0)  # V image against its human labels
    )  # fmt: skip
    clean_divisor = 3 if reduction == "batch" else 1
    expected = 0.1 * clean_sum / clean_divisor + 1.0 * classify_sum / 3
    assert stepper.loss(t, v).item() == pytest.approx(expected, rel=1e-6)


def test_batch_reduction_weighs_clean_loss_per_image_of_the_batch():
    """At 9:1 per-set gives L_clean ten times the weight of batch; L_classify is the same."""
    losses = {}
    for reduction in ("batch", "per-set"):
        net = _net()
        _fixed_outputs(net, [0.0, 0.0], [0.25, -0.5])
        stepper = _stepper(net, "joint", loss_reduction=reduction, classify_weight=0.0)
        t = _batch(1, [[0.5, 0.5]] * 9, [[0, 0]] * 9, [[0, 0]] * 9)
        v = _batch(2, [[0.0, 1.0]], [[1.0, 0.0]], [[1.0, 1.0]])
        losses[reduction] = stepper.loss(t, v).item()
    assert losses["batch"] == pytest.approx(0.1 * 1.25 / 10, rel=1e-6)
    assert losses["per-set"] == pytest.approx(10 * losses["batch"], rel=1e-6)


def test_loss_reduction_must_be_known():
    with pytest.raises(ValueError, match="loss_reduction"):
        TrainConfig(loss_reduction="mean")


@pytest.mark.parametrize("phase", ["clean", "mixed", "joint"])
def test_classifier_learns_human_labels_of_verified_images(phase):
    """d loss / d bias of h is sum(p - target) / n: for V rows the target is v, never y."""
    net = _net()
    _fixed_outputs(net, [0.0, math.log(3.0)], [0.0, 0.0])  # c = y
    stepper = _stepper(net, phase, clean_weight=0.0)
    t = _batch(1, [[0.2, 0.9], [0.6, 0.1]], [[0, 0], [0, 0]], [[0, 0], [0, 0]])
    t = t if phase != "clean" else None
    v = _batch(2, [[0.0, 1.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]])
    stepper.loss(t, v).backward()
    p = torch.tensor([0.5, 0.75])
    grad = (p - v.human).sum(0)
    if t is not None:
        grad = grad + (p - t.noisy).sum(0)  # T learns y (mixed) or c = y (joint)
    n = len(v.noisy) + (len(t.noisy) if t is not None else 0)
    torch.testing.assert_close(net.classifier.bias.grad, grad / n)


def _capture_outputs(module: torch.nn.Module) -> list[torch.Tensor]:
    outputs: list[torch.Tensor] = []

    def hook(_module, _inputs, out):
        if out.requires_grad:
            out.retain_grad()
            outputs.append(out)

    module.register_forward_hook(hook)
    return outputs


@pytest.mark.parametrize("phase", ["clean", "mixed", "cleaner", "joint"])
def test_unverified_classes_are_left_out_of_the_v_terms(phase):
    """Changing v where known = 0 changes neither the loss nor any gradient, and the loss sends
    no gradient to V's logits or cleaned labels there."""
    known = [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
    results = []
    for unknown_value in (0.0, 1.0):
        net = _net()
        torch.nn.init.normal_(net.cleaner.out.weight, std=0.5)
        stepper = _stepper(net, phase)
        uses_t = phase in ("mixed", "joint")
        t = _batch(1, [[0.2, 0.9], [0.6, 0.1]], [[0, 0]] * 2, [[0, 0]] * 2) if uses_t else None
        human = [[1.0, unknown_value], [unknown_value, 0.0], [unknown_value] * 2]
        v = _batch(2, [[0.3, 0.6], [0.8, 0.1], [0.5, 0.5]], human, known)
        logits, cleaned = _capture_outputs(net.classifier), _capture_outputs(net.cleaner.out)
        loss = stepper.loss(t, v)
        loss.backward()
        grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
        results.append((loss.item(), grads))
        unknown = torch.tensor(known) == 0
        n_t = len(t.pixels) if t is not None else 0
        for out in logits + cleaned:
            v_rows = out.grad[-len(v.pixels) :]
            assert torch.count_nonzero(v_rows[unknown]) == 0
            assert torch.count_nonzero(v_rows[~unknown]) > 0
        if logits and t is not None:
            assert torch.count_nonzero(logits[0].grad[:n_t]) == n_t * D  # T: every class
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_a == loss_b
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name


def test_pretrain_trains_the_cleaner_alone_before_the_joint_phase():
    assert [p for p, _ in phases_for(TrainConfig(mode="pretrain"), from_noisy=True)] == [
        "cleaner",
        "joint",
    ]
    net = _net()
    before = copy.deepcopy(net.state_dict())
    cfg = TrainConfig(mode="pretrain", batch_size=8, cleaner_lr=1e-2, device="cpu")
    run_phase(net, _data(), cfg, "cleaner", 2, CPU, progress=False)
    after = net.state_dict()
    backbone = [k for k in before if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone)  # batch-norm statistics are checked too
    for key in backbone + ["classifier.weight", "classifier.bias"]:
        assert torch.equal(before[key], after[key]), f"{key} changed in the cleaner phase"
    for key in ("cleaner.out.weight", "cleaner.out.bias", "cleaner.hidden.weight"):
        assert not torch.equal(before[key], after[key]), f"{key} did not train"


def test_an_epoch_of_batches_is_one_pass_over_t_at_nine_to_one():
    data = _data(n_t=72, n_v=16)
    cfg = TrainConfig(batch_size=16, device="cpu")  # V per batch: 1, 2, 1, 2, 2
    stepper = Stepper(_net(), data, cfg, "joint", CPU, torch.Generator().manual_seed(0))
    assert stepper.steps == 5
    for epoch in range(2):  # and again in the next epoch
        stepper.start_epoch(epoch)
        batches = [stepper.batch() for _ in range(stepper.steps)]
        assert [len(v.pixels) for _, v in batches] == [1, 2, 1, 2, 2]
        t_pixels = torch.cat([t.pixels for t, _ in batches])
        assert len(t_pixels) == 72 == 9 * sum(len(v.pixels) for _, v in batches)
        assert sorted(map(bytes, t_pixels.numpy())) == sorted(
            map(bytes, data.noisy_train.pixels.numpy())
        )


@pytest.mark.parametrize("reduction", ["batch", "per-set"])
def test_small_batches_without_v_images_still_train(reduction):
    """With 4 images a batch the first holds no V image (0.4 rounds down): the loss stays finite."""
    cfg = TrainConfig(batch_size=4, loss_reduction=reduction, device="cpu")
    result = run_phase(_net(), _data(), cfg, "joint", 1, CPU, progress=False)
    assert math.isfinite(result["loss"])
