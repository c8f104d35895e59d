"""Deploy mode: fold each inference-time BatchNorm into the convolution before it.

In eval mode a BatchNorm is an affine map per channel, ``y = x * s + t`` with
``s = gamma / sqrt(running_var + eps)`` and ``t = beta - running_mean * s``. When it directly
follows a convolution, it folds into that convolution's weight and bias (``W' = W * s`` along
the output channels, ``b' = b * s + t``), and the BatchNorm becomes an identity: one op and one
activation tensor less per conv, the same outputs within float rounding. This is the deploy
switch of RepVGG and what ``torch.ao.quantization.fuse_modules`` does for conv + BN.

Source: Ioffe & Szegedy 2015 (the BN affine map); ``torch.nn.utils.fusion.fuse_conv_bn_weights``
(the folding arithmetic, used here).
"""

from __future__ import annotations

import logging
from typing import Dict, List, Tuple, Type

import torch
from detectron2.layers import Conv2d as D2Conv2d
from detectron2.layers import FrozenBatchNorm2d
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.models import resnet as tv_resnet

__all__ = ["fold_batchnorm", "fold_conv_bn", "register_conv_bn_pairs", "CONV_BN_PAIRS"]

logger = logging.getLogger(__name__)

#: Module class -> the (conv attribute, norm attribute) pairs in which the norm is applied
#: directly to that conv's output. Used by :func:`fold_batchnorm` for modules that keep their
#: conv and BN as siblings (torchvision's ResNet blocks, rwdet's node op). Extend with
#: :func:`register_conv_bn_pairs`.
CONV_BN_PAIRS: Dict[Type[nn.Module], List[Tuple[str, str]]] = {}


def register_conv_bn_pairs(cls: Type[nn.Module], pairs: List[Tuple[str, str]]) -> None:
    """Declare that in every ``cls`` module, each norm attribute of ``pairs`` is applied directly
    to the output of the conv attribute beside it (so :func:`fold_batchnorm` may fold it).

    Args:
        cls: a module class.
        pairs: ``[(conv_attr, norm_attr), ...]``.
    """
    CONV_BN_PAIRS[cls] = list(pairs)


def _is_foldable_norm(m: nn.Module) -> bool:
    return isinstance(m, FrozenBatchNorm2d) or (
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        and m.running_mean is not None
    )


def fold_conv_bn(conv: nn.Conv2d, norm: nn.Module) -> None:
    """Fold ``norm`` (BatchNorm2d, SyncBatchNorm or FrozenBatchNorm2d, with running statistics)
    into ``conv`` in place: ``conv`` gets the folded weight and a bias.

    Args:
        conv: a 2-D convolution (any groups/stride) with ``out_channels == norm`` channels.
        norm: the norm applied directly to ``conv``'s output, in eval mode.

    Raises:
        ValueError: channel counts differ, or ``norm`` is not a foldable BatchNorm.
    """
    if not _is_foldable_norm(norm):
        raise ValueError(f"{type(norm).__name__} cannot be folded; allowed: BatchNorm with running stats, FrozenBatchNorm2d")
    if norm.running_mean.numel() != conv.out_channels:
        raise ValueError(
            f"norm has {norm.running_mean.numel()} channels but the conv has {conv.out_channels} outputs"
        )
    gamma = norm.weight if norm.weight is not None else torch.ones_like(norm.running_mean)
    beta = norm.bias if norm.bias is not None else torch.zeros_like(norm.running_mean)
    with torch.no_grad():
        weight, bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps, gamma, beta
        )
    conv.weight = weight
    conv.bias = bias


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Deploy mode: fold every BatchNorm that directly follows a conv into that conv, in place.

    Folded are: Detectron2 ``Conv2d`` modules with a BN ``norm`` (ResNet and FPN of
    Detectron2, RandWire's stem), conv -> BN runs inside ``nn.Sequential`` (torchvision's
    MobileNetV2, ResNet downsample branches), and the pairs declared in :data:`CONV_BN_PAIRS`
    (torchvision's ResNet blocks, RandWire's node op). Each folded norm is replaced by
    ``nn.Identity`` (for Detectron2's ``Conv2d``, ``norm`` becomes None). GroupNorm and BNs that
    follow no conv are left as they are. The outputs stay equal within float rounding.

    Args:
        module: a model in eval mode (folding uses the running statistics, which is only what
            the model computes in eval mode).

    Returns:
        ``module`` itself, folded.

    Raises:
        RuntimeError: ``module`` (or a BN inside it) is in training mode.
    """
    training = [n for n, m in module.named_modules() if m.training and _is_foldable_norm(m)]
    if training:
        raise RuntimeError(
            f"fold_batchnorm needs an eval-mode model (call .eval() first); in training mode: {training[:3]}"
        )
    folded = 0
    for m in list(module.modules()):
        if isinstance(m, D2Conv2d) and m.norm is not None and _is_foldable_norm(m.norm):
            fold_conv_bn(m, m.norm)
            m.norm = None
            folded += 1
        elif isinstance(m, nn.Sequential):
            names = list(m._modules)
            for a, b in zip(names, names[1:]):
                conv, norm = m._modules[a], m._modules[b]
                if isinstance(conv, nn.Conv2d) and not isinstance(conv, D2Conv2d) and _is_foldable_norm(norm):
                    fold_conv_bn(conv, norm)
                    m._modules[b] = nn.Identity()
                    folded += 1
        for cls, pairs in CONV_BN_PAIRS.items():
            if type(m) is cls:
                for conv_name, norm_name in pairs:
                    norm = getattr(m, norm_name)
                    if _is_foldable_norm(norm):
                        fold_conv_bn(getattr(m, conv_name), norm)
                        setattr(m, norm_name, nn.Identity())
                        folded += 1
    logger.info("Deploy mode: folded %d BatchNorm layers into the convs before them", folded)
    return module


register_conv_bn_pairs(tv_resnet.BasicBlock, [("conv1", "bn1"), ("conv2", "bn2")])
register_conv_bn_pairs(tv_resnet.Bottleneck, [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")])
register_conv_bn_pairs(tv_resnet.ResNet, [("conv1", "bn1")])
