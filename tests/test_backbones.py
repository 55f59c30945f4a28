"""Backbones by name: torchvision architectures with local weights, never downloaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from labelclean.model.backbones import create_backbone, default_input_spec
from labelclean.model.bundle import LabelClass
from labelclean.model.config import InputSpec, ModelConfig
from labelclean.model.export import export_bundle
from labelclean.model.network import LabelCleaningNet

SMALL_RGB = InputSpec(32, 32, 3, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(ValueError, match="unknown backbone 'vgg99'.*resnet50"):
        create_backbone(ModelConfig(num_classes=3, backbone="vgg99"))


def test_torchvision_defaults_carry_imagenet_contract():
    spec = default_input_spec("inception_v3")
    assert (spec.height, spec.channels, spec.mean[0]) == (299, 3, 0.485)
    assert default_input_spec("small_cnn").channels == 1


def test_resnet_backbone_loads_local_weights_and_exports(tmp_path):
    cfg = ModelConfig(num_classes=4, backbone="resnet18", input=SMALL_RGB)
    torch.manual_seed(1)
    state = dict(create_backbone(cfg).state_dict())  # another random init stands in for weights
    torch.manual_seed(2)
    state["fc.weight"] = torch.zeros(1000, 512)  # an ImageNet head is ignored
    torch.save(state, tmp_path / "weights.pt")
    net = LabelCleaningNet(cfg, backbone_weights=tmp_path / "weights.pt").eval()
    assert torch.equal(net.backbone.conv1.weight, state["conv1.weight"])
    rng = np.random.default_rng(0)
    sample = (rng.standard_normal((2, 3, 32, 32)).astype(np.float32), np.zeros((2, 4), np.float32))
    bundle = export_bundle(
        net,
        tmp_path / "b",
        [LabelClass(str(i), str(i)) for i in range(4)],
        sample=sample,
        thresholds_cleaned=[0.5] * 4,
        thresholds_scores=[0.5] * 4,
        mode="joint",
        metrics={},
    )
    assert bundle.input.channels == 3


def test_weights_for_another_architecture_are_refused(tmp_path):
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "w.pt")
    with pytest.raises(ValueError, match="do not fit this architecture"):
        create_backbone(ModelConfig(num_classes=3, backbone="resnet18"), tmp_path / "w.pt")
    with pytest.raises(ValueError, match="not found"):
        create_backbone(ModelConfig(num_classes=3, backbone="resnet18"), tmp_path / "none.pt")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_step_with_autocast_and_channels_last():
    from labelclean.training.batches import Batch
    from labelclean.training.loop import Stepper, TrainConfig

    device = torch.device("cuda")
    net = LabelCleaningNet(ModelConfig(num_classes=4, backbone="resnet18", input=SMALL_RGB))
    net.to(device).to(memory_format=torch.channels_last)
    stepper = Stepper.__new__(Stepper)
    stepper.net, stepper.cfg, stepper.phase, stepper.device = net, TrainConfig(), "joint", device
    stepper.spec, stepper.channels_last = SMALL_RGB, True

    def make(n: int) -> Batch:
        pixels = torch.randint(0, 255, (n, 32, 32, 3), dtype=torch.uint8, device=device)
        ones = torch.ones(n, 4, device=device)
        return Batch(pixels, torch.rand(n, 4, device=device), ones, ones)

    loss = stepper.loss(make(6), make(2))
    loss.backward()
    assert torch.isfinite(loss) and net.classifier.weight.grad is not None
