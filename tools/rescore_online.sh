#!/bin/bash
# Scores at $SCORE_NOISE_SCALE (default 0, as lwd eval; tables from before 2026-12-04 used 1).
# Score online policies that already exist (the LWD online stage of finished `lwd experiment`
# workdirs, or arms of tools/suite_arms.sh) on the validation split, into the layout
# tools/online_arms_compare.py reads (OUT/ARM_sSEED/eval/eval.json). Use it to re-decide a default
# with more validation episodes than the arms were first scored on, without re-training anything
# (issue 18). Resumable: a finished evaluation is kept.
#
#   tools/rescore_online.sh OUT SUITE EPISODES_PER_TASK ARM=CHECKPOINT_PATTERN [ARM=PATTERN ...]
#   PATTERN holds {seed}; SEEDS="0 1 2" by default; a missing checkpoint is skipped with a line.
#   e.g. SEEDS="$(seq -s' ' 0 11)" tools/rescore_online.sh runs/val40 lh 40 \
#          old=runs/exp_a/lh/seed{seed}/lwd/learner/final new=runs/exp_b/lh/seed{seed}/lwd/learner/final
#        .venv/bin/python tools/online_arms_compare.py runs/val40 old new
set -eu
source "$(dirname "$0")/scored_at.sh"
out=$1 suite=$2 episodes=$3
shift 3
LWD=${LWD:-.venv/bin/lwd}
for seed in ${SEEDS:-0 1 2}; do
  for arm_pattern in "$@"; do
    arm=${arm_pattern%%=*} pattern=${arm_pattern#*=}
    checkpoint=${pattern//\{seed\}/$seed} run=$out/${arm}_s$seed
    if [ ! -d "$checkpoint" ]; then echo "$(date +%T) $arm s$seed: no $checkpoint, skipped"; continue; fi
    mkdir -p "$run"
    scored_at_scale "$run/eval" || "$LWD" eval --noise-scale "${SCORE_NOISE_SCALE:-0}" --checkpoint "$checkpoint" --suite "$suite" --split validation \
      --episodes-per-task "$episodes" --out "$run/eval" > "$run/eval.log" 2>&1
    echo "$(date +%T) $arm s$seed $(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['average_success'])" "$run/eval/eval.json")"
  done
done
