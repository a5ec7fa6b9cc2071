#!/usr/bin/env bash
# Train the 256-px model on one GPU machine (`device` tool; docs/TRAINING_COMMANDS.md):
#   1. render N characters at 256 px with exact keypoints and captions on every CPU core,
#   2. train the autoencoder on fresh renders (AE_MIN minutes; `--preset gpu`; AE_INIT continues a run's
#      autoencoder, e.g. the CPU run's runs/ae256/final; AE_MIN=0 keeps AE_INIT as it is),
#   3. train the pose-conditioned LDM on its latents with zero terminal SNR (LDM_MIN minutes), its body from
#      LDM_INIT (default: the shipped weights; a new autoencoder's first and last layers start afresh),
#   4. measure what a person sees (`training.eval quality`) on the result,
#   5. with DISTILL_MIN > 0, distil it into the few-step student for live previews (`training.train_distill`,
#      DISTILL_MIN minutes; then `OUT/lcm/final/` is the pipeline folder with `fast_unet/`),
#   and beside 2-3 on the same GPU, any EXTRA command given in $EXTRA (e.g. the domain CLIP run).
#   SYNTH_ARGS goes to step 1 (e.g. --pairs, for LDM_ARGS="--pair-weight 2 ..."), AE_ARGS and LDM_ARGS to 2 and 3.
#
#   training/gpu_recipe.sh OUT [N] [AE_MIN] [LDM_MIN]
#
# Then `OUT/ldm/final/` is a complete pipeline folder (python app.py --model OUT/ldm/final).
set -euo pipefail
OUT=${1:?usage: training/gpu_recipe.sh OUT [N] [AE_MIN] [LDM_MIN]}
N=${2:-64000}
AE_MIN=${3:-60}
LDM_MIN=${4:-60}
SIZE=${SIZE:-256}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "[recipe $(( $(date +%s) - t0 ))s] $*"; }

extra_pid=""
if [ -n "${EXTRA:-}" ]; then
  stamp "starting beside: $EXTRA"
  bash -c "$EXTRA" > "$OUT/extra.log" 2>&1 &
  extra_pid=$!
fi

if [ "$AE_MIN" = "0" ]; then
  ae="${AE_INIT:?AE_MIN=0 needs AE_INIT, the autoencoder to keep}"
  stamp "autoencoder kept: $ae"
else
  # The autoencoder streams its own renders, so it starts while step 1 renders the LDM's data set.
  stamp "autoencoder ($AE_MIN min) beside the rendering"
  $PY -m training.train_ae --out "$OUT/ae" --preset "${AE_PRESET:-gpu}" --image-size "$SIZE" \
    --minutes "$AE_MIN" ${AE_INIT:+--init "$AE_INIT"} ${AE_ARGS:-} > "$OUT/ae.log" 2>&1 &
  ae_pid=$!
  ae="$OUT/ae/final"
fi

stamp "rendering $N images at $SIZE px"
$PY -m training.synth --out "$OUT/data" --n "$N" --seed 0 --size "$SIZE" --workers "$(nproc)" ${SYNTH_ARGS:-} \
  > "$OUT/synth.log"
stamp "data ready: $(ls "$OUT/data/images" | wc -l) images"
if [ "$AE_MIN" != "0" ]; then
  wait "$ae_pid" || { stamp "the autoencoder failed (see $OUT/ae.log)"; exit 1; }
  stamp "autoencoder done: $(tail -1 "$OUT/ae.log")"
fi

stamp "latent diffusion ($LDM_MIN min)"
$PY -m training.train_ldm --data "$OUT/data" --ae "$ae" --out "$OUT/ldm" --image-size "$SIZE" \
  --preset "${LDM_PRESET:-gpu_small}" --minutes "$LDM_MIN" --zero-snr true --init "${LDM_INIT:-weights}" \
  ${LDM_ARGS:-}
if [ -n "$extra_pid" ]; then
  stamp "waiting for the command beside"
  wait "$extra_pid" || stamp "the command beside failed (see $OUT/extra.log)"
fi
stamp "evaluating"
$PY -m training.eval quality --json --model "$OUT/ldm/final" --sheet "$OUT/quality.png" > "$OUT/quality.json"
stamp "done: $(cat "$OUT/quality.json")"
if [ "${DISTILL_MIN:-0}" != "0" ]; then
  stamp "few-step student ($DISTILL_MIN min)"
  $PY -m training.train_distill --teacher "$OUT/ldm/final" --data "$OUT/data" --out "$OUT/lcm" --preset gpu \
    --minutes "$DISTILL_MIN" > "$OUT/lcm.log" 2>&1
  $PY -m benchmarks.speed preview --model "$OUT/lcm/final" --json > "$OUT/preview.json" || true
  stamp "student done: $(tail -1 "$OUT/lcm.log")"
fi
