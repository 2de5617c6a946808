"""Masked vs dense training step, and the engine's throughput vs a plain PyTorch loop, measured side by side.

    python benchmarks/train_step.py                       # CPU: width 16, a few steps (the mask's overhead)
    python benchmarks/train_step.py --device cuda --width 64 --steps 50 --plain   # GPU: images/s vs plain loop
    python benchmarks/train_step.py --device cuda --width 64 --model resnet34      # config resources.minutes_per_epoch

Timings alternate between the variants so that a noisy, shared machine slows both alike; ratios are printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from fullspectrum import data, models, pruning
from fullspectrum.train import Trainer, TrainConfig

CIFAR_TRAIN = 50_000  # training images of CIFAR-10 and CIFAR-100


class SyntheticCifar(data.DeviceData):
    """CIFAR-shaped random uint8 images held on the device (the engine's data path, without a dataset file)."""

    def __init__(self, n: int, device: torch.device, num_classes: int = 10) -> None:
        generator = torch.Generator().manual_seed(0)
        self.path, self.device, self.num_classes = "synthetic", torch.device(device), num_classes
        self.train_x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator).to(device)
        self.train_y = torch.randint(0, num_classes, (n,), generator=generator).to(device)
        self.test_x, self.test_y = self.train_x[:256], self.train_y[:256]
        self._mean = torch.tensor(data.MEAN, device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(data.STD, device=self.device).view(1, 3, 1, 1) * 255


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def engine_steps(trainer: Trainer, steps: int) -> float:
    """Seconds per step of the engine (on-device augmentation, masks enforced if any)."""
    order = trainer.data.epoch_order(0, 0)
    batch = trainer.cfg.batch_size
    sync(trainer.device)
    start = time.perf_counter()
    for step in range(steps):
        indices = order[(step * batch) % (len(order) - batch):][:batch]
        x, y = trainer.data.train_batch(indices, trainer.aug_generator)
        trainer._train_step(x, y)
    sync(trainer.device)
    return (time.perf_counter() - start) / steps


def plain_loop_steps(model, dataset: SyntheticCifar, steps: int, batch: int) -> float:
    """A plain PyTorch loop: torchvision transforms in a DataLoader, fp32, host-to-device copies per batch."""
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ConvertImageDtype(torch.float32),
                                    transforms.Normalize(data.MEAN, data.STD)])

    class Images(Dataset):
        def __init__(self):
            self.x, self.y = dataset.train_x.cpu(), dataset.train_y.cpu()

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return transform(self.x[i]), self.y[i]

    device = dataset.device
    loader = DataLoader(Images(), batch_size=batch, shuffle=True, num_workers=4 if device.type == "cuda" else 0,
                        drop_last=True, pin_memory=device.type == "cuda")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    model.train()
    done, start = 0, None
    while done < steps + 2:
        for x, y in loader:
            if done == 2:  # skip warm-up
                sync(device)
                start = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps + 2:
                break
    sync(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="resnet18", choices=sorted(models.ARCHITECTURES))
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="steps per timing round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--plain", action="store_true", help="also time a plain PyTorch loop")
    args = parser.parse_args()
    device = torch.device(args.device)
    dataset = SyntheticCifar(4096, device)
    cfg = TrainConfig(epochs=1, batch_size=args.batch)
    dense_model = models.build_seeded(args.model, 10, args.width, 0)
    sparse_model = models.build_seeded(args.model, 10, args.width, 0)
    masks = pruning.make_mask(sparse_model, "erk", args.density, seed=0)
    dense = Trainer(dense_model, dataset, cfg, seed=0, progress=False)
    masked = Trainer(sparse_model, dataset, cfg, seed=0, masks=masks, progress=False)
    engine_steps(dense, 2), engine_steps(masked, 2)  # warm-up (cudnn.benchmark, allocator)
    times = {"dense": [], "masked": []}
    for _ in range(args.rounds):
        times["dense"].append(engine_steps(dense, args.steps))
        times["masked"].append(engine_steps(masked, args.steps))
    dense_s, masked_s = statistics.median(times["dense"]), statistics.median(times["masked"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model} width {args.width}, batch {args.batch}, {name}; median of {args.rounds} rounds x {args.steps} "
          "steps")
    print(f"  dense step   {dense_s * 1e3:8.1f} ms   {args.batch / dense_s:8.0f} img/s")
    print(f"  masked step  {masked_s * 1e3:8.1f} ms   {args.batch / masked_s:8.0f} img/s   (density {args.density})")
    print(f"  mask overhead: masked / dense = {masked_s / dense_s:.3f}")
    # one CIFAR epoch of masked steps (the test pass adds a few per cent): what the cost plan and SLURM runtimes use
    print(f"  minutes_per_epoch: {CIFAR_TRAIN * masked_s / args.batch / 60:.3f}   "
          f"(config resources.minutes_per_epoch.{args.model}, {CIFAR_TRAIN:,} images at this width and batch)")
    if args.plain:
        plain_s = plain_loop_steps(models.build_seeded(args.model, 10, args.width, 0).to(device), dataset,
                                   args.steps * args.rounds, args.batch)
        print(f"  plain PyTorch loop (DataLoader, fp32) {plain_s * 1e3:8.1f} ms   {args.batch / plain_s:8.0f} img/s")
        print(f"  engine (dense) / plain loop throughput = {plain_s / dense_s:.2f}x")


if __name__ == "__main__":
    main()
