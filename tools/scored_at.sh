# Sourced by the arm scripts. scored_at_scale DIR: DIR/eval.json exists and was scored at
# $SCORE_NOISE_SCALE (default 0, as lwd eval), so a re-run reuses it; one scored at another
# scale is scored again rather than mixed into the table (lwd.evaluation.compare.scored_noise_scale).
scored_at_scale() {
  [ -f "$1/eval.json" ] && "${PY:-.venv/bin/python}" - "$1/eval.json" "${SCORE_NOISE_SCALE:-0}" <<'PY'
import json
import sys

from lwd.evaluation.compare import scored_noise_scale

sys.exit(scored_noise_scale(json.load(open(sys.argv[1]))) != float(sys.argv[2]))
PY
}
