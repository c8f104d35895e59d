"""Time per op kind (rwdet/analysis/profile.py): the grouping rules on recorded op names and
shapes, a real profile of small conv nets, and the Markdown table."""

import pytest
import torch
from torch import nn

from rwdet.analysis.profile import (ONEDNN_KINDS, OP_KINDS, onednn_kind, onednn_primitive_times, op_kind,
                                   parse_onednn_verbose, profile_markdown, profile_op_kinds)

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


# Lines of oneDNN 3.12's verbose log, as PyTorch 2.14's CPU convolutions write it (shortened
# memory descriptors); the last field is the time in ms.
ONEDNN_LOG = """onednn_verbose,v1,info,oneDNN v3.12.0
onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation,prop_kind,memory_descriptors,attributes,auxiliary,problem_desc,exec_time
onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:abcd::f0 dst:f32:p:blocked:aBcd8b::f0,attr-scratchpad:user,,4x109x56x56,3.25
onednn_verbose,v1,primitive,exec,cpu,convolution,jit_dw:avx2,forward_training,src:f32 wei:f32 dst:f32,attr-scratchpad:user,alg:convolution_direct,g109mb4_ic109oc109_ih56oh56kh3sh1dh0ph1_iw56ow56kw3sw1dw0pw1,1.5
onednn_verbose,v1,primitive,exec,cpu,convolution,jit_dw:avx2,backward_weights,src:f32 wei:f32 dst:f32,attr-scratchpad:user,alg:convolution_direct,g109mb4_ic109oc109_ih56oh56kh3sh1dh0ph1_iw56ow56kw3sw1dw0pw1,2.0
onednn_verbose,v1,primitive,exec,cpu,convolution,jit_1x1:avx2,backward_data,src:f32 wei:f32 dst:f32,attr-scratchpad:user,alg:convolution_direct,mb4_ic54oc109_ih56oh56kh1sh1dh0ph0_iw56ow56kw1sw1dw0pw0,1.25
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_inference,src:f32 wei:f32 dst:f32,attr-scratchpad:user,alg:convolution_direct,mb4_ic3oc64_ih224oh112kh7sh2dh0ph3_iw224ow112kw7sw2dw0pw3,4.0
onednn_verbose,v1,primitive,exec,cpu,convolution,brgconv_1x1:avx2,forward_training,src:f32 wei:f32 dst:f32,attr-scratchpad:user,alg:convolution_direct,g4mb4_ic64oc64_ih14oh14kh1sh1dh0ph0_iw14ow14kw1sw1dw0pw0,0.5
onednn_verbose,v1,primitive,exec,cpu,pooling,jit:avx2,forward_inference,src:f32 dst:f32,,alg:pooling_max,mb4ic64_ih112oh56kh3sh2dh0ph1_iw112ow56kw3sw2dw0pw1,0.75
onednn_verbose,v1,primitive,exec,cpu,reorder,jit:blk,undef,src:f32::blocked:abcd::f0 dst:f32::blocked:aBcd8b::f0,,,4x872x7x7,0.25
"""


def test_onednn_kind_rules():
    assert onednn_kind("reorder", "undef", "4x109x56x56") == "reorders (layout conversions of maps and weights)"
    assert onednn_kind("convolution", "forward_training", "g109mb4_ic109oc109_ih56oh56kh3sh1") == \
        "conv kxk depthwise: forward"
    assert onednn_kind("convolution", "backward_data", "mb4_ic54oc109_ih56oh56kh1sh1dh0ph0_iw56ow56kw1") == \
        "conv 1x1: backward data"
    assert onednn_kind("convolution", "backward_weights", "g4mb4_ic64oc64_ih14kh1_kw1") == \
        "conv 1x1 grouped: backward weights"
    assert onednn_kind("convolution", "forward_inference", "mb4_ic3oc64_ih224oh112kh7sh2_kw7") == \
        "conv kxk dense (k > 1): forward"
    assert onednn_kind("convolution", "forward_training", "g4mb4_ic64oc64_ih14kh3_kw3") == \
        "conv kxk dense (k > 1): forward"  # grouped, not depthwise
    assert onednn_kind("pooling", "forward_inference", "mb4ic64") == "other primitives"
    for kind in ("conv kxk depthwise: forward", "conv 1x1: backward data", "other primitives"):
        assert kind in ONEDNN_KINDS


def test_parse_onednn_verbose_sums_per_kind():
    ms = parse_onednn_verbose(ONEDNN_LOG)
    assert ms == pytest.approx({
        "reorders (layout conversions of maps and weights)": 3.5,
        "conv kxk depthwise: forward": 1.5,
        "conv kxk depthwise: backward weights": 2.0,
        "conv 1x1: backward data": 1.25,
        "conv kxk dense (k > 1): forward": 4.0,
        "conv 1x1 grouped: forward": 0.5,
        "other primitives": 0.75,
        "total": 13.5,
    })
    assert parse_onednn_verbose("no oneDNN here\n") == {"total": 0.0}


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")
def test_onednn_primitive_times_of_a_separable_conv(capfd):
    torch.manual_seed(0)
    x = torch.randn(2, 16, 24, 24)
    separable = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
                              nn.Conv2d(16, 32, 1, bias=False))
    step = _train_step(separable, x)
    capfd.readouterr()
    ms = onednn_primitive_times(step, steps=2)
    out = capfd.readouterr().out
    assert "onednn_verbose" not in out  # the log went to the temporary file, not to stdout
    for kind in ("conv kxk depthwise: forward", "conv kxk depthwise: backward weights",
                 "conv 1x1: forward", "conv 1x1: backward data", "conv 1x1: backward weights"):
        assert ms[kind] > 0, (kind, ms)
    assert set(ms) <= {*ONEDNN_KINDS, "total"}
    assert ms["total"] == pytest.approx(sum(v for k, v in ms.items() if k != "total"))
    print("still printed")  # standard output works again afterwards
    assert capfd.readouterr().out == "still printed\n"
    with pytest.raises(ValueError, match="steps=0"):
        onednn_primitive_times(step, steps=0)


def test_profile_markdown_with_onednn_kinds():
    a = {"conv 1x1: forward": 2.0, "reorders (layout conversions of maps and weights)": 3.0, "total": 5.0}
    b = {"conv 1x1: forward": 1.0, "total": 1.0}
    table = profile_markdown({"RandWire": a, "reference": b}, diff=("RandWire", "reference"),
                             kinds=ONEDNN_KINDS).splitlines()
    assert table[0].startswith("| kind | RandWire (ms/step) |")
    assert table[2] == "| conv 1x1: forward | 2.0 | 1.0 | +1.0 | 25% |"
    assert table[3] == "| reorders (layout conversions of maps and weights) | 3.0 | 0.0 | +3.0 | 75% |"


def test_profile_markdown_share_only_of_a_positive_difference():
    a = {"conv 1x1: forward": 3.0, "total": 3.0}
    b = {"conv 1x1: forward": 1.0, "reorders (layout conversions of maps and weights)": 4.0, "total": 5.0}
    table = profile_markdown({"a": a, "b": b}, diff=("a", "b"), kinds=ONEDNN_KINDS).splitlines()
    assert table[2] == "| conv 1x1: forward | 3.0 | 1.0 | +2.0 | n/a |"
    assert table[-1] == "| **total** | 3.0 | 5.0 | -2.0 | n/a |"
