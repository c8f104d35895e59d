#!/usr/bin/env bash
# Set up rwdet: torch and torchvision (pinned), detectron2, Fashion-MNIST, and rwdet itself.
#
#   bash tools/setup.sh                     # into ./.venv (created if missing)
#   RWDET_PYTHON=/path/to/python bash tools/setup.sh   # into an existing environment
#
# detectron2 is left alone when `import detectron2` already works (e.g. your own source build
# with CUDA); torch/torchvision are left alone when both import. Otherwise this installs the
# combination known to work without a detectron2 source build (see README, "Install"):
# torch==2.14.1, torchvision==0.29.1 and the sal-detectron2 0.7.2 wheel (upstream detectron2
# Python code at commit a59f056).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
D2_WHEEL=sal-detectron2==0.7.2

if [ -n "${RWDET_PYTHON:-}" ]; then
  PY="$RWDET_PYTHON"
else
  if [ ! -x .venv/bin/python ]; then
    echo "[rwdet setup] creating virtual environment .venv"
    "${PYTHON:-python3}" -m venv .venv
  fi
  PY=.venv/bin/python
fi
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if "$PY" -c "import torch, torchvision" 2>/dev/null; then
  echo "[rwdet setup] torch/torchvision present: $("$PY" -c 'import torch, torchvision; print(torch.__version__, torchvision.__version__)')"
else
  echo "[rwdet setup] installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"
  pip_install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

if "$PY" -c "import detectron2" 2>/dev/null; then
  echo "[rwdet setup] detectron2 present: $("$PY" -c 'import detectron2; print(detectron2.__version__, detectron2.__file__)')"
else
  echo "[rwdet setup] installing detectron2 ($D2_WHEEL wheel) and its run-time requirements"
  tmp=$(mktemp -d)
  # The wheel is tagged cp310 but is pure Python apart from an optional _C extension that is
  # not loaded on other versions; retag it so pip accepts it. Its metadata also pins numpy<2,
  # which detectron2's Python code does not need (the test suite and the quick start pass with
  # numpy 2.4 and opencv-python 5.1, 2026-12-05): drop that one requirement from the retagged
  # wheel's METADATA (and its RECORD hash), so pip sees no conflict beside numpy 2.
  "$PY" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
      --python-version 3.10 --implementation cp --abi none --platform any -d "$tmp" "$D2_WHEEL"
  whl=$(ls "$tmp"/sal_detectron2-*.whl)
  "$PY" - "$whl" "$tmp/sal_detectron2-0.7.2-py3-none-any.whl" <<'PYEOF'
import base64, hashlib, sys, zipfile
src, dst = sys.argv[1:]
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
    files = {i.filename: zin.read(i) for i in zin.infolist()}
    meta = next(n for n in files if n.endswith(".dist-info/METADATA"))
    files[meta] = b"".join(l for l in files[meta].splitlines(True) if l.strip() != b"Requires-Dist: numpy<2")
    digest = base64.urlsafe_b64encode(hashlib.sha256(files[meta]).digest()).rstrip(b"=").decode()
    record = next(n for n in files if n.endswith(".dist-info/RECORD"))
    files[record] = "".join(
        f"{meta},sha256={digest},{len(files[meta])}\n" if l.split(",")[0] == meta else l
        for l in files[record].decode().splitlines(True)).encode()
    for name, data in files.items():
        zout.writestr(name, data)
PYEOF
  pip_install --no-deps "$tmp/sal_detectron2-0.7.2-py3-none-any.whl"
  pip_install numpy Pillow matplotlib pycocotools termcolor yacs tabulate cloudpickle tqdm \
      tensorboard "omegaconf>=2.1,<2.4" hydra-core black packaging fvcore iopath "setuptools<81"
  rm -rf "$tmp"
fi

# Fashion-MNIST (the embedded pretraining data set) comes from Debian's dataset-fashion-mnist.
if [ -d /usr/share/datasets/fashion-mnist ]; then
  echo "[rwdet setup] Fashion-MNIST present in /usr/share/datasets/fashion-mnist"
elif command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "[rwdet setup] installing Debian package dataset-fashion-mnist"
  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
else
  echo "[rwdet setup] note: Fashion-MNIST is not installed; for pretraining on it run" \
       "'sudo apt-get install dataset-fashion-mnist' (or pass DATA.ROOT with its IDX files)"
fi

# OpenCV for tools/demo.py (also in setup.py); current releases need numpy 2, which works here.
if "$PY" -c "import cv2" 2>/dev/null; then
  echo "[rwdet setup] OpenCV present: $("$PY" -c 'import cv2; print(cv2.__version__)')"
else
  echo "[rwdet setup] installing opencv-python"
  pip_install opencv-python
fi

echo "[rwdet setup] installing rwdet (editable) with test and deploy requirements (onnx, onnxruntime, openvino, nncf)"
pip_install -e ".[test,deploy]"
"$PY" -c "import rwdet, detectron2, torch; print('[rwdet setup] ok: rwdet', rwdet.__version__, '| detectron2', detectron2.__version__, '| torch', torch.__version__, '| CUDA', torch.cuda.is_available())"
