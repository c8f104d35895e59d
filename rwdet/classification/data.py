"""Image-classification data: datasets, transforms and a resumable, seeded training sampler.

* :class:`FashionMNIST` reads the IDX files shipped by Debian's ``dataset-fashion-mnist``
  package (``/usr/share/datasets/fashion-mnist``) directly.
* :func:`build_transform` gives the standard torchvision ImageNet recipe (RandomResizedCrop +
  flip for training; resize + center crop for evaluation) and a Fashion-MNIST equivalent.
* :func:`build_classification_dataset` builds ImageNet (torchvision ``ImageFolder``), Tiny
  ImageNet (:class:`~rwdet.classification.tiny_imagenet.TinyImageNet`, its official layout) or
  Fashion-MNIST from a name, root and split.
* :class:`ResumableTrainingSampler` and :class:`SeededSamples` make training data a pure
  function of ``(seed, position in the stream)``: the order of samples, and each sample's random
  augmentation, are identical after resuming at any iteration, whatever the number of data
  loader workers.

All randomness here comes from torch generators (torchvision's v1 transforms draw from torch's
global CPU generator), never from Python's ``random`` or numpy.
"""

import gzip
import operator
import os
import zlib
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.utils.data
from PIL import Image
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from .tiny_imagenet import TinyImageNet

__all__ = [
    "DEFAULT_FASHION_MNIST_ROOT",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DATASET_NAMES",
    "FashionMNIST",
    "build_transform",
    "build_classification_dataset",
    "ResumableTrainingSampler",
    "SeededSamples",
    "stream_sample_seed",
]

#: Where Debian/Ubuntu's ``dataset-fashion-mnist`` package installs the IDX files.
DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"

#: Class names of Fashion-MNIST, index = label (zalandoresearch/fashion-mnist README).
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

#: Per-channel mean / std of ImageNet-1k training images, RGB, pixel values in [0, 1]
#: (the values used by torchvision's and Detectron2's ImageNet models).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Mean / std of the 60,000 Fashion-MNIST training images, pixel values in [0, 1]
#: (computed from the training IDX file: 0.28604 / 0.35302).
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530

#: Dataset names accepted by :func:`build_transform` and :func:`build_classification_dataset`.
DATASET_NAMES = ("imagenet", "tiny_imagenet", "fashion_mnist")

_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, rows, cols)
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N,)


# ----------------------------------------------------------------------------------------------
# Fashion-MNIST
# ----------------------------------------------------------------------------------------------


def _find_idx_file(root: str, stem: str) -> Optional[str]:
    """``root/stem.gz`` if it exists, else ``root/stem`` if it exists, else None."""
    for name in (stem + ".gz", stem):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    return None


def _read_idx(path: str, magic: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzip or plain) into a uint8 array of its dims.

    Raises ValueError naming ``path`` when the file is not valid gzip (for a gzip file), has a
    different magic number, or its payload size does not match the header's dimensions.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":  # gzip, whatever the name
            raw = gzip.decompress(raw)
        elif path.endswith(".gz"):
            raise ValueError("not a gzip file although its name ends in .gz")
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise ValueError(f"Cannot read IDX file {path}: {e}") from e
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(
            f"Corrupt IDX file {path}: {len(raw)} bytes, shorter than its {header_len}-byte header"
        )
    header = np.frombuffer(raw, dtype=">u4", count=1 + ndim)
    if int(header[0]) != magic:
        raise ValueError(
            f"Corrupt IDX file {path}: magic number {int(header[0])}, expected {magic}"
        )
    dims = tuple(int(d) for d in header[1:])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header_len != expected:
        raise ValueError(
            f"Corrupt IDX file {path}: header says dims {dims} ({expected} bytes of data) but the "
            f"file has {len(raw) - header_len} bytes after the header"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)


class FashionMNIST(torch.utils.data.Dataset):
    """Fashion-MNIST (Xiao, Rasul, Vollgraf 2017) read straight from its IDX files.

    Follows the layout of zalandoresearch/fashion-mnist and of Debian's ``dataset-fashion-mnist``
    package: ``{train,t10k}-images-idx3-ubyte.gz`` (magic 2051; big-endian uint32 dims N, 28, 28,
    then N*28*28 unsigned bytes) and ``{train,t10k}-labels-idx1-ubyte.gz`` (magic 2049; N, then
    N unsigned bytes). The un-gzipped names are accepted too. The interface mirrors
    ``torchvision.datasets.FashionMNIST`` (which would download and convert the files instead).

    Args:
        root: folder holding the four IDX files (default: :data:`DEFAULT_FASHION_MNIST_ROOT`).
        train: the 60,000 training images if True, else the 10,000 test images.
        transform: callable applied to the PIL image (e.g. from :func:`build_transform`);
            None returns the PIL image itself.

    Item ``i``: ``(transform(image), label)`` with ``image`` a PIL image of mode ``'L'``, 28x28,
    pixel values 0..255 (0 = background), and ``label`` a Python int in 0..9 naming
    ``classes[label]``.

    Attributes:
        classes: the 10 class names, :data:`FASHION_MNIST_CLASSES`.
        images: uint8 numpy array of shape (N, 28, 28).
        targets: int64 numpy array of shape (N,).
        image_file, label_file: the paths read.

    Raises:
        FileNotFoundError: an IDX file is missing (the message says where it looked and how to
            install the data).
        ValueError: an IDX file is corrupt (bad gzip, magic number, size, image size, label out
            of range) or the image and label counts differ; the message names the file.
    """

    classes: List[str] = FASHION_MNIST_CLASSES

    def __init__(self, root: Optional[str] = DEFAULT_FASHION_MNIST_ROOT, train: bool = True,
                 transform=None):
        root = os.fspath(root) if root is not None else DEFAULT_FASHION_MNIST_ROOT
        self.root = root
        self.train = bool(train)
        self.transform = transform
        self.classes = list(FASHION_MNIST_CLASSES)
        prefix = "train" if self.train else "t10k"
        paths = {}
        for kind in ("images-idx3", "labels-idx1"):
            stem = f"{prefix}-{kind}-ubyte"
            path = _find_idx_file(root, stem)
            if path is None:
                raise FileNotFoundError(
                    f"Fashion-MNIST file not found: looked for {os.path.join(root, stem)}.gz and "
                    f"{os.path.join(root, stem)}. On Debian/Ubuntu install it with "
                    f"'apt-get install dataset-fashion-mnist' (files go to "
                    f"{DEFAULT_FASHION_MNIST_ROOT}), or download the four "
                    f"*-ubyte.gz files from the GitHub repository zalandoresearch/fashion-mnist "
                    f"(folder data/fashion) into {root} and pass that folder as root."
                )
            paths[kind] = path
        self.image_file = paths["images-idx3"]
        self.label_file = paths["labels-idx1"]
        images = _read_idx(self.image_file, _IDX_IMAGES_MAGIC)
        labels = _read_idx(self.label_file, _IDX_LABELS_MAGIC)
        if images.shape[1:] != (28, 28):
            raise ValueError(
                f"Corrupt Fashion-MNIST file {self.image_file}: images are "
                f"{images.shape[1]}x{images.shape[2]}, expected 28x28"
            )
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"Fashion-MNIST files disagree: {self.image_file} has {images.shape[0]} images "
                f"but {self.label_file} has {labels.shape[0]} labels"
            )
        if labels.size and int(labels.max()) >= len(self.classes):
            raise ValueError(
                f"Corrupt Fashion-MNIST file {self.label_file}: label {int(labels.max())} "
                f"out of range 0..{len(self.classes) - 1}"
            )
        self.images = images
        self.targets = labels.astype(np.int64)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index])  # 2-D uint8 -> mode 'L'
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"FashionMNIST(root={self.root!r}, split={split}, n={len(self)})"


# ----------------------------------------------------------------------------------------------
# Transforms and datasets
# ----------------------------------------------------------------------------------------------


def build_transform(dataset: str, is_train: bool, image_size: int, resize: Optional[int] = None,
                    crop_scale: Tuple[float, float] = (0.08, 1.0)):
    """torchvision (v1) transform from a PIL image to a normalized float tensor.

    Output: float32 tensor of shape (3, image_size, image_size), normalized per channel
    ((x - mean) / std with x in [0, 1]). Randomness (training only) comes from torch's global CPU
    generator, as torchvision's v1 transforms draw it; wrap the dataset in
    :class:`SeededSamples` to make it a function of the sample's position.

    * ``"imagenet"``: the standard recipe (torchvision reference scripts, RandWire paper):
      train = ``RandomResizedCrop(image_size)`` (scale 0.08-1, ratio 3/4-4/3) +
      ``RandomHorizontalFlip``; eval = ``Resize(resize)`` of the shorter side (default
      ``round(image_size * 256 / 224)``, i.e. 256 for 224) + ``CenterCrop(image_size)``; then
      ``ToTensor`` + ``Normalize(IMAGENET_MEAN, IMAGENET_STD)``.
    * ``"tiny_imagenet"``: the same recipe as ``"imagenet"`` (its photos are ImageNet's, at
      64x64); give ``resize = image_size`` to evaluate on the whole photo.
    * ``"fashion_mnist"``: train = ``RandomCrop(28, padding=2)`` + ``RandomHorizontalFlip`` on
      the 28x28 image; then (both) grayscale replicated to 3 channels, ``Resize`` to
      ``(image_size, image_size)`` (bilinear), ``ToTensor``, ``Normalize`` with
      :data:`FASHION_MNIST_MEAN` / :data:`FASHION_MNIST_STD` on each channel. ``resize`` is
      ignored.

    Args:
        dataset: a name in :data:`DATASET_NAMES`.
        is_train: training (random) or evaluation (deterministic) transform.
        image_size: output side in pixels (> 0).
        resize: (tiny_)imagenet evaluation only: the shorter side before the center crop, in
            pixels.
        crop_scale: (tiny_)imagenet training only: ``RandomResizedCrop``'s range of the crop's
            area as a fraction of the photo's (torchvision's ``scale``, timm's ``--scale``).

    Raises:
        ValueError: unknown ``dataset`` (the message lists the allowed names), or a
            non-positive ``image_size`` / ``resize``, or ``resize < image_size``, or a
            ``crop_scale`` outside ``0 < min <= max <= 1``.
    """
    if dataset not in DATASET_NAMES:
        raise ValueError(f"Unknown dataset {dataset!r}; allowed: {', '.join(DATASET_NAMES)}")
    image_size = int(image_size)
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if dataset in ("imagenet", "tiny_imagenet"):
        normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        if is_train:
            lo, hi = (float(v) for v in crop_scale)
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"crop_scale={tuple(crop_scale)} must satisfy 0 < min <= max <= 1")
            return T.Compose([
                T.RandomResizedCrop(image_size, scale=(lo, hi)),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                normalize,
            ])
        resize = int(resize) if resize is not None else int(round(image_size * 256 / 224))
        if resize < image_size:
            raise ValueError(f"resize ({resize}) must be >= image_size ({image_size})")
        return T.Compose([
            T.Resize(resize),
            T.CenterCrop(image_size),
            T.ToTensor(),
            normalize,
        ])
    # fashion_mnist
    ops = []
    if is_train:
        ops += [T.RandomCrop(28, padding=2), T.RandomHorizontalFlip()]
    ops.append(T.Grayscale(num_output_channels=3))
    if image_size != 28:
        ops.append(T.Resize((image_size, image_size)))
    ops += [
        T.ToTensor(),
        T.Normalize((FASHION_MNIST_MEAN,) * 3, (FASHION_MNIST_STD,) * 3),
    ]
    return T.Compose(ops)


def build_classification_dataset(name: str, root: Optional[str], split: str, transform,
                                 image_check: str = "end_marker"):
    """A classification dataset by name; it has ``classes`` (list of class names, index = label).

    * ``"imagenet"``: ``torchvision.datasets.ImageFolder(os.path.join(root, split))`` with split
      ``"train"`` or ``"val"``, ImageNet layout ``root/train/<wnid>/*.JPEG`` and
      ``root/val/<wnid>/*.JPEG`` (labels = sorted wnid folders). Items: (transform(RGB PIL
      image), int label).
    * ``"tiny_imagenet"``: :class:`~rwdet.classification.tiny_imagenet.TinyImageNet` of
      ``root`` (the ``tiny-imagenet-200`` folder), split ``"train"`` or ``"val"``; every photo
      is checked with ``image_check`` first.
    * ``"fashion_mnist"``: :class:`FashionMNIST` (``root`` None or "" means
      :data:`DEFAULT_FASHION_MNIST_ROOT`); split ``"train"``, or ``"test"`` (alias ``"val"``).

    Raises:
        ValueError: unknown name or split, imagenet or tiny_imagenet without a root, or a bad
            Tiny ImageNet annotation or photo (named).
        FileNotFoundError: the ImageNet split folder (message names it and the expected
            layout) or the Fashion-MNIST files are missing.
    """
    if name == "imagenet":
        if split not in ("train", "val"):
            raise ValueError(f"imagenet split must be 'train' or 'val', got {split!r}")
        if not root:
            raise ValueError("imagenet needs a root folder (holding train/ and val/)")
        folder = os.path.join(os.fspath(root), split)
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"ImageNet folder not found: {folder}. Expected the ImageNet layout "
                f"<root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG (one folder per class; "
                f"the validation images sorted into class folders too)."
            )
        return ImageFolder(folder, transform=transform)
    if name == "tiny_imagenet":
        if not root:
            raise ValueError("tiny_imagenet needs a root folder (the unzipped tiny-imagenet-200 folder): "
                             "set DATA.ROOT")
        return TinyImageNet(os.fspath(root), split, transform=transform, image_check=image_check)
    if name == "fashion_mnist":
        if split not in ("train", "test", "val"):
            raise ValueError(
                f"fashion_mnist split must be 'train' or 'test' (or 'val'), got {split!r}"
            )
        return FashionMNIST(root or DEFAULT_FASHION_MNIST_ROOT, train=(split == "train"),
                            transform=transform)
    raise ValueError(f"Unknown dataset {name!r}; allowed: {', '.join(DATASET_NAMES)}")


# ----------------------------------------------------------------------------------------------
# Resumable, seeded training stream
# ----------------------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1


def stream_sample_seed(seed: int, position: int) -> int:
    """The augmentation seed of the sample at global ``position`` of a stream seeded ``seed``.

    SplitMix64's finalizer (Steele, Lea, Flood 2014) applied to
    ``(seed * 0x9E3779B97F4A7C15 + position) mod 2**64``: for a fixed ``seed`` this is a bijection
    of ``position`` modulo 2**64, so every position gets a distinct seed, and nearby positions
    get unrelated ones. Returns an int in ``[0, 2**64)``, valid for
    ``torch.Generator.manual_seed``.
    """
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(position)) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class ResumableTrainingSampler(torch.utils.data.Sampler):
    """Infinite, deterministic training stream that resumes at an exact position.

    Like Detectron2's ``detectron2.data.samplers.TrainingSampler`` (infinite stream, ranks take
    interleaved positions of one shared global stream), but resumable without replaying it.

    The global stream is the concatenation over epochs ``e = 0, 1, 2, ...`` of
    ``torch.randperm(size, generator=torch.Generator().manual_seed(seed + e))`` (of
    ``arange(size)`` when ``shuffle`` is False). Rank ``r`` of ``W`` takes global positions
    ``r, r + W, r + 2W, ...`` and skips its first ``start_index`` of them. Each item is a tuple
    ``(dataset_index, sample_seed)`` of Python ints, with
    ``sample_seed = stream_sample_seed(seed, global_position)`` (distinct for every position);
    feed it to :class:`SeededSamples`.

    So the stream started at ``start_index = k`` is exactly the stream started at 0 without its
    first ``k`` items. Resuming computes the epoch ``(r + k * W) // size`` directly; only that
    epoch's permutation is generated. Note that consecutive seeds share epochs shifted by one
    (seed ``s`` epoch 1 = seed ``s + 1`` epoch 0).

    Args:
        size: dataset length (> 0).
        shuffle: permute each epoch (True) or go in order.
        seed: base seed (int >= 0); use the same on every rank.
        start_index: samples this rank has already consumed (``start_iter * batch_per_rank``).
        rank, world_size: this process's rank and the number of ranks; default from
            ``detectron2.utils.comm`` (0 and 1 without torch.distributed).

    Raises:
        ValueError: ``size <= 0``, ``seed < 0``, ``start_index < 0``, ``world_size < 1`` or
            ``rank`` outside ``[0, world_size)``.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, start_index: int = 0,
                 rank: Optional[int] = None, world_size: Optional[int] = None):
        from detectron2.utils import comm

        size, seed, start_index = operator.index(size), operator.index(seed), \
            operator.index(start_index)
        rank = comm.get_rank() if rank is None else operator.index(rank)
        world_size = comm.get_world_size() if world_size is None else operator.index(world_size)
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if start_index < 0:
            raise ValueError(f"start_index must be >= 0, got {start_index}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, "
                             f"world_size={world_size}")
        self._size = size
        self._shuffle = bool(shuffle)
        self._seed = seed
        self._start_index = start_index
        self._rank = rank
        self._world_size = world_size

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Dataset indices of global epoch ``epoch``: int64 tensor of shape (size,)."""
        if not self._shuffle:
            return torch.arange(self._size)
        g = torch.Generator()
        g.manual_seed(self._seed + int(epoch))
        return torch.randperm(self._size, generator=g)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        size, step = self._size, self._world_size
        pos = self._rank + self._start_index * step  # global position of the next item
        while True:
            epoch, offset = divmod(pos, size)
            order = self.epoch_order(epoch)[offset::step].tolist()
            for index in order:
                yield index, stream_sample_seed(self._seed, pos)
                pos += step


class SeededSamples(torch.utils.data.Dataset):
    """Dataset wrapper that makes each sample's augmentation a function of its own seed.

    ``dataset[(index, sample_seed)]`` (as yielded by :class:`ResumableTrainingSampler`) returns
    ``dataset[index]`` computed inside ``torch.random.fork_rng(devices=[])`` after seeding torch's
    global CPU generator with ``sample_seed``: the result is the same in any data-loader worker
    and after a resume, and the caller's CPU generator state is restored afterwards. Only the
    CPU generator is seeded (``torch.default_generator.manual_seed``, not ``torch.manual_seed``,
    which would also reseed CUDA generators that ``devices=[]`` does not restore); transforms
    that draw from Python's ``random`` or numpy are not covered.

    A plain integer index returns ``dataset[index]`` unchanged (no reseeding), so the wrapper
    also works with ordinary samplers, e.g. for evaluation. ``len`` and ``classes`` delegate to
    the wrapped dataset.
    """

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    @property
    def classes(self) -> Sequence[str]:
        """The wrapped dataset's class names."""
        return self.dataset.classes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        if isinstance(key, (tuple, list)):
            index, sample_seed = key
            with torch.random.fork_rng(devices=[]):
                torch.random.default_generator.manual_seed(int(sample_seed))
                return self.dataset[operator.index(index)]
        return self.dataset[operator.index(key)]
