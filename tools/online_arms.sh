#!/bin/bash
# Scores at $SCORE_NOISE_SCALE (default 0, as lwd eval; tables from before 2026-12-04 used 1).
# Online-learner arms on validation seeds (issue 18): each arm deploys from the same offline
# checkpoint for 100k env steps on deploy seeds 0-2, then scores the final policy on 20
# validation episodes per task. Resumable (finished arm/seed pairs are skipped). SEEDS="3 4 5"
# runs other deploy seeds.
#
#   tools/online_arms.sh DEMO_DIR OUT_DIR ARM...      e.g. tools/online_arms.sh runs/demo runs/arms default prior2
#
# `default` is the code's own online default: since b33bd66 that is the `combo` arm's online
# settings (policy lr 1e-4, online share 0.75); the `default` runs of docs/benchmarks.md before
# that date are the older defaults (policy lr 3e-5, share 0.5).
# DEMO_DIR is a finished `lwd demo` workdir (its offline/final checkpoint and store). Compare
# two arms, paired per episode: `.venv/bin/python tools/online_arms_compare.py OUT_DIR default prior2`.
set -eu
source "$(dirname "$0")/scored_at.sh"
demo=$1 out=$2; shift 2
PY=${PY:-.venv/bin/python}
run() {  # arm seed extra-args...
  local arm=$1 seed=$2; shift 2
  local dir=$out/${arm}_s${seed}
  if [ ! -d "$dir/learner/final" ]; then
    $PY -m lwd.cli deploy --checkpoint "${offline:-$demo/offline/final}" --offline-store "${offline_data:-$demo/store}" --out "$dir" \
      --env-steps 100000 --lwd.qam-batch 64 --updates-per-1k-env-steps 30 --seed "$seed" \
      --no-progress --no-tensorboard "$@" > "$dir.deploy.log" 2>&1
  fi
  if ! scored_at_scale "$dir/eval"; then
    $PY -m lwd.cli eval --noise-scale "${SCORE_NOISE_SCALE:-0}" --checkpoint "$dir/learner/final" --split validation --episodes-per-task 20 \
      --out "$dir/eval" > "$dir.eval.log" 2>&1
  fi
  echo "$(date +%T) $arm s$seed $($PY -c "import json; print(json.load(open('$dir/eval/eval.json'))['average_success'])")"
}
offline_variant() {  # NAME STEPS FLAGS...: the demo's offline stage (its own settings) with STEPS steps, the last 500 with QAM, and FLAGS
  local ckpt=$out/offline_$1 steps=$2 settings
  shift 2
  if [ ! -d "$ckpt/final" ]; then
    # Read from the demo's offline config, so a variant differs from the demo's stage only by STEPS and FLAGS.
    settings=$($PY -c "import json; c = json.load(open('$demo/offline/config.json'))
print(f\"--batch-size {c['batch_size']} --n-step {c['n_step']} --critic-hidden {c['critic_hidden']} --seed {c['seed']} --learner.qam-batch {c['learner']['qam_batch']}\")")
    # shellcheck disable=SC2086  # settings are several flags
    $PY -m lwd.cli train offline --store "${offline_data:-$demo/store}" --checkpoint "$demo/sft/final" --out "$ckpt" --steps "$steps" \
      $settings --learner.policy-warmup $((steps - 500)) --no-progress --no-tensorboard "$@" > "$ckpt.log" 2>&1
  fi
  echo "$ckpt/final"
}
store_variant() {  # NAME ROLLOUTS: a copy of the demo's store topped up to ROLLOUTS SFT rollouts per task
  local store=$out/store_$1
  if [ ! -f "$store.done" ]; then
    rm -rf "$store" && cp -r "$demo/store" "$store"
    $PY -m lwd.cli offline-data --store "$store" --checkpoint "$demo/sft/final" --rollouts-per-task "$2" \
      --no-progress > "$store.log" 2>&1
    touch "$store.done"
  fi
  echo "$store"
}
rollouts_arm() {  # ROLLOUTS ARM SEED FLAGS...: deploy from a store with ROLLOUTS SFT rollouts per task and its own offline stage
  local rollouts=$1 arm=$2 seed=$3 data
  shift 3
  data=$(store_variant rollouts$rollouts "$rollouts")
  offline_data=$data offline=$(offline_data=$data offline_variant rollouts$rollouts 1500) run "$arm" "$seed" "$@"
}
mkdir -p "$out"
for seed in ${SEEDS:-0 1 2}; do
  for arm in "$@"; do
    case $arm in
      default) run default $seed ;;                        # the online default (QAM every 4th step)
      prior2) run prior2 $seed --lwd.prior-every 2 ;;
      prior4) run prior4 $seed --lwd.prior-every 4 ;;
      recent) run recent $seed --online-recent-fraction 0.5 --online-recent-steps 20000 ;;
      lamrel) run lamrel $seed --lwd.lam-scale gradient --lwd.lam 0.7 ;;
      qam-every-step) run qam-every-step $seed --lwd.policy-every 1 ;;
      bf16) run bf16 $seed --lwd.qam-dtype bfloat16 ;;
      bf16prior2) run bf16prior2 $seed --lwd.qam-dtype bfloat16 --lwd.prior-every 2 ;;
      priorlr3) run priorlr3 $seed --lwd.prior-lr 3e-4 ;;  # the learned prior learns 3x faster
      ema05) run ema05 $seed --lwd.prior-ema 0.05 ;;       # QAM's reference follows it 5x faster
      upd60) run upd60 $seed --updates-per-1k-env-steps 60 ;;  # twice the learner updates per env step
      demo) run demo $seed --env-steps 250000 --updates-per-1k-env-steps 0 ;;  # the demo's online stage: unpaced (run alone)
      lam01) run lam01 $seed --lwd.lam 0.01 ;;             # trust Q 3x more
      plr1e4) run plr1e4 $seed --lwd.policy-lr 1e-4 ;;     # the policy (QAM) learns 3.3x faster
      lam1) run lam1 $seed --lwd.lam 0.1 ;;                # trust Q 3x less
      nstep8) run nstep8 $seed --n-step 8 ;;               # TD backups over 8 chunks instead of 4
      online75) run online75 $seed --online-fraction 0.75 ;;  # 3:1 online:offline in each batch
      clr1e3) run clr1e3 $seed --lwd.critic-lr 1e-3 ;;     # critic and value learn 2x faster
      critic4k) offline=$(offline_variant critic4500 4500) run critic4k $seed ;;  # the offline critic trains 4,000 steps, not 1,000
      heads5) offline=$(offline_variant heads5 1500 --critic-heads 5) run heads5 $seed ;;  # 5 Q heads, not 2
      rollouts60) rollouts_arm 60 rollouts60 $seed ;;    # 60 SFT rollouts per task offline instead of 20 (offline stage and deploy)
      rollouts100) rollouts_arm 100 rollouts100 $seed ;;  # 100 instead of 20
      mix) run mix $seed --online-fraction 0.75 --lwd.policy-lr 1e-4 ;;  # combo without the extra rollouts
      hgd) offline=$demo/sft/final run hgd $seed --method hg-dagger --online-fraction 0.5 ;;  # the HG-DAgger baseline from the demo's SFT, share 0.5 as measured
      hgd75) offline=$demo/sft/final run hgd75 $seed --method hg-dagger --online-fraction 0.75 ;;
      # the three leads together: rollouts100's data and offline checkpoint, online share 0.75, policy lr 1e-4
      combo) rollouts_arm 100 combo $seed --online-fraction 0.75 --lwd.policy-lr 1e-4 ;;
      # combo's data and settings in the demo's online stage: unpaced, 250k env steps (run alone)
      combodemo) rollouts_arm 100 combodemo $seed --online-fraction 0.75 --lwd.policy-lr 1e-4 --env-steps 250000 --updates-per-1k-env-steps 0 ;;
      combodemo500) rollouts_arm 100 combodemo500 $seed --online-fraction 0.75 --lwd.policy-lr 1e-4 --env-steps 500000 --updates-per-1k-env-steps 0 ;;  # twice the demo's robot time
      imitop) run imitop $seed --lwd.imitate-operator ;;   # the policy also imitates the operator's actions (flow matching) every step
      prioragg) run prioragg $seed --lwd.prior-data aggregate ;;  # the learned prior imitates HG-DAgger's aggregate (no pre-takeover policy actions)
      priorhgd) run priorhgd $seed --lwd.prior-data hg-dagger ;;  # the learned prior trains on a batch of its own, sampled as HG-DAgger's
      *) echo "unknown arm $arm" >&2; exit 2 ;;
    esac
  done
done
