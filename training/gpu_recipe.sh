#!/usr/bin/env bash
# Train the shipped models on one GPU machine in minutes (how weights/unet and weights/clip were finished on an
# H200: the exact calls are in docs/TRAINING_COMMANDS.md, section 3):
#   1. render N characters with exact keypoints and captions on every CPU core,
#   2. fine-tune the shipped autoencoder at full 128 px crops (AE_MIN minutes; 0 keeps AE_INIT's as it is),
#   3. train the pose-conditioned LDM at the shipped size (LDM_MIN minutes; from LDM_INIT's weights if set),
#   and beside 2-3 on the same GPU, any EXTRA command given in $EXTRA (e.g. the domain CLIP run).
#
#   training/gpu_recipe.sh OUT [N] [AE_MIN] [LDM_MIN]
#
# Then `OUT/ldm/final/` is a complete pipeline folder (python app.py --model OUT/ldm/final).
set -euo pipefail
OUT=${1:?usage: training/gpu_recipe.sh OUT [N] [AE_MIN] [LDM_MIN]}
N=${2:-64000}
AE_MIN=${3:-1.5}
LDM_MIN=${4:-4.5}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "[recipe $(( $(date +%s) - t0 ))s] $*"; }

stamp "rendering $N images"
$PY -m training.synth --out "$OUT/data" --n "$N" --seed 0 --workers "$(nproc)" > "$OUT/synth.log"
stamp "data ready: $(ls "$OUT/data/images" | wc -l) images"

extra_pid=""
if [ -n "${EXTRA:-}" ]; then
  stamp "starting beside: $EXTRA"
  bash -c "$EXTRA" > "$OUT/extra.log" 2>&1 &
  extra_pid=$!
fi

if [ "$AE_MIN" = "0" ]; then
  ae="${AE_INIT:-weights}/autoencoder"  # the latent space the LDM_INIT UNet was trained in stays valid
  stamp "autoencoder kept: $ae"
else
  stamp "autoencoder"
  $PY -m training.train_ae --data "$OUT/data" --out "$OUT/ae" --preset "${AE_PRESET:-gpu_small}" \
    --init "${AE_INIT:-weights}" --minutes "$AE_MIN" ${AE_ARGS:-}
  ae="$OUT/ae/final"
fi
stamp "latent diffusion"
$PY -m training.train_ldm --data "$OUT/data" --ae "$ae" --out "$OUT/ldm" \
  --preset "${LDM_PRESET:-gpu_small}" --minutes "$LDM_MIN" ${LDM_INIT:+--init "$LDM_INIT"} ${LDM_ARGS:-}
if [ -n "$extra_pid" ]; then
  stamp "waiting for the command beside"
  wait "$extra_pid" || stamp "the command beside failed (see $OUT/extra.log)"
fi
stamp "done"
