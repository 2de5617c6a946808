"""CIFAR-style ResNet18/34 (3x3 stem, no max-pool, 1x1 convolution shortcuts) with a width multiplier.

The seed's initialisation is the authors' `init_random` (ScottHoang/dst-ram-pruning, lth_tickets_generation.py) by
default: conv weights N(0, sqrt(2 / (k*k*C_out))), BatchNorm scale 0.5 and shift 0, Linear N(0, 0.01), biases 0.
PyTorch's default initialisation stays available as `init="pytorch"` (the authors' pretraining starts from it:
lth_tickets_pretraining.py builds the model under `torch.manual_seed` and never calls `init_random`).

The classifier may have more outputs than the dataset has classes, and no bias: the authors build every CIFAR-10
and CIFAR-100 ResNet with `c=100` outputs (lth_tickets_pretraining.py:480-485, lth_tickets_generation.py:509/527)
and a bias-free `nn.Linear(512, c, bias=False)` (sparselearning/models.py, class ResNet). Labels never reach the
extra outputs, but the argmax runs over all of them, as the authors' `output.argmax(dim=1)` does.
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

ARCHITECTURES = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
INITS = ("authors", "pytorch")


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...], num_classes: int, width: int, head_bias: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        in_planes = width
        stages = []
        for index, count in enumerate(blocks):
            planes = width * 2**index
            layers = []
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(in_planes, num_classes, bias=head_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def build(name: str, num_classes: int, width: int = 64, head_bias: bool = True) -> ResNet:
    """Build a CIFAR ResNet by name; `width` is the stem's channel count (64 in the paper), `num_classes` the
    classifier's outputs, `head_bias` whether the classifier has a bias (the authors': none)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(ARCHITECTURES)}")
    if width < 1 or num_classes < 1:
        raise ValueError(f"width and num_classes must be positive, got width={width}, num_classes={num_classes}")
    return ResNet(ARCHITECTURES[name], num_classes, width, head_bias)


@torch.no_grad()
def init_authors(model: nn.Module) -> nn.Module:
    """The authors' `init_random`, in place (it draws from torch's global generator, as theirs does)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
            module.weight.normal_(0.0, math.sqrt(2.0 / fan))
        elif isinstance(module, nn.BatchNorm2d):
            module.weight.fill_(0.5)
        elif isinstance(module, nn.Linear):
            module.weight.normal_(0.0, 0.01)
        else:
            continue
        if module.bias is not None:
            module.bias.zero_()
    return model


def build_seeded(name: str, num_classes: int, width: int, seed: int, init: str = "authors",
                 head_bias: bool = True) -> ResNet:
    """The seed's initialisation: the same seed gives the same weights on every machine (built on the CPU).

    `init="pytorch"` is the model as PyTorch initialises it under `torch.manual_seed(seed)`; "authors" then draws
    the authors' `init_random` over it from the same generator."""
    if init not in INITS:
        raise ValueError(f"unknown initialisation {init!r}; expected one of {INITS}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(name, num_classes, width, head_bias)
        return init_authors(model) if init == "authors" else model


def save_weights(path, model: nn.Module, meta: dict) -> None:
    """A self-describing weights file: the state dict plus the meta needed to rebuild the model.

    `meta` must hold `model`, `num_classes` (the classifier's outputs) and `width`, and may hold `head_bias`
    (default true); more provenance (dataset, seed, iterations) is welcome.
    """
    from .torch_io import save_torch

    for key in ("model", "num_classes", "width"):
        if key not in meta:
            raise ValueError(f"weights meta for {path} lacks {key!r}")
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    save_torch({"state_dict": state, "meta": dict(meta)}, path)


def load_weights(path) -> tuple[ResNet, dict]:
    """Rebuild the model a weights file describes and load its state (on the CPU)."""
    from .io import InputFileError
    from .torch_io import load_torch

    payload = load_torch(path, what="weights file")
    if not isinstance(payload, dict) or "state_dict" not in payload or "meta" not in payload:
        raise InputFileError(f"weights file {path} is not a weights file (expected 'state_dict' and 'meta')")
    meta = payload["meta"]
    model = build(meta["model"], meta["num_classes"], meta["width"], meta.get("head_bias", True))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise InputFileError(f"weights file {path} does not fit a {meta['model']} of width {meta['width']}: "
                             f"{str(exc).splitlines()[0]} ...") from exc
    return model, meta
