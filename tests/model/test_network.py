"""The joint network: cleaner range and residual, and the gradient rule of the joint loss."""

import torch
from labelclean.model.config import ModelConfig
from labelclean.model.network import LabelCleaner, LabelCleaningNet


def test_cleaner_output_is_clipped_to_unit_interval():
    torch.manual_seed(0)
    g = LabelCleaner(num_classes=7, feature_dim=12, embed_dim=4)
    torch.nn.init.normal_(g.out.weight, std=5.0)  # large residuals in both directions
    y = (torch.rand(64, 7) > 0.5).float()
    c = g(y, torch.randn(64, 12) * 10)
    assert c.min() >= 0.0 and c.max() <= 1.0
    assert ((c == 0) | (c == 1)).any() and ((c > 0) & (c < 1)).any()


def test_cleaner_with_zero_last_layer_reproduces_noisy_labels():
    g = LabelCleaner(num_classes=5, feature_dim=8, embed_dim=3)
    y = torch.tensor([[0.0, 0.3, 1.0, 0.7, 0.0], [1.0, 0.0, 0.55, 0.0, 1.0]])
    assert torch.equal(g(y, torch.randn(2, 8)), y)  # zero-initialised, as built
    torch.nn.init.constant_(g.out.bias, 0.2)
    assert not torch.equal(g(y, torch.randn(2, 8)), y)


def _batch_loss_grads(phase):
    from labelclean.training.batches import Batch
    from labelclean.training.loop import Stepper, TrainConfig

    torch.manual_seed(0)
    net = LabelCleaningNet(ModelConfig(num_classes=4, width=4, feature_dim=8))
    torch.nn.init.normal_(net.cleaner.out.weight, std=0.5)
    stepper = Stepper.__new__(Stepper)
    stepper.net, stepper.cfg, stepper.phase = net, TrainConfig(), phase
    stepper.device, stepper.spec, stepper.channels_last = (
        torch.device("cpu"),
        net.config.input,
        False,
    )
    t = Batch(
        torch.randint(0, 255, (6, 28, 28, 1), dtype=torch.uint8),
        torch.rand(6, 4),
        torch.zeros(6, 4),
        torch.zeros(6, 4),
    )
    v = Batch(
        torch.randint(0, 255, (2, 28, 28, 1), dtype=torch.uint8),
        torch.rand(2, 4),
        (torch.rand(2, 4) > 0.5).float(),
        torch.ones(2, 4),
    )
    return net, stepper, t, v


def test_classifier_loss_sends_no_gradient_into_cleaner():
    net, stepper, t, v = _batch_loss_grads("joint")
    stepper.cfg.clean_weight = 0.0  # keep only L_classify = BCE(h, c.detach()) + BCE(h, v)
    stepper.loss(t, v).backward()
    for p in net.cleaner.parameters():
        assert p.grad is None or torch.count_nonzero(p.grad) == 0
    assert torch.count_nonzero(net.classifier.weight.grad) > 0


def test_clean_loss_trains_the_cleaner():
    net, stepper, t, v = _batch_loss_grads("joint")
    stepper.cfg.classify_weight = 0.0
    stepper.loss(t, v).backward()
    assert torch.count_nonzero(net.cleaner.out.weight.grad) > 0
    assert (
        net.classifier.weight.grad is None or torch.count_nonzero(net.classifier.weight.grad) == 0
    )


def test_forward_shapes():
    net = LabelCleaningNet(ModelConfig(num_classes=3, width=4, feature_dim=8)).eval()
    scores, cleaned, issue = net(torch.randn(5, 1, 28, 28), torch.zeros(5, 3))
    assert scores.shape == cleaned.shape == issue.shape == (5, 3)
    assert ((scores > 0) & (scores < 1)).all()
