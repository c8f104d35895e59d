"""3x3 depthwise convolution with a fast CPU path for maps of a few pixels.

Source: the depthwise half of the "3x3 separable convolution" of RandWire's nodes (Xie et al.,
ICCV 2019, sec. 3.2); the module follows ``torch.nn.Conv2d``, whose parameters and results it
keeps.
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DepthwiseConv3x3", "depthwise_conv3x3", "depthwise_tap_index"]


def depthwise_tap_index(height: int, width: int, stride: int) -> torch.Tensor:
    """Which 3x3 tap links each output pixel to each input pixel of a padded depthwise conv.

    For a 3x3 convolution with padding 1 and ``stride`` on a ``height`` x ``width`` map, output
    pixel ``(i, j)`` sees input pixel ``(p, q)`` through tap ``(p - i*stride + 1,
    q - j*stride + 1)`` when both lie in ``[0, 3)``. Taps are numbered ``3 * row + col``
    (0..8); 9 stands for "not connected" (a zero).

    Returns:
        int64 tensor of shape (H_out * W_out, H * W), on the CPU, with
        ``H_out = ceil(H / stride)``, ``W_out = ceil(W / stride)``.

    Raises:
        ValueError: a side < 1 or a stride < 1.
    """
    if height < 1 or width < 1 or stride < 1:
        raise ValueError(
            f"map {height}x{width} with stride {stride}: sides and stride must be >= 1"
        )

    def taps(size: int) -> Tuple[torch.Tensor, torch.Tensor]:
        out = torch.arange(-(-size // stride)) * stride
        tap = torch.arange(size)[None, :] - out[:, None] + 1  # (size_out, size)
        return tap, (tap >= 0) & (tap < 3)

    row, row_ok = taps(height)
    col, col_ok = taps(width)
    index = row[:, None, :, None] * 3 + col[None, :, None, :]  # (H_out, W_out, H, W)
    ok = row_ok[:, None, :, None] & col_ok[None, :, None, :]
    index = torch.where(ok, index, torch.full_like(index, 9))
    return index.reshape(index.shape[0] * index.shape[1], height * width)


class DepthwiseConv3x3(nn.Conv2d):
    """3x3 depthwise convolution, padding 1, no bias: an ``nn.Conv2d`` with a faster CPU path
    for maps of a few pixels.

    The parameter (``weight``, shape (C, 1, 3, 3)) and the result are those of
    ``nn.Conv2d(C, C, 3, stride, padding=1, groups=C, bias=False)``, so checkpoints are shared
    with it. On the CPU, PyTorch's depthwise kernels (oneDNN) take a slow path when the map is
    smaller than the kernel: on 2 cores, forward+backward of a (128, 312, 2, 2) input at stride 1
    takes 17 to 27 ms, against about 2 ms for a (128, 312, 4, 4) input at stride 2 (the same
    output size; docs/SPEED.md, "Depthwise conv on small maps"). Such maps are the last stages of
    RandWire classifiers on small images (Fashion-MNIST at 32 or 64 px). There, for maps of at
    most ``MAX_MATRIX_PIXELS`` pixels, the same sum is computed as one multiply-and-sum: each
    channel's conv is a dense (H_out*W_out, H*W) matrix gathered from its 9 taps (see
    :func:`depthwise_tap_index`), 3x to 44x faster. Larger maps, other devices, and
    ``torch.jit`` tracing (fvcore's FLOP count) use ``nn.Conv2d``'s own kernel.

    Args:
        channels: C, input and output channels.
        stride: 1 or 2 (any stride >= 1 works).

    Shapes:
        (B, C, H, W) -> (B, C, ceil(H/stride), ceil(W/stride)), in the input's memory format
        (contiguous or channels_last).

    Source: paper sec. 3.2 ("3x3 separable convolution": its depthwise part); the module
    follows ``torch.nn.Conv2d``.
    """

    MAX_MATRIX_PIXELS = 4
    """Maps of at most this many pixels (H*W) take the matrix path on the CPU; 0 turns it off."""

    def __init__(self, channels: int, stride: int = 1):
        super().__init__(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv3x3(x, self.weight, self.stride[0], self.MAX_MATRIX_PIXELS)


@functools.lru_cache(maxsize=64)
def _cached_tap_index(height: int, width: int, stride: int) -> torch.Tensor:
    return depthwise_tap_index(height, width, stride)


def depthwise_conv3x3(x: torch.Tensor, weight: torch.Tensor, stride: int = 1,
                      max_matrix_pixels: Optional[int] = None) -> torch.Tensor:
    """Functional form of :class:`DepthwiseConv3x3`: ``F.conv2d(x, weight, None, stride, 1,
    groups=C)``, with the matrix path for CPU maps of at most ``max_matrix_pixels`` pixels.

    Args:
        x: (B, C, H, W), contiguous or channels_last.
        weight: (C, 1, 3, 3).
        stride: >= 1.
        max_matrix_pixels: maps of at most this many pixels take the matrix path on the CPU
            (None: ``DepthwiseConv3x3.MAX_MATRIX_PIXELS``).

    Returns:
        (B, C, ceil(H/stride), ceil(W/stride)), in ``x``'s memory format.
    """
    h, w = x.shape[-2:]
    if max_matrix_pixels is None:
        max_matrix_pixels = DepthwiseConv3x3.MAX_MATRIX_PIXELS
    if (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or x.device.type != "cpu"
        or h * w > max_matrix_pixels
    ):
        return F.conv2d(x, weight, None, stride, 1, 1, weight.shape[0])
    s = stride
    index = _cached_tap_index(h, w, s)
    b, c = x.shape[:2]
    ho, wo = -(-h // s), -(-w // s)
    taps = torch.cat([weight.reshape(c, 9), weight.new_zeros(c, 1)], 1)  # (C, 10)
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        # NHWC: (B, 1, HW, C) * (HoWo, HW, C), summed over the input pixels.
        y = (x.permute(0, 2, 3, 1).reshape(b, 1, h * w, c) * taps.t()[index]).sum(2)
        return y.view(b, ho, wo, c).permute(0, 3, 1, 2)
    # NCHW: (B, C, 1, HW) * (C, HoWo, HW), summed over the input pixels.
    y = (x.reshape(b, c, 1, h * w) * taps[:, index]).sum(3)
    return y.view(b, c, ho, wo)
