"""Datasets: digits from scikit-learn, CIFAR through torchvision's real loader on generated files, augmentation."""

import pickle

import numpy as np
import pytest
import torch

from fullspectrum import data
from fullspectrum.io import InputFileError


def test_digits_split_is_fixed_and_shaped_like_cifar(digits_path):
    tensors = data.load_prepared(digits_path)
    assert tensors["train_x"].shape == (1437, 3, 16, 16) and tensors["test_x"].shape == (360, 3, 16, 16)
    assert tensors["train_x"].dtype == torch.uint8
    assert set(tensors["train_y"].tolist()) == set(range(10))
    again = data.load_digits_tensors()
    assert torch.equal(again["train_x"], tensors["train_x"]) and torch.equal(again["test_y"], tensors["test_y"])
    # the three channels are the same grey image, and the digit strokes reach full intensity
    assert torch.equal(tensors["train_x"][:, 0], tensors["train_x"][:, 2])
    assert tensors["train_x"].max() == 255


def _write_cifar_tree(root, name, n_train=20, n_test=10, classes=10):
    """A small tree in the official CIFAR python-pickle layout, written the way the archive stores it."""
    rng = np.random.default_rng(0)
    folder = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
    base = root / folder
    base.mkdir(parents=True)
    label_key = "labels" if name == "cifar10" else "fine_labels"

    def batch(n):
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                label_key: rng.integers(0, classes, n).tolist()}

    if name == "cifar10":
        train_parts = [batch(n_train // 5) for _ in range(5)]
        for i, part in enumerate(train_parts, 1):
            (base / f"data_batch_{i}").write_bytes(pickle.dumps(part))
        (base / "test_batch").write_bytes(pickle.dumps(batch(n_test)))
        meta = {"label_names": [f"c{i}" for i in range(classes)]}
        (base / "batches.meta").write_bytes(pickle.dumps(meta))
        first = train_parts[0]
    else:
        first = batch(n_train)
        (base / "train").write_bytes(pickle.dumps(first))
        (base / "test").write_bytes(pickle.dumps(batch(n_test)))
        (base / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(classes)]}))
    return first, label_key


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_format_tree_loads_through_torchvision(tmp_path, name, classes):
    first, label_key = _write_cifar_tree(tmp_path, name, classes=classes)
    out = tmp_path / f"{name}.pt"
    summary = data.prepare(name, out, root=tmp_path, verify=False)
    assert summary["train"] == 20 and summary["test"] == 10
    tensors = data.load_prepared(out)
    # the first image's red plane is the first 1024 bytes of the pickled row (CIFAR's channel-major layout)
    expected = torch.from_numpy(first["data"][0].reshape(3, 32, 32))
    assert torch.equal(tensors["train_x"][0], expected)
    assert tensors["train_y"][: len(first[label_key])].tolist() == first[label_key]


def test_missing_or_unverified_cifar_says_where_to_put_the_archive(tmp_path):
    with pytest.raises(InputFileError, match="cifar-10-python.tar.gz"):
        data.prepare("cifar10", tmp_path / "out.pt", root=tmp_path / "nowhere")
    _write_cifar_tree(tmp_path, "cifar10")  # checksums do not match the official archive's
    with pytest.raises(InputFileError, match="not found or corrupted"):
        data.prepare("cifar10", tmp_path / "out.pt", root=tmp_path, verify=True)
    assert not (tmp_path / "out.pt").exists()


def test_truncated_prepared_file_is_refused(tmp_path, digits_path):
    broken = tmp_path / "digits.pt"
    broken.write_bytes(digits_path.read_bytes()[:1000])
    with pytest.raises(InputFileError, match="truncated or corrupted"):
        data.DeviceData(broken)


@pytest.mark.parametrize("size,padding", [(32, 4), (16, 2)])  # CIFAR's 4 pixels; an eighth of the side
def test_crop_flip_matches_a_per_image_reference(size, padding):
    x = torch.randint(0, 256, (6, 3, size, size), dtype=torch.uint8)
    out = data.random_crop_flip(x, torch.Generator().manual_seed(3))
    assert out.shape == x.shape and out.dtype == torch.uint8
    # replay the generator to get the offsets and flips, then crop each image by hand
    g = torch.Generator().manual_seed(3)
    offsets = torch.randint(0, 2 * padding + 1, (2, 6), generator=g)
    flips = torch.rand(6, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    for i in range(6):
        r, c = offsets[0, i], offsets[1, i]
        crop = padded[i, :, r:r + size, c:c + size]
        if flips[i]:
            crop = crop.flip(2)
        assert torch.equal(out[i], crop)


def test_augmentation_is_seeded(digits):
    idx = torch.arange(64)
    a, _ = digits.train_batch(idx, torch.Generator().manual_seed(1))
    b, _ = digits.train_batch(idx, torch.Generator().manual_seed(1))
    c, _ = digits.train_batch(idx, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(digits.epoch_order(0, 3), digits.epoch_order(0, 3))
    assert not torch.equal(digits.epoch_order(0, 3), digits.epoch_order(0, 4))


def test_each_method_scores_on_what_it_needs(digits):
    snip = digits.method_batches("snip", 3, 32, seed=0, augment=True)
    assert len(snip) == 3 and snip[0][0].shape == (32, 3, 16, 16)
    assert len(digits.method_batches("grasp", "all", 500, seed=0, augment=False)) == 3  # 1,437 images
    synflow = digits.method_batches("synflow", None, None, seed=0, augment=False)
    assert len(synflow) == 1 and synflow[0][0].shape == (1, 3, 16, 16)  # its all-ones input takes this shape
    assert digits.method_batches("erk", None, None, seed=0, augment=False) is None


def test_cifar100_is_normalised_with_its_own_statistics(tmp_path):
    """The authors' get_cifar100_dataloaders: mean (0.5071, 0.4865, 0.4409), std (0.2673, 0.2564, 0.2762); CIFAR-10
    (and digits) keep CIFAR-10's (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2616). A white pixel (255) becomes
    (1 - mean) / std: by hand 1.8439, 2.0022, 2.0246 for CIFAR-100 and 2.0591, 2.1265, 2.1158 for CIFAR-10."""
    white = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    expected = {"cifar100": (1.8439, 2.0022, 2.0246), "cifar10": (2.0591, 2.1265, 2.1158)}
    for name, values in expected.items():
        path = tmp_path / f"{name}.pt"
        torch.save({"train_x": white, "train_y": torch.zeros(1, dtype=torch.int64), "test_x": white,
                    "test_y": torch.zeros(1, dtype=torch.int64), "meta": {"dataset": name}}, path)
        out = data.DeviceData(path).normalise(white)
        assert out[0, :, 0, 0].tolist() == pytest.approx(values, abs=1e-4), name
