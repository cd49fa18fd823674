#!/bin/bash
# Scores at $SCORE_NOISE_SCALE (default 0, as lwd eval; tables from before 2026-12-04 used 1).
# Does a longer deployment widen LWD online's lead over HG-DAgger? (issue 18; validation seeds)
# From a finished `lwd experiment` workdir, for each training seed: deploy LWD (from its offline
# stage) and HG-DAgger (from its SFT) for FACTOR x the preset's online budget, paced as the preset
# (30 updates per 1k env steps, QAM on 64 states), then score the experiment's own 1x policies
# and the new ones on the validation split (20 episodes per task). Resumable.
#
#   tools/online_budget_arms.sh EXPERIMENT_DIR OUT_DIR [FACTOR]   (SEEDS="0 1 2 3", SUITES="lh mt10" by default)
#   .venv/bin/python tools/online_budget_compare.py OUT_DIR           (paired tables)
set -eu
source "$(dirname "$0")/scored_at.sh"
exp=$1 out=$2 factor=${3:-2}
PY=${PY:-.venv/bin/python}
for seed in ${SEEDS:-0 1 2 3}; do
  for suite in ${SUITES:-lh mt10}; do
    steps=$($PY -c "import json; print(json.load(open('$exp/experiment_config.json'))['presets']['$suite']['online_env_steps'])")
    d=$exp/$suite/seed$seed
    mkdir -p "$out/$suite/seed$seed"
    for m in lwd hg-dagger; do
      if [ $m = lwd ]; then start=$d/offline/final; else start=$d/sft/final; fi
      run=$out/$suite/seed$seed/${m}_x$factor
      if [ ! -d "$run/learner/final" ]; then  # an interrupted run has a summary but no final: resume it
        $PY -m lwd.cli deploy --method $m --checkpoint "$start" --offline-store "$d/store" --out "$run" \
          --robots.suite $suite --env-steps $((steps * factor)) --lwd.qam-batch 64 --updates-per-1k-env-steps 30 \
          --seed "$seed" --no-progress --no-tensorboard > "$run.deploy.log" 2>&1
      fi
      for pair in "x1 $d/$m/learner/final" "x$factor $run/learner/final"; do
        set -- $pair
        ev=$out/$suite/seed$seed/${m}_$1_eval
        scored_at_scale "$ev" || $PY -m lwd.cli eval --noise-scale "${SCORE_NOISE_SCALE:-0}" --checkpoint "$2" --suite $suite --split validation \
          --episodes-per-task 20 --out "$ev" > "$ev.log" 2>&1
        echo "$(date +%T) $suite s$seed $m $1 $($PY -c "import json; print(json.load(open('$ev/eval.json'))['average_success'])")"
      done
    done
  done
done
