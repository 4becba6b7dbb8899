#!/usr/bin/env bash
# Loss ablation of the hash model (docs/model.md): three short runs that differ only in the loss,
# each trained for 500 steps with one torch thread and evaluated with `streamd eval`.
# Resumable: re-running skips finished runs and resumes unfinished ones.
#   nohup bash models/ablation.sh > runs/ablation.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
QUERIES=${QUERIES:-60}
for preset in ablation-ce ablation-ce-contrastive ablation-full; do
  out=runs/$preset
  if [[ ! -f $out/final.safetensors ]]; then
    resume=()
    [[ -f $out/checkpoint.pt ]] && resume=(--resume)
    $PY -m streamd train --config-file models/train.yaml --preset "$preset" --out "$out" "${resume[@]}"
  fi
  if [[ ! -f $out/eval.json ]]; then
    OMP_NUM_THREADS=1 $PY -m streamd eval --weights "$out/final.safetensors" --queries "$QUERIES" --json "$out/eval.json"
  fi
done
