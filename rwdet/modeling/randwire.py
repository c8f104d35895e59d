"""RandWire networks: node, stage, ImageNet classifier and Detectron2 backbone.

Source: Xie et al., "Exploring Randomly Wired Neural Networks for Image Recognition", ICCV 2019,
sec. 3.2 (node operations), sec. 3.4 and table 1 (architectures). Module layout follows
Detectron2's ``modeling/backbone/resnet.py`` (a ``Backbone`` with ``stem`` and ``res2..res5``,
``freeze``, ``output_shape``) so FPN and the checkpointer work as with ResNets.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from detectron2.modeling.backbone import Backbone

from ..config import REGIMES
from ..graphs import GraphSpec
from ..layers import DepthwiseConv3x3, depthwise_tap_index, register_conv_bn_pairs
from ..layers.depthwise import depthwise_conv3x3
from ..layers.level import level_norm, level_norm_supported, weighted_sum_relu

__all__ = [
    "DepthwiseConv3x3",
    "depthwise_tap_index",
    "SeparableConv",
    "RandWireNode",
    "RandWireStage",
    "RandWire",
    "classifier_input_channels",
    "RandWireClassifier",
    "ConvBlock",
    "REGIMES",
    "stage_layout",
]


def _check_norm(norm: str, channels: int) -> None:
    allowed = ("", "BN", "SyncBN", "naiveSyncBN", "FrozenBN", "GN")
    if norm not in allowed:
        raise ValueError(f"norm={norm!r} is not supported; allowed: {list(allowed)}")
    if norm == "GN" and channels % 32:
        raise ValueError(
            f"norm='GN' uses 32 groups, but a layer has {channels} channels, not a multiple of 32;"
            " choose a channel count C whose stage widths are multiples of 32, or another norm"
        )


class SeparableConv(nn.Module):
    """ReLU -> 3x3 depthwise conv -> 1x1 pointwise conv -> norm: the node transformation.

    No non-linearity between the depthwise and pointwise convs (paper sec. 3.2).

    Args:
        in_channels, out_channels: channel counts.
        stride: stride of the depthwise conv (2 at the nodes fed by a stage's input node).
        norm: Detectron2 norm name ("BN", "SyncBN", "naiveSyncBN", "FrozenBN", "GN" or "").

    Shapes:
        (B, in_channels, H, W) -> (B, out_channels, ceil(H/stride), ceil(W/stride)).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, norm: str = "BN"):
        super().__init__()
        self.depthwise = DepthwiseConv3x3(in_channels, stride)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.norm = get_norm(norm, out_channels) or nn.Identity()
        for conv in (self.depthwise, self.pointwise):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor, inplace_relu: bool = False) -> torch.Tensor:
        return self.norm(self.pointwise(self.depthwise(F.relu(x, inplace=inplace_relu))))


register_conv_bn_pairs(SeparableConv, [("pointwise", "norm")])


class RandWireNode(nn.Module):
    """One node: aggregation (sigmoid-weighted sum) -> transformation (:class:`SeparableConv`).

    Paper sec. 3.2: the inputs are summed with weights ``sigmoid(w_i)``, one learnable scalar per
    incoming edge; a node with a single input uses it as is (no weight).

    Args:
        in_degree: number of incoming edges (>= 1).
        in_channels, out_channels, stride, norm: see :class:`SeparableConv`.

    Shapes:
        inputs: ``in_degree`` tensors of shape (B, in_channels, H, W) -> (B, out_channels, H', W').
    """

    def __init__(self, in_degree: int, in_channels: int, out_channels: int, stride: int, norm: str):
        super().__init__()
        if in_degree < 1:
            raise ValueError(f"in_degree={in_degree} must be >= 1")
        self.in_degree = in_degree
        if in_degree > 1:
            self.edge_weights = nn.Parameter(torch.zeros(in_degree))
        self.op = SeparableConv(in_channels, out_channels, stride, norm)

    def forward(self, inputs: Sequence[torch.Tensor], active: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Args:
            inputs: one tensor per incoming edge, in predecessor order (``in_degree`` of them);
                with ``active``, only those edges' tensors, in the same order.
            active: for a damaged graph (:meth:`RandWireStage.set_damage`): the positions of
                the surviving incoming edges, each input keeping its own weight. None: all.
        """
        if self.in_degree == 1:
            # The input may feed other nodes too: the ReLU must not modify it.
            return self.op(inputs[0])
        w = torch.sigmoid(self.edge_weights)
        idx = range(self.in_degree) if active is None else active
        x = None
        for t, i in zip(inputs, idx):
            x = t * w[i] if x is None else x.addcmul_(t, w[i])
        return self.op(x, inplace_relu=True)


class _Level(NamedTuple):
    """One topological level of a stage's (possibly damaged) graph, as the level-batched
    forward runs it."""

    nodes: List[int]  # the level's live nodes, in index order (slot j = nodes[j])
    sources: List[int]  # the distinct earlier nodes whose outputs the level reads
    plan: List[List[Tuple[int, int]]]  # per slot: (index into sources, index into weights)
    weighted: List[int]  # slots whose node has edge weights, in the order of the weight vector
    # weight index = offset of the slot's node in the concatenated sigmoids + in-edge position;
    # single-input nodes use the trailing constant 1.


FORWARD_MODES = ("level", "node")
RECOMPUTE_MODES = ("none", "depthwise", "pointwise", "stage")


def _topological_levels(preds: List[List[int]], inputs: List[List[int]], active,
                        alive: List[bool]) -> List[_Level]:
    """Group the live nodes by topological level (0: fed by the stage input) and plan each
    level's weighted sums; see :class:`_Level`."""
    n = len(preds)
    depth = [0] * n
    for v in range(n):  # index order is a topological order
        if alive[v] and preds[v]:
            depth[v] = 1 + max(depth[u] for u in inputs[v])
    by_level: Dict[int, List[int]] = {}
    for v in range(n):
        if alive[v]:
            by_level.setdefault(depth[v], []).append(v)
    levels = []
    for d in sorted(by_level):
        nodes = by_level[d]
        if d == 0:
            levels.append(_Level(nodes, [], [], []))
            continue
        sources = sorted({u for v in nodes for u in inputs[v]})
        where = {u: i for i, u in enumerate(sources)}
        weighted = [j for j, v in enumerate(nodes) if len(preds[v]) > 1]
        offsets, total = {}, 0
        for j in weighted:
            offsets[j] = total
            total += len(preds[nodes[j]])
        plan = []
        for j, v in enumerate(nodes):
            positions = active[v] if active[v] is not None else range(len(preds[v]))
            if j in offsets:
                plan.append([(where[u], offsets[j] + i) for u, i in zip(inputs[v], positions)])
            else:
                plan.append([(where[inputs[v][0]], total)])  # the constant 1
        levels.append(_Level(nodes, sources, plan, weighted))
    return levels


class _Wiring(NamedTuple):
    """What a stage's forward computes: the intact graph, or the graph left by some damage."""

    alive: List[bool]  # node runs
    inputs: List[List[int]]  # the predecessors whose outputs each node sums
    active: List[Optional[List[int]]]  # their positions among the node's in-edges (None: all)
    outputs: List[int]  # output nodes that run
    fanout: List[int]  # consumers of each node's output (the output node included)
    levels: List[_Level]  # the live nodes by topological level, for the level-batched forward


class RandWireStage(CNNBlockBase):
    """A stage built from one random DAG (paper sec. 3.2-3.4).

    The extra input node feeds every node with no predecessor; those nodes use ``stride`` and map
    ``in_channels`` to ``out_channels`` (the stage's downsampling and channel doubling). Every
    other node maps ``out_channels`` to itself. The extra output node returns the unweighted mean
    of the nodes with no successor.

    Two forwards compute the same function with the same parameters (``forward_mode``):

    * "level": the nodes of each topological level run together, one op per kind:
      one weighted-sum+ReLU into a buffer of all the level's channels, one depthwise conv, one
      grouped 1x1 conv, one norm (``rwdet.layers.level``); the stage input's ReLU is shared by
      the input nodes. Stages with SyncBN (whose statistics are all-reduced per module), and
      ``torch.jit`` tracing (fvcore's FLOP count), use the per-node forward.
    * "node" (default): one node at a time in index order (a topological order), each node's
      output released once its last consumer has run: the reference path. On a 2-core CPU it
      is the faster of the two (the level forward measured 0.80-0.86x its training speed:
      oneDNN's grouped 1x1 convs and the level buffers' copies cost more than the ops saved).

    ``recompute`` trades compute for memory in training, with ``torch.utils.checkpoint``
    (non-reentrant): "depthwise" and "pointwise" (level forward only) recompute each level's
    cheap ops, with the norm outside so that BN running statistics update once per step;
    "stage" (either forward) stores only the stage's input and reruns the whole stage in
    backward, its norms' running statistics restored after the rerun so that they too update
    once per step.

    Graph damage (paper sec. 5, "graph damage"): :meth:`set_damage` removes nodes and edges at
    evaluation time, without retraining. A removed node or edge contributes zero: it is left
    out of every weighted sum it fed (the other inputs keep their own weights) and of the
    output node's mean, whose denominator stays the number of undamaged output nodes. A node
    that loses all of its inputs is removed too (its output would be a constant), and so on
    downstream. If no output node survives, the stage returns zeros of its usual shape, so
    the damaged network still runs.

    Args:
        spec: the stage's DAG.
        in_channels, out_channels: channels of the stage input and output.
        stride: 1 or 2.
        norm: Detectron2 norm name.
        forward_mode: "level" or "node" (see :attr:`forward_mode`).
        recompute: "none", "depthwise", "pointwise" or "stage" (see :attr:`recompute`).

    Shapes:
        (B, in_channels, H, W) -> (B, out_channels, ceil(H/stride), ceil(W/stride)).

    Raises:
        ValueError: on an unsupported norm, GN with a channel count not divisible by 32, or an
            unknown forward_mode or recompute.
    """

    def __init__(self, spec: GraphSpec, in_channels: int, out_channels: int, stride: int, norm: str = "BN",
                 forward_mode: str = "node", recompute: str = "none"):
        super().__init__(in_channels, out_channels, stride)
        _check_norm(norm, out_channels)
        self.spec = spec
        self.forward_mode = forward_mode
        self.recompute = recompute
        preds = spec.predecessors()
        self.nodes = nn.ModuleList()
        for p in preds:
            if p:
                self.nodes.append(RandWireNode(len(p), out_channels, out_channels, 1, norm))
            else:
                self.nodes.append(RandWireNode(1, in_channels, out_channels, stride, norm))
        self._preds: List[List[int]] = preds
        self._outputs: List[int] = spec.output_nodes()
        # Number of consumers of each node's output (successors, plus the output node).
        fanout = [len(s) for s in spec.successors()]
        for u in self._outputs:
            fanout[u] += 1
        n = spec.num_nodes
        alive = [True] * n
        self._intact = _Wiring(alive, preds, [None] * n, self._outputs, fanout,
                               _topological_levels(preds, preds, [None] * n, alive))
        self._wiring = self._intact

    def set_damage(self, nodes: Iterable[int] = (), edges: Iterable[Tuple[int, int]] = ()) -> None:
        """Remove ``nodes`` and ``edges`` from the stage's graph until :meth:`clear_damage`.

        See the class docstring for what removal means. Removing nothing restores the intact
        stage exactly. The parameters are untouched.

        Args:
            nodes: node indices in ``[0, N)``.
            edges: ``(u, v)`` pairs, each an edge of the stage's graph.

        Raises:
            ValueError: a node out of range or an edge not in the graph (the message lists
                what is allowed).
        """
        nodes = sorted({int(v) for v in nodes})
        edges = sorted({(int(u), int(v)) for u, v in edges})
        n = self.spec.num_nodes
        bad = [v for v in nodes if not 0 <= v < n]
        if bad:
            raise ValueError(f"nodes {bad} are out of range; this stage has nodes 0..{n - 1}")
        known = set(self.spec.edges)
        bad_edges = [e for e in edges if e not in known]
        if bad_edges:
            raise ValueError(
                f"edges {bad_edges} are not in the stage's graph {self.spec.describe()}; "
                "allowed: the pairs of spec.edges"
            )
        if not nodes and not edges:
            self._wiring = self._intact
            return
        removed_nodes, removed_edges = set(nodes), set(edges)
        alive = [False] * n
        active: List[List[int]] = [[] for _ in range(n)]
        for v, preds in enumerate(self._preds):
            if v in removed_nodes:
                continue
            if not preds:
                alive[v] = True
                continue
            active[v] = [i for i, u in enumerate(preds) if alive[u] and (u, v) not in removed_edges]
            alive[v] = bool(active[v])
        inputs = [[self._preds[v][i] for i in active[v]] for v in range(n)]
        fanout = [0] * n
        for v in range(n):
            for u in inputs[v]:
                fanout[u] += 1
        outputs = [u for u in self._outputs if alive[u]]
        for u in outputs:
            fanout[u] += 1
        levels = _topological_levels(self._preds, inputs, active, alive)
        self._wiring = _Wiring(alive, inputs, active, outputs, fanout, levels)

    def clear_damage(self) -> None:
        """Undo :meth:`set_damage`: the stage computes its intact graph again."""
        self._wiring = self._intact

    @property
    def is_damaged(self) -> bool:
        """True between :meth:`set_damage` (removing something) and :meth:`clear_damage`."""
        return self._wiring is not self._intact

    @property
    def removed_nodes(self) -> List[int]:
        """Nodes that do not run under the current damage (removed, or left without inputs)."""
        return [v for v, a in enumerate(self._wiring.alive) if not a]

    @property
    def forward_mode(self) -> str:
        """"level" (each topological level's nodes as one op each) or "node" (one node at a
        time: the reference path). Both compute the same function with the same parameters."""
        return self._forward_mode

    @forward_mode.setter
    def forward_mode(self, mode: str) -> None:
        if mode not in FORWARD_MODES:
            raise ValueError(f"forward_mode={mode!r} is unknown; allowed: {list(FORWARD_MODES)}")
        self._forward_mode = mode

    @property
    def recompute(self) -> str:
        """What a training forward recomputes in backward instead of storing: "none";
        "depthwise" (level forward: weighted sums, ReLU, depthwise conv); "pointwise" (level
        forward: that and the pointwise conv; only the BN input and output stay stored);
        "stage" (either forward: everything but the stage's input, at the cost of a second
        forward of the stage in backward)."""
        return self._recompute

    @recompute.setter
    def recompute(self, mode: str) -> None:
        if mode not in RECOMPUTE_MODES:
            raise ValueError(f"recompute={mode!r} is unknown; allowed: {list(RECOMPUTE_MODES)}")
        self._recompute = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self._recompute == "stage" and self.training and torch.is_grad_enabled()
                and not torch.jit.is_tracing()):
            return torch.utils.checkpoint.checkpoint(
                self._forward, x, use_reentrant=False, context_fn=self._stage_recompute_contexts
            )
        return self._forward(x)

    def _stage_recompute_contexts(self):
        """checkpoint's (forward, recompute) contexts for recompute="stage": the rerun in
        backward leaves the norms' running statistics as the forward left them."""
        return contextlib.nullcontext(), _kept_norm_statistics(self)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self._forward_mode == "node"
            or torch.jit.is_tracing()
            or torch.jit.is_scripting()
            or not self._level_batchable()
        ):
            return self._forward_nodes(x)
        return self._forward_levels(x)

    def _level_batchable(self) -> bool:
        """Whether every level's norms and pointwise biases can run as one op (SyncBN and
        mixed norms cannot: those stages run node by node)."""
        ops = [node.op for node in self.nodes]
        return level_norm_supported([op.norm for op in ops]) and len(
            {op.pointwise.bias is None for op in ops}) == 1

    def _level_convs(self, level: _Level, x: torch.Tensor, weights: Optional[torch.Tensor],
                     pointwise: bool, *sources: torch.Tensor) -> torch.Tensor:
        """Aggregation, ReLU and depthwise conv of a level (and its pointwise conv if
        ``pointwise``): (B, k*C_in, H, W) -> (B, k*C, H', W')."""
        ops = [self.nodes[v].op for v in level.nodes]
        if not sources:  # level 0: every node reads the stage input through one shared ReLU
            r = F.relu(x)
            stride = ops[0].depthwise.stride[0]
            parts = [depthwise_conv3x3(r, op.depthwise.weight, stride) for op in ops]
            y = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
        else:
            dw = torch.cat([op.depthwise.weight for op in ops]) if len(ops) > 1 else ops[0].depthwise.weight
            y = weighted_sum_relu(sources, weights, level.plan, self.out_channels, _memory_format(x))
            y = depthwise_conv3x3(y, dw, 1)
        if pointwise:
            y = self._level_pointwise(ops, y)
        return y

    @staticmethod
    def _level_pointwise(ops, y: torch.Tensor) -> torch.Tensor:
        pw = torch.cat([op.pointwise.weight for op in ops]) if len(ops) > 1 else ops[0].pointwise.weight
        bias = None
        if ops[0].pointwise.bias is not None:  # deploy mode: the BN is folded into the conv
            bias = torch.cat([op.pointwise.bias for op in ops])
        return F.conv2d(y, pw, bias, 1, 0, 1, len(ops))

    def _level_weights(self, level: _Level, like: torch.Tensor) -> torch.Tensor:
        """The sigmoids of the level's edge weights, then a constant 1 (single-input nodes)."""
        params = [self.nodes[level.nodes[j]].edge_weights for j in level.weighted]
        one = like.new_ones(1)
        if not params:
            return one
        return torch.cat([torch.sigmoid(torch.cat(params)).to(like.dtype), one])

    def _forward_levels(self, x: torch.Tensor) -> torch.Tensor:
        """Level-batched forward: per topological level one weighted-sum+ReLU op, one
        depthwise conv, one grouped 1x1 conv and one norm (see ``rwdet.layers.level``)."""
        w = self._wiring
        if not w.outputs:
            return self._no_output(x)
        outputs: Dict[int, torch.Tensor] = {}
        recompute = self._recompute if (self.training and torch.is_grad_enabled()) else "none"
        if recompute == "stage":  # forward() checkpoints the whole stage around this
            recompute = "none"
        for level in w.levels:
            ops = [self.nodes[v].op for v in level.nodes]
            sources = [outputs[u] for u in level.sources]
            weights = self._level_weights(level, x) if sources else None
            pointwise = recompute == "pointwise"
            if recompute == "none":
                y = self._level_convs(level, x, weights, True, *sources)
            else:
                y = torch.utils.checkpoint.checkpoint(
                    self._level_convs, level, x, weights, pointwise, *sources, use_reentrant=False
                )
                if not pointwise:
                    y = self._level_pointwise(ops, y)
            y = level_norm(y, [op.norm for op in ops])
            # One split (its backward is one cat), not a slice per node: a slice's backward
            # would fill a zero tensor of the whole level for each consumer.
            outputs.update(zip(level.nodes, torch.split(y, self.out_channels, 1)))
        out = outputs[w.outputs[0]]
        for u in w.outputs[1:]:
            out = out + outputs[u]
        if len(self._outputs) > 1:
            out = out / len(self._outputs)
        elif len(w.outputs) == 1:
            out = out.contiguous(memory_format=_memory_format(x))
        return out

    def _no_output(self, x: torch.Tensor) -> torch.Tensor:
        """Zeros of the stage's output shape, for damage that left no output node."""
        h, wd = x.shape[-2:]
        s = self.stride
        return x.new_zeros(x.shape[0], self.out_channels, -(-h // s), -(-wd // s))

    def _forward_nodes(self, x: torch.Tensor) -> torch.Tensor:
        """Reference forward: one node at a time, in index order."""
        w = self._wiring
        live: Dict[int, torch.Tensor] = {}
        remaining = list(w.fanout)
        for v, node in enumerate(self.nodes):
            if not w.alive[v]:
                continue
            preds = w.inputs[v]
            if not preds:  # fed by the stage's input node
                live[v] = node((x,))
                continue
            live[v] = node([live[u] for u in preds], w.active[v])
            for u in preds:
                remaining[u] -= 1
                if remaining[u] == 0:
                    del live[u]
        if not w.outputs:  # damage left no output node
            return self._no_output(x)
        out = live.pop(w.outputs[0])
        for u in w.outputs[1:]:
            out = out + live.pop(u)
        if len(self._outputs) > 1:
            out = out / len(self._outputs)
        return out

    def extra_repr(self) -> str:
        return self.spec.describe()


@contextlib.contextmanager
def _kept_norm_statistics(module: nn.Module):
    """Restore every buffer of ``module``'s norm layers (BN running mean and variance,
    num_batches_tracked) on exit: a checkpointed stage's rerun in backward must not count its
    batch a second time."""
    buffers = [b for m in module.modules() if isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm))
               for b in m.buffers()]
    kept = [b.detach().clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, k in zip(buffers, kept):
                b.copy_(k)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last for an NHWC tensor, else contiguous (the format level buffers take)."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def stage_layout(regime: str, channels: int) -> Dict[str, int]:
    """Output channels of ``stem`` and ``res2..res5`` for a regime (paper table 1).

    Args:
        regime: "small" or "regular".
        channels: C, the base width.

    Returns:
        dict: ``{"stem": C//2, "res2": C, ...}``; small: res3..res5 = C, 2C, 4C;
        regular: res2..res5 = C, 2C, 4C, 8C.

    Raises:
        ValueError: unknown regime or C < 2.
    """
    if regime not in REGIMES:
        raise ValueError(f"regime={regime!r} is unknown; allowed: {sorted(REGIMES)}")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 2:
        raise ValueError(f"channels C={channels!r} must be an integer >= 2")
    c = channels
    if regime == "small":
        return {"stem": c // 2, "res2": c, "res3": c, "res4": 2 * c, "res5": 4 * c}
    return {"stem": c // 2, "res2": c, "res3": 2 * c, "res4": 4 * c, "res5": 8 * c}


class ConvBlock(CNNBlockBase):
    """[ReLU ->] 3x3 conv, stride 2 -> norm: the body's plain conv stages (paper table 1).

    The stem (conv1: image -> C/2 channels) is one without the ReLU; the small regime's conv2
    (res2) is one with it. Frozen by Detectron2's ``CNNBlockBase.freeze``.

    Args:
        in_channels, out_channels: channels of the input and of the output.
        norm: Detectron2 norm name ("BN", "SyncBN", "naiveSyncBN", "FrozenBN", "GN" or "").
        relu_first: apply ReLU to the input first (res2 of the small regime; not the stem).
        conv_name: the conv's attribute name, which names its state-dict keys: "conv1" for the
            stem (``stem.conv1.*``), "conv" for res2 (``res2.conv.*``), as in every checkpoint.

    Shapes:
        forward: (B, in_channels, H, W) -> (B, out_channels, ceil(H/2), ceil(W/2)).

    Raises:
        ValueError: a bad norm (e.g. GN whose groups do not divide ``out_channels``).
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str = "BN", relu_first: bool = False,
                 conv_name: str = "conv"):
        super().__init__(in_channels, out_channels, 2)
        _check_norm(norm, out_channels)
        self.relu_first = relu_first
        self.conv_name = conv_name
        conv = Conv2d(
            in_channels, out_channels, 3, stride=2, padding=1, bias=False,
            norm=get_norm(norm, out_channels),
        )
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        self.add_module(conv_name, conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = getattr(self, self.conv_name)
        return conv(F.relu(x) if self.relu_first else x)


class RandWire(Backbone):
    """RandWire body as a Detectron2 backbone: ``stem`` then ``res2..res5`` (conv1..conv5).

    Args:
        specs: one :class:`GraphSpec` per random stage, in order: 3 for the small regime
            (res3..res5), 4 for the regular regime (res2..res5).
        regime: "small" or "regular".
        channels: C.
        in_channels: image channels (3).
        norm: Detectron2 norm name: "BN", "SyncBN", "naiveSyncBN", "FrozenBN", "GN" or "".
        out_features: names to return from ``forward``, from "stem", "res2".."res5".
        freeze_at: 0 trains everything; 1 freezes the stem; k >= 2 freezes the stem and
            res2..res<k>, as Detectron2's ResNet does (frozen BN too).
        forward_mode: "node" (the per-node reference, default) or "level" (level-batched); see
            :attr:`RandWireStage.forward_mode`.
        recompute: what the stages recompute in backward; see :attr:`RandWireStage.recompute`.

    Shapes:
        forward: (B, in_channels, H, W) -> ``{name: (B, C_name, H/stride, W/stride)}`` with
        strides stem 2, res2 4, res3 8, res4 16, res5 32.

    Raises:
        ValueError: wrong number of specs for the regime, unknown out feature, bad norm,
            freeze_at outside [0, 5], unknown forward_mode or recompute.
    """

    def __init__(
        self,
        specs: Sequence[GraphSpec],
        regime: str = "regular",
        channels: int = 109,
        in_channels: int = 3,
        norm: str = "BN",
        out_features: Optional[Sequence[str]] = None,
        freeze_at: int = 0,
        forward_mode: str = "node",
        recompute: str = "none",
    ):
        super().__init__()
        widths = stage_layout(regime, channels)
        random_stages = REGIMES[regime]
        if len(specs) != len(random_stages):
            raise ValueError(
                f"regime {regime!r} has {len(random_stages)} random stages {list(random_stages)}, "
                f"but {len(specs)} graph specs were given"
            )
        self.regime = regime
        self.specs = list(specs)
        names = ["stem", "res2", "res3", "res4", "res5"]
        if out_features is None:
            out_features = ["res5"]
        for f in out_features:
            if f not in names:
                raise ValueError(f"out feature {f!r} is unknown; allowed: {names}")
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"freeze_at={freeze_at} is out of range; allowed: 0..5")
        self._out_features = list(out_features)
        self.stem = ConvBlock(in_channels, widths["stem"], norm, conv_name="conv1")
        self._out_feature_channels = {"stem": widths["stem"]}
        self._out_feature_strides = {"stem": 2}
        spec_iter = iter(specs)
        prev = widths["stem"]
        self.stage_names: List[str] = []
        for i, name in enumerate(names[1:]):
            if name in random_stages:
                stage = RandWireStage(next(spec_iter), prev, widths[name], 2, norm, forward_mode, recompute)
            else:
                stage = ConvBlock(prev, widths[name], norm, relu_first=True)
            self.add_module(name, stage)
            self.stage_names.append(name)
            self._out_feature_channels[name] = widths[name]
            self._out_feature_strides[name] = 2 ** (i + 2)
            prev = widths[name]
            if names.index(name) > max(names.index(f) for f in self._out_features):
                break
        self.freeze(freeze_at)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"RandWire takes (B, C, H, W) inputs, got shape {tuple(x.shape)}")
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }

    def freeze(self, freeze_at: int = 0) -> "RandWire":
        """Freeze the stem (freeze_at >= 1) and res2..res<freeze_at>, as Detectron2's ResNet.

        Each frozen block (the stem is block 1, res2..res5 blocks 2..5) freezes itself with its
        own ``freeze()`` (Detectron2's ``CNNBlockBase.freeze``: ``requires_grad=False`` and
        FrozenBatchNorm2d), as ``ResNet.freeze`` does.
        """
        blocks = [self.stem] + [getattr(self, name) for name in self.stage_names]
        for idx, block in enumerate(blocks, start=1):
            if freeze_at >= idx:
                block.freeze()
        return self


def classifier_input_channels(body: Backbone, num_classes: int) -> int:
    """The channels of ``body``'s res5, which a classifier head pools; checks the arguments
    shared by every classifier of a Detectron2 body (RandWire's, and the ResNet-18 of
    ``rwdet.classification``).

    Raises:
        ValueError: a body whose out features lack "res5", or ``num_classes < 1``.
    """
    if "res5" not in body.output_shape():
        raise ValueError("the classifier needs a body whose out_features include 'res5'")
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes} must be >= 1")
    return body.output_shape()["res5"].channels


class RandWireClassifier(nn.Module):
    """RandWire ImageNet classifier (paper table 1).

    ``body`` (:class:`RandWire`, stem..res5) -> ReLU -> 1x1 conv to 1280 -> norm -> ReLU ->
    global average pool -> dropout -> fc to ``num_classes`` logits.

    Args:
        body: a :class:`RandWire` whose out features include "res5".
        num_classes: number of classes (1000 for ImageNet).
        head_channels: width of the 1x1 conv (1280 in the paper).
        dropout: dropout probability before the fc.
        norm: Detectron2 norm name for the head.

    Shapes:
        (B, 3, H, W) -> (B, num_classes) logits (softmax is left to the loss).
    """

    def __init__(self, body: RandWire, num_classes: int = 1000, head_channels: int = 1280,
                 dropout: float = 0.0, norm: str = "BN"):
        super().__init__()
        in_ch = classifier_input_channels(body, num_classes)
        self.body = body
        self.head_conv = Conv2d(in_ch, head_channels, 1, bias=False, norm=get_norm(norm, head_channels))
        nn.init.kaiming_normal_(self.head_conv.weight, mode="fan_out", nonlinearity="relu")
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(head_channels, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)["res5"]
        x = F.relu(self.head_conv(F.relu(x)), inplace=True)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(self.dropout(x))
