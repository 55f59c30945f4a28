"""Training throughput: the full training loop against the raw model's training step.

    python benchmarks/train_throughput.py --data demo/data                       # CPU, small CNN
    python benchmarks/train_throughput.py --data demo/data --backbone resnet50 \\
        --image-size 224 --device cuda --batch-size 128

"raw step" runs forward + backward + AdamW on one synthetic batch already on the device (the
ceiling); "training loop" is ``run_phase`` on the real decoded images (batch assembly, copies,
normalisation included). When the loop's images/s is close to the raw step's, data loading is not
the bottleneck.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from labelclean.model.backbones import default_input_spec
from labelclean.model.config import ModelConfig
from labelclean.model.network import LabelCleaningNet
from labelclean.model.openimages import DataFiles
from labelclean.training.batches import Batch, prepare_data
from labelclean.training.loop import (
    Stepper,
    TrainConfig,
    batch_split,
    make_optimizer,
    run_phase,
)
from labelclean.training.run import place_data, resolve_device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def raw_step_rate(net, cfg: TrainConfig, phase: str, device, steps: int) -> float:
    spec = net.config.input
    n_t, n_v = batch_split(cfg, phase)  # the first batch of an epoch (64: 58 T + 6 V)
    d = net.config.num_classes

    def batch(n: int) -> Batch:
        pixels = torch.randint(
            0, 255, (n, spec.height, spec.width, spec.channels), dtype=torch.uint8, device=device
        )
        ones = torch.ones(n, d, device=device)
        return Batch(pixels, torch.rand(n, d, device=device), ones, ones)

    stepper = Stepper.__new__(Stepper)
    stepper.net, stepper.cfg, stepper.phase, stepper.device = net, cfg, phase, device
    stepper.spec, stepper.channels_last = spec, device.type == "cuda"
    optimizer = make_optimizer(net, phase, cfg)
    t, v = batch(n_t), batch(n_v)
    net.train()
    for i in range(steps + 5):
        if i == 5:
            sync(device)
            started = time.perf_counter()
        loss = stepper.loss(t, v)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return steps * cfg.batch_size / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="data folder (Open Images layout)")
    p.add_argument("--backbone", default="small_cnn")
    p.add_argument("--image-size", type=int, help="default: the backbone's own")
    p.add_argument("--width", type=int, default=16, help="small_cnn width")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=50, help="timed raw steps")
    args = p.parse_args()

    device = resolve_device(args.device)
    spec = default_input_spec(args.backbone)
    if args.image_size:
        spec.height = spec.width = args.image_size
    started = time.perf_counter()
    data = prepare_data(DataFiles(args.data), spec, progress=False)
    print(
        f"decoded {sum(len(p) for p in data.parts().values())} images in "
        f"{time.perf_counter() - started:.1f}s"
    )
    data = place_data(data, device)
    cfg = TrainConfig(batch_size=args.batch_size, device=str(device))
    model_cfg = ModelConfig(
        num_classes=len(data.classes), backbone=args.backbone, width=args.width, input=spec
    )
    net = LabelCleaningNet(model_cfg).to(device)
    if device.type == "cuda":
        net.to(memory_format=torch.channels_last)
        print(f"device: {torch.cuda.get_device_name(device)}")
    print(
        f"backbone {args.backbone} {spec.height}x{spec.width}x{spec.channels}, "
        f"batch {args.batch_size}, device {device}, torch threads {torch.get_num_threads()}"
    )
    for phase in ("noisy", "joint"):
        raw = raw_step_rate(net, cfg, phase, device, args.steps)
        loop = run_phase(net, data, cfg, phase, 1, device, progress=False)["images_per_s"]
        print(
            f"{phase:6s} raw step {raw:8.0f} img/s | training loop {loop:8.0f} img/s "
            f"({loop / raw:.2f}x)"
        )


if __name__ == "__main__":
    main()
