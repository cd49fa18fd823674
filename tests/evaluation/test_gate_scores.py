import json

from lwd.evaluation.gate import versions_scored_at


def test_a_resumed_evaluator_scores_again_what_was_scored_at_another_temperature(tmp_path):
    path = tmp_path / "evaluations.jsonl"
    lines = [
        {"version": 1, "success": 0.8},  # written before lines carried their scale: scored at 1
        {"version": 2, "success": 0.9, "noise_scale": 0.0},
        {"version": 3, "success": 0.7, "noise_scale": 1.0},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert versions_scored_at(path, 0.0) == {2}
    assert versions_scored_at(path, 1.0) == {1, 3}
    assert versions_scored_at(tmp_path / "missing.jsonl", 0.0) == set()
