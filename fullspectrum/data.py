"""Datasets as compact uint8 tensors, kept whole on the training device, augmented there in whole batches.

`prepare(name, ...)` materialises a dataset once as `{"train_x": uint8 [N,3,S,S], "train_y": int64 [N],
"test_x", "test_y", "meta"}` (S = 32 for CIFAR, 16 for digits); `DeviceData` loads that file onto the CPU or GPU
and yields normalised batches.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .io import InputFileError
from .methods import DATA_METHODS, SHAPE_METHODS
from .torch_io import load_torch, save_torch

DATASETS = {"digits": 10, "cifar10": 10, "cifar100": 100}
# The 8x8 digits upsampled twice: a 32x32 copy holds no more information and costs the ResNets 4x the compute.
DIGITS_SIZE = 16
# CIFAR-10 normalisation, used for CIFAR-10 and digits (so digits exercises exactly the CIFAR transforms).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
# CIFAR-100 has its own: the authors' sparselearning/utils.py (get_cifar100_dataloaders, lines 87-88).
NORMALISATION = {"cifar100": ((0.5070751592371323, 0.48654887331495095, 0.4409178433670343),
                              (0.2673342858792401, 0.2564384629170883, 0.27615047132568404))}


def normalisation(name: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The channel mean and std a dataset's images are normalised with (CIFAR-10's unless it has its own)."""
    return NORMALISATION.get(name, (MEAN, STD))


def num_classes(name: str) -> int:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name]


def load_digits_tensors(test_fraction: float = 0.2, split_seed: int = 0) -> dict:
    """scikit-learn's 1,797 real 8x8 handwritten digits, resized to 3x16x16 uint8, with a stratified split.

    `split_seed` picks the split: the embedded default keeps split 0 for every seed; the study (`data.split:
    per_seed`) gives each seed its own, so its seeds see different test sets (sizes and class counts equal)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]  # [N,1,8,8] in [0,1]
    images = F.interpolate(images, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, random_state=split_seed, stratify=digits.target
    )
    train_idx, test_idx = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))
    return {
        "train_x": images[train_idx], "train_y": labels[train_idx],
        "test_x": images[test_idx], "test_y": labels[test_idx],
        "meta": {"dataset": "digits", "source": "sklearn.datasets.load_digits", "test_fraction": test_fraction,
                 "split_seed": split_seed},
    }


def load_cifar_tensors(name: str, root: str | os.PathLike, download: bool, verify: bool = True) -> dict:
    """CIFAR-10/100 through torchvision's own dataset classes (which read the python-pickle archive format).

    `verify=False` skips torchvision's MD5 check; only tests use it, on small CIFAR-format trees they write.
    """
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    if not verify:  # same loader, checksums dropped: torchvision then only checks that each file exists
        cls = type(cls.__name__, (cls,), {"train_list": [[f, None] for f, _ in cls.train_list],
                                          "test_list": [[f, None] for f, _ in cls.test_list],
                                          "meta": {**cls.meta, "md5": None}})
    root = Path(root)
    try:
        splits = {train: cls(root=str(root), train=train, download=download) for train in (True, False)}
    except RuntimeError as exc:
        folder = root / cls.base_folder
        raise InputFileError(
            f"{name} not found or corrupted under {folder} ({exc}). Put the official archive "
            f"{cls.filename} into {root} (it is extracted there), or set `download: true` in the config on a "
            "machine with internet access."
        ) from exc
    out = {"meta": {"dataset": name, "source": f"torchvision.datasets.{cls.__name__}", "root": str(root)}}
    for train, split in splits.items():
        key = "train" if train else "test"
        out[f"{key}_x"] = torch.from_numpy(np.ascontiguousarray(split.data.transpose(0, 3, 1, 2)))
        out[f"{key}_y"] = torch.tensor(split.targets, dtype=torch.int64)
    return out


def prepare(name: str, out_path: str | os.PathLike, root: str | os.PathLike = "data", download: bool = False,
            verify: bool = True, split_seed: int | None = None) -> dict:
    """Materialise dataset `name` as a uint8 tensor file at `out_path` and return its summary.

    `split_seed` (digits only: CIFAR has its official test set) draws that seed's own train/test split."""
    num_classes(name)
    if name != "digits" and split_seed is not None:
        raise ValueError(f"{name} has a fixed official test set; a per-seed split (split_seed) is for digits only")
    if name == "digits":
        tensors = load_digits_tensors(split_seed=split_seed or 0)
    else:
        tensors = load_cifar_tensors(name, root, download, verify)
    save_torch(tensors, out_path)
    return {"dataset": name, "train": len(tensors["train_y"]), "test": len(tensors["test_y"]),
            "classes": int(tensors["train_y"].max()) + 1}


def load_prepared(path: str | os.PathLike) -> dict:
    tensors = load_torch(path, what="prepared dataset")
    expected = {"train_x": torch.uint8, "train_y": torch.int64, "test_x": torch.uint8, "test_y": torch.int64}
    for key, dtype in expected.items():
        value = tensors.get(key) if isinstance(tensors, dict) else None
        if not isinstance(value, torch.Tensor) or value.dtype != dtype:
            raise InputFileError(f"prepared dataset {path}: {key!r} missing or not {dtype}; rerun prepare_data")
    for split in ("train", "test"):
        x, y = tensors[f"{split}_x"], tensors[f"{split}_y"]
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3] or len(x) != len(y):
            raise InputFileError(f"prepared dataset {path}: {split} images have shape {tuple(x.shape)} for "
                                 f"{len(y)} labels; expected square RGB images [N,3,S,S]; rerun prepare_data")
    return tensors


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int | None = None,
                     channels_last: bool = False) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip of a whole batch at once, on its own device.

    The padding defaults to an eighth of the side: CIFAR's standard 4 pixels at 32x32, the same shift at 16x16.
    The crop is gathered channels-last; with `channels_last` it is returned so (the CUDA models' layout), not
    copied to NCHW and back.
    """
    batch, _, height, width = x.shape
    padding = height // 8 if padding is None else padding
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator, device=x.device)
    rows = offsets[0, :, None] + torch.arange(height, device=x.device)  # [B, H]
    cols = offsets[1, :, None] + torch.arange(width, device=x.device)  # [B, W]
    flip = torch.rand(batch, generator=generator, device=x.device) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch_index = torch.arange(batch, device=x.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    if channels_last:
        return cropped.permute(0, 3, 1, 2)  # a view with channels-last strides
    return cropped.permute(0, 3, 1, 2).contiguous()  # channels-last strides crash CPU conv backward on odd batches


class DeviceData:
    """A prepared dataset held whole on `device`, giving normalised float batches."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu") -> None:
        tensors = load_prepared(path)
        self.path = str(path)
        self.device = torch.device(device)
        self.train_x = tensors["train_x"].to(self.device)
        self.train_y = tensors["train_y"].to(self.device)
        self.test_x = tensors["test_x"].to(self.device)
        self.test_y = tensors["test_y"].to(self.device)
        self.num_classes = int(torch.cat([tensors["train_y"], tensors["test_y"]]).max()) + 1
        mean, std = normalisation((tensors.get("meta") or {}).get("dataset"))
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255

    @property
    def train_size(self) -> int:
        return len(self.train_y)

    @property
    def channels_last(self) -> bool:
        """Batches in the channels-last layout the models use on CUDA (on the CPU, NCHW)."""
        return self.device.type == "cuda"

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self._mean) / self._std

    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        """The training order of one epoch, a function of (seed, epoch) alone so a resumed run replays it."""
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        return torch.randperm(self.train_size, generator=generator).to(self.device)

    def train_batch(self, indices: torch.Tensor, generator: torch.Generator | None, augment: bool = True):
        x = self.train_x[indices]
        if augment:
            x = random_crop_flip(x, generator, channels_last=self.channels_last)
        return self._layout(self.normalise(x)), self.train_y[indices]

    def test_batches(self, batch_size: int = 512):
        """The test set in batches, normalised (and laid out) once and kept: every evaluation reads the same."""
        if getattr(self, "_test_ready", None) is None:
            self._test_ready = self._layout(self.normalise(self.test_x))
        for start in range(0, len(self.test_y), batch_size):
            yield self._test_ready[start:start + batch_size], self.test_y[start:start + batch_size]

    def scoring_batches(self, count: int | str, batch_size: int, seed: int, augment: bool) -> list:
        """Scoring data for PaI masks and search candidates: `count` random mini-batches, or with `count="all"`
        one pass over the whole training set in a seeded order (the authors score baseline masks on all of it)."""
        if count != "all":
            return self.random_batches(int(count), batch_size, seed, augment=augment)
        order = torch.randperm(self.train_size, generator=torch.Generator().manual_seed(seed)).to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        return [self.train_batch(order[start:start + batch_size], generator, augment=augment)
                for start in range(0, self.train_size, batch_size)]

    def method_batches(self, method: str, count: int | str, batch_size: int, seed: int, augment: bool) -> list | None:
        """What PaI `method` scores on: `count` batches (see scoring_batches) for SNIP/GraSP, one image for
        SynFlow (it needs only the input's shape), nothing for the other methods."""
        if method in DATA_METHODS:
            return self.scoring_batches(count, batch_size, seed, augment)
        if method in SHAPE_METHODS:
            return self.random_batches(1, 1, seed)
        return None

    def random_batches(self, count: int, batch_size: int, seed: int, augment: bool = False) -> list:
        """`count` mini-batches drawn from the training set with `seed` (scoring data for PaI and the search)."""
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(self.train_size, generator=generator)
        batches = []
        for index in range(count):
            take = order.roll(-index * batch_size)[:batch_size].to(self.device)
            device_generator = torch.Generator(device=self.device).manual_seed(seed + index)
            batches.append(self.train_batch(take, device_generator, augment=augment))
        return batches
