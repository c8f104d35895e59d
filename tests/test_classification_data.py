"""Tests for rwdet.classification.data (CPU, a few seconds).

Fashion-MNIST is read from Debian's dataset-fashion-mnist package at
/usr/share/datasets/fashion-mnist; the tests that need it skip when it is absent, unless
RWDET_REQUIRE_FASHION_MNIST=1, in which case they fail.
"""

import copy
import gzip
import itertools
import os
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from rwdet.classification.data import (
    DEFAULT_FASHION_MNIST_ROOT,
    FASHION_MNIST_CLASSES,
    FashionMNIST,
    ResumableTrainingSampler,
    SeededSamples,
    build_classification_dataset,
    build_transform,
    stream_sample_seed,
)

_HAVE_FMNIST = os.path.isfile(
    os.path.join(DEFAULT_FASHION_MNIST_ROOT, "train-labels-idx1-ubyte.gz")
) or os.path.isfile(os.path.join(DEFAULT_FASHION_MNIST_ROOT, "train-labels-idx1-ubyte"))

needs_fmnist = pytest.mark.skipif(
    not _HAVE_FMNIST and os.environ.get("RWDET_REQUIRE_FASHION_MNIST") != "1",
    reason=f"Fashion-MNIST not found at {DEFAULT_FASHION_MNIST_ROOT} "
    "(apt-get install dataset-fashion-mnist; set RWDET_REQUIRE_FASHION_MNIST=1 to fail instead)",
)


@pytest.fixture(scope="module")
def fmnist_train():
    return FashionMNIST(train=True)


@pytest.fixture(scope="module")
def fmnist_test():
    return FashionMNIST(train=False)


def _open(path):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _with_transform(ds, transform):
    """A shallow copy of ``ds`` (sharing its arrays) with another transform."""
    ds = copy.copy(ds)
    ds.transform = transform
    return ds


def _take(sampler, n, start=0):
    return list(itertools.islice(iter(sampler), start, start + n))


def _write_idx(path, magic, dims, payload: bytes, gz=False):
    data = struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + payload
    if gz:
        data = gzip.compress(data)
    with open(path, "wb") as f:
        f.write(data)


# ---------------------------------------------------------------------------- Fashion-MNIST


@needs_fmnist
def test_fashion_mnist_sizes_labels_pixels(fmnist_train, fmnist_test):
    assert len(fmnist_train) == 60000 and len(fmnist_test) == 10000
    assert fmnist_train.classes == FASHION_MNIST_CLASSES and len(fmnist_train.classes) == 10
    assert fmnist_train.classes[9] == "Ankle boot" and fmnist_train.classes[0] == "T-shirt/top"
    assert np.bincount(fmnist_train.targets, minlength=10).tolist() == [6000] * 10
    assert np.bincount(fmnist_test.targets, minlength=10).tolist() == [1000] * 10
    assert fmnist_train.images.dtype == np.uint8 and fmnist_train.images.shape == (60000, 28, 28)
    assert fmnist_train.images.min() == 0 and fmnist_train.images.max() == 255

    img, label = fmnist_train[0]
    assert isinstance(img, Image.Image) and img.mode == "L" and img.size == (28, 28)
    assert isinstance(label, int)
    # The first training label, read straight from the file: 9 (Ankle boot).
    with _open(fmnist_train.label_file) as f:
        raw = f.read(9)
    assert struct.unpack(">II", raw[:8]) == (2049, 60000)
    assert raw[8] == label == 9
    with _open(fmnist_train.image_file) as f:
        f.read(16)
        first = np.frombuffer(f.read(784), dtype=np.uint8).reshape(28, 28)
    assert np.array_equal(np.asarray(img), first)


@needs_fmnist
def test_fashion_mnist_via_builder_val_alias(fmnist_test):
    ds = build_classification_dataset("fashion_mnist", None, "val", transform=None)
    assert len(ds) == 10000 and ds.classes == FASHION_MNIST_CLASSES
    assert np.array_equal(ds.targets, fmnist_test.targets)
    assert len(build_classification_dataset("fashion_mnist", "", "test", None)) == 10000


def test_fashion_mnist_missing_root(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as e:
        FashionMNIST(root=str(root), train=True)
    msg = str(e.value)
    assert str(root) in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "zalandoresearch/fashion-mnist" in msg


def test_fashion_mnist_plain_idx_files(tmp_path):
    """Un-gzipped names work; a tiny synthetic test split round-trips."""
    imgs = np.arange(3 * 28 * 28, dtype=np.int64).astype(np.uint8).reshape(3, 28, 28)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", 2051, (3, 28, 28), imgs.tobytes())
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", 2049, (3,), bytes([4, 0, 9]))
    ds = FashionMNIST(root=str(tmp_path), train=False)
    assert len(ds) == 3 and [ds[i][1] for i in range(3)] == [4, 0, 9]
    assert np.array_equal(np.asarray(ds[2][0]), imgs[2])


@pytest.mark.parametrize("case", ["magic", "truncated", "bad_gzip", "count_mismatch"])
def test_fashion_mnist_corrupt_file(tmp_path, case):
    imgs = bytes(2 * 28 * 28)
    labels_path = tmp_path / "train-labels-idx1-ubyte.gz"
    images_path = tmp_path / "train-images-idx3-ubyte.gz"
    _write_idx(labels_path, 2049, (2,), bytes([1, 2]), gz=True)
    bad = images_path
    if case == "magic":
        _write_idx(images_path, 2049, (2, 28, 28), imgs, gz=True)
    elif case == "truncated":
        _write_idx(images_path, 2051, (2, 28, 28), imgs[:-5], gz=True)
    elif case == "bad_gzip":
        images_path.write_bytes(b"this is not gzip at all")
    else:
        _write_idx(images_path, 2051, (2, 28, 28), imgs, gz=True)
        _write_idx(labels_path, 2049, (3,), bytes([1, 2, 3]), gz=True)
        bad = labels_path
    with pytest.raises(ValueError, match=str(bad.name)):
        FashionMNIST(root=str(tmp_path), train=True)


# ---------------------------------------------------------------------------- transforms


@needs_fmnist
@pytest.mark.parametrize("size", [28, 32])
def test_fashion_mnist_transforms_shape_and_seeding(fmnist_train, size):
    for is_train in (False, True):
        t = build_transform("fashion_mnist", is_train, size)
        x = t(fmnist_train[0][0])
        assert x.shape == (3, size, size) and x.dtype == torch.float32
        assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    # Eval: normalized background pixel (0) is -mean/std.
    x = build_transform("fashion_mnist", False, 28)(fmnist_train[0][0])
    assert x.min().item() == pytest.approx(-0.2860 / 0.3530, abs=1e-4)

    ds = SeededSamples(_with_transform(fmnist_train, build_transform("fashion_mnist", True, size)))
    before = torch.get_rng_state()
    differs = 0
    for i in range(12):
        a, la = ds[(i, 1234 + i)]
        b, lb = ds[(i, 1234 + i)]
        assert torch.equal(a, b) and la == lb == int(fmnist_train.targets[i])
        c, _ = ds[(i, 999_000 + i)]
        differs += not torch.equal(a, c)
    assert differs >= 6  # 25 crops x 2 flips: a different seed almost always changes the sample
    assert torch.equal(torch.get_rng_state(), before)  # caller's generator untouched
    # Plain int index: no reseeding, ordinary behaviour.
    x, y = ds[3]
    assert x.shape == (3, size, size) and y == int(fmnist_train.targets[3])
    assert len(ds) == 60000 and ds.classes == FASHION_MNIST_CLASSES


def test_imagenet_transforms():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8))
    x = build_transform("imagenet", False, 32)(img)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert build_transform("imagenet", False, 32, resize=40)(img).shape == (3, 32, 32)
    t = build_transform("imagenet", True, 24)
    torch.manual_seed(5)
    a = t(img)
    torch.manual_seed(5)
    b = t(img)
    torch.manual_seed(6)
    c = t(img)
    assert a.shape == (3, 24, 24) and torch.equal(a, b) and not torch.equal(a, c)
    names = [type(op).__name__ for op in build_transform("imagenet", False, 224).transforms]
    assert names == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    assert build_transform("imagenet", False, 224).transforms[0].size == 256


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="imagenet.*fashion_mnist"):
        build_transform("cifar10", True, 32)
    with pytest.raises(ValueError, match="imagenet.*fashion_mnist"):
        build_classification_dataset("cifar10", "/x", "train", None)
    with pytest.raises(ValueError, match="split"):
        build_classification_dataset("fashion_mnist", None, "dev", None)
    with pytest.raises(ValueError, match="split"):
        build_classification_dataset("imagenet", "/x", "test", None)


# ---------------------------------------------------------------------------- ImageNet layout


def test_imagenet_image_folder(tmp_path):
    rng = np.random.default_rng(1)
    for split, per_class in (("train", 3), ("val", 1)):
        for wnid in ("n01", "n02"):
            d = tmp_path / split / wnid
            d.mkdir(parents=True)
            for k in range(per_class):
                arr = rng.integers(0, 256, (40 + 7 * k, 50, 3), dtype=np.uint8)
                ext = "JPEG" if k % 2 == 0 else "png"
                Image.fromarray(arr).save(d / f"{wnid}_{k}.{ext}")
    tr = build_classification_dataset(
        "imagenet", str(tmp_path), "train", build_transform("imagenet", True, 16))
    va = build_classification_dataset(
        "imagenet", str(tmp_path), "val", build_transform("imagenet", False, 16))
    assert tr.classes == ["n01", "n02"] and va.classes == ["n01", "n02"]
    assert len(tr) == 6 and len(va) == 2
    assert sorted(t for _, t in tr.samples) == [0, 0, 0, 1, 1, 1]
    x, y = tr[4]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 1
    x, y = va[0]
    assert x.shape == (3, 16, 16) and y == 0
    s = SeededSamples(tr)
    assert torch.equal(s[(2, 7)][0], s[(2, 7)][0])

    with pytest.raises(FileNotFoundError) as e:
        build_classification_dataset("imagenet", str(tmp_path / "none"), "val", None)
    assert str(tmp_path / "none" / "val") in str(e.value) and "<wnid>" in str(e.value)


# ---------------------------------------------------------------------------- sampler


def test_sampler_deterministic_and_epoch_orders():
    s = ResumableTrainingSampler(10, seed=3, rank=0, world_size=1)
    full = _take(s, 35)
    assert full == _take(ResumableTrainingSampler(10, seed=3, rank=0, world_size=1), 35)
    assert [i for i, _ in full] != [i for i, _ in _take(
        ResumableTrainingSampler(10, seed=4, rank=0, world_size=1), 35)]
    for e in range(3):
        g = torch.Generator().manual_seed(3 + e)
        assert [i for i, _ in full[10 * e:10 * e + 10]] == torch.randperm(10, generator=g).tolist()
    assert [seed for _, seed in full] == [stream_sample_seed(3, p) for p in range(35)]
    assert len({seed for _, seed in full}) == 35
    plain = _take(ResumableTrainingSampler(4, shuffle=False, rank=0, world_size=1), 10)
    assert [i for i, _ in plain] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    # Defaults from detectron2.utils.comm: a single process is rank 0 of 1.
    assert _take(ResumableTrainingSampler(10, seed=3), 12) == full[:12]


@pytest.mark.parametrize("size", [10, 7])
def test_sampler_resume_equals_tail_two_ranks(size):
    world = 2
    n = 30
    for rank in range(world):
        full = _take(ResumableTrainingSampler(size, seed=11, rank=rank, world_size=world), n + 20)
        # start indices before, at and across epoch boundaries (size/2 items per epoch per rank)
        for start in (0, 1, 3, 4, 5, 6, 9, 17, 20):
            resumed = _take(ResumableTrainingSampler(
                size, seed=11, start_index=start, rank=rank, world_size=world), n)
            assert resumed == full[start:start + n], (rank, start)


@pytest.mark.parametrize("size", [10, 7])
def test_sampler_ranks_disjoint_and_cover(size):
    world, epochs = 2, 4
    total = size * epochs
    streams = [
        _take(ResumableTrainingSampler(size, seed=0, rank=r, world_size=world),
              (total - r + world - 1) // world)
        for r in range(world)
    ]
    # Interleaving the ranks gives back the global stream, position by position.
    glob = [None] * total
    for r, items in enumerate(streams):
        for k, item in enumerate(items):
            glob[r + k * world] = item
    assert all(item is not None for item in glob)
    for e in range(epochs):
        epoch = [i for i, _ in glob[e * size:(e + 1) * size]]
        assert sorted(epoch) == list(range(size))  # the ranks together cover the epoch once
    if size % world == 0:  # then each epoch splits evenly: disjoint halves that cover it
        per = size // world
        for e in range(epochs):
            a = {i for i, _ in streams[0][e * per:(e + 1) * per]}
            b = {i for i, _ in streams[1][e * per:(e + 1) * per]}
            assert not a & b and a | b == set(range(size))
    seeds = [seed for _, seed in glob]
    assert len(set(seeds)) == total


def test_sampler_resume_far_is_direct():
    size, start = 1000, 10**9  # epoch 2e6 for world 2: must not replay earlier epochs
    s = ResumableTrainingSampler(size, seed=5, start_index=start, rank=1, world_size=2)
    first = next(iter(s))
    pos = 1 + start * 2
    epoch, offset = divmod(pos, size)
    g = torch.Generator().manual_seed(5 + epoch)
    assert first == (torch.randperm(size, generator=g)[offset].item(), stream_sample_seed(5, pos))


def test_sampler_invalid_args():
    for kwargs in ({"size": 0}, {"size": 5, "seed": -1}, {"size": 5, "start_index": -1},
                   {"size": 5, "rank": 2, "world_size": 2}, {"size": 5, "world_size": 0}):
        kwargs.setdefault("rank", 0)
        kwargs.setdefault("world_size", 1)
        with pytest.raises(ValueError):
            ResumableTrainingSampler(**kwargs)


@needs_fmnist
def test_dataloader_resume_same_batches_any_workers(fmnist_train):
    """Resuming at iteration 2 reproduces the batches (images included) of an uninterrupted run."""
    ds = SeededSamples(_with_transform(fmnist_train, build_transform("fashion_mnist", True, 28)))
    bs = 4

    def batches(start_iter, workers, n):
        sampler = ResumableTrainingSampler(len(ds), seed=7, start_index=start_iter * bs,
                                           rank=0, world_size=1)
        loader = torch.utils.data.DataLoader(ds, batch_size=bs, sampler=sampler,
                                             num_workers=workers)
        return list(itertools.islice(iter(loader), n))

    full = batches(0, 0, 4)
    resumed = batches(2, 1, 2)
    for (xa, ya), (xb, yb) in zip(full[2:], resumed):
        assert xa.shape == (bs, 3, 28, 28) and torch.equal(xa, xb) and torch.equal(ya, yb)
