"""The width-padding deploy rewrite (rwdet.layers.pad, rwdet.deploy.pad_randwire_channels) against
the model it rewrites: classifiers, Faster R-CNN, RetinaNet and Mask R-CNN, in PyTorch and served
by ONNX Runtime / OpenVINO, on BCCD photos.

Models are built at C=13 (stage widths 6, 13, 26, 52, 104: none a multiple of 16) with random BN
statistics and edge weights, so that a channel mixed up by the padding would change the outputs.
The rewrite is for inference (BN folded), so outputs are compared, not gradients.
"""

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from detectron2.data import detection_utils
from detectron2.data import transforms as T
from detectron2.modeling import GeneralizedRCNN, build_model
from torch import nn

from rwdet.analysis.benchmark import default_setup
from rwdet.classification.config import load_cls_config
from rwdet.classification.model import build_classifier
from rwdet.deploy import pad_randwire_channels, prepare_for_export, serve_backbone
from rwdet.engine.defaults import load_config
from rwdet.layers.pad import pad_conv_channels
from rwdet.modeling.randwire import RandWireStage

REPO = Path(__file__).resolve().parents[1]
CLS_CONFIG = str(REPO / "configs" / "imagenet" / "randwire_ws_c109.yaml")
SMALL_OPTS = ["MODEL.RANDWIRE.CHANNELS", "13", "MODEL.RANDWIRE.NODES", "12"]


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine parameters, random edge weights (in place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
            if getattr(m, "edge_weights", None) is not None:
                m.edge_weights.copy_(torch.randn(m.edge_weights.shape, generator=g))
    return model


def _widths(body):
    return {k: s.channels for k, s in body.output_shape().items()}


def _photo(bccd_root, index, short_edge):
    ids = (bccd_root / "ImageSets" / "Main" / "test.txt").read_text().split()
    image = detection_utils.read_image(str(bccd_root / "JPEGImages" / f"{ids[index]}.jpg"), format="BGR")
    image = T.ResizeShortestEdge(short_edge, 10 * short_edge).get_transform(image).apply_image(image)
    return torch.as_tensor(image.astype("float32").transpose(2, 0, 1))


def test_pad_conv_channels_adds_zero_channels_only():
    torch.manual_seed(0)
    dense = nn.Conv2d(5, 7, 3, padding=1, bias=True)
    x = torch.randn(2, 5, 6, 6)
    ref = dense(x)
    pad_conv_channels(dense, out_channels=16, in_channels=8)
    assert dense.weight.shape == (16, 8, 3, 3) and dense.bias.shape == (16,)
    assert (dense.in_channels, dense.out_channels) == (8, 16)
    y = dense(torch.cat([x, torch.randn(2, 3, 6, 6)], 1))  # the new inputs are ignored
    torch.testing.assert_close(y[:, :7], ref, rtol=0, atol=1e-6)
    assert torch.count_nonzero(y[:, 7:]) == 0
    dw = nn.Conv2d(5, 5, 3, padding=1, groups=5, bias=False)
    ref = dw(x)
    pad_conv_channels(dw, 16, 16)
    assert dw.groups == 16 and dw.weight.shape == (16, 1, 3, 3)
    y = dw(torch.cat([x, torch.zeros(2, 11, 6, 6)], 1))
    torch.testing.assert_close(y[:, :5], ref, rtol=0, atol=0)
    assert torch.count_nonzero(y[:, 5:]) == 0
    with pytest.raises(ValueError, match="padding only adds channels"):
        pad_conv_channels(dense, out_channels=4)
    with pytest.raises(ValueError, match="depthwise conv keeps in == out"):
        pad_conv_channels(dw, 32, 16)
    with pytest.raises(ValueError, match="only dense .* and depthwise"):
        pad_conv_channels(nn.Conv2d(8, 8, 1, groups=2), 16, 16)


@pytest.mark.parametrize("regime", ["regular", "small"])
@pytest.mark.parametrize("forward", ["node", "level"])
def test_padded_classifier_equals_original(regime, forward):
    seeds = "[1, 2, 3, 4]" if regime == "regular" else "[1, 2, 3]"
    cfg = load_cls_config(CLS_CONFIG, SMALL_OPTS + ["MODEL.RANDWIRE.REGIME", regime, "MODEL.RANDWIRE.SEEDS", seeds,
                                                   "MODEL.RANDWIRE.FORWARD", forward])
    torch.manual_seed(0)
    model = prepare_for_export(_randomize(build_classifier(cfg)))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ref = model(x)
        padded = copy.deepcopy(model)
        assert pad_randwire_channels(padded, 16) == ["body"]
        got = padded(x)
    widths = {k: c for k, c in padded.body._out_feature_channels.items()}
    assert all(c % 16 == 0 for c in widths.values()), widths
    assert widths["stem"] == 16 and padded.head_conv.in_channels == widths["res5"]
    for name in padded.body.stage_names:
        stage = getattr(padded.body, name)
        if isinstance(stage, RandWireStage):
            assert all(node.op.pointwise.out_channels == widths[name] for node in stage.nodes)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5 * float(ref.abs().max()))


def _detect(model, image):
    """Detections on one image; for R-CNNs before post-processing, so that Mask R-CNN's masks are
    the head's probabilities (a random-init head puts many pixels near the 0.5 threshold)."""
    if isinstance(model, GeneralizedRCNN):
        return model.inference([{"image": image}], do_postprocess=False)[0]
    return model([{"image": image}])[0]["instances"]


@pytest.mark.parametrize("config, levels", [
    ("faster_rcnn_randwire_ws.yaml", ["p2", "p3", "p4", "p5", "p6"]),
    ("retinanet_randwire_ws.yaml", ["p3", "p4", "p5", "p6", "p7"]),  # p6 is a conv on res5
    ("mask_rcnn_randwire_ws.yaml", ["p2", "p3", "p4", "p5", "p6"]),
])
def test_padded_detector_equals_original(config, levels, bccd_root):
    cfg = load_config(str(REPO / "configs" / config), SMALL_OPTS + [
        "MODEL.DEVICE", "cpu", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.RANDWIRE.NORM", "BN",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0",
        "INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "214"])
    torch.manual_seed(0)
    model = prepare_for_export(_randomize(build_model(cfg)))
    padded = copy.deepcopy(model)
    assert pad_randwire_channels(padded, 16) == ["backbone.bottom_up"]
    assert all(c % 16 == 0 for c in _widths(padded.backbone.bottom_up).values())
    assert padded.backbone.output_shape() == model.backbone.output_shape()
    image = _photo(bccd_root, 0, 160)
    with torch.no_grad():
        batch = model.preprocess_image([{"image": image}]).tensor
        ref, got = model.backbone(batch), padded.backbone(batch)
        assert list(got) == levels
        for name in levels:
            torch.testing.assert_close(got[name], ref[name], rtol=0, atol=1e-5 * float(ref[name].abs().max()))
        ref_inst, got_inst = (_detect(m, image) for m in (model, padded))
    assert len(got_inst) == len(ref_inst) > 0
    torch.testing.assert_close(got_inst.scores, ref_inst.scores, rtol=0, atol=1e-5)
    torch.testing.assert_close(got_inst.pred_boxes.tensor, ref_inst.pred_boxes.tensor, rtol=0, atol=1e-3)
    if got_inst.has("pred_masks"):  # the mask head's probabilities, before thresholding
        torch.testing.assert_close(got_inst.pred_masks, ref_inst.pred_masks, rtol=0, atol=1e-4)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_padded_backbone_served_by_a_runtime_equals_pytorch(runtime, bccd_root):
    pytest.importorskip(runtime)
    pytest.importorskip("onnx")
    cfg = load_config(str(REPO / "configs" / "faster_rcnn_randwire_ws.yaml"), SMALL_OPTS + [
        "MODEL.DEVICE", "cpu", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.RANDWIRE.NORM", "BN"])
    torch.manual_seed(0)
    model = prepare_for_export(_randomize(build_model(cfg)))
    served = serve_backbone(copy.deepcopy(model), runtime, pad_channels=16)
    batch = model.preprocess_image([{"image": _photo(bccd_root, i, 224)} for i in (1, 2)]).tensor
    with torch.no_grad():
        ref, got = model.backbone(batch), served.backbone(batch)
    for name, r in ref.items():
        err = float((got[name] - r).abs().max())
        assert err <= 1e-4 * float(r.abs().max()), (name, err)


def test_refusals_change_nothing(tmp_path):
    cfg = load_cls_config(CLS_CONFIG, SMALL_OPTS)
    model = build_classifier(cfg).eval()
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="BatchNorms folded .* norms left"):
        pad_randwire_channels(model, 16)  # BN not folded: a padded BN channel would not be zero
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    prepare_for_export(model)
    for bad in (0, -16, True, 16.0):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            pad_randwire_channels(model, bad)
    with pytest.raises(ValueError, match="read by neither a RandWireClassifier nor an FPN"):
        pad_randwire_channels(model.body, 16)  # its output channels would change
    with pytest.raises(ValueError, match="MODEL.DEPLOY.PAD_CHANNELS=-1 must be an integer >= 0"):
        prepare_for_export(model, -1)
    assert pad_randwire_channels(model, 1) == [] and _widths(model.body)["res5"] == 104
    import torchvision

    resnet = prepare_for_export(torchvision.models.resnet18())
    assert pad_randwire_channels(resnet, 16) == []  # nothing RandWire: unchanged
    with pytest.raises(ValueError, match="pad_channels=-1 must be an integer >= 0"):
        default_setup("cpu", pad_channels=-1)
    with pytest.raises(ValueError, match="pad_channels needs deploy on"):
        default_setup("cpu", pad_channels=16, deploy=False)


def test_eval_only_refuses_a_bad_pad_channels_before_writing(tmp_path):
    from detectron2.engine import default_argument_parser

    spec = importlib.util.spec_from_file_location("train_net_cli", REPO / "tools" / "train_net.py")
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    out = tmp_path / "run"
    args = default_argument_parser().parse_args(
        ["--config-file", str(REPO / "tests" / "configs" / "tiny_bccd.yaml"), "--eval-only",
         "MODEL.DEPLOY.PAD_CHANNELS", "-1", "OUTPUT_DIR", str(out)])
    with pytest.raises(ValueError, match="MODEL.DEPLOY.PAD_CHANNELS=-1"):
        train_net.main(args)
    assert not out.exists()
