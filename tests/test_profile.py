"""Time per op kind (rwdet/analysis/profile.py): the grouping rules on recorded op names and
shapes, a real profile of small conv nets, and the Markdown table."""

import pytest
import torch
from torch import nn

from rwdet.analysis.profile import OP_KINDS, op_kind, profile_markdown, profile_op_kinds

KINDS = [k for k, _ in OP_KINDS]


@pytest.mark.parametrize("name, shapes, kind", [
    # forward ops: (input, weight, ...)
    ("aten::mkldnn_convolution", [[2, 8, 16, 16], [8, 1, 3, 3], [], []], "conv kxk depthwise"),
    ("aten::conv2d", [[2, 8, 16, 16], [16, 8, 1, 1], [], []], "conv 1x1"),
    ("aten::_convolution", [[2, 16, 16, 16], [16, 4, 1, 1], [16]], "conv 1x1 grouped"),
    ("aten::_slow_conv2d_forward", [[2, 16, 16, 16], [16, 16, 3, 3], []], "conv kxk dense (k > 1)"),
    ("aten::mkldnn_convolution", [[2, 3, 224, 224], [64, 3, 7, 7], [], []], "conv kxk dense (k > 1)"),
    # backward ops: (grad_output, input, weight, ...)
    ("aten::convolution_backward", [[2, 8, 8, 8], [2, 8, 16, 16], [8, 1, 3, 3], []], "conv kxk depthwise"),
    ("aten::convolution_backward", [[2, 16, 16, 16], [2, 8, 16, 16], [16, 8, 1, 1], []], "conv 1x1"),
    ("aten::_slow_conv2d_backward", [[2, 4, 16, 16], [2, 4, 16, 16], [4, 4, 3, 3]], "conv kxk dense (k > 1)"),
    # no weight shape recorded
    ("ConvolutionBackward0", [[2, 16, 16, 16]], "conv (autograd and dispatch)"),
    ("autograd::engine::evaluate_function: ConvolutionBackward0", [], "conv (autograd and dispatch)"),
    ("aten::native_batch_norm_backward", [[2, 16, 8, 8]], "batch norm"),
    ("aten::threshold_backward", [], "relu"),
    ("aten::relu_", [], "relu"),
    ("aten::_foreach_add_", [], "optimizer"),
    ("Optimizer.step#SGD.step", [], "optimizer"),
    ("aten::addmm", [], "linear and matmul"),
    ("aten::max_pool2d_with_indices_backward", [], "pooling"),
    ("torchvision::roi_align", [], "RoI align, NMS"),
    ("aten::addcmul_", [], "elementwise and reductions (weighted sums, their gradients)"),
    ("aten::sigmoid_backward", [], "elementwise and reductions (weighted sums, their gradients)"),
    ("aten::cat", [], "copies, concatenation, allocation"),
    ("aten::expand", [], "other (views, Python-side ops)"),
    ("aten::view", [], "other (views, Python-side ops)"),
    ("aten::topk", [], "other (views, Python-side ops)"),
    ("aten::exp", [], "elementwise and reductions (weighted sums, their gradients)"),
    ("aten::to", [], "copies, concatenation, allocation"),
])
def test_op_kind_rules(name, shapes, kind):
    assert kind in KINDS
    assert op_kind(name, shapes) == kind


def _train_step(model, x):
    def step():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()
    step()  # untimed, as profile_op_kinds asks
    return step


def test_profile_tells_separable_from_dense_convs():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 24, 24)
    separable = nn.Sequential(nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
                              nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32))
    dense = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
    sep = profile_op_kinds(_train_step(separable, x), steps=2)
    den = profile_op_kinds(_train_step(dense, x), steps=2)
    for kind in ("conv kxk depthwise", "conv 1x1", "batch norm", "relu"):
        assert sep[kind] > 0, (kind, sep)
    assert "conv kxk dense (k > 1)" not in sep
    assert den["conv kxk dense (k > 1)"] > 0 and den["batch norm"] > 0
    assert "conv kxk depthwise" not in den and "conv 1x1" not in den
    for ms in (sep, den):
        assert set(ms) <= {*KINDS, "total"}
        assert ms["total"] == pytest.approx(sum(v for k, v in ms.items() if k != "total"))
    with pytest.raises(ValueError, match="steps=0"):
        profile_op_kinds(lambda: None, steps=0)


def test_profile_markdown_rows_and_difference():
    a = {"conv kxk depthwise": 30.0, "batch norm": 10.0, "total": 40.0}
    b = {"conv kxk dense (k > 1)": 15.0, "batch norm": 5.0, "total": 20.0}
    table = profile_markdown({"RandWire": a, "reference": b}, diff=("RandWire", "reference")).splitlines()
    assert table[0] == ("| op kind | RandWire (ms/step) | reference (ms/step) | RandWire - reference (ms/step) "
                        "| share of the difference |")
    # kinds in OP_KINDS order, only those with time, then the total
    assert [row.split(" | ")[0].lstrip("| ") for row in table[2:]] == [
        "conv kxk depthwise", "conv kxk dense (k > 1)", "batch norm", "**total**"]
    assert table[2] == "| conv kxk depthwise | 30.0 | 0.0 | +30.0 | 150% |"
    assert table[3] == "| conv kxk dense (k > 1) | 0.0 | 15.0 | -15.0 | -75% |"
    assert table[-1] == "| **total** | 40.0 | 20.0 | +20.0 | 100% |"
    assert profile_markdown({"x": a}).count("\n") == 5  # header, rule, 2 kinds, total
    with pytest.raises(KeyError):
        profile_markdown({"x": a}, diff=("x", "y"))
