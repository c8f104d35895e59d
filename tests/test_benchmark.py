"""The interleaved benchmark (rwdet/analysis/benchmark/, tools/benchmark.py) at tiny sizes:
ratio arithmetic, round order, saved-activation bytes, pairs, the deploy fold, the JSON, and the
inference runtimes (ONNX Runtime, OpenVINO) against eager PyTorch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from rwdet.analysis.benchmark import (
    PAIR_FAMILIES,
    ModelBench,
    default_setup,
    pair_specs,
    parse_size,
    ratio_summary,
    round_order,
    run_pair,
    saved_activation_bytes,
    select_pairs,
)

REPO = Path(__file__).resolve().parents[1]
TINY = dict(batches=(2,), size=32, det_size=(64, 96), warmup=0, iters=1, rounds=3)


def test_ratio_summary_median_and_spread():
    out = ratio_summary([2.0, 3.0, 4.0, 1.0], [4.0, 3.0, 2.0, 1.0])
    assert out["ratios"] == [0.5, 1.0, 2.0, 1.0]
    assert out["median"] == 1.0
    assert out["spread"] == [0.5, 2.0]
    # even count: mean of the middle two; rounds with a missing figure or a zero denominator drop
    out = ratio_summary([1.0, 3.0, None, 5.0], [1.0, 1.0, 2.0, 0.0])
    assert out == {"ratios": [1.0, 3.0], "median": 2.0, "spread": [1.0, 3.0]}
    assert ratio_summary([None], [1.0]) == {"ratios": [], "median": None, "spread": None}
    with pytest.raises(ValueError, match="2 numerators but 1 denominators"):
        ratio_summary([1.0, 2.0], [1.0])


def test_round_order_alternates_the_first_side():
    assert [round_order(r) for r in range(4)] == [(0, 1), (1, 0), (0, 1), (1, 0)]


def test_saved_activation_bytes_matches_a_hand_count():
    # conv saves its input x (2x3x8x8 float32) and its weight (a parameter: excluded); ReLU saves
    # its output (2x4x8x8 float32); sum saves nothing.
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    x = torch.randn(2, 3, 8, 8)
    expected = (2 * 3 * 8 * 8 + 2 * 4 * 8 * 8) * 4
    assert saved_activation_bytes(lambda: model(x).sum(), exclude=model.parameters()) == expected
    # without the exclusion, the weight (4x3x3x3 float32) counts too; the bias is not saved
    assert saved_activation_bytes(lambda: model(x).sum()) == expected + 4 * 3 * 3 * 3 * 4

    # views of one storage count once: two slices of the same ReLU output
    def sliced():
        y = model(x)
        return (y[:, :2] * y[:, 2:]).sum()

    assert saved_activation_bytes(sliced, exclude=model.parameters()) == expected


def test_pairs_and_their_settings():
    setup = default_setup("cpu", batches=(4, 16), rw_opts=("MODEL.RANDWIRE.FORWARD", "node"))
    specs = pair_specs(setup)
    assert list(specs) == ["cls_c109_b4", "cls_c109_b16", "cls_small", "det_trainable", "det_frozen", "det_backbone"]
    assert specs["cls_small"].batch == 4 and specs["cls_small"].size == (224, 224)
    assert [s.model for s in specs["cls_small"].sides] == ["randwire_cls", "mobilenet_v2_cls"]
    assert specs["det_trainable"].size == (320, 427)
    for name, freeze_at, norm in (("det_trainable", "0", "BN"), ("det_frozen", "2", "FrozenBN")):
        rw, r50 = (dict(zip(s.opts[::2], s.opts[1::2])) for s in specs[name].sides)
        assert rw["MODEL.BACKBONE.FREEZE_AT"] == r50["MODEL.BACKBONE.FREEZE_AT"] == freeze_at
        assert rw["MODEL.RANDWIRE.NORM"] == r50["MODEL.RESNETS.NORM"] == norm
        assert rw["MODEL.RANDWIRE.FORWARD"] == "node"  # --rw-opts reach every RandWire side
        assert "MODEL.RANDWIRE.FORWARD" not in r50
    assert specs["cls_c109_b16"].sides[0].opts == ("MODEL.RANDWIRE.FORWARD", "node")
    assert [p.name for p in select_pairs(["cls_c109"], setup)] == ["cls_c109_b4", "cls_c109_b16"]
    assert [p.name for p in select_pairs(["det_frozen", "cls_c109_b16"], setup)] == ["cls_c109_b16", "det_frozen"]
    assert specs["det_backbone"].batch == 1 and specs["det_backbone"].kind == "backbone"
    assert [s.model for s in specs["det_backbone"].sides] == ["randwire_backbone", "r50fpn_backbone"]
    families = {n.rsplit("_b", 1)[0] if n.startswith("cls_c109") else n for n in specs}
    assert len(select_pairs(None, setup)) == 6 and set(PAIR_FAMILIES) <= families
    with pytest.raises(ValueError, match="unknown pair 'det'"):
        select_pairs(["det"], setup)


def test_setup_defaults_and_errors():
    setup = default_setup("cpu")
    assert (setup.batches, setup.size, setup.det_size, setup.det_batch) == ((4, 16), 224, (320, 427), 2)
    assert (setup.warmup, setup.iters, setup.rounds, setup.deploy) == (1, 2, 5, True)
    assert parse_size("320") == (320, 427) and parse_size("64x96") == (64, 96)
    with pytest.raises(ValueError, match="rounds=0 must be >= 1"):
        default_setup("cpu", rounds=0)
    with pytest.raises(ValueError, match="'tpu'; allowed"):
        default_setup("tpu")
    with pytest.raises(ValueError, match="KEY VALUE"):
        default_setup("cpu", rw_opts=("MODEL.RANDWIRE.NORM",))
    with pytest.raises(ValueError, match="both sides must be >= 32"):
        parse_size("16x96")


@pytest.mark.parametrize("deploy", [True, False])
def test_model_bench_folds_bn_for_inference_only(deploy):
    setup = default_setup("cpu", deploy=deploy, flops=False, **TINY)
    pair = pair_specs(setup)["cls_small"]
    bench = ModelBench(pair.sides[1], pair, setup)  # MobileNetV2: every BN follows a conv
    train = bench.train_round()
    assert train["images_per_s"] > 0 and train["peak_mem_mib"] == train["peak_rss_mib"] - train["base_rss_mib"]
    stats = bench.stats()
    assert stats["saved_activation_bytes"] > 0 and stats["params"] == stats["trainable_params"] > 0
    with torch.no_grad():
        before = bench.model.eval()(bench.x)
    infer = bench.infer_round()
    assert infer["norm_layers_before"] > 0
    assert infer["norm_layers_after"] == (0 if deploy else infer["norm_layers_before"])
    with torch.no_grad():
        torch.testing.assert_close(bench.model(bench.x), before, rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeError, match="after infer_round"):
        bench.train_round()


def test_channels_last_gives_both_sides_nhwc_weights_and_maps_and_the_same_outputs():
    nchw, nhwc = (default_setup("cpu", channels_last=cl, flops=False, **TINY) for cl in (False, True))
    pair = pair_specs(nhwc)["cls_small"]
    for side in pair.sides:
        ref, bench = ModelBench(side, pair, nchw), ModelBench(side, pair, nhwc)  # same seed, same weights
        assert bench.x.is_contiguous(memory_format=torch.channels_last) and not bench.x.is_contiguous()
        convs = [m for m in bench.model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
        assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
        for b in (ref, bench):
            b.deploy()
        assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in bench.model.modules()
                   if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1))  # the fold keeps NHWC
        with torch.no_grad():
            torch.testing.assert_close(bench.model(bench.x), ref.model(ref.x), rtol=1e-4, atol=1e-4)
    # a detector: weights NHWC, so its backbone's maps are NHWC from the images Detectron2 batches
    pair = pair_specs(nhwc)["det_trainable"]
    bench = ModelBench(pair.sides[0], pair, nhwc)
    with torch.no_grad():
        images = bench.model.preprocess_image(bench.infer_inputs).tensor
        feats = bench.model.backbone(images)
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in feats.values())
    assert bench.train_round()["images_per_s"] > 0


def test_cli_writes_the_json_with_interleaved_rounds(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO / "tools" / "benchmark.py"), "--device", "cpu", "--pairs", "cls_small",
           "--size", "32", "--batch", "2", "--warmup", "0", "--iters", "1", "--rounds", "3", "--threads", "1",
           "--no-flops", "--profile", "--json", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "## cls_small" in proc.stdout and "ratio: median [min-max]" in proc.stdout
    data = json.loads(out.read_text())
    assert data["setup"]["rounds"] == 3 and data["setup"]["deploy"] is True and data["setup"]["threads"] == 1
    pair = data["pairs"]["cls_small"]
    for key in ("train", "infer", "train_peak_mem"):
        assert pair["median_ratio"][key] > 0
        lo, hi = pair["spread"][key]
        assert lo <= pair["median_ratio"][key] <= hi and len(pair["ratios"][key]) == 3
    # the rounds ran interleaved, the first side swapped each round, train before infer
    assert pair["log"] == [[phase, r, side] for phase in ("train", "infer") for r in range(3)
                           for side in (("randwire", "reference") if r % 2 == 0 else ("reference", "randwire"))]
    for side in ("randwire", "reference"):
        s = pair["sides"][side]
        assert len(s["rounds"]["train"]) == len(s["rounds"]["infer"]) == 3
        assert s["saved_activation_bytes"] > 0 and s["params"] > 0 and s["flops"] is None
        assert s["median"]["train_images_per_s"] > 0 and s["median"]["infer_images_per_s"] > 0
        assert all(r["norm_layers_after"] < r["norm_layers_before"] for r in s["rounds"]["infer"])
    assert pair["sides"]["reference"]["label"] == "torchvision MobileNetV2"
    # --profile: each side's time per op kind, both phases; the report compares them
    for phase in ("train", "infer"):
        rw, ref = (pair["sides"][side]["profile"][phase] for side in ("randwire", "reference"))
        assert rw["conv kxk depthwise"] > 0 and rw["conv 1x1"] > 0 and ref["conv kxk depthwise"] > 0
        assert rw["total"] == pytest.approx(sum(v for k, v in rw.items() if k != "total"))
        assert f"Where a {phase} step's time goes" in proc.stdout
    assert ("batch norm" in pair["sides"]["randwire"]["profile"]["train"]
            and "batch norm" not in pair["sides"]["randwire"]["profile"]["infer"])  # folded for inference
    assert "| RandWire - reference (ms/step) | share of the difference |" in proc.stdout
    # and on the CPU, oneDNN's own time per primitive kind
    if torch.backends.mkldnn.is_available():
        for phase in ("train", "infer"):
            for side in ("randwire", "reference"):
                ms = pair["sides"][side]["onednn"][phase]
                assert ms["conv kxk depthwise: forward"] > 0 and ms["total"] > 0
            assert f"Inside oneDNN, {phase}" in proc.stdout
        rw_train, rw_infer = (pair["sides"]["randwire"]["onednn"][phase] for phase in ("train", "infer"))
        assert any(k.endswith("backward weights") for k in rw_train), rw_train
        assert not any("backward" in k for k in rw_infer), rw_infer


def test_a_failing_worker_fails_its_pair_only():
    setup = default_setup("cpu", rw_opts=("MODEL.RANDWIRE.NO_SUCH_KEY", "1"), flops=False, **TINY)
    out = run_pair(pair_specs(setup)["cls_small"], setup, log=lambda msg: None)
    assert "NO_SUCH_KEY" in out["error"] and "median_ratio" not in out


def test_runtime_setup_errors():
    assert default_setup("cpu").runtime == "eager" and default_setup("cpu").phases == ("train", "infer")
    assert default_setup("cpu", runtime="openvino", phases=["infer"]).phases == ("infer",)
    with pytest.raises(ValueError, match="runtime='tvm'; allowed: 'eager', 'onnxruntime'"):
        default_setup("cpu", runtime="tvm")
    for bad, what in ((dict(deploy=False), "deploy off"), (dict(profile=True), "profile"),
                      (dict(amp="bf16"), "amp='bf16'"), (dict(channels_last=True), "channels_last")):
        with pytest.raises(ValueError, match=f"runtime='onnxruntime' does not go with {what}"):
            default_setup("cpu", runtime="onnxruntime", **bad)
    with pytest.raises(ValueError, match="phases=\\['test'\\]"):
        default_setup("cpu", phases=("test",))
    assert default_setup("cpu", runtime="openvino", profile=True).profile  # OpenVINO's own per-layer times
    with pytest.raises(ValueError, match="ref_runtime='eager' does not go with|needs ref_runtime='eager' equal"):
        default_setup("cpu", runtime="openvino", ref_runtime="eager", profile=True)
    with pytest.raises(ValueError, match="ref_runtime='tvm'; allowed"):
        default_setup("cpu", ref_runtime="tvm")


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_cli_runtime_writes_runtime_reorders_and_parity(tmp_path, runtime):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO / "tools" / "benchmark.py"), "--device", "cpu", "--pairs", "cls_small",
           "--size", "32", "--batch", "2", "--warmup", "0", "--iters", "1", "--rounds", "2", "--threads", "1",
           "--no-flops", "--runtime", runtime, "--phases", "infer", "--json", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["runtime"] == data["setup"]["runtime"] == runtime and data["setup"]["phases"] == ["infer"]
    pair = data["pairs"]["cls_small"]
    assert pair["runtime"] == runtime and pair["phases"] == ["infer"]
    # --phases infer: no train rounds, the infer rounds interleaved as in eager
    assert pair["log"] == [["infer", 0, "randwire"], ["infer", 0, "reference"],
                           ["infer", 1, "reference"], ["infer", 1, "randwire"]]
    assert pair["median_ratio"]["infer"] > 0 and pair["median_ratio"]["train"] is None
    for side in ("randwire", "reference"):
        s = pair["sides"][side]
        assert s["rounds"]["train"] == [] and len(s["rounds"]["infer"]) == 2
        assert all(r["norm_layers_after"] == 0 < r["norm_layers_before"] for r in s["rounds"]["infer"])
        rt = s["runtime"]
        assert rt["name"] == runtime and rt["threads"] == 1 and rt["parity_of"] == "logits"
        assert isinstance(rt["reorders"], int) and rt["reorders"] >= 0
        # the runtime gives the folded classifier's logits (random init: small, but not all zero)
        assert rt["max_abs_ref"] > 0 and rt["max_abs_err"] <= 1e-4 * rt["max_abs_ref"] + 1e-6
    assert f"| {runtime}: layout reorders in the compiled graph |" in proc.stdout
    assert f"inference runtime: {runtime}" in proc.stdout and "phases: infer" in proc.stdout


def test_det_backbone_side_is_inference_only_and_runs_in_openvino():
    setup = default_setup("cpu", runtime="openvino", threads=1, flops=False, **TINY)
    pair = pair_specs(setup)["det_backbone"]
    bench = ModelBench(pair.sides[1], pair, setup)  # R50-FPN's backbone+FPN
    assert bench.x.shape == (1, 3, 64, 96)  # one preprocessed image, already a multiple of 32
    with pytest.raises(RuntimeError, match="no training phase"):
        bench.train_round()
    stats = bench.stats()
    assert stats["saved_activation_bytes"] is None and stats["params"] > 0 and stats["flops_of"] == "backbone+FPN"
    with torch.no_grad():
        eager = bench.model.eval()(bench.x)  # unfolded, eval mode
    info = bench.runtime()
    assert info["name"] == "openvino" and info["parity_of"] == "backbone+FPN features" and info["reorders"] >= 0
    served = bench.forward(bench.x)
    assert list(served) == ["p2", "p3", "p4", "p5", "p6"]
    for name, ref in eager.items():  # the runtime against the model before the fold
        torch.testing.assert_close(served[name], ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()))
    assert bench.infer_round()["norm_layers_after"] == 0
    # --profile in OpenVINO: its per-layer times, by kind, summing to the total
    times = bench.profile("infer")
    assert times["Convolution 1x1"] > 0 and times["Convolution kxk"] > 0 and "GroupConvolution (depthwise)" not in times
    assert times["total"] == pytest.approx(sum(v for k, v in times.items() if k != "total"))


def test_padded_randwire_side_keeps_its_outputs_in_the_runtime():
    """--pad-channels 16: the RandWire backbone+FPN's widths padded after the fold, served by
    ONNX Runtime, against the unpadded eager model."""
    setup = default_setup("cpu", runtime="onnxruntime", threads=1, flops=False, pad_channels=16, **TINY)
    pair = pair_specs(setup)["det_backbone"]
    bench = ModelBench(pair.sides[0], pair, setup)
    with torch.no_grad():
        eager = bench.model.eval()(bench.x)
    bench.runtime()
    assert all(c % 16 == 0 for c in bench.model.bottom_up._out_feature_channels.values())
    served = bench.forward(bench.x)
    for name, ref in eager.items():
        torch.testing.assert_close(served[name], ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()))


def test_detector_serves_its_backbone_in_onnxruntime_with_the_same_detections():
    # random heads and no score threshold: the box head's random scores give detections
    setups = [default_setup("cpu", runtime=rt, threads=1, flops=False, random_heads=True,
                            rw_opts=("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"), **TINY)
              for rt in ("eager", "onnxruntime")]
    pair = pair_specs(setups[0])["det_trainable"]
    eager, served = (ModelBench(pair.sides[0], pair, s) for s in setups)  # RandWire, same seed and weights
    for bench in (eager, served):
        bench.deploy()
    assert type(served.model.backbone).__name__ == "RuntimeBackbone" and served.runtime()["max_abs_err"] < 1e-4
    with torch.no_grad():
        a, b = (bench.forward(bench.infer_inputs)[0]["instances"] for bench in (eager, served))
    assert len(a) == len(b) > 0  # the same detections (near-tied scores may swap places)
    torch.testing.assert_close(b.scores.sort().values, a.scores.sort().values, rtol=1e-4, atol=1e-6)
    nearest = (b.pred_boxes.tensor[:, None] - a.pred_boxes.tensor[None]).abs().amax(-1).amin(1)
    assert float(nearest.max()) < 1e-2, nearest.max()


def test_ref_runtime_runs_the_reference_in_eager_interleaved(tmp_path):
    """--runtime openvino --ref-runtime eager: RandWire served, ResNet in eager, same rounds."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO / "tools" / "benchmark.py"), "--device", "cpu", "--pairs", "cls_small",
           "--size", "32", "--batch", "2", "--warmup", "0", "--iters", "1", "--rounds", "2", "--threads", "1",
           "--no-flops", "--runtime", "openvino", "--ref-runtime", "eager", "--phases", "infer", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                          cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pair = json.loads(out.read_text())["pairs"]["cls_small"]
    assert (pair["runtime"], pair["ref_runtime"]) == ("openvino", "eager")
    assert pair["sides"]["randwire"]["runtime"]["name"] == "openvino"
    assert pair["sides"]["reference"]["runtime"] == {"name": "eager"}
    assert [e[2] for e in pair["log"]] == ["randwire", "reference", "reference", "randwire"]
    assert "inference runtime: openvino for RandWire, eager for the reference" in proc.stdout


def test_precision_setup_errors():
    assert default_setup("cpu").precision == "fp32"
    assert default_setup("cpu", runtime="openvino", precision="bf16").precision == "bf16"
    with pytest.raises(ValueError, match="precision='bf16' is not served by runtime 'onnxruntime'"):
        default_setup("cpu", runtime="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="precision='bf16' is not served by runtime 'onnxruntime'"):
        default_setup("cpu", runtime="openvino", ref_runtime="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="precision='int4' is unknown"):
        default_setup("cpu", precision="int4")
    with pytest.raises(ValueError, match="precision='int8' is not served by runtime ''.*'openvino'"):
        default_setup("cpu", precision="int8")
    with pytest.raises(ValueError, match="ref_precision='int8' is not served by runtime ''"):
        default_setup("cpu", runtime="openvino", precision="int8", ref_runtime="eager")
    with pytest.raises(ValueError, match="reference='resnet'; allowed: 'pair', 'self'"):
        default_setup("cpu", reference="resnet")
    setup = default_setup("cpu", runtime="openvino", precision="int8", ref_runtime="eager", ref_precision="fp32",
                          reference="self")
    rw, ref = pair_specs(setup)["det_backbone"].sides
    assert (rw.model, rw.opts, rw.role, ref.role) == (ref.model, ref.opts, "randwire", "reference")
    assert [(setup.runtime_of(s), setup.precision_of(s)) for s in (rw, ref)] == [("openvino", "int8"), ("eager", "fp32")]


def test_cli_int8_against_its_own_eager_fp32_interleaved(tmp_path):
    """--reference self --runtime openvino --precision int8 --ref-runtime eager --ref-precision fp32:
    RandWire quantized by NNCF against RandWire itself in eager fp32, in alternating rounds; the JSON
    and the report say which side ran what, and the int8 logits are near (not equal to) fp32's."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO / "tools" / "benchmark.py"), "--device", "cpu", "--pairs", "cls_small",
           "--size", "32", "--batch", "2", "--warmup", "0", "--iters", "1", "--rounds", "2", "--threads", "1",
           "--no-flops", "--phases", "infer", "--reference", "self", "--runtime", "openvino", "--precision", "int8",
           "--ref-runtime", "eager", "--ref-precision", "fp32", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    pair = data["pairs"]["cls_small"]
    assert (pair["precision"], pair["ref_precision"], pair["runtime"], pair["ref_runtime"]) == (
        "int8", "fp32", "openvino", "eager")
    rw, ref = pair["sides"]["randwire"], pair["sides"]["reference"]
    assert rw["model"]["model"] == ref["model"]["model"] == "randwire_cls" and rw["params"] == ref["params"]
    assert rw["runtime"]["precision"].startswith("int8 (") and ref["runtime"] == {"name": "eager"}
    assert 0 < rw["runtime"]["max_abs_err"] <= 0.2 * rw["runtime"]["max_abs_ref"] + 1e-3, rw["runtime"]
    assert [e[2] for e in pair["log"]] == ["randwire", "reference", "reference", "randwire"]
    assert data["setup"]["precision_note"].startswith("int8") and data["setup"]["ref_precision_note"] == "fp32"
    assert "(openvino int8) |" in proc.stdout and "(eager fp32) |" in proc.stdout
    assert "reference: RandWire itself" in proc.stdout


@pytest.mark.parametrize("runtime", ["eager", "openvino"])
def test_cli_bf16_inference_runs_near_fp32_and_says_what_ran(tmp_path, runtime):
    """--precision bf16: the JSON names the precision and whether this CPU runs bf16 natively;
    in OpenVINO the compiled precision is read back, and the logits stay near the eager fp32
    ones (bf16's 8-bit mantissa: a few percent of their scale, not exact)."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO / "tools" / "benchmark.py"), "--device", "cpu", "--pairs", "cls_small",
           "--size", "32", "--batch", "2", "--warmup", "0", "--iters", "1", "--rounds", "2", "--threads", "1",
           "--no-flops", "--runtime", runtime, "--precision", "bf16", "--phases", "infer", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    from rwdet.utils.cpu import bf16_support

    assert data["setup"]["precision"] == "bf16" and data["setup"]["precision_note"].startswith("bf16")
    assert ("EMULATED" in data["setup"]["precision_note"]) == (bf16_support() == "emulated")
    assert "inference precision: bf16" in proc.stdout
    if runtime == "openvino":
        for side in ("randwire", "reference"):
            rt = data["pairs"]["cls_small"]["sides"][side]["runtime"]
            if bf16_support() != "emulated":
                assert "bf16" in rt["precision"].lower() or "bfloat16" in rt["precision"].lower(), rt
            assert 0 < rt["max_abs_err"] <= 0.05 * rt["max_abs_ref"] + 1e-3, rt
