"""DepthwiseConv3x3: the small-map CPU path computes nn.Conv2d's depthwise conv exactly."""

import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis

from rwdet.modeling import DepthwiseConv3x3, RandWireClassifier, depthwise_tap_index
from rwdet.modeling import randwire as randwire_module
from rwdet.modeling.randwire import RandWire
from rwdet.graphs import generate_graph

CONV_GRAD = "ConvolutionBackward0"


def reference_and_new(h, w, stride, channels_last, channels=5, batch=3):
    """(new output, reference output, new grads, reference grads) in float64."""
    torch.manual_seed(h * 100 + w * 10 + stride)
    m = DepthwiseConv3x3(channels, stride).double()
    x = torch.randn(batch, channels, h, w, dtype=torch.double)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    y = m(x)
    ref = F.conv2d(x, m.weight, stride=stride, padding=1, groups=channels)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(y, (x, m.weight), g)
    ref_grads = torch.autograd.grad(ref, (x, m.weight), g)
    return y, ref, grads, ref_grads


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("h,w", [(1, 1), (1, 2), (2, 1), (2, 2), (1, 4), (4, 1), (1, 3)])
def test_small_maps_match_conv2d_exactly(h, w, stride, channels_last):
    y, ref, grads, ref_grads = reference_and_new(h, w, stride, channels_last)
    assert y.grad_fn.name() != CONV_GRAD  # the matrix path ran
    assert y.shape == ref.shape == (3, 5, -(-h // stride), -(-w // stride))
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-12)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    if channels_last and y.shape[-1] * y.shape[-2] > 1:
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert not y.is_contiguous()


@pytest.mark.parametrize("h,w", [(3, 3), (2, 3), (8, 8)])
def test_larger_maps_use_conv2d(h, w):
    y, ref, grads, ref_grads = reference_and_new(h, w, 1, False)
    assert y.grad_fn.name() == CONV_GRAD
    assert torch.equal(y, ref)


def test_switch_off_and_tracing_use_conv2d(monkeypatch):
    m = DepthwiseConv3x3(4, 1)
    x = torch.randn(2, 4, 2, 2, requires_grad=True)
    assert m(x).grad_fn.name() != CONV_GRAD
    traced = torch.jit.trace(m, x)
    assert "aten::_convolution" in str(traced.graph)
    monkeypatch.setattr(DepthwiseConv3x3, "MAX_MATRIX_PIXELS", 0)
    assert m(x).grad_fn.name() == CONV_GRAD


def test_flop_count_is_that_of_the_conv():
    # fvcore traces the model, so the small path must not hide the conv's multiply-adds.
    c, b = 6, 2
    m = DepthwiseConv3x3(c, 1)
    flops = FlopCountAnalysis(m, torch.randn(b, c, 2, 2)).unsupported_ops_warnings(False).total()
    assert flops == b * c * 9 * 2 * 2


def test_tap_index_by_hand_and_errors():
    # 2x2 map, stride 1: output (0, 0) sees inputs (0, 0), (0, 1), (1, 0), (1, 1) through the
    # centre, right, below and below-right taps (4, 5, 7, 8).
    index = depthwise_tap_index(2, 2, 1)
    assert index.tolist() == [[4, 5, 7, 8], [3, 4, 6, 7], [1, 2, 4, 5], [0, 1, 3, 4]]
    # 1x3 map, stride 2: outputs at columns 0 and 2; column 2 is out of reach of output 0.
    assert depthwise_tap_index(1, 3, 2).tolist() == [[4, 5, 9], [9, 3, 4]]
    with pytest.raises(ValueError, match="0x2"):
        depthwise_tap_index(0, 2, 1)


def test_parameters_and_state_dict_are_conv2d_s():
    m = DepthwiseConv3x3(7, 2)
    conv = torch.nn.Conv2d(7, 7, 3, 2, 1, groups=7, bias=False)
    assert m.state_dict().keys() == conv.state_dict().keys() == {"weight"}
    conv.load_state_dict(m.state_dict())  # and back, as a checkpoint would
    m.load_state_dict(conv.state_dict())


@pytest.mark.parametrize("forward_mode", ["node", "level"])
def test_classifier_same_with_path_on_and_off(monkeypatch, forward_mode):
    # A small-regime classifier at 32 px: res4 runs at 2x2 and res5 at 1x1, where the path acts
    # (through the module on the per-node forward, through the functional on the level forward).
    torch.manual_seed(0)
    specs = [generate_graph("WS", {"K": 4, "P": 0.75}, 8, s) for s in (1, 2, 3)]
    model = RandWireClassifier(
        RandWire(specs, regime="small", channels=8, forward_mode=forward_mode), num_classes=10
    ).double()
    x = torch.randn(4, 3, 32, 32, dtype=torch.double)
    labels = torch.randint(0, 10, (4,))

    def run():
        model.zero_grad()
        logits = model(x)
        F.cross_entropy(logits, labels).backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters()]

    kinds = set()

    def record(out):
        kinds.add("conv2d" if out.grad_fn.name() == CONV_GRAD else "matrix")

    hooks = [
        mod.register_forward_hook(lambda m, i, o: record(o))
        for mod in model.modules() if isinstance(mod, DepthwiseConv3x3)
    ]
    functional = randwire_module.depthwise_conv3x3

    def recording_functional(*args, **kwargs):
        out = functional(*args, **kwargs)
        record(out)
        return out

    monkeypatch.setattr(randwire_module, "depthwise_conv3x3", recording_functional)
    logits, grads = run()
    assert kinds == {"matrix", "conv2d"}  # both paths ran
    for h in hooks:
        h.remove()
    monkeypatch.setattr(DepthwiseConv3x3, "MAX_MATRIX_PIXELS", 0)
    ref_logits, ref_grads = run()
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-10)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)
