"""Where a step's time goes, per op kind: torch.profiler's per-op self time, grouped.

A RandWire node runs a 3x3 depthwise conv and a 1x1 conv where a ResNet block runs dense 3x3
and 1x1 convs, and it adds weighted sums; comparing the two networks op kind by op kind shows
which of these costs the time (``tools/benchmark.py --profile``).

Convolutions are told apart by their weight's shape, which the profiler records with the op
(``record_shapes``): depthwise (one input channel per group), 1x1 (dense or grouped) and dense
k x k with k > 1. The kernels of a grouped conv that PyTorch's CPU path runs group by group
(``thnn_conv2d`` per group) carry their group's shape and so count as dense 1x1 convs; the
grouped op itself keeps its dispatch time. Other ops are grouped by name (:data:`OP_KINDS`).
Shapes are recorded in a second pass only (:func:`profile_op_kinds`): recording them slows
every op, which would inflate the many small ops against the few large ones.

On the CPU, :func:`onednn_primitive_times` looks one level down: the time oneDNN (which runs
PyTorch's CPU convolutions) spends in each of its primitives, read from oneDNN's verbose log.
It shows what torch.profiler cannot: a conv op's time includes the reorders that convert its
tensors between PyTorch's NCHW layout and oneDNN's blocked layouts, before and after the
convolution proper.

Source: ``torch.profiler`` (``key_averages(group_by_input_shape=True)``) and oneDNN's verbose
mode (``torch.backends.mkldnn.verbose``; line format of oneDNN 3.x, "onednn_verbose,...,exec,
cpu,<primitive>,<implementation>,<propagation>,...,<problem>,<ms>"); the grouping is ours.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
import tempfile
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch
from torch.profiler import ProfilerActivity, profile

__all__ = ["OP_KINDS", "ONEDNN_KINDS", "op_kind", "profile_op_kinds", "onednn_kind", "parse_onednn_verbose",
           "onednn_primitive_times", "profile_markdown"]

#: Op kinds, in report order: (kind, regular expressions, searched in the lower-case op name,
#: that select it).
#: Convolutions are split by weight shape first (see :func:`op_kind`); the first match wins.
OP_KINDS = (
    ("conv kxk depthwise", ()),
    ("conv 1x1", ()),
    ("conv 1x1 grouped", ()),
    ("conv kxk dense (k > 1)", ()),
    ("conv (autograd and dispatch)", ("conv",)),
    ("batch norm", ("batch_norm", "batchnorm")),
    ("relu", ("relu", "threshold")),
    ("optimizer", ("foreach", "sgd", "optimizer")),
    ("linear and matmul", ("addmm", "matmul", "linear", "::mm", "bmm")),
    ("pooling", ("pool",)),
    ("RoI align, NMS", ("roi_align", "roialign", "nms")),
    ("elementwise and reductions (weighted sums, their gradients)",
     ("mul", "add", "sub", "div", "sigmoid", "sum", "mean", "neg", r"::(exp|log)_?$", "where", "clamp")),
    ("copies, concatenation, allocation", ("copy", "cat", "stack", "empty", "zero", "fill", "clone",
                                           "contiguous", r"::to$", "index", "gather", "scatter",
                                           "resize", "pad", "split")),
    ("other (views, Python-side ops)", ()),
)


#: Kinds of oneDNN primitive executions, in report order (:func:`onednn_kind`).
ONEDNN_KINDS = tuple(
    f"{conv}: {direction}"
    for conv in ("conv kxk depthwise", "conv 1x1", "conv 1x1 grouped", "conv kxk dense (k > 1)")
    for direction in ("forward", "backward data", "backward weights")
) + ("reorders (layout conversions of maps and weights)", "other primitives")


def _conv_kind(name: str, shapes: Sequence[Sequence[int]]) -> Optional[str]:
    """The conv kind from the op's recorded shapes, or None when they do not show a weight.

    Forward ops (``aten::conv2d``, ``convolution``, ``mkldnn_convolution``, ``thnn_conv2d``...)
    take (input, weight, ...); backward ops (``aten::convolution_backward``,
    ``_slow_conv2d_backward``) take (grad_output, input, weight, ...).
    """
    at = 2 if "backward" in name else 1
    if len(shapes) <= at or len(shapes[at]) != 4 or len(shapes[at - 1]) != 4:
        return None
    (_, in_per_group, kh, kw), in_channels = shapes[at], shapes[at - 1][1]
    if kh == kw == 1:
        return "conv 1x1" if in_per_group == in_channels else "conv 1x1 grouped"
    if in_per_group == 1 and in_channels > 1:
        return "conv kxk depthwise"
    return "conv kxk dense (k > 1)"


def op_kind(name: str, input_shapes: Sequence[Sequence[int]] = ()) -> str:
    """The kind (one of :data:`OP_KINDS`) of a profiled op.

    Args:
        name: the op's name as the profiler records it (e.g. ``aten::mkldnn_convolution``,
            ``aten::native_batch_norm_backward``, ``ConvolutionBackward0``).
        input_shapes: its recorded input shapes (``[]`` for non-tensor arguments).

    Returns:
        the kind's name; the last kind ("other ...") when no rule matches.
    """
    low = name.lower()
    if "conv" in low:
        kind = _conv_kind(low, input_shapes)
        if kind is not None:
            return kind
    for kind, keys in OP_KINDS:
        if any(re.search(k, low) for k in keys):
            return kind
    return OP_KINDS[-1][0]


_PROBLEM_KEY = re.compile(r"([a-z]+)(\d+)")


def onednn_kind(primitive: str, propagation: str, problem: str) -> str:
    """The kind (one of :data:`ONEDNN_KINDS`) of one oneDNN primitive execution.

    Args:
        primitive: oneDNN's primitive name ("convolution", "reorder", "batch_normalization"...).
        propagation: "forward_training", "forward_inference", "backward_data",
            "backward_weights"...
        problem: oneDNN's problem descriptor, e.g. "g109mb4_ic109oc109_ih56oh56kh3sh1dh0ph1_..."
            (``g`` groups, ``ic``/``oc`` channels, ``kh``/``kw`` kernel size; no ``g``: 1 group).

    Returns:
        the kind's name; convolutions by weight shape and direction, "reorders ..." for
        reorders, "other primitives" for everything else.
    """
    if primitive == "reorder":
        return ONEDNN_KINDS[-2]
    if primitive != "convolution":
        return ONEDNN_KINDS[-1]
    keys = {}
    for name, value in _PROBLEM_KEY.findall(problem):
        keys.setdefault(name, int(value))
    groups, ic = keys.get("g", 1), keys.get("ic", 0)
    if keys.get("kh", 1) == 1 and keys.get("kw", keys.get("kh", 1)) == 1:
        conv = "conv 1x1" if groups == 1 else "conv 1x1 grouped"
    elif groups > 1 and groups == ic:
        conv = "conv kxk depthwise"
    else:
        conv = "conv kxk dense (k > 1)"
    direction = ("backward data" if propagation == "backward_data" else
                 "backward weights" if propagation == "backward_weights" else "forward")
    return f"{conv}: {direction}"


def parse_onednn_verbose(text: str) -> Dict[str, float]:
    """Sum the execution times in a oneDNN verbose log per kind (:func:`onednn_kind`).

    Args:
        text: the log; lines other than primitive executions ("...,exec,cpu,...") are skipped.

    Returns:
        ``{kind: milliseconds}`` over the whole log, plus ``"total"`` (0.0 for an empty log).
    """
    ms: Dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("onednn_verbose") or ",exec," not in line:
            continue
        f = line.strip().split(",")
        i = f.index("exec")
        try:
            t = float(f[-1])
        except ValueError:
            continue
        if len(f) < i + 5:
            continue
        kind = onednn_kind(f[i + 2], f[i + 4], f[-2])
        ms[kind] = ms.get(kind, 0.0) + t
    ms["total"] = sum(ms.values())
    return ms


def _flush_c_stdio() -> None:
    """Flush the C library's output buffers (oneDNN writes its log with C stdio), where the C
    library can be loaded (POSIX); elsewhere nothing is flushed."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, TypeError, AttributeError):
        pass


def onednn_primitive_times(step: Callable[[], None], steps: int = 1) -> Dict[str, float]:
    """Run ``step`` with oneDNN's verbose log on and sum its primitives' times per kind.

    oneDNN times each primitive execution itself; the figures leave out what PyTorch does
    around the calls (allocation, dispatch, ops that are not oneDNN's). While the steps run,
    this process's standard output (file descriptor 1, where oneDNN writes its log) goes to a
    temporary file; it is restored afterwards, also on error.

    Args:
        step: one step (e.g. a training step), already run once untimed.
        steps: calls of ``step`` (>= 1).

    Returns:
        ``{kind: milliseconds per step}`` (kinds of :data:`ONEDNN_KINDS` that took any time), plus
        ``"total"``; ``{}`` when PyTorch has no oneDNN (``torch.backends.mkldnn.is_available()``
        false) or its verbose mode cannot be switched on.

    Raises:
        ValueError: ``steps`` < 1.
    """
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    mkldnn = torch.backends.mkldnn
    if not mkldnn.is_available():
        return {}
    sys.stdout.flush()
    _flush_c_stdio()
    saved = os.dup(1)
    try:
        with tempfile.TemporaryFile() as log:
            os.dup2(log.fileno(), 1)
            try:
                with mkldnn.verbose(mkldnn.VERBOSE_ON):
                    for _ in range(steps):
                        step()
            finally:
                _flush_c_stdio()
                os.dup2(saved, 1)
            log.seek(0)
            text = log.read().decode("utf-8", errors="replace")
    finally:
        os.close(saved)
    ms = parse_onednn_verbose(text)
    if not ms["total"]:
        return {}
    return {k: v / steps for k, v in ms.items() if v > 0}


def _profile(step: Callable[[], None], steps: int, cuda: bool, device: str, record_shapes: bool):
    """``steps`` calls of ``step`` under torch.profiler; its per-op averages."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=record_shapes) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize(device)
    return prof.key_averages(group_by_input_shape=record_shapes)


def profile_op_kinds(step: Callable[[], None], steps: int = 2, device: str = "cpu") -> Dict[str, float]:
    """Run ``step`` under torch.profiler and sum the ops' self time per kind.

    Two passes of ``steps`` calls each: the first times the ops by name; the second records
    their input shapes, which split a conv op's time between the conv kinds in proportion to
    the second pass's times. Recording shapes costs time per op and would inflate the many
    small ops (the weighted sums) against the few large ones, so its times are used only for
    that split.

    Args:
        step: one step (e.g. a training step); run it once untimed before, so that one-off
            allocations and lazy initialisation stay out of the profile.
        steps: profiled calls per pass (>= 1).
        device: "cpu" (CPU time of the ops) or "cuda..." (the device time of the kernels each
            op launched, synchronised after the steps).

    Returns:
        ``{kind: milliseconds per step}`` for the kinds that took any time, plus ``"total"``.
        The profiler's own overhead (a few microseconds per op) is in the figures.

    Raises:
        ValueError: ``steps`` < 1.
    """
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    cuda = device.startswith("cuda")
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    by_name = {e.key: getattr(e, attr, 0) or 0 for e in _profile(step, steps, cuda, device, False)}
    split: Dict[str, Dict[str, float]] = {}  # op name -> kind -> time in the shapes pass
    for e in _profile(step, steps, cuda, device, True):
        kinds = split.setdefault(e.key, {})
        kind = op_kind(e.key, e.input_shapes or ())
        kinds[kind] = kinds.get(kind, 0.0) + (getattr(e, attr, 0) or 0)
    ms: Dict[str, float] = {}
    for name, us in by_name.items():
        if us <= 0:
            continue
        shares = split.get(name, {})
        total = sum(shares.values())
        if total <= 0:  # not seen, or no time, in the shapes pass: classify by name alone
            shares, total = {op_kind(name): 1.0}, 1.0
        for kind, t in shares.items():
            ms[kind] = ms.get(kind, 0.0) + us * (t / total) / 1000 / steps
    ms = {k: v for k, v in ms.items() if v > 0}
    ms["total"] = sum(ms.values())
    return ms


def profile_markdown(columns: Mapping[str, Mapping[str, float]], diff: Optional[Sequence[str]] = None,
                     kinds: Optional[Sequence[str]] = None) -> str:
    """A Markdown table of per-kind times: one row per kind (in the order of ``kinds``, kinds
    without time left out), one column per entry of ``columns``, then "total".

    Args:
        columns: ``{column title: {kind: ms per step}}`` as :func:`profile_op_kinds` or
            :func:`onednn_primitive_times` returns.
        diff: two column titles (a, b): adds a column "a - b" and each row's share of the total
            difference ("n/a" when a's total is not larger than b's).
        kinds: the row order (default: the names of :data:`OP_KINDS`; :data:`ONEDNN_KINDS` for
            oneDNN's figures).

    Returns:
        the table, with a trailing newline.

    Raises:
        KeyError: a ``diff`` title that is not a column.
    """
    titles = list(columns)
    order = [k for k, _ in OP_KINDS] if kinds is None else list(kinds)
    rows = [k for k in order if any(columns[t].get(k) for t in titles)]
    head = ["op kind" if kinds is None else "kind", *(f"{t} (ms/step)" for t in titles)]
    if diff:
        a, b = columns[diff[0]], columns[diff[1]]
        gap = a.get("total", 0.0) - b.get("total", 0.0)
        head += [f"{diff[0]} - {diff[1]} (ms/step)", "share of the difference"]
    lines: List[str] = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind in [*rows, "total"]:
        cells = [f"**{kind}**" if kind == "total" else kind,
                 *(f"{columns[t].get(kind, 0.0):.1f}" for t in titles)]
        if diff:
            d = a.get(kind, 0.0) - b.get(kind, 0.0)
            cells += [f"{d:+.1f}", f"{100 * d / gap:.0f}%" if gap > 0 else "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
