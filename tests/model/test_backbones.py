"""Backbones by name: torchvision architectures with local weights, never downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from labelclean.model.backbones import (
    BACKBONES,
    create_backbone,
    default_input_spec,
    import_torchvision,
)
from labelclean.model.bundle import LabelClass
from labelclean.model.config import InputSpec, ModelConfig
from labelclean.model.decision import Decision
from labelclean.model.export import export_bundle
from labelclean.model.network import LabelCleaningNet
from labelclean.model.preprocess import normalize

from labelclean.cli import main

from ..conftest import FAST_TRAIN

SMALL_RGB = InputSpec(32, 32, 3, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(ValueError, match="unknown backbone 'vgg99'.*resnet50"):
        create_backbone(ModelConfig(num_classes=3, backbone="vgg99"))


def test_torchvision_defaults_carry_imagenet_contract():
    spec = default_input_spec("resnet50")
    assert (spec.height, spec.channels, spec.mean[0], spec.std[0]) == (224, 3, 0.485, 0.229)
    # inception_v3: (x - 0.5) / 0.5, what its weights expect (see test_inception_input_contract...)
    spec = default_input_spec("inception_v3")
    assert (spec.height, spec.channels, spec.mean, spec.std) == (299, 3, [0.5] * 3, [0.5] * 3)
    assert default_input_spec("small_cnn").channels == 1


TORCHVISION = [name for name in BACKBONES if name != "small_cnn"]


def torchvision_state_dict(name: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """What ``torchvision.models.NAME()`` saves: the ImageNet head included (inception_v3: and
    its auxiliary classifier), random weights standing in for trained ones."""
    tv = import_torchvision()
    torch.manual_seed(seed)
    kwargs = {"aux_logits": True, "init_weights": False} if name == "inception_v3" else {}
    return getattr(tv.models, name)(weights=None, **kwargs).state_dict()


@pytest.mark.parametrize("name", TORCHVISION)
def test_a_torchvision_state_dict_loads_whole_and_gives_out_dim_features(name, tmp_path):
    state = torchvision_state_dict(name)
    torch.save(state, tmp_path / "w.pt")
    net = create_backbone(ModelConfig(num_classes=3, backbone=name), tmp_path / "w.pt").eval()
    own = net.state_dict()
    assert own and all(torch.equal(own[k], state[k]) for k in own)  # every tensor came from w.pt
    size = 75 if name == "inception_v3" else 32  # the smallest inception_v3 takes
    with torch.no_grad():
        features = net(torch.randn(2, 3, size, size))
    assert features.shape == (2, net.out_dim)  # the size the classifier and cleaner are built for


def test_inception_input_contract_matches_torchvision_transform_input(tmp_path):
    """torchvision runs its Inception-v3 weights with transform_input=True on ImageNet-normalised
    pixels; our backbone (no transform) on pixels normalised by its default spec sees the same
    input. Compared after the first conv block (a random network's final features are ~1e-8)."""
    tv = import_torchvision()
    state = torchvision_state_dict("inception_v3")
    torch.save(state, tmp_path / "w.pt")
    reference = tv.models.inception_v3(
        weights=None, aux_logits=True, init_weights=False, transform_input=True
    )
    reference.load_state_dict(state)
    ours = create_backbone(ModelConfig(num_classes=3, backbone="inception_v3"), tmp_path / "w.pt")

    def first_block(net: torch.nn.Module, images: np.ndarray) -> torch.Tensor:
        seen = []
        hook = net.Conv2d_1a_3x3.register_forward_hook(lambda m, i, out: seen.append(out))
        with torch.no_grad():
            net.eval()(torch.from_numpy(images))
        hook.remove()
        return seen[0]

    pixels = np.random.default_rng(0).integers(0, 256, (2, 80, 80, 3), dtype=np.uint8)
    imagenet = InputSpec(80, 80, 3, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    spec = default_input_spec("inception_v3")
    spec.height = spec.width = 80
    want = first_block(reference, normalize(pixels, imagenet))
    torch.testing.assert_close(first_block(ours, normalize(pixels, spec)), want)
    # ImageNet's normalisation, right for the other backbones, is not what these weights expect
    assert not torch.allclose(first_block(ours, normalize(pixels, imagenet)), want, atol=0.01)


class Loaded(Exception):
    """Raised in place of training: the network was built, its weights loaded."""


def train_args(data: Path, out: Path, weights: Path) -> list[str]:
    return [
        "train", "--data", str(data), "--out", str(out), "--mode", "noisy", "--no-export",
        "--backbone", "inception_v3", "--backbone-weights", str(weights), "--image-size", "75",
        *FAST_TRAIN,
    ]  # fmt: skip


def test_train_loads_a_torchvision_inception_v3_state_dict(tiny_data, tmp_path, monkeypatch):
    """``labelclean train --backbone inception_v3 --backbone-weights FILE`` with the file
    torchvision's Inception-v3 saves (aux head and fc included); stopped before training, which
    takes long at this size on a CPU."""
    import labelclean.training.run as run

    state = torchvision_state_dict("inception_v3")
    assert sum(k.startswith("AuxLogits.") for k in state) == 14
    torch.save(state, tmp_path / "inception_v3.pt")
    built = []

    def stop(net, *args, **kwargs):
        built.append(net)
        raise Loaded

    monkeypatch.setattr(run, "run_phase", stop)
    with pytest.raises(Loaded):
        main(train_args(tiny_data, tmp_path / "run", tmp_path / "inception_v3.pt"))
    backbone = built[0].backbone.state_dict()
    assert backbone and all(torch.equal(v, state[k]) for k, v in backbone.items())


def test_train_refuses_a_truncated_inception_v3_state_dict(tiny_data, tmp_path, capsys):
    state = torchvision_state_dict("inception_v3")
    removed = ["Mixed_7c.branch_pool.conv.weight", "Conv2d_1a_3x3.bn.running_var"]
    for key in removed:
        del state[key]
    state["Mixed_8a.conv.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "truncated.pt")
    code = main(train_args(tiny_data, tmp_path / "run", tmp_path / "truncated.pt"))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "do not fit inception_v3: 2 missing keys: " in err
    assert all(key in err for key in removed)
    assert "1 unexpected keys: Mixed_8a.conv.weight" in err
    assert "AuxLogits" not in err  # the auxiliary head is expected, not a misfit


def test_part_of_a_state_dict_is_never_loaded_silently(tmp_path):
    """The old loader used strict=False: a file lacking some weights loaded the rest silently."""
    cfg = ModelConfig(num_classes=3, backbone="resnet18")
    state = torchvision_state_dict("resnet18")
    del state["layer4.1.conv2.weight"]
    torch.save(state, tmp_path / "part.pt")
    with pytest.raises(ValueError, match=r"1 missing keys: layer4\.1\.conv2\.weight$"):
        create_backbone(cfg, tmp_path / "part.pt")
    state = torchvision_state_dict("resnet18")
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(
        ValueError, match=r"conv1\.weight \(64, 3, 3, 3\) instead of \(64, 3, 7, 7\)"
    ):
        create_backbone(cfg, tmp_path / "shape.pt")


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
        decision=Decision.paper([0.5] * 4),
        mode="joint",
        metrics={},
    )
    assert bundle.input.channels == 3


def test_weights_for_another_architecture_are_refused(tmp_path):
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "w.pt")
    with pytest.raises(
        ValueError,
        match=r"do not fit resnet18: \d+ missing keys: conv1\.weight, .* and \d+ more; "
        r"1 unexpected keys: foo\.weight$",
    ):
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
