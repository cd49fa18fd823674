#!/bin/bash
# The training loops on a GPU machine, next to the same machine's CPU (issue 18, item 1):
# resume an SFT run, train offline RL, and learn while deploying, each with --device cuda and
# then --device cpu (2 torch threads, as on our 2-core machines), and write the loops' own
# rates (sft/updates_per_s, learner/updates_per_s, deploy's summary) to OUT/gpu_loops.json.
#
# KIT holds store/ (lwd collect) and sft/ with a resumable 'last' checkpoint, made where the
# sentence encoder is installed, so that the GPU machine never needs it (a resumed run and
# the later stages read the checkpoint's instruction table):
#   lwd collect --store KIT/store --suite mt10 --episodes-per-task 20
#   lwd pretrain --store KIT/store --out KIT/sft --steps 50 --checkpoint-every 50 && rm -r KIT/sft/final
#   tools/gpu_loops.sh KIT OUT        (SFT_STEPS=1050 OFFLINE_STEPS=600 DEPLOY_STEPS=60000 WORKERS=12 DEVICES="cuda cpu")
set -u
kit=$1 out=$2
PY=${PY:-python3}
for dev in ${DEVICES:-cuda cpu}; do
  w=$out/$dev
  mkdir -p "$w"
  rm -rf "$w/sft" && cp -r "$kit/sft" "$w/sft"
  common=(--device "$dev" --threads 2 --no-progress --no-tensorboard)
  echo "$(date +%T) $dev: pretrain (resumed at step 50)"
  $PY -m lwd.cli pretrain --store "$kit/store" --out "$w/sft" --steps "${SFT_STEPS:-1050}" \
    --checkpoint-every 100000 "${common[@]}" > "$w/pretrain.log" 2>&1 || tail -20 "$w/pretrain.log"
  echo "$(date +%T) $dev: train offline"
  $PY -m lwd.cli train offline --store "$kit/store" --checkpoint "$w/sft/final" --out "$w/offline" \
    --steps "${OFFLINE_STEPS:-600}" --learner.policy-warmup 100 --checkpoint-every 100000 "${common[@]}" \
    > "$w/offline.log" 2>&1 || tail -20 "$w/offline.log"
  echo "$(date +%T) $dev: deploy"
  $PY -m lwd.cli deploy --method lwd --checkpoint "$w/offline/final" --offline-store "$kit/store" \
    --out "$w/deploy" --env-steps "${DEPLOY_STEPS:-60000}" --lwd.qam-batch 64 --updates-per-1k-env-steps 30 \
    --robots.workers "${WORKERS:-12}" "${common[@]}" > "$w/deploy.log" 2>&1 || tail -20 "$w/deploy.log"
done
echo "$(date +%T) done"
$PY - "$out" <<'PY'
import json, platform, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
def rate(path, key, after):
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    values = [r[key] for r in rows if key in r and r["step"] > after]
    return statistics.median(values) if values else None
report = {"machine": platform.node()}
try:
    import torch
    report["torch"] = torch.__version__
    report["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
except ImportError:
    pass
for w in sorted(p for p in out.iterdir() if p.is_dir()):
    summary = w / "deploy" / "summary.json"
    deploy = json.loads(summary.read_text()) if summary.exists() else {}
    report[w.name] = {
        "sft_updates_per_s": rate(w / "sft" / "metrics.jsonl", "sft/updates_per_s", 150),
        "offline_updates_per_s_after_warmup": rate(w / "offline" / "metrics.jsonl", "learner/updates_per_s", 200),
        "deploy": {k: deploy.get(k) for k in ("env_steps", "env_steps_per_s", "learner_steps", "learner_updates_per_s",
                                              "learner_updates_per_1k_env_steps", "wall_seconds", "worker_restarts")},
    }
(out / "gpu_loops.json").write_text(json.dumps(report, indent=2))
print(json.dumps(report, indent=2))
PY
