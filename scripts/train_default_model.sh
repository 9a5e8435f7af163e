#!/usr/bin/env bash
# Retrain the bundled demo model (dfmvr/assets/default/) from scratch: the exact recipe of the shipped one.
#
#   bash scripts/train_default_model.sh [WORK_DIR]     # needs: pip install -e ".[train]"
#
# The shipped demo (2026-12-07: the detail-head parser of step 2, no photometric term in step 3) was made by
# this script on a 2-core AMD EPYC VM with AVX-512 that ran the main stage at 0.58-0.86 s per step. The run
# was paused for test runs, so its time is put together from its parts, each measured with nothing else
# running: data 2.9 min, parse net 23.1 (5 epochs, one timed: 277 s), main stage epochs 1-24 70.1, the grow
# to 4,000 triplets 2.7, 12,000 more triplets 16.4, epochs 25-32 21.8, the heads' refit with slot breaks
# 16.9, export and evaluation 1.3: about 155 min in all (benchmarks/results/
# recipe_detail_parser_no_render.json, which says how each part was timed). The recipe with the previous
# parser and without the photometric term ran uninterrupted in 102 min on a host at 0.41-0.48 s per step
# (recipe_without_photometric_term.json): read the time with the host's speed beside it. Older runs:
# recipe_class_balanced_parser.json (the demo before, 203.5 min with the render), recipe_rerun_from_scratch.json.
# Measured uninterrupted on 2026-12-07 from a fresh clone (main stage at 0.49-0.59 s per step): 132.7 min to the
# export, 128.3 with its one disturbed epoch at the median (recipe_uninterrupted_2026_12_07.json); held out
# through torch it matches the shipped demo (1.024 against 1.028 mm, paired -0.033 to +0.024). Its export was
# refused: one parse-label pixel of 301,056 flipped in ONNX Runtime and moved the coefficients 2.7e-3 (> the
# fp32 gate's 1e-4; mesh 0.025 mm), so the script stopped before the install; the gate now scores the layers
# after the parser on equal labels where labels differ (docs/export.md, "Parity"), and that graph passes.
# Every step resumes: rerun the script after an interruption (each part of the main
# stage continues with --resume and leaves a marker when done).
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

# 2. the parser (frozen during the main stage; also the graph's `labels` output): four epochs of a
#    class-balanced cross entropy (weights 1/sqrt(class frequency), recorded in the weights), then one
#    at lr 1e-4, with a detail head that classifies at 1/4 of the crop instead of 1/8 (--parse-detail 24:
#    67 MMAC per triplet more in the graph). It labels eyes, brows and lips a little too wide but misses
#    none of them, and the encoders read landmarks off it 0.2 px more precisely than off the 3-epoch parser
#    without the head (2.42-2.45 against 2.62-2.66 px, two seeds), 0.6-0.8 px more than off the one-epoch
#    plain parser of earlier demos
#    (docs/training.md, "A sharper parser", items 7-8).
PARSE=(--stage parse --data "$WORK/data/train" --variant tiny --out "$WORK/runs/parse" --batch 8 --class-balanced
       --parse-detail 24 --quiet)
if [ ! -f "$WORK/runs/parse/epochs-4.done" ]; then
  RESUME=(); if [ -f "$WORK/runs/parse/parse_net.train.pt" ]; then RESUME=(--resume); fi
  dfmvr-train "${PARSE[@]}" --epochs 4 "${RESUME[@]}"
  touch "$WORK/runs/parse/epochs-4.done"
fi
if [ ! -f "$WORK/runs/parse/epochs-5.done" ]; then
  dfmvr-train "${PARSE[@]}" --epochs 5 --lr 1e-4 --resume
  touch "$WORK/runs/parse/epochs-5.done"
fi

# 3. the main stage: the `lite` design (docs/training.md, "The lite design": 112 px per view, three
#    unshared encoders, the front feature gating each side, one involution bottleneck, a spatial
#    readout into the official heads). Supervised on synthetic data, all three recorded in the card:
#    the squared vertex error of the unposed shape (mm^2) and the MSE to the true coefficients at
#    weight 1e4, and the per-view pose (degrees^2 + cm^2) at 300, without which no network reads the
#    pose (it is ~0.03 % of the coefficient MSE). The weak losses run at their official weights beside
#    them; the mask loss is off (it doubles the step time) and so is the photometric term
#    (--photo-weight 0): its render is half of a step, and the recipe without it came out level with the
#    recipe with it (docs/training.md, "What the render costs"); the weak recipes keep it, where it is
#    the signal.
#    The run grew while its held-out curve kept falling: planned for 2 epochs, resumed to 4, 8 and
#    16. The landmark target (--keypoints 68 --keypoint-weight 1000: each view's encoder also predicts
#    its 68 2D landmarks, a training-only target that the exported graph also outputs; dfmvr/models/lite.py) was
#    added after a 600-step ablation and this whole recipe run with and without it (docs/training.md,
#    "A landmark target for the encoders"). Each resume stretches the cosine learning-rate schedule from that step on (a warm restart,
#    recorded in the card under provenance.schedule_changes); all four invocations are replayed here
#    so the weights reproduce. 16 epochs x 250 steps x batch 8 = 32,000 triplet samples.
MAIN=(--data "$WORK/data/train" --val "$WORK/data/select" --variant lite --out "$WORK/runs/lite"
      --max-steps 250 --batch 8 --lr 1e-3 --supervised-weight 10000 --supervised-shape-weight 10000
      --supervised-pose-weight 300 --mask-weight 0 --photo-weight 0 --parse-net "$WORK/runs/parse/parse_net.safetensors"
      --keypoints 68 --keypoint-weight 1000 --quiet)
for EPOCHS in 2 4 8 16; do
  DONE="$WORK/runs/lite/epochs-$EPOCHS.done"
  if [ -f "$DONE" ]; then continue; fi
  RESUME=(); if [ -f "$WORK/runs/lite/checkpoint.train.pt" ]; then RESUME=(--resume); fi
  dfmvr-train "${MAIN[@]}" --epochs "$EPOCHS" "${RESUME[@]}"
  touch "$DONE"
done

# 3b. more data, then 8 more epochs on it. At epoch 16 the model scored identity R² 0.50 on training
#    triplets against 0.42 held out: more steps and more faces both pay. Growing the folder keeps its
#    first 2,000 triplets (each is deterministic per (seed, index)); the card lists the change under
#    provenance.data_changes and the stretched schedule under schedule_changes.
if [ ! -f "$WORK/runs/lite/epochs-24.done" ]; then
  dfmvr data synth --out "$WORK/data/train" --triplets 4000 --seed 0 --workers 2
  dfmvr-train "${MAIN[@]}" --epochs 24 --resume
  touch "$WORK/runs/lite/epochs-24.done"
fi

# 3c. 16,000 triplets, then 8 more epochs on them (warm restart). At epoch 24 the held-out mean was still
#    falling ~0.08 mm per 8 epochs, and ridge probes on the readout found no better linear map from a
#    wider or deeper feature (docs/training.md, "Where identity stops"): the features, not the heads,
#    hold the gap, and they were still learning.
if [ ! -f "$WORK/runs/lite/epochs-32.done" ]; then
  dfmvr data synth --out "$WORK/data/train" --triplets 16000 --seed 0 --workers 2
  dfmvr-train "${MAIN[@]}" --epochs 32 --resume
  touch "$WORK/runs/lite/epochs-32.done"
fi

# 3d. refit the identity, expression and rotation heads in closed form: ridge regression from what the
#    heads read to the true coefficients, on the training triplets and on as many new ones (data is
#    free; the new faces' features are what held-out ones look like), the strength chosen on the
#    selection set (dfmvr/train/head_refit.py; docs/training.md, "Refitting the heads"). Only the
#    heads change; the graph keeps its shape. --slot-breaks 0.05 adds 800 of the triplets again with
#    their photos in the wrong slots (pose truth following the photo), so the heads read each view's
#    pose from its photo, not from the slot: photos in the wrong order get 4-6 deg of rotation error
#    instead of 39-88, conventional ones 1.86 instead of 1.83 (docs/training.md, "Reading the pose
#    from the photo").
if [ ! -f "$WORK/runs/heads/checkpoint.safetensors" ]; then
  dfmvr-train --stage heads --init "$WORK/runs/lite/checkpoint.safetensors" --data "$WORK/data/train" \
      --val "$WORK/data/select" --out "$WORK/runs/heads" --slot-breaks 0.05 --quiet
fi

# 4. ship in float16 storage (float32 compute), export (fails if ONNX Runtime and PyTorch disagree), evaluate on the held-out set, install
dfmvr convert half "$WORK/runs/heads/checkpoint.safetensors" --out "$WORK/model.safetensors"
dfmvr-export "$WORK/model.safetensors" --out "$WORK/export" --compact
dfmvr eval --checkpoint "$WORK/model.safetensors" --data "$WORK/data/val" --json "$WORK/eval.json"
dfmvr eval --onnx "$WORK/export/model.onnx" --data "$WORK/data/val" --json "$WORK/eval.onnx.json"
mkdir -p "$ASSETS"
cp "$WORK/model.safetensors" "$ASSETS/model.safetensors"
cp "$WORK/export/model.onnx" "$ASSETS/model.onnx"
cp "$WORK/data/train/face_model.npz" "$ASSETS/face_model.npz"
cp "$WORK/eval.onnx.json" "$ASSETS/eval.json"          # the README's numbers; tests/test_bundled_model.py re-checks them
echo "installed into $ASSETS; held-out numbers: $WORK/eval.json"
