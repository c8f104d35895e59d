"""Deploy mode: pad a convolution's channels with zero filters (an exact rewrite).

A conv given extra output channels whose filters and biases are zero computes zeros there; a
conv given extra input channels whose weights are zero ignores them. Chained, the extra
channels carry exact zeros through ReLU, sums and further padded convs, and the real channels
keep their values (the added terms are ``0 * 0``). Runtimes that block channels by the SIMD
width (oneDNN / OpenVINO's ``nChw16c``, ONNX Runtime's NCHWc transformer, which only takes
convs whose output channels are a multiple of the block) can then run every conv in the
blocked layout. Source: the channel-blocked layouts of oneDNN ("memory format propagation")
and ONNX Runtime's ``NchwcTransformer``; the rewrite itself is plain zero padding.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["pad_conv_channels", "round_up"]


def round_up(channels: int, multiple: int) -> int:
    """``channels`` rounded up to a multiple of ``multiple`` (>= 1)."""
    return -(-channels // multiple) * multiple


def pad_conv_channels(conv: nn.Conv2d, out_channels: Optional[int] = None,
                      in_channels: Optional[int] = None) -> None:
    """Give ``conv`` more output and/or input channels, in place, with zero weights and biases.

    A dense conv (``groups == 1``) gets zero filters for the new outputs (and zero biases) and
    zero weights for the new inputs. A depthwise conv (``groups == in_channels ==
    out_channels``) stays depthwise: ``out_channels`` and ``in_channels`` must then be equal,
    and the new channels get zero filters.

    Args:
        conv: an ``nn.Conv2d`` (Detectron2's ``Conv2d`` and rwdet's ``DepthwiseConv3x3``
            included) without a norm (fold BatchNorm first: a padded BN channel would not be
            zero).
        out_channels, in_channels: the new counts (None: unchanged); at least the current ones.

    Shapes:
        weight (O, I/g, kh, kw) -> (O', I'/g', kh, kw); bias (O,) -> (O',).

    Raises:
        ValueError: a count below the current one, a grouped conv that is not depthwise,
            depthwise counts that differ, or a conv with a norm attached.
    """
    out_channels = conv.out_channels if out_channels is None else int(out_channels)
    in_channels = conv.in_channels if in_channels is None else int(in_channels)
    if out_channels < conv.out_channels or in_channels < conv.in_channels:
        raise ValueError(
            f"cannot pad a conv of {conv.in_channels} -> {conv.out_channels} channels to "
            f"{in_channels} -> {out_channels}: padding only adds channels"
        )
    if getattr(conv, "norm", None) is not None:
        raise ValueError("the conv still has a norm; fold it first (rwdet.layers.fold_batchnorm)")
    depthwise = conv.groups > 1
    if depthwise and not (conv.groups == conv.in_channels == conv.out_channels):
        raise ValueError(
            f"conv with groups={conv.groups}, {conv.in_channels} -> {conv.out_channels} channels: "
            "only dense (groups=1) and depthwise convs can be padded"
        )
    if depthwise and in_channels != out_channels:
        raise ValueError(f"a depthwise conv keeps in == out channels; got {in_channels} -> {out_channels}")
    w = conv.weight
    with torch.no_grad():
        if depthwise:
            weight = w.new_zeros((out_channels,) + tuple(w.shape[1:]))
            weight[: w.shape[0]] = w
        else:
            weight = w.new_zeros((out_channels, in_channels) + tuple(w.shape[2:]))
            weight[: w.shape[0], : w.shape[1]] = w
        conv.weight = nn.Parameter(weight, requires_grad=w.requires_grad)
        if conv.bias is not None:
            bias = conv.bias.new_zeros(out_channels)
            bias[: conv.bias.shape[0]] = conv.bias
            conv.bias = nn.Parameter(bias, requires_grad=conv.bias.requires_grad)
    conv.out_channels, conv.in_channels = out_channels, in_channels
    if depthwise:
        conv.groups = out_channels
