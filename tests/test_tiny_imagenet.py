"""Tiny ImageNet in the shared trainer, on the real archive: its layout, the checks before any
work, the class-list check of every classification dataset, and pretraining checkpoints of both
twins (RandWire, ResNet-18) loading into their detectors with every backbone tensor.

The archive is found at $RWDET_TINY_IMAGENET (the .tar.gz, or its unpacked tiny-imagenet-200
folder; CI sets it, and then a missing archive is an error), else at
<repo>/../shared/datasets/tiny-imagenet/tiny-imagenet-200.tar.gz (tests skip if absent). An
archive is unpacked once per machine into $RWDET_TEST_CACHE (default ~/.cache/rwdet-tests) and
reused by later runs: its 120,000 files take minutes to write and as long again to delete.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model
from PIL import Image

from rwdet.classification.config import load_cls_config
from rwdet.classification.data import build_classification_dataset
from rwdet.classification.tiny_imagenet import TinyImageNet, check_same_classes
from rwdet.classification.trainer import ClassificationTrainer
from rwdet.engine import AtomicCheckpointer
from rwdet.engine.defaults import load_config

REPO = Path(__file__).resolve().parents[1]
CLS = str(REPO / "tests" / "configs" / "tiny_imagenet_sample.yaml")
DETECTORS = {"randwire": str(REPO / "tests" / "configs" / "tiny_bccd.yaml"),
             "resnet18": str(REPO / "tests" / "configs" / "tiny_bccd_resnet.yaml")}
SAMPLE_WNIDS = ("n01443537", "n01629819", "n02124075")  # goldfish, European fire salamander, Egyptian cat


def unpacked_once(archive: Path, cache: Path) -> Path:
    """The tiny-imagenet-200 folder of ``archive``, unpacked into ``cache`` on the first call and
    reused after: the folder is keyed by the archive's size and the SHA-256 of its first MiB, and
    unpacked beside it first, then renamed, so an interrupted unpack is never reused."""
    with open(archive, "rb") as f:
        key = f"{archive.stat().st_size}-{hashlib.sha256(f.read(1 << 20)).hexdigest()[:16]}"
    done = cache / f"tiny-imagenet-{key}"
    if not (done / "tiny-imagenet-200" / "wnids.txt").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f"{done.name}.partial-", dir=cache))
        with tarfile.open(archive) as tar:
            tar.extractall(partial, filter="data")
        try:
            os.replace(partial, done)
        except OSError:  # another run finished first: keep its folder
            shutil.rmtree(partial, ignore_errors=True)
    return done / "tiny-imagenet-200"


@pytest.fixture(scope="session")
def tiny_root() -> Path:
    """The whole tiny-imagenet-200 folder (an archive unpacked once per machine: unpacked_once)."""
    env = os.environ.get("RWDET_TINY_IMAGENET")
    source = Path(env) if env else REPO.parent / "shared" / "datasets" / "tiny-imagenet" / "tiny-imagenet-200.tar.gz"
    if source.is_dir():
        return source
    if not source.is_file():
        if env:
            raise FileNotFoundError(f"RWDET_TINY_IMAGENET={env}: no tiny-imagenet-200 archive or folder there")
        pytest.skip(f"Tiny ImageNet not found at {source}; set RWDET_TINY_IMAGENET")
    cache = Path(os.environ.get("RWDET_TEST_CACHE", Path.home() / ".cache" / "rwdet-tests"))
    return unpacked_once(source, cache)


def make_sample(tiny_root: Path, out: Path, per_class_train: int = 6, per_class_val: int = 4) -> Path:
    """A copy of the real layout with 3 classes and a few photos each (wnids.txt, words.txt,
    train/<wnid>/images/, val/images/ and the matching lines of val_annotations.txt)."""
    out.mkdir(parents=True)
    (out / "wnids.txt").write_text("\n".join(SAMPLE_WNIDS) + "\n")
    shutil.copy(tiny_root / "words.txt", out / "words.txt")
    for wnid in SAMPLE_WNIDS:
        (out / "train" / wnid / "images").mkdir(parents=True)
        for k in range(per_class_train):
            name = f"{wnid}_{k}.JPEG"
            shutil.copy(tiny_root / "train" / wnid / "images" / name, out / "train" / wnid / "images" / name)
    (out / "val" / "images").mkdir(parents=True)
    kept, count = [], {w: 0 for w in SAMPLE_WNIDS}
    for line in (tiny_root / "val" / "val_annotations.txt").read_text().splitlines():
        name, wnid = line.split("\t")[:2]
        if wnid in count and count[wnid] < per_class_val:
            count[wnid] += 1
            kept.append(line)
            shutil.copy(tiny_root / "val" / "images" / name, out / "val" / "images" / name)
    (out / "val" / "val_annotations.txt").write_text("\n".join(kept) + "\n")
    return out


@pytest.fixture(scope="module")
def sample(tiny_root, tmp_path_factory) -> Path:
    return make_sample(tiny_root, tmp_path_factory.mktemp("sample") / "tiny-imagenet-200")


def test_the_whole_archive_builds_100000_train_and_10000_val_photos_in_200_classes(tiny_root):
    train = build_classification_dataset("tiny_imagenet", str(tiny_root), "train", None)
    val = build_classification_dataset("tiny_imagenet", str(tiny_root), "val", None)
    assert (len(train), len(val), len(train.classes)) == (100000, 10000, 200)
    assert val.classes == train.classes == sorted(train.classes)
    assert torch.bincount(torch.tensor(train.targets)).tolist() == [500] * 200
    assert torch.bincount(torch.tensor(val.targets)).tolist() == [50] * 200
    goldfish = train.classes.index("n01443537")
    assert train.class_names[goldfish] == "goldfish, Carassius auratus"
    # Every val photo's label is its line of val_annotations.txt.
    lines = dict(line.split("\t")[:2] for line in (tiny_root / "val" / "val_annotations.txt").read_text().splitlines())
    assert all(val.classes[label] == lines[os.path.basename(path)] for path, label in val.samples)


def test_sample_photos_are_rgb_64px_with_their_labels(sample):
    train, val = TinyImageNet(str(sample), "train"), TinyImageNet(str(sample), "val")
    assert train.classes == val.classes == sorted(SAMPLE_WNIDS)
    assert (len(train), len(val)) == (18, 12)
    for ds in (train, val):
        for i in range(len(ds)):
            image, label = ds[i]
            assert image.mode == "RGB" and image.size == (64, 64)
            assert label == ds.targets[i]
    assert all(Path(p).parent.parent.name == train.classes[y] for p, y in train.samples)


def _edit(sample: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "tiny-imagenet-200"
    shutil.copytree(sample, copy)
    return copy


def test_val_line_with_an_unknown_wnid_or_a_missing_photo_is_refused_by_name(sample, tmp_path):
    root = _edit(sample, tmp_path)
    ann = root / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines()
    first = lines[0].split("\t")
    lines[1] = "\t".join([lines[1].split("\t")[0], "n99999999"] + lines[1].split("\t")[2:])
    ann.write_text("\n".join(lines) + "\n")
    (root / "val" / "images" / first[0]).unlink()
    with pytest.raises(ValueError) as e:
        TinyImageNet(str(root), "val")
    msg = str(e.value)
    assert "val_annotations.txt:2: wnid 'n99999999'" in msg and "not in wnids.txt" in msg
    assert f"val_annotations.txt:1: {root / 'val' / 'images' / first[0]} is missing" in msg
    assert "2 bad lines" in msg


def test_truncated_photo_and_missing_class_folder_are_named(sample, tmp_path):
    root = _edit(sample, tmp_path)
    photo = root / "train" / SAMPLE_WNIDS[1] / "images" / f"{SAMPLE_WNIDS[1]}_2.JPEG"
    photo.write_bytes(photo.read_bytes()[:-300])
    with pytest.raises(ValueError, match=rf"1 of 18 photos cannot be used: {photo} is truncated"):
        TinyImageNet(str(root), "train")
    shutil.rmtree(root / "train" / SAMPLE_WNIDS[0])
    with pytest.raises(ValueError, match=rf"classes of wnids.txt have no photos: .*{SAMPLE_WNIDS[0]}/images missing"):
        TinyImageNet(str(root), "train")
    with pytest.raises(FileNotFoundError, match="tiny-imagenet-200 layout"):
        TinyImageNet(str(tmp_path / "nowhere"), "train")


def test_class_lists_are_compared():
    check_same_classes(["a", "b"], ["a", "b"], "x")
    with pytest.raises(ValueError, match=r"2 against 1 classes; 2 only in training \(a, b\), 1 only in evaluation \(images\)"):
        check_same_classes(["a", "b"], ["images"], "x")
    with pytest.raises(ValueError, match=r"another order \(label 0 is 'a' in training, 'b' in evaluation\)"):
        check_same_classes(["a", "b"], ["b", "a"], "x")


def test_imagenet_layout_with_a_flat_val_folder_is_refused_before_anything_is_written(sample, tmp_path):
    # What a user gets by pointing DATA.NAME imagenet at the unzipped Tiny ImageNet: ImageFolder
    # reads val/images as one class named "images". The command must refuse, naming it.
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "pretrain_net.py"), "--config-file", CLS, "DATA.NAME", "imagenet",
         "DATA.ROOT", str(sample), "OUTPUT_DIR", str(out)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "3 only in training (n01443537, n01629819, n02124075), 1 only in evaluation (images)" in proc.stderr
    assert not out.exists()


def test_num_classes_must_be_the_datasets(sample, tmp_path):
    cfg = load_cls_config(CLS, ["DATA.ROOT", str(sample), "MODEL.NUM_CLASSES", "200", "OUTPUT_DIR", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="MODEL.NUM_CLASSES=200, but .* has 3 classes: set MODEL.NUM_CLASSES 3"):
        ClassificationTrainer(cfg)
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module", params=["randwire", "resnet18"])
def pretrained(request, sample, tmp_path_factory):
    """tools/pretrain_net.py on the sample: 4 iterations, evaluated after 2 and 4. Returns
    (arch, run folder, the checkpoint's classifier state, the last evaluation)."""
    out = tmp_path_factory.mktemp(f"pretrain_{request.param}")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "pretrain_net.py"), "--config-file", CLS, "DATA.ROOT", str(sample),
         "MODEL.ARCH", request.param, "TEST.EVAL_PERIOD", "2", "OUTPUT_DIR", str(out)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    return request.param, out, state, json.loads((out / "eval_results.json").read_text())


def test_pretraining_on_the_sample_evaluates_top1_and_top5_on_every_val_photo(pretrained):
    _, out, _, results = pretrained
    assert results["num_images"] == 12 and results["iterations"] == 4
    assert 0 <= results["top1"] <= results["top5"] == 100.0  # 3 classes: the top 5 hold every label
    assert (out / "model_final.pth").is_file()


def test_pretraining_checkpoint_loads_every_backbone_tensor_into_its_detector(pretrained):
    arch, out, classifier, _ = pretrained
    ckpt = str(out / "model_final.pth")
    # The fine-tuning recipe of the transfer comparison: FrozenBN, stem and res2 frozen.
    norm = "MODEL.RANDWIRE.NORM" if arch == "randwire" else "MODEL.RESNETS.NORM"
    for opts in ([], [norm, "FrozenBN", "MODEL.BACKBONE.FREEZE_AT", "2"]):
        model = build_model(load_config(DETECTORS[arch], ["MODEL.WEIGHTS", ckpt, *opts]))
        report = AtomicCheckpointer(model).load(ckpt, checkpointables=[])["transfer_report"]
        bottom_up = sorted(k for k in model.state_dict() if k.startswith("backbone.bottom_up."))
        assert report["missing"] == [] and report["unexpected"] == [] and sorted(report["matched"]) == bottom_up
        state = model.state_dict()
        body = {k[len("body."):]: v for k, v in classifier.items() if k.startswith("body.")}
        assert len(body) > 10
        for k, v in body.items():
            if "backbone.bottom_up." + k in state:  # FrozenBN keeps no num_batches_tracked
                assert torch.equal(state["backbone.bottom_up." + k], v), k
            else:
                assert k.endswith("num_batches_tracked") and opts, k


def test_a_checkpoint_does_not_load_into_the_other_twins_detector(pretrained):
    arch, out, _, _ = pretrained
    other = "resnet18" if arch == "randwire" else "randwire"
    model = build_model(load_config(DETECTORS[other], []))
    with pytest.raises(ValueError, match=rf"is a '{arch}' classifier and the detector's backbone is a "
                                         rf"{'ResNet' if other == 'resnet18' else 'RandWire'}"):
        AtomicCheckpointer(model).load(str(out / "model_final.pth"), checkpointables=[])


def test_tiny_imagenet_configs_build_twins_with_the_same_recipe():
    rw = load_cls_config(str(REPO / "configs/tiny_imagenet/randwire_ws_small.yaml"), ["DATA.ROOT", "x"])
    r18 = load_cls_config(str(REPO / "configs/tiny_imagenet/resnet18.yaml"), ["DATA.ROOT", "x"])
    for key in ("DATA", "SOLVER", "TEST", "SEED"):
        assert rw[key] == r18[key], key
    assert (rw.MODEL.ARCH, r18.MODEL.ARCH) == ("randwire", "resnet18")
    bccd = load_config(str(REPO / "configs/bccd/faster_rcnn_randwire_ws_small_bccd.yaml"))
    assert [g for g in rw.MODEL.RANDWIRE.GRAPHS] == [g for g in bccd.MODEL.RANDWIRE.GRAPHS]


def test_pretraining_report_reads_the_runs_and_draws_the_curve(pretrained, tmp_path):
    arch, out, _, results = pretrained
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "compare_pretraining.py"), "--runs", str(out), "--labels", arch,
         "--output-dir", str(tmp_path / "report")],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "report" / "results.json").read_text())[0]
    # Evaluations after iterations 2 and 4; 18 training photos in batches of 6: 3 iterations an epoch.
    assert [e["iteration"] for e in report["evaluations"]] == [2, 4]
    assert report["iters_per_epoch"] == 3 and report["evaluations"][-1]["epoch"] == pytest.approx(4 / 3)
    assert report["final"]["top1"] == pytest.approx(results["top1"]) and report["max_iter"] == 4
    md = (tmp_path / "report" / "results.md").read_text()
    assert f"| {arch} | {arch} | tiny_imagenet 64 px | 1.33 of 1.33333 |" in md
    assert Image.open(tmp_path / "report" / "top1.png").size[0] > 100
    # An evaluation that only the log holds (the process stopped before the metrics writer
    # flushed it) still counts; where metrics.json has the iteration, its value wins over the log's.
    from rwdet.analysis.pretraining import read_pretraining_run

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "log.txt", "a") as f:
        f.write("[12/07 19:36:57 rwdet.classification.trainer]: Evaluation after 3 iterations: top-1 12.50%, "
                "top-5 100.00% (12 images)\n"
                "[12/07 19:36:58 rwdet.classification.trainer]: Evaluation after 2 iterations: top-1 99.00%, "
                "top-5 100.00% (12 images)\n")
    run = read_pretraining_run(str(copy))
    assert [(e["iteration"], e["top1"]) for e in run["evaluations"]] == [
        (2, report["evaluations"][0]["top1"]), (3, 12.5), (4, report["evaluations"][1]["top1"])]
    bad = subprocess.run([sys.executable, str(REPO / "tools" / "compare_pretraining.py"), "--runs", str(tmp_path),
                          "--output-dir", str(tmp_path / "r2")], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "is not a tools/pretrain_net.py run folder" in bad.stderr
    assert not (tmp_path / "r2").exists()
