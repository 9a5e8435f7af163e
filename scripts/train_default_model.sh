#!/usr/bin/env bash
# Retrain the bundled demo model (dfmvr/assets/default/) from scratch: the exact recipe of the shipped one.
#
#   bash scripts/train_default_model.sh [WORK_DIR]     # needs: pip install -e ".[train]"
#
# On the 2-core CPU it was made on: data ~7 min, parse net ~8 min, main stage ~90 min, export + eval ~3 min.
# Every step resumes: rerun the script after an interruption (the main stage continues with --resume).
# The last step copies the weights, the ONNX graph and the face model into dfmvr/assets/default/ and
# writes WORK_DIR/eval.json (torch) and eval.onnx.json (the shipped graph, installed as eval.json),
# whose numbers go into the README table.
set -euo pipefail
WORK=${1:-work/default-model}
REPO=$(cd "$(dirname "$0")/.." && pwd)
ASSETS="$REPO/dfmvr/assets/default"
mkdir -p "$WORK"

# 1. synthetic data: 2000 training triplets (seed 0), 64 held-out triplets (seed 1, never trained on)
dfmvr data synth --out "$WORK/data/train" --triplets 2000 --seed 0 --workers 2
dfmvr data synth --out "$WORK/data/val" --triplets 64 --seed 1
dfmvr data synth --out "$WORK/data/select" --triplets 32 --seed 2   # logged during training; val stays unseen

# 2. the parser (frozen during the main stage; also the graph's `labels` output): one epoch
if [ ! -f "$WORK/runs/parse/parse_net.safetensors" ]; then
  dfmvr-train --stage parse --data "$WORK/data/train" --variant tiny --out "$WORK/runs/parse" --epochs 1 --batch 8
fi

# 3. the main stage. A demo trained in about 90 minutes on 2 CPU cores: the squared vertex error of the
#    unposed shape (mm^2) and the MSE to the true coefficients (synthetic data only; both recorded in
#    the card) at weight 1e4 dominate, the weak losses run at their official weights beside them, the
#    mask loss is off (it doubles the step time). --per-sample-norm layer: with batch statistics the
#    involution net squashed all but one sample per batch and learned no shape; with instance statistics
#    the pooled features could not see the side views (see docs/training.md).
#    The shipped run was planned for 8 epochs; after 4 the validation error was still falling, so it was
#    resumed with --epochs 10, which stretches the learning-rate schedule from there (the card records
#    it under provenance.schedule_changes). Both invocations are replayed here so the weights reproduce.
#    10 epochs x 250 steps x batch 4 = 10,000 triplet samples.
MAIN=(--data "$WORK/data/train" --val "$WORK/data/select" --variant tiny --out "$WORK/runs/tiny"
      --max-steps 250 --batch 4 --lr 1e-3 --supervised-weight 10000 --supervised-shape-weight 10000
      --mask-weight 0 --per-sample-norm layer --parse-net "$WORK/runs/parse/parse_net.safetensors" --quiet)
FIRST_PART_DONE="$WORK/runs/tiny/first-4-epochs.done"
if [ ! -f "$FIRST_PART_DONE" ]; then
  RESUME=(); if [ -f "$WORK/runs/tiny/checkpoint.train.pt" ]; then RESUME=(--resume); fi
  dfmvr-train "${MAIN[@]}" --epochs 8 --stop-after 4 "${RESUME[@]}"
  touch "$FIRST_PART_DONE"
fi
dfmvr-train "${MAIN[@]}" --epochs 10 --resume

# 4. ship in float16 storage (float32 compute); --per-sample-norm layer above already made batch norm use
#    each sample's own statistics in training and at inference (see dfmvr/train/models/sample_norm.py),
#    export (fails if ONNX Runtime and PyTorch disagree), evaluate on the held-out set, install
dfmvr convert half "$WORK/runs/tiny/checkpoint.safetensors" --out "$WORK/model.safetensors"
dfmvr-export "$WORK/model.safetensors" --out "$WORK/export" --compact
dfmvr eval --checkpoint "$WORK/model.safetensors" --data "$WORK/data/val" --json "$WORK/eval.json"
dfmvr eval --onnx "$WORK/export/model.onnx" --data "$WORK/data/val" --json "$WORK/eval.onnx.json"
mkdir -p "$ASSETS"
cp "$WORK/model.safetensors" "$ASSETS/model.safetensors"
cp "$WORK/export/model.onnx" "$ASSETS/model.onnx"
cp "$WORK/data/train/face_model.npz" "$ASSETS/face_model.npz"
cp "$WORK/eval.onnx.json" "$ASSETS/eval.json"          # the README's numbers; tests/test_bundled_model.py re-checks them
echo "installed into $ASSETS; held-out numbers: $WORK/eval.json"
