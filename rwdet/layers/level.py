"""Ops that run all the nodes of one topological level of a RandWire stage at once.

The nodes of a level (nodes whose longest path from the stage's input has the same length)
depend only on earlier levels, so their node operations (paper sec. 3.2: sigmoid-weighted sum
of the inputs, ReLU, 3x3 separable conv, BN) can run as one op each over a buffer that holds
all the level's channels side by side, node after node: (B, k*C, H, W) for k nodes of C
channels. The depthwise conv of such a buffer is one depthwise conv; the k pointwise convs are
one grouped 1x1 conv (groups=k); the k BNs are one BN over k*C channels, since BN normalises
each channel on its own. The arithmetic is that of the per-node ops, so the parameters are the
per-node modules' own.

Source: Xie et al., ICCV 2019, sec. 3.2 (node operations); level scheduling of DAGs as in
IOS (Ding et al., MLSys 2021), here restricted to merging same-kind ops of one level.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import FrozenBatchNorm2d
from torch import nn

__all__ = ["weighted_sum_relu", "level_norm", "level_norm_supported"]


class _WeightedSumReLU(torch.autograd.Function):
    """``out[:, j*C:(j+1)*C] = relu(sum_e w[e] * sources[src[e]])`` over the edges ``e`` into
    slot ``j``; see :func:`weighted_sum_relu`. Saves the sources and its output (which the
    depthwise conv after it saves too), not a separate ReLU mask."""

    @staticmethod
    def forward(ctx, weights, plan, num_slots, channels, memory_format, *sources):
        src0 = sources[0]
        b, _, h, w = src0.shape
        out = torch.empty((b, num_slots * channels, h, w), dtype=src0.dtype, device=src0.device,
                          memory_format=memory_format)
        for j, edges in enumerate(plan):
            o = out[:, j * channels:(j + 1) * channels]
            (s0, e0), rest = edges[0], edges[1:]
            torch.mul(sources[s0], weights[e0], out=o)
            for s, e in rest:
                o.addcmul_(sources[s], weights[e])
        out.relu_()
        ctx.plan, ctx.channels = plan, channels
        ctx.save_for_backward(weights, out, *sources)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        weights, out, *sources = ctx.saved_tensors
        c = ctx.channels
        g = torch.ops.aten.threshold_backward(grad_out, out, 0)
        grad_w = torch.zeros_like(weights) if ctx.needs_input_grad[0] else None
        grad_src: List[Optional[torch.Tensor]] = [None] * len(sources)
        for j, edges in enumerate(ctx.plan):
            gj = g[:, j * c:(j + 1) * c]
            for s, e in edges:
                if grad_w is not None:
                    grad_w[e] = torch.mul(gj, sources[s]).sum()
                if not ctx.needs_input_grad[5 + s]:
                    continue
                if grad_src[s] is None:
                    grad_src[s] = gj * weights[e]
                else:
                    grad_src[s].addcmul_(gj, weights[e])
        return (grad_w, None, None, None, None, *grad_src)


def weighted_sum_relu(
    sources: Sequence[torch.Tensor],
    weights: torch.Tensor,
    plan: Sequence[Sequence[Tuple[int, int]]],
    channels: int,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """The aggregation and ReLU of every node of a level, written into one buffer.

    Slot ``j`` (the level's ``j``-th node) gets ``relu(sum over (s, e) in plan[j] of
    weights[e] * sources[s])``: the paper's sigmoid-weighted sum (``weights`` already holds the
    sigmoids; 1 for a node with a single input) followed by the node's ReLU.

    Args:
        sources: the distinct input tensors, each (B, C, H, W) (views into earlier levels'
            buffers are fine).
        weights: (E,) edge weights.
        plan: per slot, its ``(source index, weight index)`` pairs (at least one).
        channels: C.
        memory_format: of the returned buffer.

    Returns:
        (B, len(plan) * C, H, W), slot ``j`` in channels ``[j*C, (j+1)*C)``. Differentiable in
        ``weights`` and ``sources``.

    Under ``torch.compile`` it runs as plain ops (one graph, no break; tests/test_compile.py).

    Raises:
        ValueError: an empty plan or a slot without inputs.
    """
    if not plan or any(not edges for edges in plan):
        raise ValueError("weighted_sum_relu needs at least one slot, each with at least one input")
    if torch.compiler.is_compiling():
        # Under torch.compile: the same sums as plain ops (the eager Function writes into views
        # of one buffer with out=, which Dynamo cannot trace); the compiler fuses them itself.
        slots = []
        for edges in plan:
            (s0, e0), rest = edges[0], edges[1:]
            acc = sources[s0] * weights[e0]
            for s, e in rest:
                acc = acc + sources[s] * weights[e]
            slots.append(acc)
        return torch.relu(torch.cat(slots, dim=1)).contiguous(memory_format=memory_format)
    return _WeightedSumReLU.apply(
        weights, tuple(tuple(map(tuple, edges)) for edges in plan), len(plan), channels,
        memory_format, *sources,
    )


def level_norm_supported(norms: Sequence[nn.Module]) -> bool:
    """Whether :func:`level_norm` can run these per-node norms as one op: all plain
    ``nn.BatchNorm2d`` (not SyncBN, whose statistics are all-reduced), all
    ``FrozenBatchNorm2d``, all ``nn.GroupNorm`` or all ``nn.Identity``, with equal eps,
    momentum and group counts."""
    kinds = {type(m) for m in norms}
    if len(kinds) != 1:
        return False
    kind = kinds.pop()
    if kind is nn.Identity:
        return True
    if kind is nn.BatchNorm2d:
        return len({(m.eps, m.momentum, m.affine, m.track_running_stats) for m in norms}) == 1 and all(
            m.affine and m.track_running_stats and m.momentum is not None for m in norms)
    if kind is FrozenBatchNorm2d:
        return len({m.eps for m in norms}) == 1
    if kind is nn.GroupNorm:
        return len({(m.eps, m.num_groups, m.num_channels, m.affine) for m in norms}) == 1 and norms[0].affine
    return False


def level_norm(x: torch.Tensor, norms: Sequence[nn.Module]) -> torch.Tensor:
    """The per-node norms of a level applied to its buffer as one op.

    ``x``'s channels are the nodes' outputs side by side, node ``j`` in the ``j``-th block of
    ``norms[j]``'s channels. The result equals applying each ``norms[j]`` to its block:

    * BatchNorm2d: one ``F.batch_norm`` over all channels (per-channel statistics, so the
      same); in training the running statistics of the concatenated copies are written back
      into each node's buffers and each ``num_batches_tracked`` counts the step, as the
      per-node modules would.
    * FrozenBatchNorm2d: one per-channel affine map.
    * GroupNorm with G groups per node: one ``F.group_norm`` with k*G groups (the groups never
      straddle two nodes).
    * Identity: ``x``.

    Args:
        x: (B, sum of the norms' channels, H, W).
        norms: the nodes' norm modules, all of one kind (see :func:`level_norm_supported`).

    Returns:
        a tensor shaped like ``x``.

    Raises:
        ValueError: norms that :func:`level_norm_supported` rejects.
    """
    if not level_norm_supported(norms):
        raise ValueError(f"level_norm cannot batch norms {sorted({type(m).__name__ for m in norms})}")
    first = norms[0]
    if isinstance(first, nn.Identity):
        return x
    if isinstance(first, nn.GroupNorm):
        weight = torch.cat([m.weight for m in norms])
        bias = torch.cat([m.bias for m in norms])
        return F.group_norm(x, first.num_groups * len(norms), weight, bias, first.eps)
    weight = torch.cat([m.weight for m in norms])
    bias = torch.cat([m.bias for m in norms])
    mean = torch.cat([m.running_mean for m in norms])
    var = torch.cat([m.running_var for m in norms])
    if isinstance(first, FrozenBatchNorm2d):
        if not x.requires_grad:
            return F.batch_norm(x, mean, var, weight, bias, False, 0.0, first.eps)
        scale = weight * (var + first.eps).rsqrt()
        shift = bias - mean * scale
        return x * scale.reshape(1, -1, 1, 1).to(x.dtype) + shift.reshape(1, -1, 1, 1).to(x.dtype)
    training = first.training
    out = F.batch_norm(x, mean, var, weight, bias, training, first.momentum, first.eps)
    if training:
        with torch.no_grad():
            offset = 0
            for m in norms:
                n = m.num_features
                m.running_mean.copy_(mean[offset:offset + n])
                m.running_var.copy_(var[offset:offset + n])
                m.num_batches_tracked.add_(1)
                offset += n
    return out
