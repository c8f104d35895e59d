"""FLOPs and parameters of every shipped config, counted with fvcore, as a Markdown table.

FLOPs are multiply-adds as fvcore's ``FlopCountAnalysis`` counts them (one fused multiply-add
= 1 flop), the convention of the paper (Xie et al., ICCV 2019) and of Detectron2. Parameters
are fvcore's ``parameter_count`` of the whole model (trainable or not; buffers excluded).

What is counted for a config:

* classification config (``tools/pretrain_net.py``): the classifier of ``build_classifier`` at
  the config's DATA.IMAGE_SIZE with its MODEL.NUM_CLASSES, batch 1, eval mode;
* detection config (``tools/train_net.py``): the parameters of the whole Faster R-CNN, and the
  FLOPs of its backbone (RandWire + FPN) on one 3x800x1333 image padded to the backbone's size
  divisibility (3x800x1344), as Detectron2's ``preprocess_image`` pads it;
* every config: also its network as a 1000-class ImageNet classifier at 224x224, the paper's
  way of sizing a network and what its FLOPs/params figures (tables 2-3) refer to.

``python tools/flops_table.py --write-readme README.md`` writes the table into the README.
"""

from __future__ import annotations

import glob
import os
import platform
from importlib import metadata
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torchvision
from detectron2.modeling import build_model
from detectron2.structures import ImageList
from fvcore.nn import FlopCountAnalysis, parameter_count
from torch import nn

from ..classification.model import build_classifier
from ..config import randwire_graph_specs
from ..graphs import format_setting
from ..modeling.randwire import RandWire, RandWireClassifier
from ..utils.cpu import cpu_flags, cpu_model_name
from ..utils.io import atomic_write
from .common import load_any_config

__all__ = [
    "DETECTION_INPUT_SIZE",
    "IMAGENET_INPUT_SIZE",
    "PAPER_FIGURES",
    "TABLE_BEGIN",
    "TABLE_END",
    "FlopCount",
    "PaperFigure",
    "count_config",
    "count_detector",
    "count_model",
    "detection_arch",
    "cpu_description",
    "machine_description",
    "paper_figure",
    "render_table",
    "replace_between_markers",
    "shipped_configs",
]

#: (height, width) of the image a detector's backbone is counted on: Detectron2's test size.
DETECTION_INPUT_SIZE = (800, 1333)
#: Side of the square ImageNet input of the paper's figures.
IMAGENET_INPUT_SIZE = 224
#: Number of classes of the ImageNet classifier of the paper's figures.
IMAGENET_CLASSES = 1000

#: Markers around the generated table in a Markdown file (see :func:`replace_between_markers`).
TABLE_BEGIN = "<!-- flops-table:begin -->"
TABLE_END = "<!-- flops-table:end -->"

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass(frozen=True)
class PaperFigure:
    """FLOPs and params the paper gives for one network as a 1000-class classifier at 224x224.

    ``graph`` is "" for a network without random graphs (``arch`` "resnet50"). ``flops``
    are multiply-adds; ``params`` a count. ``flops_text``/``params_text`` are the paper's
    rounding. ``note`` is "recalled" where the figure could not be checked against the paper's tables.
    """

    arch: str
    graph: str
    regime: str
    channels: Optional[int]
    nodes: Optional[int]
    flops: float
    params: float
    flops_text: str
    params_text: str
    note: str = ""


#: The paper's figures: Xie, Kirillov, Girshick, He, "Exploring Randomly Wired Neural Networks
#: for Image Recognition", ICCV 2019 (arXiv:1904.01569), tables 2 and 3. The paper gives no
#: FLOPs/params for ER or BA settings; ResNet-50's are recalled, not checked.
PAPER_FIGURES: Tuple[PaperFigure, ...] = (
    PaperFigure("randwire", "WS(4, 0.75)", "small", 78, 32, 583e6, 5.6e6, "583 M", "5.6 M"),
    PaperFigure("randwire", "WS(4, 0.75)", "regular", 109, 32, 4.0e9, 31.9e6, "4.0 G", "31.9 M"),
    PaperFigure("randwire", "WS(4, 0.75)", "regular", 154, 32, 7.9e9, 61.5e6, "7.9 G", "61.5 M"),
    PaperFigure("resnet50", "", "", None, None, 4.1e9, 25.6e6, "4.1 G", "25.6 M", "recalled"),
)


@dataclass(frozen=True)
class FlopCount:
    """FLOPs and params of one config (see the module docstring for what is counted).

    Attributes:
        config: the config path as given.
        task: "classification" or "detection".
        arch: "randwire" or "resnet<depth>" (e.g. "resnet50").
        graph: the graph generator in the paper's notation without N and seed, e.g.
            "WS(4, 0.75)"; "" without random graphs.
        regime: "small" or "regular" ("" without random graphs).
        channels: C, the base width (None without random graphs).
        nodes: N, nodes per random stage (None without random graphs).
        input_shape: (B, 3, H, W) of the counted forward; B = 1. For a detector, the padded
            image its backbone sees.
        flops: multiply-adds of that forward (fvcore): the classifier, or the detector's
            backbone with its FPN.
        params: parameters of the whole model (fvcore): the classifier, or the whole detector.
        imagenet_flops: multiply-adds of the network as a 1000-class classifier on one
            3x224x224 image (fvcore); the config's own count for an ImageNet config.
        imagenet_params: parameters of that classifier (fvcore).
    """

    config: str
    task: str
    arch: str
    graph: str
    regime: str
    channels: Optional[int]
    nodes: Optional[int]
    input_shape: Tuple[int, int, int, int]
    flops: float
    params: int
    imagenet_flops: float
    imagenet_params: int


def count_model(model: nn.Module, inputs: torch.Tensor) -> Tuple[float, int]:
    """FLOPs and parameters of ``model`` on ``inputs`` (fvcore), in eval mode, without gradients.

    Args:
        model: any module that fvcore can trace (its output may be a tensor or a dict of them).
        inputs: the batch, e.g. a (1, 3, H, W) tensor; its values do not change the count.

    Returns:
        (flops, params): multiply-adds of one forward (fvcore ``FlopCountAnalysis.total()``,
        ops fvcore cannot count, e.g. element-wise ones, count 0) and the number of parameters
        (fvcore ``parameter_count``).
    """
    model.eval()
    with torch.no_grad():
        analysis = FlopCountAnalysis(model, inputs)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        flops = float(analysis.total())
    return flops, int(parameter_count(model)[""])


def count_detector(cfg, image_size: Tuple[int, int] = DETECTION_INPUT_SIZE) -> Tuple[float, int, Tuple[int, ...]]:
    """FLOPs of a detector's backbone (with its FPN) on one image, and the whole detector's params.

    Builds ``cfg``'s model (random weights) on the CPU and counts its ``model.backbone`` with
    fvcore on one 3 x ``image_size`` zero image padded to the backbone's size divisibility, as
    Detectron2's ``preprocess_image`` pads it. Any registered backbone (RandWire or Detectron2's
    ResNet FPN) is counted the same way.

    Args:
        cfg: a detection config (``rwdet.engine.defaults.load_config``); its MODEL.DEVICE is
            not used.
        image_size: (height, width) of the image before padding, in pixels.

    Returns:
        (flops, params, input_shape): multiply-adds of the backbone+FPN forward, parameters
        of the whole detector, and the padded (1, 3, H, W) shape counted.
    """
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    params = int(parameter_count(model)[""])
    backbone = model.backbone
    images = ImageList.from_tensors(
        [torch.zeros(3, *image_size)], backbone.size_divisibility,
        padding_constraints=getattr(backbone, "padding_constraints", None),
    ).tensor
    flops, _ = count_model(backbone, images)
    return flops, params, tuple(images.shape)


def detection_arch(cfg) -> str:
    """The backbone family of a detection config: ``"randwire"``, or ``"resnet<depth>"`` (e.g.
    ``"resnet50"``) when MODEL.BACKBONE.NAME is one of Detectron2's ResNet builders."""
    return f"resnet{cfg.MODEL.RESNETS.DEPTH}" if "resnet" in cfg.MODEL.BACKBONE.NAME else "randwire"


def _imagenet_classifier(cfg) -> nn.Module:
    """The network of ``cfg`` as the paper's 1000-class ImageNet classifier (random init)."""
    arch = cfg.MODEL.get("ARCH", "randwire")
    if "ARCH" not in cfg.MODEL:
        arch = detection_arch(cfg)
    if arch.startswith("resnet"):
        return getattr(torchvision.models, arch)(weights=None, num_classes=IMAGENET_CLASSES)
    rw = cfg.MODEL.RANDWIRE
    body = RandWire(randwire_graph_specs(cfg), rw.REGIME, rw.CHANNELS, out_features=["res5"])
    return RandWireClassifier(body, num_classes=IMAGENET_CLASSES)


def _graph_fields(cfg, arch: str) -> Tuple[str, str, Optional[int], Optional[int]]:
    """(graph, regime, C, N) of a config; empty/None without random graphs."""
    if arch != "randwire":
        return "", "", None, None
    rw = cfg.MODEL.RANDWIRE
    spec = randwire_graph_specs(cfg)[-1]  # a full stage (the regular regime's res2 has N/2)
    graph = format_setting(spec.model, spec.params)
    return graph, rw.REGIME, int(rw.CHANNELS), int(spec.num_nodes)


def count_config(config_file: str, detection_size: Tuple[int, int] = DETECTION_INPUT_SIZE) -> FlopCount:
    """Count FLOPs and params of one config file with fvcore (random weights; no data read).

    Classification config: the classifier at DATA.IMAGE_SIZE (batch 1, its NUM_CLASSES).
    Detection config: backbone+FPN FLOPs on one 3 x ``detection_size`` image padded to the
    backbone's size divisibility, and params of the whole detector. Both: the network as a
    1000-class ImageNet classifier at 224x224 (see :class:`FlopCount`). Runs on the CPU.

    Args:
        config_file: a runnable config (not a ``Base-*.yaml``).
        detection_size: (height, width) of the detector's image before padding.

    Returns:
        FlopCount.

    Raises:
        FileNotFoundError: the file or one of its ``_BASE_`` files does not exist.
        ValueError: invalid RandWire keys, or an unknown MODEL.ARCH.
    """
    task, cfg = load_any_config(config_file, ["MODEL.DEVICE", "cpu"])
    if task == "classification":
        arch = cfg.MODEL.ARCH
        size = int(cfg.DATA.IMAGE_SIZE)
        shape = (1, 3, size, size)
        flops, params = count_model(build_classifier(cfg), torch.zeros(shape))
        same_as_imagenet = (
            size == IMAGENET_INPUT_SIZE and cfg.MODEL.NUM_CLASSES == IMAGENET_CLASSES
            and (arch != "randwire" or cfg.MODEL.HEAD_CHANNELS == 1280)
        )
    else:
        arch = detection_arch(cfg)
        flops, params, shape = count_detector(cfg, detection_size)
        same_as_imagenet = False
    if same_as_imagenet:
        imagenet_flops, imagenet_params = flops, params
    else:
        size = IMAGENET_INPUT_SIZE
        imagenet_flops, imagenet_params = count_model(_imagenet_classifier(cfg), torch.zeros(1, 3, size, size))
    graph, regime, channels, nodes = _graph_fields(cfg, arch)
    return FlopCount(
        config=config_file, task=task, arch=arch, graph=graph, regime=regime, channels=channels,
        nodes=nodes, input_shape=shape, flops=flops, params=params,
        imagenet_flops=imagenet_flops, imagenet_params=imagenet_params,
    )


def shipped_configs(root: str = REPO_ROOT) -> List[str]:
    """Every runnable config under ``<root>/configs`` (recursively), sorted; ``Base-*`` skipped.

    Args:
        root: the repository root (default: the one this package lives in).

    Returns:
        list[str]: paths ``<root>/configs/.../*.yaml``.

    Raises:
        FileNotFoundError: ``<root>/configs`` is not a folder.
    """
    folder = os.path.join(root, "configs")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no configs folder at {folder!r}")
    paths = glob.glob(os.path.join(folder, "**", "*.yaml"), recursive=True)
    return sorted(p for p in paths if not os.path.basename(p).startswith("Base-"))


def paper_figure(count: FlopCount) -> Optional[PaperFigure]:
    """The paper's figure for the network of ``count`` (matched on arch, graph, regime, C, N).

    The figure refers to ``count.imagenet_flops``/``imagenet_params`` (a 1000-class classifier
    at 224x224), whatever the config's own task and input. Seeds are not matched: the paper
    gives one figure per generator setting.

    Returns:
        PaperFigure from :data:`PAPER_FIGURES`, or None where the paper gives none.
    """
    for fig in PAPER_FIGURES:
        if (fig.arch, fig.graph, fig.regime, fig.channels, fig.nodes) == (
            count.arch, count.graph, count.regime, count.channels, count.nodes
        ):
            return fig
    return None


def _fmt_flops(flops: float) -> str:
    return f"{flops / 1e9:.3f} G" if flops >= 1e9 else f"{flops / 1e6:.1f} M"


def _fmt_params(params: float) -> str:
    return f"{params / 1e6:.2f} M"


def _rel(ours: float, paper: float) -> str:
    return f"{100.0 * (ours - paper) / paper:+.1f}%"


def _display_path(path: str) -> str:
    full = os.path.abspath(path)
    if os.path.commonpath([full, REPO_ROOT]) == REPO_ROOT:
        return os.path.relpath(full, REPO_ROOT).replace(os.sep, "/")
    return path


#: CPU flags that decide which kernels run (matrix units, bf16 and int8 vector instructions).
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile")


def cpu_description() -> str:
    """The CPU's model name and which of :data:`ISA_FLAGS` it has (``rwdet.utils.cpu``), e.g.
    ``AMD EPYC (avx2 avx512f avx512_bf16 avx512_vnni; no AMX)``."""
    flags = cpu_flags()
    present = [f for f in ISA_FLAGS if f in flags]
    amx = "" if "amx_bf16" in flags else "; no AMX"
    return f"{cpu_model_name()} ({' '.join(present) or 'no listed ISA flag'}{amx})"


def machine_description() -> str:
    """One line naming the machine, its CPU (:func:`cpu_description`) and the library versions,
    e.g. ``Linux x86_64, 2 CPUs, AMD EPYC (avx2 avx512f avx512_bf16 avx512_vnni; no AMX), Python
    3.11.2, torch 2.14.1, fvcore 0.1.5, detectron2 0.7.2``."""
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            module = __import__(name)
            return getattr(module, "__version__", "unknown")

    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, {cpu_description()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}, fvcore {version('fvcore')}, "
        f"detectron2 {version('detectron2')}"
    )


def render_table(counts: Sequence[FlopCount], command: Optional[str] = None) -> str:
    """A Markdown table of ``counts``, one row each in the given order, then a legend.

    Columns: config | task | graph | regime | C | N | input (B x 3 x H x W counted) | FLOPs |
    params | FLOPs and params as a 1000-class ImageNet classifier at 224 | paper (FLOPs, params,
    and our ImageNet-224 count's difference from them). FLOPs are shown in G (1e9) or M (1e6)
    multiply-adds, params in M (1e6).

    Args:
        counts: results of :func:`count_config`.
        command: the command line that produced the table; when given, a footer line names it
            with :func:`machine_description`.

    Returns:
        str: Markdown text ending in a newline.
    """
    lines = [
        "| config | task | graph | regime | C | N | input | FLOPs | params "
        "| ImageNet-224 FLOPs | ImageNet-224 params | paper (ImageNet-224) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in counts:
        fig = paper_figure(c)
        paper = ""
        if fig is not None:
            note = f", {fig.note}" if fig.note else ""
            paper = (
                f"{fig.flops_text}, {fig.params_text}{note} ({_rel(c.imagenet_flops, fig.flops)}, "
                f"{_rel(c.imagenet_params, fig.params)})"
            )
        graph = c.graph or (f"ResNet-{c.arch[len('resnet'):]}" if c.arch.startswith("resnet") else c.arch)
        what = "backbone+FPN " if c.task == "detection" else ""
        lines.append(
            f"| `{_display_path(c.config)}` | {c.task} | {graph} | {c.regime or '-'} | "
            f"{c.channels if c.channels is not None else '-'} | {c.nodes if c.nodes is not None else '-'} | "
            f"{'x'.join(str(d) for d in c.input_shape)} | {what}{_fmt_flops(c.flops)} | "
            f"{_fmt_params(c.params)} | {_fmt_flops(c.imagenet_flops)} | "
            f"{_fmt_params(c.imagenet_params)} | {paper} |"
        )
    h, w = DETECTION_INPUT_SIZE
    lines += [
        "",
        "FLOPs: multiply-adds (fvcore `FlopCountAnalysis`, one fused multiply-add = 1), one image, "
        "eval mode; params: fvcore `parameter_count` of the whole model. Classification configs: "
        "the classifier at the config's `DATA.IMAGE_SIZE` with its `MODEL.NUM_CLASSES`. Detection "
        f"configs: FLOPs of the backbone with its FPN on one {h}x{w} image padded to the size "
        "divisibility; params of the whole Faster R-CNN. ImageNet-224: the config's network as a "
        "1000-class classifier on one 224x224 image (RandWire body with the paper's head; "
        "ResNet-50: torchvision), the paper's way of sizing networks and what the paper column "
        "(Xie et al. 2019, tables 2-3) refers to, with our count's difference in parentheses.",
    ]
    if command:
        lines += [
            "",
            f"Generated by `{command}` on {machine_description()}. "
            "The counts depend on the models and input sizes only, not on the machine.",
        ]
    return "\n".join(lines) + "\n"


def replace_between_markers(path: str, text: str, begin: str = TABLE_BEGIN, end: str = TABLE_END) -> None:
    """Replace what lies between the ``begin`` and ``end`` marker lines of a text file by ``text``.

    The markers stay; ``text`` goes on the lines between them. The file is rewritten
    atomically (a temporary file in the same folder, then ``os.replace``).

    Args:
        path: the file, e.g. README.md.
        text: the new content (a trailing newline is added if missing).
        begin, end: the marker strings; each must occur exactly once, ``begin`` first.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a marker is missing, repeated, or they are out of order; the file is
            left unchanged.
    """
    with open(path, encoding="utf-8") as f:
        content = f.read()
    for marker in (begin, end):
        n = content.count(marker)
        if n != 1:
            raise ValueError(
                f"{path}: marker {marker!r} occurs {n} times; it must occur exactly once "
                f"(put {begin!r} and {end!r} where the table goes)"
            )
    i, j = content.index(begin), content.index(end)
    if j < i:
        raise ValueError(f"{path}: {end!r} comes before {begin!r}")
    if not text.endswith("\n"):
        text += "\n"
    new = content[: i + len(begin)] + "\n" + text + content[j:]
    if new != content:
        atomic_write(path, lambda f: f.write(new.encode("utf-8")))
