#!/bin/bash
# Scores at $SCORE_NOISE_SCALE (default 0, as lwd eval; tables from before 2026-12-04 used 1).
# An online-learner arm against the experiment's own LWD online stage, on the validation split
# (issue 18): for each training seed of a finished `lwd experiment` workdir, deploy LWD from that
# seed's offline stage with the preset's online settings plus FLAGS, then score the new policy and
# the experiment's own LWD online policy on 20 validation episodes per task. Resumable.
#
#   tools/suite_arms.sh EXPERIMENT_DIR OUT_DIR SUITE ARM FLAGS...   (SEEDS="0 1 2" by default)
#   e.g. tools/suite_arms.sh runs/exp lh_arms lh priorhgd --lwd.prior-data hg-dagger
#   .venv/bin/python tools/online_arms_compare.py OUT_DIR default ARM   (paired, per seed and pooled)
set -eu
source "$(dirname "$0")/scored_at.sh"
exp=$1 out=$2 suite=$3 arm=$4
shift 4
PY=${PY:-.venv/bin/python}
preset() { $PY -c "import json; print(json.load(open('$exp/experiment_config.json'))['presets']['$suite']['$1'])"; }
evaluate() {  # CHECKPOINT OUT
  scored_at_scale "$2" || $PY -m lwd.cli eval --noise-scale "${SCORE_NOISE_SCALE:-0}" --checkpoint "$1" --suite "$suite" --split validation \
    --episodes-per-task 20 --out "$2" > "$2.log" 2>&1
  $PY -c "import json; print(json.load(open('$2/eval.json'))['average_success'])"
}
mkdir -p "$out"
for seed in ${SEEDS:-0 1 2}; do
  d=$exp/$suite/seed$seed run=$out/${arm}_s$seed
  if [ ! -d "$run/learner/final" ]; then  # an interrupted run resumes
    $PY -m lwd.cli deploy --checkpoint "$d/offline/final" --offline-store "$d/store" --out "$run" \
      --robots.suite "$suite" --robots.robots-per-worker "$(preset robots_per_worker)" \
      --env-steps "$(preset online_env_steps)" --updates-per-1k-env-steps "$(preset updates_per_1k_env_steps)" \
      --n-sync "$(preset n_sync)" --batch-size "$(preset batch_size)" --lwd.qam-batch "$(preset qam_batch)" \
      --seed "$seed" --no-progress --no-tensorboard "$@" > "$run.deploy.log" 2>&1
  fi
  mkdir -p "$out/default_s$seed"
  echo "$(date +%T) $suite s$seed default $(evaluate "$d/lwd/learner/final" "$out/default_s$seed/eval")" \
    "$arm $(evaluate "$run/learner/final" "$run/eval")"
done
