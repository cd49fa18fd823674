# Sourced by the arm scripts. scored_at_scale DIR: DIR/eval.json exists and was scored at
# $SCORE_NOISE_SCALE (default 0, as lwd eval), so a re-run reuses it; one scored at another
# scale is scored again rather than mixed into the table (reports before the field: 1).
scored_at_scale() {
  [ -f "$1/eval.json" ] && python3 - "$1/eval.json" "${SCORE_NOISE_SCALE:-0}" <<'PY'
import json
import sys

report = json.load(open(sys.argv[1]))
sys.exit(float(report["config"].get("noise_scale", 1.0)) != float(sys.argv[2]))
PY
}
