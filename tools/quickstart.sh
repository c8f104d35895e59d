#!/usr/bin/env bash
# The whole mission, offline, on real data, in one command (CPU is enough):
#   1. pretrain RandWire-WS(4, 0.75), small regime (C=78), on Fashion-MNIST (short schedule);
#   2. load those weights into Faster R-CNN + RandWire FPN and train it on BCCD;
#   3. train the same detector from random initialization, same schedule;
#   4. evaluate both on BCCD test (COCO AP) and print them side by side.
#
#   bash tools/quickstart.sh /path/to/BCCD [OUTPUT_DIR]
#
# Environment: RWDET_PYTHON (default .venv/bin/python, as made by tools/setup.sh);
# PRETRAIN_ITERS (default 500, about 1.1 epochs of 60,000 images at batch 128);
# SEED (default 1): Detectron2's training seed of both detectors, so the same command gives the
# same AP on one machine (one CPU model, one build; not across CPUs) (pretraining uses the classification trainer's fixed default, SEED 0).
set -euo pipefail
cd "$(dirname "$0")/.."
BCCD=${1:?usage: bash tools/quickstart.sh /path/to/BCCD [OUTPUT_DIR]}
OUT=${2:-output/quickstart}
PY=${RWDET_PYTHON:-.venv/bin/python}
PRETRAIN_ITERS=${PRETRAIN_ITERS:-500}
SEED=${SEED:-1}
DET_CONFIG=configs/bccd/faster_rcnn_randwire_ws_small_bccd.yaml
# Both detectors normalise pixels as the pretraining did (Fashion-MNIST mean/std, x255).
NORM=(MODEL.PIXEL_MEAN "[72.93, 72.93, 72.93]" MODEL.PIXEL_STD "[90.02, 90.02, 90.02]")

echo "== 1/3 pretraining on Fashion-MNIST ($PRETRAIN_ITERS iterations)"
"$PY" tools/pretrain_net.py --config-file configs/fashion_mnist/randwire_ws_small.yaml \
    SOLVER.MAX_ITER "$PRETRAIN_ITERS" OUTPUT_DIR "$OUT/pretrain"
echo "== 2/3 Faster R-CNN on BCCD from the pretrained RandWire"
"$PY" tools/train_net.py --config-file "$DET_CONFIG" DATASETS.BCCD_ROOT "$BCCD" "${NORM[@]}" SEED "$SEED" \
    MODEL.WEIGHTS "$OUT/pretrain/model_final.pth" OUTPUT_DIR "$OUT/bccd_pretrained"
echo "== 3/3 the same detector from random initialization"
"$PY" tools/train_net.py --config-file "$DET_CONFIG" DATASETS.BCCD_ROOT "$BCCD" "${NORM[@]}" SEED "$SEED" \
    OUTPUT_DIR "$OUT/bccd_scratch"
"$PY" tools/summarize.py --pretrain "$OUT/pretrain" "$OUT/bccd_pretrained" "$OUT/bccd_scratch" | tee "$OUT/summary.md"
